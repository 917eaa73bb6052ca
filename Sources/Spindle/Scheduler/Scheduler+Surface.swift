import Synchronization

// The core's surface: what the public API and the layers above the core (loops, graphs,
// pipelines, async) use to put work somewhere and to wait. They reach the core through these
// members, Observer.swift (the trace) and the fiber operations of Worker/Fibers.swift (park,
// makeReady); the core reaches none of them (ARCHITECTURE.md, "The core's surface").
//
// One verb per meaning: `submit` queues a record from whatever thread calls (a worker's deque,
// or the injection queue); `post` is a worker queuing on its own deque with the wake check;
// `push` is a raw deque push without one; `park` suspends the running fiber.

extension Scheduler {
    /// The calling thread's worker if it is a worker of this system running a job.
    @inline(__always)
    func currentWorker() -> UnsafeMutablePointer<WorkerState>? {
        guard let worker = Scheduler.anyCurrentWorker(), worker.pointee.scheduler === self else { return nil }
        return worker
    }

    /// The calling thread's worker, of whichever system, while it runs a job (nil on other
    /// threads, and while a worker runs code that must not park: `lendingWorker`).
    @inline(__always)
    static func anyCurrentWorker() -> UnsafeMutablePointer<WorkerState>? {
        // An opaque call: read afresh every time, never cached across a fiber switch.
        workerKey.value?.assumingMemoryBound(to: WorkerState.self)
    }

    /// The fiber running the calling job, if the calling thread is a worker of this system.
    @inline(__always)
    func currentFiber() -> UnsafeMutablePointer<FiberState>? {
        currentWorker()?.local.pointee.running
    }

    // MARK: Lending a worker to code that must not park

    /// Process-wide: the worker whose thread runs code that may submit to its deque but must
    /// never park the fiber under it (Swift Concurrency's partial tasks, docs/async.md). While
    /// it is set, `workerKey` is cleared, so everything in that code treats the thread as one
    /// outside the system except where it queues work.
    static let lentWorkerKey = ThreadLocalKey("a worker running code that must not park")

    /// The worker lent to the calling thread's code (`lendingWorker`), of whichever system.
    @inline(__always)
    static func lentWorker() -> UnsafeMutablePointer<WorkerState>? {
        lentWorkerKey.value?.assumingMemoryBound(to: WorkerState.self)
    }

    /// Runs `body` on `worker`'s thread as code that must not park: submissions from it go on
    /// the worker's deque; waiting, parking and blocking calls treat the thread as a blocked
    /// outside thread would be treated, or trap (`requireMayBlock`). Owner only.
    @inline(__always)
    static func lendingWorker(_ worker: UnsafeMutablePointer<WorkerState>, _ body: () -> Void) {
        workerKey.set(nil)
        lentWorkerKey.set(UnsafeRawPointer(worker))
        body()
        lentWorkerKey.set(nil)
        workerKey.set(UnsafeRawPointer(worker))
    }

    /// Traps when the calling thread is a worker lent to code that must not park (an async
    /// task on the executor): a blocking wait there would hold a worker thread (and with it
    /// every fiber parked on it) until other workers finish the work, and with one worker never.
    func requireMayBlock(_ api: StaticString) {
        if Scheduler.lentWorker() != nil {
            misuse("\(api) blocks, but it was called from async code running on a Spindle worker (the JobSystem task executor): use `await jobs.wait(for:)`, `try await jobs.compute { … }`, or move the blocking work into a job")
        }
    }

    // MARK: Submitting

    /// Where the calling thread's records go: the deque of its worker (a job's, or one lent to
    /// code that must not park), or the injection queue (any other thread).
    enum Route {
        case worker(UnsafeMutablePointer<WorkerState>)
        case outside
    }

    @inline(__always)
    func route() -> Route {
        if let worker = currentWorker() { return .worker(worker) }
        if let worker = Scheduler.lentWorker(), worker.pointee.scheduler === self { return .worker(worker) }
        return .outside
    }

    /// Allocates a record of `size` bytes from the caller's arena, lets `initialize` fill it, and
    /// queues it (`route()`). Any thread; never blocks. From outside the system after
    /// `shutdown()`, or racing it and losing, it traps with a message naming `api`, the public
    /// call (docs/sleep.md, "Submissions and shutdown").
    @inline(__always)
    func submit(priority: Priority, size: Int = MemoryLayout<RunRecord>.stride, api: StaticString,
                _ initialize: (UnsafeMutableRawPointer) -> Void) {
        switch route() {
        case .worker(let worker):
            worker.submit(priority: priority, size: size, initialize)
        case .outside:
            let record = outsideRecord(size: size, api: api)
            initialize(record)
            if !pushFromOutside(record, priority: priority) { lostToShutdown(api) }
        }
    }

