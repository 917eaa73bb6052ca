import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Job records: what a deque slot or an injection-queue link points to. docs/scheduler.md,
// "Job records", describes the layout and the reclamation rule of the chunks they live in.

/// Runs the job a record describes on the fiber whose `FiberState` is the second argument,
/// then releases the record.
@usableFromInline
typealias ExecuteFunction = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void

/// The header every record starts with: two words, so that a `run` record (header and body) is
/// 32 bytes, half a cache line (docs/scheduler.md, "Job records"). Records are 8-byte aligned, so
/// deque slots can tag the low bit (`Token`).
///
/// A record that goes through a linked queue (an injection queue or a node queue) has one more
/// word *before* its header, the queue's link (`RecordLink`); records pushed on a worker's deque,
/// the common case, do not pay for it.
@usableFromInline
struct JobHeader {
    @usableFromInline var execute: ExecuteFunction
    /// The counter's address, with the priority in bits 0–1 and the pinned flag in bit 2 (a
    /// Swift object is at least 16-byte aligned, so those bits of its address are zero).
    @usableFromInline var word: UInt

    @usableFromInline static let priorityMask: UInt = 0b11
    @usableFromInline static let pinnedBit: UInt = 0b100
    /// The bits of `word` that are not the counter's address.
    @usableFromInline static let flagMask: UInt = priorityMask | pinnedBit

    @inlinable
    init(execute: ExecuteFunction, counter: Unmanaged<JobCounter>?, priority: Priority, pinned: Bool) {
        self.execute = execute
        let address = counter.map { UInt(bitPattern: $0.toOpaque()) } ?? 0
        assert(address & JobHeader.flagMask == 0, "Spindle internal error: a counter's address has low bits set")
        self.word = address | UInt(priority.rawValue) | (pinned ? JobHeader.pinnedBit : 0)
    }

    /// The counter the job decrements when it completes (unretained: a counter with pending work
    /// keeps itself alive, see `JobCounter`).
    @inlinable
    var counter: Unmanaged<JobCounter>? {
        guard let address = UnsafeRawPointer(bitPattern: word & ~JobHeader.flagMask) else { return nil }
        return Unmanaged.fromOpaque(address)
    }

    @inlinable var priority: UInt8 { UInt8(truncatingIfNeeded: word & JobHeader.priorityMask) }
    @inlinable var pinned: Bool { word & JobHeader.pinnedBit != 0 }
}

/// The link word of records queued on a linked queue: it sits in the 8 bytes before the record,
/// which the allocating side reserves (`prefix`). docs/scheduler.md, "Job records".
enum RecordLink {
    /// Bytes reserved in front of a record bound for a linked queue.
    static let prefix = MemoryLayout<UInt>.stride

    /// The link of `record` (an `Atomic<UInt>` in the prefix).
    @inline(__always)
    static func of(_ record: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt>> {
        (record - prefix).assumingMemoryBound(to: Atomic<UInt>.self)
    }
}

/// A record from `JobSystem.run` / `JobContext.run`: the header and the body.
struct RunRecord {
    var header: JobHeader
    var body: RunBody
}

/// A job body, wrapped so that it can be moved out of a record through a typed pointer (a bare
/// closure read through a generic pointer has another representation than in a struct field).
/// In memory it is the closure's two words, function then context, which is what
/// `spindle_closure_invoke` calls.
struct RunBody {
    var call: @Sendable (JobContext) -> Void
}

/// A record from `run(counter:argument:_:)`: the header, the body, and the integer it is called
/// with. The body comes right after the header, as in `RunRecord`, so both kinds retire their
/// closure the same way.
struct ArgumentRecord {
    var header: JobHeader
    var body: ArgumentBody
    var argument: Int
}

/// The body of an `ArgumentRecord`: one closure, stored as its two words like `RunBody`.
struct ArgumentBody {
    var call: @Sendable (Int, JobContext) -> Void
}

/// A record from `run(count:)`: one body for `count` indices, executed by up to `maxTickets`
/// tickets (the same record pushed several times) that claim indices with a shared atomic.
struct CountRecord: ~Copyable {
    var header: JobHeader
    let body: @Sendable (Int, JobContext) -> Void
    let count: Int
    let maxTickets: Int
    /// The next index to claim.
    let nextIndex: Atomic<Int>
    /// Tickets pushed so far (including the first).
    let ticketsSpawned: Atomic<Int>
    /// Tickets not yet finished; the last one releases the record.
    let ticketsLive: Atomic<Int>
}

/// What a deque slot holds: a record pointer, or a ready fiber's state with the low bit set.
@usableFromInline
enum Token {
    @usableFromInline static let fiberTag: UInt = 1

