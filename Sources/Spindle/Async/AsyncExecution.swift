#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Running Swift Concurrency's jobs on the workers: the record, and the rule that no fiber
// switches while a task runs. docs/async.md.

/// A partial task from Swift Concurrency, queued like any job.
struct AsyncRecord {
    var header: JobHeader
    var job: UnownedJob
    var executor: UnownedTaskExecutor
}

extension Scheduler {
    /// Process-wide: the worker whose thread is running an async task right now (nil otherwise).
    /// While it is set, `workerKey` is cleared, so Spindle's APIs treat the thread as one
    /// outside the system and nothing in the task can park the fiber under it.
    static let asyncWorkerKey: pthread_key_t = {
        var key = pthread_key_t()
        let result = pthread_key_create(&key, nil)
        require(result == 0, "Spindle: pthread_key_create failed (\(result)): too many thread-specific keys in this process")
        return key
    }()

    /// The worker whose thread runs the calling async task, if any (of whichever system).
    @inline(__always)
    static func asyncTaskWorker() -> UnsafeMutablePointer<WorkerState>? {
        pthread_getspecific(asyncWorkerKey)?.assumingMemoryBound(to: WorkerState.self)
    }

    /// Traps when the calling thread is a worker running an async task: a blocking wait there
    /// would hold a worker thread (and with it every fiber parked on it) until other workers
    /// finish the work, and with one worker never.
    func requireNotInAsyncTask(_ api: StaticString) {
        if Scheduler.asyncTaskWorker() != nil {
            misuse("\(api) blocks, but it was called from async code running on a Spindle worker (the JobSystem task executor): use `await jobs.wait(for:)`, `try await jobs.compute { … }`, or move the blocking work into a job")
        }
    }

    /// Queues `body` as a job that no counter tracks (its completion is signalled by the body
    /// itself, e.g. by resuming a continuation).
    func submitUncounted(priority: Priority, _ body: __owned @escaping @Sendable (JobContext) -> Void) {
        submitRun(priority: priority, affinity: .migratable, counter: nil, body)
    }

    /// Queues a partial task: on the calling worker's deque when the caller is one of this
    /// system's workers (a job, or a task running on the executor), else on the injection queue.
    func enqueueAsync(_ job: UnownedJob, executor: UnownedTaskExecutor, priority: Priority) {
        let initialize = { (memory: UnsafeMutableRawPointer) in
            memory.bindMemory(to: AsyncRecord.self, capacity: 1).initialize(to: AsyncRecord(
                header: JobHeader(execute: Scheduler.executeAsync, counter: nil, priority: priority, pinned: false),
                job: job, executor: executor))
        }
        submit(priority: priority.rawValue, size: MemoryLayout<AsyncRecord>.stride, initialize)
    }

    /// Runs a partial task on the fiber running the worker loop. The task runs until its next
    /// suspension point and returns here; no fiber switch happens meanwhile, because with
    /// `workerKey` cleared nothing the task calls can park this fiber (docs/async.md).
    static let executeAsync: ExecuteFunction = { memory, rawState in
        let state = rawState.assumingMemoryBound(to: FiberState.self)
        let worker = state.pointee.worker
        let record = memory.assumingMemoryBound(to: AsyncRecord.self)
        let job = record.pointee.job
        let executor = record.pointee.executor
        worker.releaseRecord(memory)
        // The task may wait on work this worker deferred.
        worker.flushDecrements()
        pthread_setspecific(workerKey, nil)
        pthread_setspecific(asyncWorkerKey, UnsafeRawPointer(worker))
        job.runSynchronously(on: executor)
        pthread_setspecific(asyncWorkerKey, nil)
        pthread_setspecific(workerKey, UnsafeRawPointer(worker))
        worker.count(.jobsRun)
    }
}

extension Priority {
    /// The Spindle priority of a Swift task priority: `.high` and `.userInitiated` (25 and
    /// above) are high, `.medium` normal, `.low`, `.utility` and `.background` (17 and below) low.
    init(_ priority: JobPriority) {
        switch priority.rawValue {
        case 25...: self = .high
        case ...17 where priority.rawValue != 0: self = .low
        default: self = .normal
        }
    }
}

extension Execution {
    /// Whether `record` is executed by `function` (records are told apart by their execute
    /// function).
    static func record(_ record: UnsafeMutableRawPointer, runs function: ExecuteFunction) -> Bool {
        unsafeBitCast(record.load(as: ExecuteFunction.self), to: UnsafeRawPointer.self)
            == unsafeBitCast(function, to: UnsafeRawPointer.self)
    }

    /// Whether `record` is a partial task of Swift Concurrency (`AsyncRecord`).
    static func isAsync(_ record: UnsafeMutableRawPointer) -> Bool {
        Execution.record(record, runs: Scheduler.executeAsync)
    }
}
