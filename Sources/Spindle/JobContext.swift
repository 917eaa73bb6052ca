import Synchronization

/// What a running job uses to spawn, wait and join: handed to every job body.
///
/// A context belongs to the job it was handed to and is valid only while that job runs, on
/// whatever worker runs it (after a wait the job may continue on another worker, and the context
/// follows it). It is not `Sendable`, so Swift rejects capturing it in another job's closure:
/// each job and each `join` half gets a context of its own.
///
/// Members that may switch fibers say so; none blocks the worker thread.
public struct JobContext {
    @usableFromInline let state: UnsafeMutablePointer<FiberState>

    @inlinable
    init(state: UnsafeMutablePointer<FiberState>) {
        self.state = state
    }

    @usableFromInline var scheduler: Scheduler { state.pointee.worker.pointee.scheduler }

    /// The context of the job the calling thread runs, if it is a worker (of any system) running
    /// a job; nil on other threads and in code a worker runs that must not park.
    static func calling() -> JobContext? {
        Scheduler.anyCurrentWorker()?.local.pointee.running.map { JobContext(state: $0) }
    }

    /// The index of the worker running this job now (it may change after a wait).
    public var workerIndex: Int { state.pointee.worker.pointee.index }

    /// The priority of the running job.
    public var priority: Priority { state.pointee.priority }

    // MARK: Spawning

    /// Submits `body` as a job on this worker's deque (where idle workers may steal it) and
    /// returns a new counter that reaches zero when it is done.
    ///
    /// - Parameters: as for `JobSystem.run(priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); never blocks or switches fibers. One heap allocation (the counter);
    ///   `run(counter:priority:affinity:file:line:_:)` has none.
    @discardableResult @inlinable
    public func run(
        priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: consuming @escaping @Sendable (JobContext) -> Void
    ) -> JobCounter {
        let counter = JobCounter()
        submitRun(counter: counter, priority: priority, affinity: affinity, site: submissionSite(file, line), consume body)
        return counter
    }

    /// Submits `body` as a job that adds one to `counter` now and subtracts it when done.
    ///
    /// - Complexity: O(1); never blocks or switches fibers; no heap allocation (the record comes
    ///   from the worker's frame allocator; Swift allocates a closure context only when a closure
    ///   value that captures is formed).
    @inlinable
    public func run(
        counter: JobCounter, priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: consuming @escaping @Sendable (JobContext) -> Void
    ) {
        submitRun(counter: counter, priority: priority, affinity: affinity, site: submissionSite(file, line), consume body)
    }

    // The public submitting calls are inlinable forwarders to these, so that `file` and `line`
    // cost nothing in release builds (`SubmissionSite`).

    @usableFromInline
    func submitRun(counter: JobCounter, priority: Priority, affinity: JobAffinity, site: SubmissionSite,
                   _ body: consuming @escaping @Sendable (JobContext) -> Void) {
        let worker = state.pointee.worker
        // A completion of this counter that this worker has not subtracted yet pays for the new
        // job's addition: the count stays the same and neither is applied (docs/scheduler.md,
        // "Deferred decrements").
        if !worker.cancelDeferredDecrement(of: counter) { counter.increment() }
        let record = worker.allocateRecord(size: MemoryLayout<RunRecord>.stride)
        // The body moves into the record (no retain here, no release by the caller).
        Execution.initializeRun(record, body: consume body, counter: counter, priority: priority, affinity: affinity, site: site)
        worker.post(Token.record(record), priority: priority)
    }

    /// Submits a job that calls `body(argument, context)`, adding one to `counter` now and
    /// subtracting it when done.
    ///
    /// For jobs that differ only in an integer (an index, a hop number, a handle): form `body`
    /// once and pass the same value to every call, and no job allocates a closure context (a
    /// closure that captures the integer would be a new context per job). The integer lives in
    /// the job's record.
    ///
    /// ```swift
    /// let visit: @Sendable (Int, JobContext) -> Void = { node, ctx in … }
    /// for node in children { ctx.run(counter: done, argument: node, visit) }
    /// ```
    ///
    /// - Parameters: as for `run(counter:priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); never blocks or switches fibers; no heap allocation.
    @inlinable
    public func run(
        counter: JobCounter, priority: Priority = .normal, affinity: JobAffinity = .migratable,
        argument: Int, file: StaticString = #fileID, line: UInt = #line,
        _ body: consuming @escaping @Sendable (Int, JobContext) -> Void
    ) {
        submitArgument(counter: counter, priority: priority, affinity: affinity, argument: argument,
                       site: submissionSite(file, line), consume body)
    }

