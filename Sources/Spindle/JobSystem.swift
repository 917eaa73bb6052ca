#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A pool of worker threads, pinned to CPUs, that run jobs on fibers.
///
/// ```swift
/// let jobs = try JobSystem()                            // one worker per allowed CPU
/// let done = jobs.run { ctx in
///     let (a, b) = ctx.join({ _ in left() }, { _ in right() })
///     let parts = ctx.run(count: 64) { i, ctx in work(i) }
///     ctx.wait(for: parts)                               // parks this fiber, not the thread
/// }
/// jobs.wait(for: done)                                   // blocks this thread on a futex
/// jobs.shutdown()
/// ```
///
/// Each worker has a Chase–Lev deque per priority; work submitted from other threads goes
/// through an injection queue per priority. A job that waits parks its fiber on a counter and its
/// worker continues with other jobs on another pooled fiber. docs/scheduler.md has the design,
/// README.md the rules for code running in jobs.
///
/// Thread-safety: all members are thread-safe. Members that block say so.
public final class JobSystem: @unchecked Sendable {
    // SAFETY: immutable after init except `shutdownHandlers` (only under `shutdownLock`) and
    // `openPipelineRuns` (only under `pipelineRunsLock`); the scheduler is thread-safe.
    @usableFromInline let scheduler: Scheduler

    /// The configuration the system was created with.
    public let configuration: Configuration

    /// `onShutdown` handlers not yet called; nil once they ran. Only under `shutdownLock`.
    private var shutdownHandlers: [@Sendable (Metrics) -> Void]? = []
    private let shutdownLock = Lock()
    /// Pipeline runs started on this system and not finished (under `pipelineRunsLock`), so
    /// that `shutdown()` can cancel the ones still open.
    private var openPipelineRuns: [ObjectIdentifier: PipelineRunState] = [:]
    private let pipelineRunsLock = Lock()

    func pipelineRunStarted(_ run: PipelineRunState) {
        pipelineRunsLock.withLock { openPipelineRuns[ObjectIdentifier(run)] = run }
    }

    func pipelineRunFinished(_ run: PipelineRunState) {
        _ = pipelineRunsLock.withLock { openPipelineRuns.removeValue(forKey: ObjectIdentifier(run)) }
    }

    /// Starts the workers.
    ///
    /// Blocks until every worker thread runs, is pinned and named.
    /// - Throws: `JobSystem.ConfigurationError` when the configuration cannot work (the message
    ///   says what to change); `SystemError` or `ThreadNameError` when the kernel refuses a
    ///   thread, a pin or a name.
    public convenience init(configuration: Configuration = Configuration()) throws {
        try self.init(configuration: configuration, placement: .kernel)
    }

    /// `init(configuration:)` with the memory-placement mechanism injectable (tests run the
    /// NUMA policies of a fake topology with a recorder instead of the kernel).
    init(configuration: Configuration, placement: MemoryPlacement) throws {
        let allowed = try CPUSet.allowed()
        let plan = try WorkerPlan(configuration, allowed: allowed)
        self.configuration = configuration
        scheduler = try Scheduler(configuration: configuration, plan: plan, placement: placement)
        try scheduler.start(plan: plan)
    }

    /// Shuts down like `shutdown()`. When the last reference is dropped inside one of this
    /// system's own jobs, the workers finish the submitted work and exit on their own (a thread
    /// cannot wait for itself).
    deinit {
        scheduler.shutdownAndJoin(join: scheduler.currentWorker() == nil)
        runShutdownHandlers()
    }

    /// The number of worker threads.
    public var workerCount: Int { scheduler.workerCount }

    /// The NUMA topology the system follows (docs/numa.md): from libnuma, from the
    /// configuration, or one node with the reason in `source`.
    public var topology: NumaTopology { scheduler.topology }

    /// The CPU worker `index` is pinned to, or nil when `pinning` is `.none`.
    /// - Precondition: `0 <= index < workerCount`.
    public func cpu(ofWorker index: Int) -> Int? {
        require(index >= 0 && index < workerCount,
                "JobSystem.cpu(ofWorker: \(index)): workers are numbered 0..<\(workerCount)")
        return scheduler.workerCPUs[index]
    }

    /// The node (an index into `topology.nodes`) of worker `index`: the node of its CPU.
    /// - Precondition: `0 <= index < workerCount`.
    public func node(ofWorker index: Int) -> Int {
        require(index >= 0 && index < workerCount,
                "JobSystem.node(ofWorker: \(index)): workers are numbered 0..<\(workerCount)")
        return scheduler.workerNodes[index]
    }

