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

    /// Allocates a record of `size` bytes from the caller's arena, lets `initialize` fill it, and
    /// queues it: on the calling worker's deque (from a job, or from a task on the system's
    /// executor), or (from outside) on the injection queue.
    @inline(__always)
    func submit(priority: UInt8, size: Int = MemoryLayout<RunRecord>.stride,
                _ initialize: (UnsafeMutableRawPointer) -> Void) {
        if let worker = currentWorker() {
            worker.submit(priority: priority, size: size, initialize)
            return
        } else if let worker = Scheduler.asyncTaskWorker(), worker.pointee.scheduler === self {
            // A task running on this system's executor: its worker's deque, like a job's.
            worker.submit(priority: priority, size: size, initialize)
        } else {
            let record = allocateOutsideRecord(size: size)
            initialize(record)
            injection[Int(priority)].push(record)
        }
        sleep.workPosted(self)
    }

    /// Submits a `run` job: `submit` for a body passed at +1, which moves into the record
    /// instead of being retained there and released by the caller (a retain and release pair
    /// per job, measured in W6; docs/scheduler.md, "Job records").
    @inline(__always)
    func submitRun(priority: Priority, affinity: JobAffinity, counter: JobCounter?,
                   _ body: consuming @escaping @Sendable (JobContext) -> Void) {
        let size = MemoryLayout<RunRecord>.stride
        if let worker = currentWorker() {
            let record = worker.allocateRecord(size: size)
            Execution.initializeRun(record, body: consume body, counter: counter, priority: priority, affinity: affinity)
            worker.post(Token.record(record), priority: priority.rawValue)
            return
        } else if let worker = Scheduler.asyncTaskWorker(), worker.pointee.scheduler === self {
            let record = worker.allocateRecord(size: size)
            Execution.initializeRun(record, body: consume body, counter: counter, priority: priority, affinity: affinity)
            worker.post(Token.record(record), priority: priority.rawValue)
        } else {
            let record = allocateOutsideRecord(size: size)
            Execution.initializeRun(record, body: consume body, counter: counter, priority: priority, affinity: affinity)
            injection[Int(priority.rawValue)].push(record)
        }
        sleep.workPosted(self)
    }

    /// Memory for a job record submitted from a thread outside the system (its submitter
    /// arena, chunks of node 0). Traps after shutdown.
    func allocateOutsideRecord(size: Int) -> UnsafeMutableRawPointer {
        require(!shutdownRequested.load(ordering: .relaxed),
                "JobSystem.run called after shutdown(): the system no longer accepts work from outside; submit before shutting down")
        return submitter().pointee.arena.allocate(size: size, pool: Unmanaged.passUnretained(chunkPools[0]))
    }

    /// Blocks the calling thread, which is not a worker, until `counter` is zero.
    func waitOutside(for counter: JobCounter) {
        requireNotInAsyncTask("JobSystem.wait(for:)")
        // This thread is about to free its CPU: a sleeper pinned there may now help.
        if anyQueuedWork() { sleep.wakeOne(self, allowingHere: true) }
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