    @usableFromInline
    func submitArgument(counter: JobCounter, priority: Priority, affinity: JobAffinity, argument: Int,
                        site: SubmissionSite, _ body: consuming @escaping @Sendable (Int, JobContext) -> Void) {
        let worker = state.pointee.worker
        if !worker.cancelDeferredDecrement(of: counter) { counter.increment() }
        let record = worker.allocateRecord(size: MemoryLayout<ArgumentRecord>.stride)
        Execution.initializeArgument(record, argument: argument, body: consume body, counter: counter,
                                     priority: priority, affinity: affinity, site: site)
        worker.post(Token.record(record), priority: priority)
    }

    /// Submits `count` jobs running `body(index, context)` for `0..<count`, with one counter.
    /// See `JobSystem.run(count:priority:affinity:counter:file:line:_:)`.
    @discardableResult @inlinable
    public func run(
        count: Int, priority: Priority = .normal, affinity: JobAffinity = .migratable, counter: JobCounter? = nil,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (Int, JobContext) -> Void
    ) -> JobCounter {
        submitCount(count: count, priority: priority, affinity: affinity, counter: counter, site: submissionSite(file, line), body)
    }

    @usableFromInline
    func submitCount(count: Int, priority: Priority, affinity: JobAffinity, counter: JobCounter?, site: SubmissionSite,
                     _ body: @escaping @Sendable (Int, JobContext) -> Void) -> JobCounter {
        require(count >= 0, "JobContext.run(count: \(count)): the count must not be negative")
        let counter = counter ?? JobCounter()
        guard count > 0 else { return counter }
        counter.increment(by: count)
        let worker = state.pointee.worker
        let tickets = Swift.min(count, worker.pointee.workerCount)
        worker.submit(priority: priority, size: MemoryLayout<CountRecord>.stride) { record in
            Execution.initializeCount(record, count: count, tickets: tickets, body: body,
                                      counter: counter, priority: priority, affinity: affinity, site: site)
        }
        return counter
    }

    // MARK: Waiting

    /// Returns once `counter` has been zero at some instant after the call began. Until then
    /// this job's fiber is parked on the counter and the worker runs other jobs; the job may
    /// continue on another worker unless it was submitted with `affinity: .pinned`.
    ///
    /// May switch fibers. Never blocks the thread. `file` and `line` name this wait in a stall
    /// report (`JobSystem.StallReport`); leave them at their defaults.
    /// - Precondition: `counter` is not the counter of the running job itself (it cannot reach
    ///   zero before this job returns).
    /// - Complexity: O(1) when the counter is already zero; otherwise one park and one resume.
    @_disfavoredOverload // a `JobHandle` (a counter too) takes the overload that returns its value
    public func wait(for counter: JobCounter, file: StaticString = #fileID, line: UInt = #line) {
        // This worker's deferred completions may be the ones this wait needs.
        state.pointee.worker.flushDecrements()
        // Acquiring: pairs with the releasing decrement, so the counted jobs' writes are visible.
        guard let observed = counter.observeForWait() else { return }
        let identity = Unmanaged.passUnretained(counter)
        require(state.pointee.currentCounter != identity.toOpaque(),
                     "JobContext.wait(for:) on the running job's own counter: it cannot reach zero before this job returns, so the wait would never end; wait on the counters of the jobs you spawned instead")
        state.pointee.waitedCounter = identity.toOpaque()
        state.pointee.waitSite = SourceSite(file: file, line: line)
        // A wake-up of an earlier round of a reused counter parks the fiber again.
        repeat {
            scheduler.park(state, .parkOnCounter(state, identity, observed))
        } while !counter.waitIsOver(observed: observed)
    }

    // MARK: Fork-join

    /// Runs `left` and `right`, potentially in parallel, and returns both results.
    ///
    /// `right` is offered to other workers (on this worker's deque, at the running job's
    /// priority) while this job runs `left`; if nobody took it, this job runs it too, so an
    /// unstolen join costs a deque push and pop and no heap allocation (the record lives on this
    /// fiber's stack). If it was stolen and has not finished, this fiber parks until it has.
    ///
    /// May switch fibers (only when `right` was stolen and is still running).
    /// - Complexity: O(1) overhead beyond the two closures.
    @inlinable
    public func join<Left, Right: Sendable>(
        _ left: (JobContext) -> Left, _ right: @Sendable (JobContext) -> Right
    ) -> (Left, Right) {
        // The record and the right result live on this stack, and so do the contexts of the
        // non-escaping closures below: no heap allocation. This function is inlined into the
        // caller, so `left` and the inline run of `right` are direct calls; only a thief calls
        // `right` through the recorded thunk (docs/scheduler.md, "Join").
        withUnsafeTemporaryAllocation(of: Right.self, capacity: 1) { rightSlot in
            let rightResult = rightSlot.baseAddress!
            return withUnsafeTemporaryAllocation(byteCount: JoinRecord.size, alignment: 16) { buffer in
                let record = buffer.baseAddress!
                return _forked(record, thief: { state in
                    rightResult.initialize(to: right(JobContext(state: state.assumingMemoryBound(to: FiberState.self))))
                }) {
                    let leftValue = left(self)
                    if _joinFinish(record) {
                        rightResult.initialize(to: right(self))
                    }
                    return (leftValue, rightResult.move())
                }
            }
        }
    }

