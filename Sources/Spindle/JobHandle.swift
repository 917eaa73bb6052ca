// Jobs that return values: `spawn` and the handle that is the job's counter.
// docs/scheduler.md, "Jobs that return values".

/// The counter of a job that returns a value, and that value once the job is done.
///
/// `JobSystem.spawn` and `JobContext.spawn` return a handle. A handle is a `JobCounter`: every
/// wait that takes a counter takes it, and the `wait(for:)` overloads for handles return the
/// job's value or throw its error:
///
/// ```swift
/// let total = jobs.spawn { ctx in
///     let left = ctx.spawn { _ in sum(of: lower) }
///     let right = sum(of: upper)
///     return ctx.wait(for: left) + right       // parks this fiber until `left` is done
/// }
/// print(jobs.wait(for: total))                 // outside a job: blocks this thread
/// let parsed = try await jobs.wait(for: jobs.spawn { _ throws(ParseError) in try parse(text) })
/// ```
///
/// Memory: two allocations per spawn: the handle, which holds the count and the outcome
/// (whatever the value's size), and the job's closure context (the body and the handle). A body
/// that captures values has its own closure context besides, as with `run`. When one owner
/// waits once, `spawnUnique` and its `UniqueJobHandle` keep the value in the job's record and
/// allocate neither.
///
/// Thread-safety: all members are thread-safe. The value may be read any number of times, from
/// any thread, once the job is done.
public final class JobHandle<Value: Sendable, Failure: Error>: JobCounter, @unchecked Sendable {
    // SAFETY: `outcome` is written by the job before it completes and read only after a wait
    // observed the completion (or `isComplete`), which the counter's releasing decrement and
    // acquiring observation order (docs/scheduler.md, "Jobs that return values").
    @usableFromInline var outcome: Result<Value, Failure>?

    @usableFromInline
    init() {
        super.init(0)
    }

    /// The job's outcome if it is done (the counter is zero), else nil. Never blocks.
    ///
    /// - Complexity: O(1) (a copy of the value).
    @inlinable
    public var result: Result<Value, Failure>? {
        guard isComplete else { return nil }
        return outcome
    }

    /// Runs `body` on the job's fiber and keeps its outcome. Inlinable, like the whole spawn
    /// path, so that it is specialized where `spawn` is called: generic code here would look
    /// up the metadata of `Result<Value, Failure>` on every job.
    @inlinable
    func finish(_ body: (JobContext) throws(Failure) -> Value, _ context: JobContext) {
        outcome = JobOutcome.of(body, context)
    }

    /// The outcome after a wait returned.
    @inlinable
    func finishedOutcome(_ api: StaticString) -> Result<Value, Failure> {
        guard let outcome else { JobHandle.reachedZeroWithoutOutcome(api) }
        return outcome
    }

    @usableFromInline
    static func reachedZeroWithoutOutcome(_ api: StaticString) -> Never {
        misuse("\(api): the handle reached zero before its job stored a value: it was decremented by hand (JobCounter.decrement) while its job was pending; a handle counts its own job")
    }
}

/// What a job that returns a value produced: its value or its error. Shared by both kinds of
/// handle (`JobHandle`, `UniqueJobHandle`); inlinable, so specialized where they are.
@usableFromInline
enum JobOutcome {
    @inlinable
    static func of<Value, Failure: Error>(_ body: (JobContext) throws(Failure) -> Value, _ context: JobContext) -> Result<Value, Failure> {
        do throws(Failure) {
            return .success(try body(context))
        } catch {
            return .failure(error)
        }
    }
}

// MARK: Spawning

extension JobSystem {
    /// Submits `body` as a job and returns its handle, whose `wait(for:)` gives the value `body`
    /// returns or throws the error it throws.
    ///
    /// From a thread outside the system the job goes to the injection queue of its priority;
    /// from inside one of this system's jobs it goes to the running worker's deque.
    ///
    /// - Parameters: as for `run(priority:affinity:file:line:_:)`.
    /// - Precondition: as for `run(priority:affinity:file:line:_:)` (after `shutdown()`, a
    ///   submission from outside traps).
    /// - Complexity: O(1); never blocks or switches fibers. Two heap allocations (the handle and the job's closure context).
    @inlinable
    public func spawn<Value: Sendable, Failure: Error>(
        priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        spawnHandle(priority: priority, affinity: affinity, site: submissionSite(file, line), body)
    }

    // Inlinable, so that the handle's code is specialized where `spawn` is called.
    @inlinable
    func spawnHandle<Value: Sendable, Failure: Error>(
        priority: Priority, affinity: JobAffinity, site: SubmissionSite,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        let handle = JobHandle<Value, Failure>()
        submitRun(counter: handle, priority: priority, affinity: affinity, api: "JobSystem.spawn", site: site) { context in
            handle.finish(body, context)
        }
        return handle
    }

    /// Returns the value of `handle`'s job once it is done, or throws the error it threw.
    ///
    /// Waits as `wait(for:)` does for a counter: from a thread outside the system it blocks the
    /// thread; from inside one of this system's jobs it parks the job's fiber.
    ///
    /// - Precondition: as for `wait(for:)` with a counter.
    /// - Complexity: as for `wait(for:)`, plus a copy of the value.
    @discardableResult @inlinable
    public func wait<Value: Sendable, Failure: Error>(for handle: JobHandle<Value, Failure>) throws(Failure) -> Value {
        wait(for: handle as JobCounter)
        return try handle.finishedOutcome("JobSystem.wait(for:)").get()
    }

    /// Suspends the calling task until `handle`'s job is done, then returns its value or throws
    /// its error. See `wait(for:) async` with a counter.
    ///
    /// Thread-safety: callable from any task. Suspends the caller; never blocks.
    @discardableResult @inlinable
    public func wait<Value: Sendable, Failure: Error>(for handle: JobHandle<Value, Failure>) async throws(Failure) -> Value {
        await wait(for: handle as JobCounter)
        return try handle.finishedOutcome("JobSystem.wait(for:) (async)").get()
    }
}

extension JobContext {
    /// Submits `body` as a job on this worker's deque (where idle workers may steal it) and
    /// returns its handle.
    ///
    /// - Parameters: as for `JobSystem.run(priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); never blocks or switches fibers. Two heap allocations (the handle and the job's closure context).
    @inlinable
    public func spawn<Value: Sendable, Failure: Error>(
        priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        spawnHandle(priority: priority, affinity: affinity, site: submissionSite(file, line), body)
    }

    @inlinable
    func spawnHandle<Value: Sendable, Failure: Error>(
        priority: Priority, affinity: JobAffinity, site: SubmissionSite,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        let handle = JobHandle<Value, Failure>()
        submitRun(counter: handle, priority: priority, affinity: affinity, site: site) { context in
            handle.finish(body, context)
        }
        return handle
    }

    /// Returns the value of `handle`'s job once it is done, or throws the error it threw. Until
    /// then this job's fiber is parked, as in `wait(for:)` with a counter.
    ///
    /// May switch fibers. Never blocks the thread.
    /// - Precondition: `handle` is not the running job's own handle.
    /// - Complexity: O(1) when the job is done; otherwise one park and one resume.
    @discardableResult @inlinable
    public func wait<Value: Sendable, Failure: Error>(
        for handle: JobHandle<Value, Failure>, file: StaticString = #fileID, line: UInt = #line
    ) throws(Failure) -> Value {
        wait(for: handle as JobCounter, file: file, line: line)
        return try handle.finishedOutcome("JobContext.wait(for:)").get()
    }
}

