import CSpindle
import Synchronization

// The record of `spawnUnique`: the job's body, a latch and the job's outcome in one record, so
// that a job returning a value needs no allocation of its own. docs/scheduler.md, "Unique
// handles: results in the job record".

/// The layout of a `spawnUnique` record and the protocol of its latch. The generic parts (the
/// body's type, the outcome's) are filled and read by inlinable code specialized where
/// `spawnUnique` is called (`UniqueJobHandle.swift`); this part knows only offsets and words.
///
/// | bytes | slot |
/// |---|---|
/// | 0–15 | `JobHeader` (no counter) |
/// | 16–31 | the runner: a closure `(Int, JobContext) -> Void` called with the record's address |
/// | 32–39 | the latch: `pending`, `done`, `detached` or a waiter's `WaitNode` address |
/// | 40–55 | the body (a closure's two words) |
/// | 56– | debug builds: the submission site |
/// | then | the outcome in place (up to `inlineOutcomeLimit` bytes), or a pointer to its box |
@usableFromInline
enum UniqueRecord: JobRecordKind {
    @inlinable static var runner: RawSlot<UnsafeMutableRawPointer> { RawSlot(byteOffset: 16) }
    @inlinable static var latch: RawSlot<Atomic<UInt>> { RawSlot(byteOffset: 32) }
    @inlinable static var body: RawSlot<UnsafeMutableRawPointer> { RawSlot(byteOffset: 40) }
    #if DEBUG
    @inlinable static var outcomeOffset: Int { 56 + MemoryLayout<SourceSite?>.stride }
    #else
    @inlinable static var outcomeOffset: Int { 56 }
    #endif
    /// Outcomes up to this many bytes (and 8-byte alignment) live in the record.
    @inlinable static var inlineOutcomeLimit: Int { 64 }

    @usableFromInline static let pending: UInt = 0
    @usableFromInline static let done: UInt = 1
    @usableFromInline static let detached: UInt = 2

    static var kind: JobKind { .spawn }
    static var execute: ExecuteFunction { Execution.executeUnique }

    /// The fixed slots of the record at `record` (the outcome is reached by `outcome`).
    @inlinable
    static func block(_ record: UnsafeMutableRawPointer) -> RawBlock {
        RawBlock(record, byteCount: outcomeOffset + MemoryLayout<UnsafeMutableRawPointer>.stride)
    }

    /// Whether an outcome of type `Outcome` is kept in the record (else in a box).
    @inlinable
    static func isInline<Outcome>(_: Outcome.Type) -> Bool {
        MemoryLayout<Outcome>.size <= inlineOutcomeLimit && MemoryLayout<Outcome>.alignment <= 8
    }

    /// The bytes the outcome's slot takes in a record: its size rounded to words, or one word.
    @inlinable
    static func outcomeBytes<Outcome>(_ type: Outcome.Type) -> Int {
        guard isInline(type) else { return MemoryLayout<UnsafeMutableRawPointer>.stride }
        return (MemoryLayout<Outcome>.size + 7) & ~7
    }

    /// Where the outcome of the record at `record` is (or is to be) stored: in the record, or in
    /// its box (which `runJob` allocates).
    @inlinable
    static func outcome<Outcome>(_ record: UnsafeMutableRawPointer, _ type: Outcome.Type) -> UnsafeMutablePointer<Outcome> {
        let slot = record + outcomeOffset
        if isInline(type) { return slot.assumingMemoryBound(to: Outcome.self) }
        return slot.load(as: UnsafeMutablePointer<Outcome>.self)
    }

    // MARK: Protocol (non-generic halves)

    /// The job's side, after it stored the outcome: marks the latch `done` and resumes the
    /// waiter if one is registered. Returns true if the handle was dropped first (`detached`):
    /// the caller then destroys the outcome and releases the record. Otherwise the record must
    /// not be touched after this call (the handle releases it).
    @usableFromInline
    static func complete(_ record: UnsafeMutableRawPointer) -> Bool {
        let latch = block(record)[latch]
        // Acquiring and releasing: publishes the outcome to the waiter; acquires the waiter's
        // node (or the dropped handle's last look).
        let old = latch.pointee.exchange(done, ordering: .acquiringAndReleasing)
        if old == detached { return true }
        if old != pending, let node = UnsafeMutablePointer<WaitNode>(bitPattern: old) {
            node.pointee.resume(UnsafeMutableRawPointer(node))
        }
        return false
    }

    /// The handle's side when it is dropped without a wait: returns true if the job is done (the
    /// caller then destroys the outcome and releases the record); otherwise the job will.
    @usableFromInline
    static func detach(_ record: UnsafeMutableRawPointer) -> Bool {
        // Acquiring and releasing: pairs with `complete`; the outcome is then visible.
        block(record)[latch].pointee.exchange(detached, ordering: .acquiringAndReleasing) == done
    }

    /// Whether the job is done (its outcome is visible to the caller). Never blocks.
    @usableFromInline
    static func isDone(_ record: UnsafeMutableRawPointer) -> Bool {
        // Acquiring: pairs with `complete`.
        block(record)[latch].pointee.load(ordering: .acquiring) == done
    }