    // MARK: Submitting

    /// Submits `body` as a job and returns a new counter that reaches zero when it is done.
    ///
    /// From a thread outside the system the job goes to the injection queue of its priority;
    /// from inside one of this system's jobs it goes to the running worker's deque.
    ///
    /// - Parameters:
    ///   - priority: where the job queues (see `Priority`).
    ///   - affinity: whether the job may continue on another worker after it waits.
    ///   - file, line: where the job is submitted, named by stall reports in debug builds
    ///     (`JobSystem.StallReport`); leave them at their defaults.
    /// - Precondition: from outside the system, `shutdown()` has not been called (jobs of this
    ///   system may still submit while it drains). A call that races `shutdown()` either returns
    ///   normally, and then the job runs, or traps; `tryRun` returns false instead of trapping
    ///   (docs/sleep.md, "Submissions and shutdown").
    /// - Complexity: O(1). One heap allocation (the counter); `run(counter:priority:affinity:file:line:_:)`
    ///   has none.
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
    /// Never blocks.
    ///
    /// - Parameters: as for `run(priority:affinity:file:line:_:)`.
    /// - Precondition: as for `run(priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); no heap allocation (records come from per-thread frame allocators;
    ///   Swift allocates a closure context only when a closure value that captures is formed).
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
    func submitRun(counter: JobCounter, priority: Priority, affinity: JobAffinity, api: StaticString = "JobSystem.run",
                   site: SubmissionSite, _ body: consuming @escaping @Sendable (JobContext) -> Void) {
        counter.increment()
        scheduler.submitRun(priority: priority, affinity: affinity, counter: counter, api: api, site: site, consume body)
    }