    /// `submit` that refuses instead of trapping: false when the system has shut down (nothing
    /// was queued, or what was queued will never run and `initialize`'s record is discarded at
    /// the system's end). True: the job will run.
    @inline(__always)
    func trySubmit(priority: Priority, size: Int = MemoryLayout<RunRecord>.stride,
                   _ initialize: (UnsafeMutableRawPointer) -> Void) -> Bool {
        switch route() {
        case .worker(let worker):
            worker.submit(priority: priority, size: size, initialize)
            return true
        case .outside:
            guard let record = allocateOutsideRecord(size: size) else { return false }
            initialize(record)
            return pushFromOutside(record, priority: priority)
        }
    }

    /// Submits a `run` job: `submit` for a body passed at +1, which moves into the record
    /// instead of being retained there and released by the caller (a retain and release pair
    /// per job, measured in W6; docs/scheduler.md, "Job records").
    @inline(__always)
    func submitRun(priority: Priority, affinity: JobAffinity, counter: JobCounter?, api: StaticString, site: SubmissionSite,
                   sharedAtOnce: Bool = false, _ body: consuming @escaping @Sendable (JobContext) -> Void) {
        switch route() {
        case .worker(let worker):
            // A job released by another one's completion (a dataflow task): not the next one
            // this worker runs, so thieves may take it at once (docs/scheduler.md, "Stealing").
            if sharedAtOnce { worker.markNextPushShared(priority) }
            let record = worker.allocateRecord(size: MemoryLayout<RunRecord>.stride)
            Execution.initializeRun(record, body: consume body, counter: counter, priority: priority, affinity: affinity, site: site)
            worker.post(Token.record(record), priority: priority)
        case .outside:
            let record = outsideRecord(size: MemoryLayout<RunRecord>.stride, api: api)
            Execution.initializeRun(record, body: consume body, counter: counter, priority: priority, affinity: affinity, site: site)
            if !pushFromOutside(record, priority: priority) { lostToShutdown(api) }
        }
    }

    /// Submits a `run(counter:argument:)` job, its body moved in like `submitRun`'s.
    @inline(__always)
    func submitArgument(priority: Priority, affinity: JobAffinity, counter: JobCounter?, argument: Int,
                        api: StaticString, site: SubmissionSite, _ body: consuming @escaping @Sendable (Int, JobContext) -> Void) {
        switch route() {
        case .worker(let worker):
            let record = worker.allocateRecord(size: MemoryLayout<ArgumentRecord>.stride)
            Execution.initializeArgument(record, argument: argument, body: consume body, counter: counter,
                                         priority: priority, affinity: affinity, site: site)
            worker.post(Token.record(record), priority: priority)
        case .outside:
            let record = outsideRecord(size: MemoryLayout<ArgumentRecord>.stride, api: api)
            Execution.initializeArgument(record, argument: argument, body: consume body, counter: counter,
                                         priority: priority, affinity: affinity, site: site)
            if !pushFromOutside(record, priority: priority) { lostToShutdown(api) }
        }
    }

    /// Submits a `spawnUnique` job: a record of `size` bytes whose body `initialize` writes (the
    /// generic part, specialized at the call) and whose runner and header this fills. Returns
    /// the record, which the handle owns with the job (docs/scheduler.md, "Unique handles").
    @usableFromInline
    func submitUnique(priority: Priority, affinity: JobAffinity, size: Int, api: StaticString, site: SubmissionSite,
                      runner: __owned @escaping @Sendable (Int, JobContext) -> Void,
                      initialize: (UnsafeMutableRawPointer) -> Void) -> UnsafeMutableRawPointer {
        switch route() {
        case .worker(let worker):
            let record = worker.allocateRecord(size: size)
            initialize(record)
            Execution.initializeUnique(record, runner: runner, priority: priority, affinity: affinity, site: site)
            worker.post(Token.record(record), priority: priority)
            return record
        case .outside:
            let record = outsideRecord(size: size, api: api)
            initialize(record)
            Execution.initializeUnique(record, runner: runner, priority: priority, affinity: affinity, site: site)
            if !pushFromOutside(record, priority: priority) { lostToShutdown(api) }
            return record
        }
    }

    /// `JobSystem.wait(for:)` of a unique handle whose record is `record`: from a job of this
    /// system, `JobContext`'s wait; from another thread, blocks it on the record's latch.
    @usableFromInline
    func waitUnique(_ record: UnsafeMutableRawPointer, api: StaticString) {
        requireMayBlock(api)
        if UniqueRecord.isDone(record) { return }
        if let worker = Scheduler.anyCurrentWorker() {
            require(worker.pointee.scheduler === self,
                    "\(api) called from a job of another JobSystem: it would block that system's worker thread; use the JobContext.wait(for:) of the job you are in")
            JobContext(state: worker.local.pointee.running!)._waitUnique(record)
            return
        }
        // As in `waitOutside`: this thread frees its CPU for a sleeper that may help.
        if anyQueuedWork() { sleep.wakeOne(self, callerBlocks: true) }
        UniqueRecord.blockThread(record)
    }