    @inlinable static func record(_ pointer: UnsafeMutableRawPointer) -> UInt { UInt(bitPattern: pointer) }

    @inlinable static func fiber(_ state: UnsafeMutablePointer<FiberState>) -> UInt {
        UInt(bitPattern: state) | fiberTag
    }
}

// MARK: - Chunks

/// Chunks of record memory: `chunkSize` bytes, aligned to their size so a record finds its
/// chunk by masking its address. The first cache line is the chunk header.
///
/// Reclamation rule (docs/scheduler.md, "Job records"): `pending` starts at `bias`. Each finished
/// record subtracts 1 (or, when it finishes on the arena's own thread while the chunk is still
/// current, counts in `locallyReleased`); when its arena moves on to a new chunk it subtracts
/// `bias - allocated + locallyReleased`.
/// The subtraction that reaches zero, whichever thread makes it, returns the chunk to the pool:
/// by then the arena has let go of it and every record in it has finished.
enum RecordChunk {
    static let chunkSize = 64 * 1024
    static let headerSize = 64
    static let bias = 1 << 40

    static func pending(_ chunk: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<Int>> {
        chunk.assumingMemoryBound(to: Atomic<Int>.self)
    }

    static func poolNext(_ chunk: UnsafeMutableRawPointer) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        (chunk + 8).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    static func pool(_ chunk: UnsafeMutableRawPointer) -> Unmanaged<ChunkPool> {
        (chunk + 16).load(as: Unmanaged<ChunkPool>.self)
    }

    /// The chunk a record lives in.
    static func of(_ record: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: record) & ~UInt(chunkSize - 1))!
    }

    /// One record of the chunk finished. Any thread.
    static func release(record: UnsafeMutableRawPointer) {
        let chunk = of(record)
        // Acquiring and releasing: the thread that reaches zero recycles the chunk and must see
        // every other record's last writes (they happen before their own subtraction).
        if pending(chunk).pointee.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            pool(chunk).takeUnretainedValue().put(chunk)
        }
    }
}

/// Recycled record chunks of one NUMA node, shared by the arenas of that node's workers (outside
/// submitters use node 0's). Taking or returning a chunk costs a pthread mutex once per ~1000
/// records. New chunks are mapped and bound to the node before first touch (docs/numa.md).
final class ChunkPool: @unchecked Sendable {
    // SAFETY: `free` and `all` are only touched with `lock` held.
    private let lock = Lock()
    private var free: UnsafeMutableRawPointer?
    private var all: [UnsafeMutableRawPointer] = []
    let bytes = Atomic<Int>(0)
    /// The kernel node new chunks are bound to, and how.
    let node: Int
    let placement: MemoryPlacement
    let bindFailures = Atomic<Int>(0)

    init(node: Int, placement: MemoryPlacement) {
        self.node = node
        self.placement = placement
    }

    deinit {
        for chunk in all { munmap(chunk, RecordChunk.chunkSize) }
    }

