import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Per-thread scratch memory for one frame: a bump allocator over chunks that are kept from frame
/// to frame. Owner-only; docs/scheduler.md, "Frame memory".
struct FrameArena {
    /// Every chunk this arena owns, in the order they are filled.
    var chunks: [(memory: UnsafeMutableRawPointer, size: Int)] = []
    /// Binds a new chunk to its worker's NUMA node before first touch (docs/numa.md); nil for
    /// the arena of the thread that opened the frame.
    var bindChunk: ((UnsafeMutableRawPointer, Int) -> Void)?
    /// The chunk being filled and the offset of its first free byte.
    var current = 0
    var cursor = 0
    /// The frame the contents belong to; an allocation in a later frame starts over.
    var frame: UInt64 = 0
    static let chunkSize = 64 * 1024

    /// Bytes this arena holds (its chunks' sizes).
    var reservedBytes: Int { chunks.reduce(0) { $0 + $1.size } }

    /// `byteCount` bytes aligned to `alignment`, valid until the end of frame `frame`.
    /// Returns the memory and how many bytes of new chunk memory were reserved.
    mutating func allocate(byteCount: Int, alignment: Int, frame number: UInt64) -> (UnsafeMutableRawPointer, Int) {
        if frame != number {
            frame = number
            current = 0
            cursor = 0
        }
        while current < chunks.count {
            // Aligned as an address (a chunk starts on a page, which a larger alignment exceeds).
            let base = UInt(bitPattern: chunks[current].memory)
            let start = Int((base + UInt(cursor)).roundedUp(to: UInt(alignment)) - base)
            if start + byteCount <= chunks[current].size {
                cursor = start + byteCount
                return (chunks[current].memory + start, 0)
            }
            current += 1
            cursor = 0
        }
        // Fresh pages from mmap (page-aligned, untouched, so a NUMA binding takes effect); a
        // larger alignment is met by mapping that much more and starting at the aligned address.
        let page = NumaMemory.pageSize
        let extra = alignment > page ? alignment : 0
        let size = Swift.max(Self.chunkSize, (byteCount + extra + page - 1) / page * page)
        let mapped = PageMemory.map(size, for: "frame memory")
        bindChunk?(mapped, size)
        chunks.append((mapped, size))
        current = chunks.count - 1
        let start = extra == 0 ? 0 : Int(UInt(bitPattern: mapped).roundedUp(to: UInt(alignment)) - UInt(bitPattern: mapped))
        cursor = start + byteCount
        return (mapped + start, size)
    }

    /// Fills the memory used in frame `number` with a recognizable pattern (debug builds), so a
    /// use after the frame ended reads garbage loudly instead of stale values.
    func poison(frame number: UInt64) {
        guard frame == number else { return }
        for index in 0...Swift.min(current, chunks.count - 1) where !chunks.isEmpty {
            let used = index < current ? chunks[index].size : cursor
            chunks[index].memory.initializeMemory(as: UInt8.self, repeating: 0xDD, count: used)
        }
    }

    func releaseAll() {
        for chunk in chunks { PageMemory.unmap(chunk.memory, chunk.size) }
    }
}

extension UInt {
    func roundedUp(to alignment: UInt) -> UInt { (self + alignment - 1) & ~(alignment - 1) }
}

extension JobSystem {
    /// Runs `body` as one frame: memory from `JobContext.frameAllocate` and
    /// `frameAllocate(_:count:)` during the frame stays valid until `body` returns.
    ///
    /// For game-style loops: submit the frame's jobs inside `body` and wait for them before it
    /// returns. Debug builds fill the frame's memory with 0xDD when it ends.
    ///
    /// Blocks only as long as `body` does.
    /// - Precondition: no frame is open, and every job that allocates frame memory has finished
    ///   before `body` returns (wait for their counters).
    public func frame<Result>(_ body: () throws -> Result) rethrows -> Result {
        beginFrame()
        defer { endFrame() }
        return try body()
    }

    /// Opens a frame; see `frame(_:)`. Prefer `frame(_:)`, which cannot forget to close it.
    public func beginFrame() {
        scheduler.frames.begin()
    }

    /// Closes the frame opened by `beginFrame()`: its memory may be reused by the next frame.
    /// - Precondition: a frame is open, and its allocating jobs have finished.
    public func endFrame() {
        scheduler.frames.end(scheduler)
    }

