import Synchronization

// The bridge to Swift Concurrency: `compute`, async waits, and the task executor.
// docs/async.md describes the rules; README.md, "Async code", shows the use.

/// What a job started by `JobSystem.compute` sees: its job context, and whether the task that
/// awaits it was cancelled.
///
/// Cancellation is cooperative: the job keeps running until it looks at `isCancelled` (or calls
/// `checkCancellation()`) and decides to stop.
///
/// Not `Sendable`: it belongs to the one job that receives it.
public struct ComputeContext {
    /// The job's context: spawn, wait, join, run parallel loops from here.
    public let job: JobContext
    @usableFromInline let flag: CancellationFlag

    @inlinable
    init(job: JobContext, flag: CancellationFlag) {
        self.job = job
        self.flag = flag
    }

    /// Whether the awaiting task has been cancelled. Thread-safe; O(1), one relaxed load.
    @inlinable
    public var isCancelled: Bool { flag.isSet }

    /// Throws `CancellationError` if the awaiting task has been cancelled.
    @inlinable
    public func checkCancellation() throws(CancellationError) {
        if flag.isSet { throw CancellationError() }
    }
}

/// A flag set once when an awaiting task is cancelled.
@usableFromInline
final class CancellationFlag: Sendable {
    let state = Atomic<Bool>(false)
    @usableFromInline var isSet: Bool { state.load(ordering: .relaxed) }
    func set() { state.store(true, ordering: .relaxed) }
}

extension JobSystem {
    // MARK: compute

    /// Runs `body` as a job on the workers and returns its result to the awaiting task, which is
    /// suspended meanwhile (no thread is blocked, neither a worker nor one of the cooperative
    /// pool's).
    ///
    /// ```swift
    /// let histogram = try await jobs.compute { ctx in
    ///     try ctx.checkCancellation()
    ///     return buildHistogram(pixels, on: ctx.job)
    /// }
    /// ```
    ///
    /// The body is an ordinary job: it runs on a fiber and may spawn, wait and run parallel
    /// loops. If the awaiting task is cancelled, `ctx.isCancelled` becomes true; the job decides
    /// whether to stop (by throwing, e.g. `checkCancellation()`, or returning early). An error
    /// thrown by `body` is rethrown to the awaiting task with its type.
    ///
    /// - Parameter priority: the job's priority; by default (nil) the awaiting task's
    ///   (`.high`/`.userInitiated` high, `.medium` normal, `.low`, `.utility`, `.background`
    ///   low), so a server's urgent requests are not queued behind its background work.
    ///
    /// Thread-safety: callable from any task or thread. Suspends the caller; never blocks.
    /// - Precondition: `shutdown()` has not been called.
    /// - Complexity: one job; two small heap allocations per call (the job's closure context
    ///   and the cancellation flag).
    public func compute<Value: Sendable, Failure: Error>(
        priority: Priority? = nil,
        _ body: @escaping @Sendable (ComputeContext) throws(Failure) -> Value
    ) async throws(Failure) -> Value {
        let priority = priority ?? Priority(Task.currentPriority)
        let flag = CancellationFlag()
        let result: Result<Value, Failure> = await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<Value, Failure>, Never>) in
                scheduler.submitUncounted(priority: priority, api: "JobSystem.compute") { job in
                    let context = ComputeContext(job: job, flag: flag)
                    let result: Result<Value, Failure>
                    do throws(Failure) {
                        result = .success(try body(context))
                    } catch {
                        result = .failure(error)
                    }
                    continuation.resume(returning: result)
                }
            }
        } onCancel: {
            flag.set()
        }
        return try result.get()
    }

    // MARK: Waiting from async code

    /// Suspends the calling task until `counter` has been zero at some instant after the call
    /// began. The task is suspended, not blocked: a job parks on the counter and resumes the
    /// task (the synchronous `wait(for:)` traps in async code running on this system's
    /// executor, where it would block a worker).
    ///
    /// Thread-safety: callable from any task. Suspends the caller; never blocks.
    /// - Complexity: O(1) when the counter is already zero; otherwise one job.
    @_disfavoredOverload // a `JobHandle` (a counter too) takes the overload that returns its value
    public func wait(for counter: JobCounter) async {
        if counter.isComplete { return }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            scheduler.submitUncounted(priority: .high, api: "JobSystem.wait(for:) (async)") { job in
                job.wait(for: counter)
                continuation.resume()
            }
        }
    }
}

// MARK: - Task executor

extension JobSystem: TaskExecutor {
    /// Queues a partial task of Swift Concurrency on the workers: on the calling worker's deque
    /// when called from one of this system's workers, else on the injection queue, at the
    /// Spindle priority of the task's priority (`.high`/`.userInitiated` high, `.medium` and
    /// unspecified normal, lower ones low).
    ///
    /// Use it through `Task(executorPreference: jobs) { … }` or
    /// `withTaskExecutorPreference(jobs) { … }`. Tasks run on the worker's loop, never on a job's
    /// fiber, and no fiber switch happens while a task runs: in async code on this executor,
    /// Spindle's blocking calls (`wait(for:)`, `parallelFor` from outside a job, `runAndWait`)
    /// trap, and `await jobs.wait(for:)` or `try await jobs.compute { … }` take their place
    /// (docs/async.md).
    ///
    /// After `shutdown()`, a task that still prefers this executor is not lost: its partial
    /// tasks go to Swift's global concurrent executor instead (a task whose preference outlives
    /// the system keeps running, off the workers).
    ///
    /// Thread-safety: callable from any thread. Never blocks.
    /// - Complexity: O(1); no heap allocation (records come from the frame allocators).
    public func enqueue(_ job: consuming ExecutorJob) {
        let priority = Priority(job.priority)
        let unowned = UnownedJob(job)
        if !scheduler.submitAsync(unowned, executor: asUnownedTaskExecutor(), priority: priority) {
            globalConcurrentExecutor.enqueue(unowned)
        }
    }
}