    /// Offers the join record at `record`, whose thief half is `thief`, to other workers, then
    /// runs `body` (which must take the record back or wait for it with `_joinFinish` before it
    /// returns). `thief` is a parameter of this call, so its context outlives `body`.
    @inlinable @inline(__always)
    func _forked<Result>(
        _ record: UnsafeMutableRawPointer, thief: (UnsafeMutableRawPointer) -> Void, _ body: () -> Result
    ) -> Result {
        // SAFETY: `thief` outlives every use of its recorded words: a thief finishes calling it
        // before it releases the latch, and `body` does not return before the latch is released.
        _spindleClosureWords(UnsafeMutableRawPointer(JoinRecord.block(record)[JoinRecord.thunk]), thief)
        _joinPost(record)
        return body()
    }

    /// Fills the header and the latch of the join record at `record` (its thunk words are
    /// already written) and posts it on this worker's deque at the running job's priority.
    @usableFromInline
    func _joinPost(_ record: UnsafeMutableRawPointer) {
        record.bindMemory(to: JobHeader.self, capacity: 1).initialize(to: JobHeader(
            for: JoinRecord.self, counter: nil, priority: state.pointee.priority, pinned: state.pointee.pinned))
        JoinRecord.block(record).initialize(JoinRecord.latch, to: Atomic(JoinLatch.pending))
        state.pointee.worker.post(Token.record(record), priority: state.pointee.priority)
    }

    /// Takes the right half back if nobody stole it (returns true: run it inline); otherwise
    /// waits until the thief has finished it (returns false).
    @usableFromInline
    func _joinFinish(_ record: UnsafeMutableRawPointer) -> Bool {
        takeBackOrPark(record, latch: JoinRecord.block(record)[JoinRecord.latch])
    }

    /// Waits for the job of the `spawnUnique` record at `record` to complete its latch, helping
    /// first: its own record, if nobody stole it, runs here, nested on this fiber
    /// (docs/scheduler.md, "Unique handles").
    @usableFromInline
    func _waitUnique(_ record: UnsafeMutableRawPointer) {
        if UniqueRecord.isDone(record) { return }
        if takeBackOrPark(record, latch: UniqueRecord.block(record)[UniqueRecord.latch]) {
            state.pointee.worker.observeBegin(record, fiber: state)
            Execution.executeUnique(record, UnsafeMutableRawPointer(state))
            state.pointee.worker.observe(.end, fiber: state)
        }
    }

    /// The end of a join or of a wait for a unique handle: pops this worker's deque at the
    /// running job's priority until the record at `record` comes back (returns true: the caller
    /// runs it) or `latch` is done (false), running other jobs' records it pops on the way;
    /// otherwise parks on `latch` until it is done (false).
    func takeBackOrPark(_ record: UnsafeMutableRawPointer, latch: UnsafeMutablePointer<Atomic<UInt>>) -> Bool {
        let mine = Token.record(record)
        let priority = state.pointee.priority
        while true {
            // Acquiring: pairs with the thief's exchange; its result is then visible.
            if latch.pointee.load(ordering: .acquiring) == JoinLatch.done { return false }
            let worker = state.pointee.worker
            guard let token = worker.pop(priority) else { break }
            if token == mine { return true }
            if Token.isFiber(token) {
                // A ready fiber cannot run on top of this one: leave it to the loop.
                worker.post(token, priority: priority)
                break
            }
            let other = Token.recordPointer(token)
            if !JobHeader.of(other).kind.runsNested {
                // This kind runs only from the loop (a partial task: docs/async.md).
                worker.post(token, priority: priority)
                break
            }
            // A job spawned by `left` that nobody took: run it here, as the loop would.
            worker.observeBegin(other, fiber: state)
            other.load(as: ExecuteFunction.self)(other, UnsafeMutableRawPointer(state))
            state.pointee.worker.observe(.end, fiber: state)
        }
        scheduler.park(state, .parkOnLatch(state, latch))
        return false
    }
}

/// Records the two words of a Swift closure at `out` (CSpindle/closure.c).
@usableFromInline
@_silgen_name("spindle_closure_words")
func _spindleClosureWords(_ out: UnsafeMutableRawPointer, _ body: (UnsafeMutableRawPointer) -> Void)

@available(*, unavailable, message: "a JobContext belongs to one running job; each job receives its own")
extension JobContext: Sendable {}
