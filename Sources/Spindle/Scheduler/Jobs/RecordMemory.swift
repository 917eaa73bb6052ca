import Synchronization

// The memory job records live in: chunks aligned to their size, pooled per NUMA node, and the
// bump arena each worker and outside submitter allocates from. docs/scheduler.md, "Job records",
// states the reclamation rule.

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

    /// The header's slots: the pending count, the pool's free-list link, the owning pool.
    private static var pendingSlot: RawSlot<Atomic<Int>> { RawSlot(line: 0, word: 0) }
    private static var poolNextSlot: RawSlot<UnsafeMutableRawPointer?> { RawSlot(line: 0, word: 1) }
    private static var poolSlot: RawSlot<Unmanaged<ChunkPool>> { RawSlot(line: 0, word: 2) }

    private static func header(_ chunk: UnsafeMutableRawPointer) -> RawBlock {
        RawBlock(chunk, byteCount: headerSize)
    }

    /// Initializes the header of a freshly mapped chunk of `pool`.
    static func initializeHeader(_ chunk: UnsafeMutableRawPointer, pool: ChunkPool) {
        let header = header(chunk)
        header.initialize(pendingSlot, to: Atomic(bias))
        header.initialize(poolNextSlot, to: nil)
        header.initialize(poolSlot, to: Unmanaged.passUnretained(pool))
    }

    static func pending(_ chunk: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<Int>> {
        header(chunk)[pendingSlot]
    }

    static func poolNext(_ chunk: UnsafeMutableRawPointer) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        header(chunk)[poolNextSlot]
    }

    static func pool(_ chunk: UnsafeMutableRawPointer) -> Unmanaged<ChunkPool> {
        header(chunk)[poolSlot].pointee
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
        for chunk in all { PageMemory.unmap(chunk, RecordChunk.chunkSize) }
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
        let chunk = PageMemory.mapAligned(RecordChunk.chunkSize, for: "job records")
        if !placement.bind(chunk, RecordChunk.chunkSize, .preferred(node: node)) {
            bindFailures.wrappingAdd(1, ordering: .relaxed)
        }
        RecordChunk.initializeHeader(chunk, pool: self)
        lock.withLock { all.append(chunk) }
        bytes.wrappingAdd(RecordChunk.chunkSize, ordering: .relaxed)
        return chunk
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
