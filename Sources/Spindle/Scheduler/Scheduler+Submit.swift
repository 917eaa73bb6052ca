import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Scheduler {
    /// The calling thread's worker if it is a worker of this system.
    @inline(__always)
    func currentWorker() -> UnsafeMutablePointer<WorkerState>? {
        guard let worker = Scheduler.anyCurrentWorker(), worker.pointee.scheduler === self else { return nil }
        return worker
    }

    /// The calling thread's worker, of whichever system.
    @inline(__always)
    static func anyCurrentWorker() -> UnsafeMutablePointer<WorkerState>? {
        // An opaque call: read afresh every time, never cached across a fiber switch.
        pthread_getspecific(workerKey)?.assumingMemoryBound(to: WorkerState.self)
    }

    /// Where the calling thread's records go: the deque of its worker (a job's, or that of a
    /// task running on this system's executor), or the injection queue (any other thread).
    enum Route {
        case job(UnsafeMutablePointer<WorkerState>)
        case task(UnsafeMutablePointer<WorkerState>)
        case outside
    }

    @inline(__always)
    func route() -> Route {
        if let worker = currentWorker() { return .job(worker) }
        if let worker = Scheduler.asyncTaskWorker(), worker.pointee.scheduler === self { return .task(worker) }
        return .outside
    }

    /// Memory for a record from the arena of `route`'s thread. Traps after shutdown (outside).
    @inline(__always)
    func allocateRecord(size: Int, on route: Route) -> UnsafeMutableRawPointer {
        switch route {
        case .job(let worker), .task(let worker): worker.allocateRecord(size: size)
        case .outside: allocateOutsideRecord(size: size)
        }
    }

    /// Queues a filled record on `route`'s queue and runs the wake check ("Posting work",
    /// docs/sleep.md).
    @inline(__always)
    func enqueue(_ record: UnsafeMutableRawPointer, priority: UInt8, on route: Route) {
        switch route {
        case .job(let worker), .task(let worker):
            // `post` runs the wake check itself.
            worker.post(Token.record(record), priority: priority)
        case .outside:
            injectionRefs[Int(priority)]._withUnsafeGuaranteedRef { $0.push(record) }
            sleep.workPublished(self)
        }
    }

    /// Allocates a record of `size` bytes from the caller's arena, lets `initialize` fill it, and
    /// queues it (`route()`).
    @inline(__always)
    func submit(priority: UInt8, size: Int = MemoryLayout<RunRecord>.stride,
                _ initialize: (UnsafeMutableRawPointer) -> Void) {
        let route = route()
        let record = allocateRecord(size: size, on: route)
        initialize(record)
        enqueue(record, priority: priority, on: route)
    }

    /// Submits a `run` job: `submit` for a body passed at +1, which moves into the record
    /// instead of being retained there and released by the caller (a retain and release pair
    /// per job, measured in W6; docs/scheduler.md, "Job records").
    @inline(__always)
    func submitRun(priority: Priority, affinity: JobAffinity, counter: JobCounter?,
                   _ body: consuming @escaping @Sendable (JobContext) -> Void) {
        let route = route()
        let record = allocateRecord(size: MemoryLayout<RunRecord>.stride, on: route)
        Execution.initializeRun(record, body: consume body, counter: counter, priority: priority, affinity: affinity)
        enqueue(record, priority: priority.rawValue, on: route)
    }

    /// Submits a `run(counter:argument:)` job, its body moved in like `submitRun`'s.
    @inline(__always)
    func submitArgument(priority: Priority, affinity: JobAffinity, counter: JobCounter?, argument: Int,
                        _ body: consuming @escaping @Sendable (Int, JobContext) -> Void) {
        let route = route()
        let record = allocateRecord(size: MemoryLayout<ArgumentRecord>.stride, on: route)
        Execution.initializeArgument(record, argument: argument, body: consume body, counter: counter,
                                     priority: priority, affinity: affinity)
        enqueue(record, priority: priority.rawValue, on: route)
    }

    /// Memory for a job record submitted from a thread outside the system (its submitter
    /// arena, chunks of node 0), with the link word in front of it that the injection queue
    /// uses. Traps after shutdown.
    func allocateOutsideRecord(size: Int) -> UnsafeMutableRawPointer {
        require(!shutdownRequested.load(ordering: .relaxed),
                "JobSystem.run called after shutdown(): the system no longer accepts work from outside; submit before shutting down")
        return submitter().pointee.arena.allocateLinked(size: size, pool: Unmanaged.passUnretained(chunkPools[0]))
    }

    /// Blocks the calling thread, which is not a worker, until `counter` is zero.
    func waitOutside(for counter: JobCounter) {
        requireNotInAsyncTask("JobSystem.wait(for:)")
        // This thread is about to free its CPU: a sleeper pinned there may now help (the
        // submissions' wakes chose other CPUs first while this thread ran here).
        if anyQueuedWork() { sleep.wakeOne(self, callerBlocks: true) }
        guard let observed = counter.observeForWait() else { return }
        WaitList.blockThread(on: counter.waiters) {
            counter.waitIsOver(observed: observed)
        }
    }

    /// The calling outside thread's submitter state, created on first use.
    func submitter() -> UnsafeMutablePointer<Submitter> {
        if let existing = pthread_getspecific(submitterKey) {
            return existing.assumingMemoryBound(to: Submitter.self)
        }
        let submitter = UnsafeMutablePointer<Submitter>.allocate(capacity: 1)
        submitter.initialize(to: Submitter())
        registerSubmitter(submitter)
        pthread_setspecific(submitterKey, submitter)
        return submitter
    }
}