    /// Submits a job that only workers of node `node` (an index into `topology.nodes`) start,
    /// and wakes one of them if they all sleep. With one node: an ordinary submission.
    func submit(toNode node: Int, priority: Priority, size: Int = MemoryLayout<RunRecord>.stride, api: StaticString,
                _ initialize: (UnsafeMutableRawPointer) -> Void) {
        // One node, or a node without workers (fewer workers than nodes): anyone may take it.
        guard multiNode, !nodeWorkers[node].isEmpty else { return submit(priority: priority, size: size, api: api, initialize) }
        let worker = currentWorker()
        let record = worker?.allocateLinkedRecord(size: size) ?? outsideRecord(size: size, api: api)
        initialize(record)
        // The push's sequentially consistent exchange orders it before the read of the sleeping
        // mask; no fence (docs/sleep.md, "Posting work").
        nodeQueueRefs[node]._withUnsafeGuaranteedRef { $0.push(record) }
        sleep.wakeOne(among: nodeWorkers[node], self)
        if worker == nil && !outsidePushSurvived(record) { lostToShutdown(api) }
    }

    /// Memory for a job record submitted from a thread outside the system (its submitter
    /// arena, chunks of node 0), with the link word in front of it that the injection queue
    /// uses; nil once `shutdown()` was called.
    @inline(__always)
    func allocateOutsideRecord(size: Int) -> UnsafeMutableRawPointer? {
        guard !shutdownRequested.load(ordering: .relaxed) else { return nil }
        return submitter().pointee.arena.allocateLinked(size: size, pool: Unmanaged.passUnretained(chunkPools[0]))
    }

    /// Queues an outside record on the injection queue of `priority` and runs the wake check.
    /// Returns false if the system terminated without seeing it (it raced `shutdown()`; the
    /// record stays queued and is discarded at the system's end): "Submissions and shutdown",
    /// docs/sleep.md.
    @inline(__always)
    func pushFromOutside(_ record: UnsafeMutableRawPointer, priority: Priority) -> Bool {
        injectionRefs[priority.index]._withUnsafeGuaranteedRef { $0.push(record) }
        sleep.workPublished(self)
        return outsidePushSurvived(record)
    }

    /// The submitter's half of "Submissions and shutdown" (docs/sleep.md), after it pushed
    /// `record` (a sequentially consistent exchange): while no termination is being decided, the
    /// job will run (a terminator that starts later sees the push, or a worker took it). While
    /// one is, wait for the verdict: `closing` coming down means the system goes on; if it
    /// terminated, the job ran exactly when a worker took the record.
    @inline(__always)
    func outsidePushSurvived(_ record: UnsafeMutableRawPointer) -> Bool {
        // Sequentially consistent: the load side of the Dekker pair with the terminator's
        // store of `closing` and its last look.
        guard closing.load(ordering: .sequentiallyConsistent) else { return true }
        return awaitClosingVerdict(record)
    }

    @inline(never)
    private func awaitClosingVerdict(_ record: UnsafeMutableRawPointer) -> Bool {
        while closing.load(ordering: .sequentiallyConsistent) {
            // Acquiring: the terminator set `terminated` after every worker had gone to sleep,
            // so a worker's mark on the record is visible here.
            if terminated.load(ordering: .acquiring) {
                return JobHeader.of(record).word & JobHeader.takenBit != 0
            }
            yieldCPU()
        }
        return true
    }

    /// `allocateOutsideRecord` that traps after shutdown, naming `api`.
    @inline(__always)
    private func outsideRecord(size: Int, api: StaticString) -> UnsafeMutableRawPointer {
        guard let record = allocateOutsideRecord(size: size) else { refuseAfterShutdown(api) }
        return record
    }

    @inline(never)
    private func refuseAfterShutdown(_ api: StaticString) -> Never {
        misuse("\(api) called after shutdown(): the system no longer accepts work from outside its jobs; submit before shutting down, or use tryRun, which returns false instead")
    }

    @inline(never)
    private func lostToShutdown(_ api: StaticString) -> Never {
        misuse("\(api) raced shutdown() and lost: the system had finished its last job when this one arrived, so it will never run; submit before shutting down, or use tryRun, which returns false instead")
    }

    /// The calling outside thread's submitter state, created on first use.
    private func submitter() -> UnsafeMutablePointer<Submitter> {
        if let existing = submitterKey.value {
            return existing.assumingMemoryBound(to: Submitter.self)
        }
        let submitter = UnsafeMutablePointer<Submitter>.allocate(capacity: 1)
        submitter.initialize(to: Submitter())
        registerSubmitter(submitter)
        submitterKey.set(submitter)
        return submitter
    }

    // MARK: Waiting

    /// Blocks the calling thread, which is not a worker, until `counter` is zero.
    func waitOutside(for counter: JobCounter) {
        requireMayBlock("JobSystem.wait(for:)")
        // This thread is about to free its CPU: a sleeper pinned there may now help (the
        // submissions' wakes chose other CPUs first while this thread ran here).
        if anyQueuedWork() { sleep.wakeOne(self, callerBlocks: true) }
        counter.blockCallingThread()
    }

    /// Whether some worker is hungry now: searching for work, or asleep while others run (a
    /// hint for splitting decisions; docs/parallel-for.md).
    @inline(__always)
    func hungryWorkers() -> Bool {
        sleep.anyWorkerHungry
    }
}