    /// Submits `body` as `run(counter:priority:affinity:file:line:_:)` does, unless the system has shut
    /// down: then it returns false and leaves `counter` as it was, instead of trapping. For
    /// producers on other threads that may race `shutdown()`.
    ///
    /// `true` means the job will run. A submission that races `shutdown()` either runs (true) or
    /// is refused (false), never lost: docs/sleep.md, "Submissions and shutdown".
    ///
    /// Thread-safety: callable from any thread. Never blocks (a submission that meets the last
    /// worker deciding to terminate waits for that decision, a few queue reads).
    /// - Complexity: O(1); no heap allocation.
    @inlinable
    public func tryRun(
        counter: JobCounter, priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) -> Void
    ) -> Bool {
        trySubmitRun(counter: counter, priority: priority, affinity: affinity, site: submissionSite(file, line), body)
    }

    @usableFromInline
    func trySubmitRun(counter: JobCounter, priority: Priority, affinity: JobAffinity, site: SubmissionSite,
                      _ body: @escaping @Sendable (JobContext) -> Void) -> Bool {
        counter.increment()
        let accepted = scheduler.trySubmit(priority: priority) { record in
            Execution.initializeRun(record, body: body, counter: counter, priority: priority, affinity: affinity, site: site)
        }
        if !accepted { counter.decrement() }
        return accepted
    }

    /// `tryRun(counter:priority:affinity:_:)` with a new counter: the counter, or nil when the
    /// system has shut down.
    ///
    /// Thread-safety: callable from any thread. Never blocks.
    /// - Complexity: O(1). One heap allocation (the counter).
    @inlinable
    public func tryRun(
        priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) -> Void
    ) -> JobCounter? {
        let counter = JobCounter()
        return trySubmitRun(counter: counter, priority: priority, affinity: affinity, site: submissionSite(file, line), body) ? counter : nil
    }

    /// Submits a job that calls `body(argument, context)`, adding one to `counter` now and
    /// subtracting it when done. Never blocks.
    ///
    /// For jobs that differ only in an integer: form `body` once and pass the same value to every
    /// call, and no job allocates a closure context. See `JobContext.run(counter:priority:affinity:argument:file:line:_:)`.
    ///
    /// - Precondition: as for `run(priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); no heap allocation (records come from per-thread frame allocators).
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
                        api: StaticString = "JobSystem.run(counter:argument:)", site: SubmissionSite,
                        _ body: consuming @escaping @Sendable (Int, JobContext) -> Void) {
        counter.increment()
        scheduler.submitArgument(priority: priority, affinity: affinity, counter: counter, argument: argument,
                                 api: api, site: site, consume body)
    }

    /// Submits `count` jobs that run `body(index, context)` for every index in `0..<count`, and
    /// returns the counter that reaches zero when all are done.
    ///
    /// One record serves all indices: workers claim indices one at a time, and up to one worker
    /// per CPU joins in as the work spreads (docs/scheduler.md, "Many jobs, one body").
    ///
    /// - Precondition: `count >= 0`; as for `run(priority:affinity:counter:_:)`.
    /// - Complexity: O(1) to submit.
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
        require(count >= 0, "JobSystem.run(count: \(count)): the count must not be negative")
        let counter = counter ?? JobCounter()
        guard count > 0 else { return counter }
        counter.increment(by: count)
        let tickets = Swift.min(count, workerCount)
        scheduler.submit(priority: priority, size: MemoryLayout<CountRecord>.stride, api: "JobSystem.run(count:)") { memory in
            Execution.initializeCount(memory, count: count, tickets: tickets, body: body, counter: counter,
                                      priority: priority, affinity: affinity, site: site)
        }
        return counter
    }

    // MARK: Waiting

    /// Returns once `counter` has been zero at some instant after the call began.
    ///
    /// From a thread outside the system this blocks the thread on a futex (no spinning). From
    /// inside one of this system's jobs it parks the job's fiber like `JobContext.wait(for:)`.
    ///
    /// - Precondition: not called from a job of *another* job system (that would block one of its
    ///   workers; use that job's `JobContext.wait(for:)`), nor from async code running on a
    ///   worker through the task executor (use `await wait(for:)` there).
    @_disfavoredOverload // a `JobHandle` (a counter too) takes the overload that returns its value
    public func wait(for counter: JobCounter) {
        scheduler.requireMayBlock("JobSystem.wait(for:)")
        if counter.isComplete { return }
        if let worker = Scheduler.anyCurrentWorker() {
            require(worker.pointee.scheduler === scheduler,
                         "JobSystem.wait(for:) called from a job of another JobSystem: it would block that system's worker thread; use the JobContext.wait(for:) of the job you are in")
            JobContext(state: worker.local.pointee.running!).wait(for: counter)
            return
        }
        scheduler.waitOutside(for: counter)
    }

    // MARK: Stopping

    /// Runs every submitted job to completion (including jobs they submit), then stops and joins
    /// the worker threads. Idempotent; `deinit` does the same. Pipeline runs whose input is still
    /// open are cancelled first (their items in flight are discarded and counted in the report;
    /// later sends return false); runs already closed finish their items.
    ///
    /// Blocks the calling thread. If a job waits on a counter that nothing will complete,
    /// shutdown waits with it, and the stall is reported after
    /// `Configuration.stallReportAfter` (see `onStall(_:)`).
    /// - Precondition: not called from one of this system's own jobs (it would wait for itself).
    public func shutdown() {
        require(scheduler.currentWorker() == nil,
                     "JobSystem.shutdown() called from one of its own jobs: it would wait for itself; call it from outside the job system")
        // A run whose input is still open would wait for input forever: cancel it (its items in
        // flight are discarded and counted; later sends return false). Closed runs finish.
        for run in pipelineRunsLock.withLock({ Array(openPipelineRuns.values) }) where run.isSourceOpen {
            run.stop(failure: nil)
        }
        scheduler.shutdownAndJoin()
        runShutdownHandlers()
    }

    /// Whether `shutdown()` has been called (or the system was released).
    public var isShutDown: Bool { scheduler.shutdownRequested.load(ordering: .acquiring) }

    /// Calls `handler` once, with the final `metrics()`, after the workers have stopped: from
    /// `shutdown()` or `deinit`, on the thread that stopped the system. If the system has already
    /// stopped, calls it at once on the calling thread. (When the last reference is dropped inside
    /// one of the system's own jobs, the handlers run there while the workers finish on their own.)
    /// For logging and metrics integrations (SpindleObservability).
    ///
    /// Thread-safe. `handler` must not call `shutdown()` or submit work.
    public func onShutdown(_ handler: @escaping @Sendable (Metrics) -> Void) {
        let added = shutdownLock.withLock { () -> Bool in
            guard shutdownHandlers != nil else { return false }
            shutdownHandlers!.append(handler)
            return true
        }
        if !added { handler(metrics()) }
    }

    private func runShutdownHandlers() {
        let handlers = shutdownLock.withLock { () -> [@Sendable (Metrics) -> Void] in
            defer { shutdownHandlers = nil }
            return shutdownHandlers ?? []
        }
        guard !handlers.isEmpty else { return }
        let final = metrics()
        for handler in handlers { handler(final) }
    }
}
