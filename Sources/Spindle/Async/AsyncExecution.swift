// Running Swift Concurrency's jobs on the workers: the record, and the rule that no fiber
// switches while a task runs. docs/async.md.

/// A partial task from Swift Concurrency, queued like any job.
struct AsyncRecord: JobRecordKind {
    var header: JobHeader
    var job: UnownedJob
    var executor: UnownedTaskExecutor

    static var kind: JobKind { .asyncTask }
    static var execute: ExecuteFunction { Scheduler.executeAsync }
}

extension Scheduler {
    /// Queues `body` as a job that no counter tracks (its completion is signalled by the body
    /// itself, e.g. by resuming a continuation).
    func submitUncounted(priority: Priority, api: StaticString, _ body: __owned @escaping @Sendable (JobContext) -> Void) {
        submitRun(priority: priority, affinity: .migratable, counter: nil, api: api, site: madeByLibrary, body)
    }

    /// Queues a partial task: on the calling worker's deque when the caller is one of this
    /// system's workers (a job, or a task running on the executor), else on the injection queue.
    /// Returns false, queuing nothing that will run, when the system has shut down.
    func submitAsync(_ job: UnownedJob, executor: UnownedTaskExecutor, priority: Priority) -> Bool {
        let initialize = { (memory: UnsafeMutableRawPointer) in
            memory.bindMemory(to: AsyncRecord.self, capacity: 1).initialize(to: AsyncRecord(
                header: JobHeader(for: AsyncRecord.self, counter: nil, priority: priority, pinned: false),
                job: job, executor: executor))
        }
        return trySubmit(priority: priority, size: MemoryLayout<AsyncRecord>.stride, initialize)
    }

    /// Runs a partial task on the fiber running the worker loop. The task runs until its next
    /// suspension point and returns here; no fiber switch happens meanwhile, because the worker
    /// is lent to the task as code that must not park (`Scheduler.lendingWorker`,
    /// docs/async.md).
    static let executeAsync: ExecuteFunction = { memory, rawState in
        let state = rawState.assumingMemoryBound(to: FiberState.self)
        let worker = state.pointee.worker
        let record = memory.assumingMemoryBound(to: AsyncRecord.self)
        let job = record.pointee.job
        let executor = record.pointee.executor
        Execution.markRetired(memory)
        worker.releaseRecord(memory)
        // The task may wait on work this worker deferred.
        worker.flushDecrements()
        lendingWorker(worker) {
            job.runSynchronously(on: executor)
        }
        worker.count(.jobsRun)
    }
}

extension Priority {
    /// The Spindle priority of a Swift task priority: `.high` and `.userInitiated` (25 and
    /// above) are high, `.medium` normal, `.low`, `.utility` and `.background` (17 and below) low.
    init(_ priority: JobPriority) {
        self.init(taskPriorityValue: priority.rawValue)
    }

    /// The Spindle priority of a task's priority, by the same rule.
    init(_ priority: TaskPriority) {
        self.init(taskPriorityValue: priority.rawValue)
    }

    private init(taskPriorityValue value: UInt8) {
        switch value {
        case 25...: self = .high
        case ...17 where value != 0: self = .low
        default: self = .normal
        }
    }
}