    /// Returns the record to its chunk: the last of the job and the handle calls this. Any
    /// thread.
    @usableFromInline
    static func release(_ record: UnsafeMutableRawPointer) {
        Execution.markRetired(record)
        RecordChunk.release(record: record)
    }

    /// Blocks the calling thread (not a job) until the latch of `record` is `done`.
    @usableFromInline
    static func blockThread(_ record: UnsafeMutableRawPointer) {
        WaitList.blockThread(onLatch: block(record)[latch], pending: pending)
    }

    /// Suspends the calling task until the latch of `record` is `done`.
    @usableFromInline
    static func suspend(_ record: UnsafeMutableRawPointer) async {
        if isDone(record) { return }
        let latch = block(record)[latch]
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let waiter = UnsafeMutablePointer<AsyncLatchWaiter>.allocate(capacity: 1)
            waiter.initialize(to: AsyncLatchWaiter(node: WaitNode(resume: AsyncLatchWaiter.resume), continuation: continuation))
            // Sequentially consistent on success, like the other waiters; acquiring on failure
            // (`done`: the outcome is visible).
            let (installed, _) = latch.pointee.compareExchange(
                expected: pending, desired: UInt(bitPattern: waiter),
                successOrdering: .sequentiallyConsistent, failureOrdering: .acquiring)
            if !installed {
                waiter.deinitialize(count: 1)
                waiter.deallocate()
                continuation.resume()
            }
        }
    }

    #if DEBUG
    /// The submission site (debug builds).
    static func site(_ record: UnsafeMutableRawPointer) -> UnsafeMutablePointer<SourceSite?> {
        (record + 56).assumingMemoryBound(to: SourceSite?.self)
    }
    #endif
}

/// An `await` on a unique handle's latch: the node the job resumes, on the heap (the task's
/// stack does not outlive its suspension).
struct AsyncLatchWaiter {
    var node: WaitNode
    var continuation: UnsafeContinuation<Void, Never>

    static let resume: WaitNode.Resume = { raw in
        let waiter = raw.assumingMemoryBound(to: AsyncLatchWaiter.self)
        let continuation = waiter.pointee.continuation
        waiter.deinitialize(count: 1)
        waiter.deallocate()
        continuation.resume()
    }
}

extension Execution {
    /// Releases the context word of a `spawnUnique` record's runner (nil in optimized builds).
    @inline(__always)
    static func releaseRunnerContext(_ context: UnsafeMutableRawPointer?) {
        // SAFETY: a closure's context word is null or an owned reference to a native object.
        if let context { spindle_closure_context_release(context, 1) }
    }

    /// Fills the non-generic slots of a `spawnUnique` record (the body is already in place) and
    /// its header.
    static func initializeUnique(
        _ memory: UnsafeMutableRawPointer, runner: __owned @escaping @Sendable (Int, JobContext) -> Void,
        priority: Priority, affinity: JobAffinity, site: SubmissionSite
    ) {
        memory.bindMemory(to: JobHeader.self, capacity: 1).initialize(to: JobHeader(
            for: UniqueRecord.self, counter: nil, priority: priority, pinned: affinity == .pinned))
        let block = UniqueRecord.block(memory)
        block[UniqueRecord.runner].withMemoryRebound(to: ArgumentBody.self, capacity: 1) {
            $0.initialize(to: ArgumentBody(call: runner))
        }
        block.initialize(UniqueRecord.latch, to: Atomic(UniqueRecord.pending))
        #if DEBUG
        UniqueRecord.site(memory).initialize(to: site)
        #endif
    }

    /// Runs a `spawnUnique` job: its runner calls the body, stores the outcome and completes the
    /// latch, after which the record belongs to the handle (or, if the handle was dropped, the
    /// runner released it). Nothing of the record is read after the runner returns.
    static let executeUnique: ExecuteFunction = { memory, rawState in
        let state = rawState.assumingMemoryBound(to: FiberState.self)
        let header = JobHeader.of(memory)
        state.pointee.worker.flushDecrements()
        #if DEBUG
        let origin = JobOrigin(kind: .spawn, site: UniqueRecord.site(memory).pointee)
        #else
        let origin: Origin = ()
        #endif
        let saved = enter(state, counter: nil, header: header, origin: origin)
        // The runner is formed in `spawnUnique` from types only: in optimized code a plain
        // function with no context; unoptimized, a context holding the type metadata, which
        // this job owns and releases after the call. The record itself may be gone by then
        // (the runner completes the latch), so the context is read first; the trampoline reads
        // the function before the call.
        let runner = UniqueRecord.block(memory)[UniqueRecord.runner]
        let context = UnsafeMutableRawPointer(runner).load(fromByteOffset: MemoryLayout<Int>.stride, as: UnsafeMutableRawPointer?.self)
        spindle_closure_invoke_with_integer(runner, Int(bitPattern: memory), rawState)
        releaseRunnerContext(context)
        leave(state, saved)
        state.pointee.worker.count(.jobsRun)
    }
}