    /// Memory for `count` values of `T` on the calling thread (which must be the one that opened
    /// the frame), valid until the frame ends. Uninitialized; `T` is bitwise-copyable, so
    /// nothing needs deinitializing. Jobs use `JobContext.frameAllocate(_:count:)` instead.
    ///
    /// - Complexity: O(1) amortized; no lock.
    public func frameAllocate<T: BitwiseCopyable>(_ type: T.Type, count: Int) -> UnsafeMutableBufferPointer<T> {
        scheduler.frames.allocateOnOwner(type, count: count)
    }
}

extension JobContext {
    /// Memory for `count` values of `T` from this worker's frame allocator, valid until the
    /// current frame ends (`JobSystem.frame(_:)`). Uninitialized; no lock, no heap allocation
    /// once the worker's chunks have grown to the frame's needs.
    ///
    /// Never blocks or switches fibers.
    /// - Precondition: a frame is open; `count >= 0`.
    /// - Complexity: O(1) amortized.
    public func frameAllocate<T: BitwiseCopyable>(_ type: T.Type, count: Int) -> UnsafeMutableBufferPointer<T> {
        let worker = state.pointee.worker
        let frames = worker.pointee.scheduler.frames
        let number = frames.openFrame(caller: "JobContext.frameAllocate")
        require(count >= 0, "frameAllocate(count: \(count)): the count must not be negative")
        let local = worker.pointee.local
        let (memory, reserved) = local.pointee.frame.allocate(
            byteCount: MemoryLayout<T>.stride * count, alignment: MemoryLayout<T>.alignment, frame: number)
        if reserved > 0 { worker.count(.frameBytes, UInt64(reserved)) }
        return UnsafeMutableBufferPointer(start: memory.bindMemory(to: T.self, capacity: count), count: count)
    }
}

/// The frame state of one job system: the open frame's number and the opening thread's arena.
final class FrameState: @unchecked Sendable {
    // SAFETY: `ownerArena` and `ownerThread` are only used by the thread that opened the frame
    // (checked); `number` is atomic.
    /// Odd while a frame is open; each begin and end adds one.
    private let number = Atomic<UInt64>(0)
    private var ownerArena = FrameArena()
    private var ownerThread: pid_t = 0

    deinit { ownerArena.releaseAll() }

    func begin() {
        let old = number.load(ordering: .acquiring)
        require(old & 1 == 0, "JobSystem.beginFrame(): a frame is already open; end it first (frames do not nest)")
        ownerThread = CurrentThread.id
        number.store(old + 1, ordering: .releasing)
    }

    func end(_ scheduler: Scheduler) {
        let open = number.load(ordering: .acquiring)
        require(open & 1 == 1, "JobSystem.endFrame(): no frame is open; call beginFrame() first")
        require(ownerThread == CurrentThread.id, "JobSystem.endFrame() must be called on the thread that began the frame")
        #if DEBUG
        for index in 0..<scheduler.workerCount {
            // Owner-only state read from the frame's thread: allowed here, because the frame's
            // jobs have all finished (docs/scheduler.md, "Frame memory").
            scheduler.workers[index].pointee.local.pointee.frame.poison(frame: open)
        }
        ownerArena.poison(frame: open)
        #endif
        number.store(open + 1, ordering: .releasing)
    }

    /// The open frame's number, or a precondition failure naming `caller`.
    @inline(__always)
    func openFrame(caller: StaticString) -> UInt64 {
        let value = number.load(ordering: .acquiring)
        require(value & 1 == 1, "\(caller) called outside a frame: open one with JobSystem.frame { } or beginFrame()")
        return value
    }

    func allocateOnOwner<T: BitwiseCopyable>(_ type: T.Type, count: Int) -> UnsafeMutableBufferPointer<T> {
        let value = openFrame(caller: "JobSystem.frameAllocate")
        require(ownerThread == CurrentThread.id,
                     "JobSystem.frameAllocate called on a thread other than the one that began the frame; inside a job use JobContext.frameAllocate")
        require(count >= 0, "frameAllocate(count: \(count)): the count must not be negative")
        let (memory, _) = ownerArena.allocate(
            byteCount: MemoryLayout<T>.stride * count, alignment: MemoryLayout<T>.alignment, frame: value)
        return UnsafeMutableBufferPointer(start: memory.bindMemory(to: T.self, capacity: count), count: count)
    }
}