    func get() -> UnsafeMutableRawPointer {
        if let chunk = lock.withLock({ () -> UnsafeMutableRawPointer? in
            guard let chunk = free else { return nil }
            free = RecordChunk.poolNext(chunk).pointee
            return chunk
        }) {
            RecordChunk.pending(chunk).pointee.store(RecordChunk.bias, ordering: .relaxed)
            return chunk
        }
        let chunk = Self.mapAligned(RecordChunk.chunkSize)
        if !placement.bind(chunk, RecordChunk.chunkSize, .preferred(node: node)) {
            bindFailures.wrappingAdd(1, ordering: .relaxed)
        }
        RecordChunk.pending(chunk).initialize(to: Atomic(RecordChunk.bias))
        RecordChunk.poolNext(chunk).initialize(to: nil)
        (chunk + 16).storeBytes(of: Unmanaged.passUnretained(self), as: Unmanaged<ChunkPool>.self)
        lock.withLock { all.append(chunk) }
        bytes.wrappingAdd(RecordChunk.chunkSize, ordering: .relaxed)
        return chunk
    }

    /// `size` bytes of fresh anonymous memory aligned to `size` (a power of two): map twice as
    /// much and give back the ends.
    static func mapAligned(_ size: Int) -> UnsafeMutableRawPointer {
        let mapped = mmap(nil, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        // Out of address space for 128 KiB: nothing sensible remains.
        require(mapped != MAP_FAILED && mapped != nil, "Spindle: out of memory for job records (mmap failed: errno \(errno))")
        let start = UInt(bitPattern: mapped!)
        let aligned = (start + UInt(size) - 1) & ~(UInt(size) - 1)
        if aligned > start { munmap(mapped, Int(aligned - start)) }
        let end = start + UInt(2 * size)
        if end > aligned + UInt(size) {
            munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(size)), Int(end - aligned - UInt(size)))
        }
        return UnsafeMutableRawPointer(bitPattern: aligned)!
    }

    /// Every chunk this pool mapped (tests check their placement).
    var mappedChunks: [UnsafeMutableRawPointer] { lock.withLock { all } }

    func put(_ chunk: UnsafeMutableRawPointer) {
        lock.withLock {
            RecordChunk.poolNext(chunk).pointee = free
            free = chunk
        }
    }
}

/// A bump allocator of job records over pooled chunks. One per worker and one per outside
/// submitting thread; used by its owner only.
struct RecordArena {
    var chunk: UnsafeMutableRawPointer?
    var cursor = 0
    var allocated = 0
    /// Records of `chunk` that finished on the arena's own thread, not yet subtracted from the
    /// chunk's `pending` (folded in when the arena lets go of the chunk).
    var locallyReleased = 0

    /// Memory for a record of `size` bytes, 8-byte aligned, in a chunk from `pool`.
    ///
    /// - Complexity: O(1); a pool lock once per chunk.
    @inline(__always)
    mutating func allocate(size: Int, pool: Unmanaged<ChunkPool>) -> UnsafeMutableRawPointer {
        let rounded = (size + 7) & ~7
        if let chunk, cursor + rounded <= RecordChunk.chunkSize {
            let record = chunk + cursor
            cursor += rounded
            allocated += 1
            return record
        }
        return allocateInNewChunk(size: rounded, pool: pool)
    }

    /// Memory for a record of `size` bytes bound for a linked queue: `allocate` with the link
    /// word reserved in front of it (`RecordLink`).
    @inline(__always)
    mutating func allocateLinked(size: Int, pool: Unmanaged<ChunkPool>) -> UnsafeMutableRawPointer {
        allocate(size: RecordLink.prefix + size, pool: pool) + RecordLink.prefix
    }

    private mutating func allocateInNewChunk(size: Int, pool: Unmanaged<ChunkPool>) -> UnsafeMutableRawPointer {
        retire()
        let fresh = pool._withUnsafeGuaranteedRef { $0.get() }
        chunk = fresh
        cursor = RecordChunk.headerSize + size
        allocated = 1
        locallyReleased = 0
        return fresh + RecordChunk.headerSize
    }

    /// Lets go of the current chunk: it is recycled once its records have finished.
    mutating func retire() {
        guard let old = chunk else { return }
        chunk = nil
        let settled = RecordChunk.bias - allocated + locallyReleased
        if RecordChunk.pending(old).pointee.wrappingSubtract(settled, ordering: .acquiringAndReleasing).newValue == 0 {
            RecordChunk.pool(old).takeUnretainedValue().put(old)
        }
    }
}
