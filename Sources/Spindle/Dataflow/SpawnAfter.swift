// Jobs that start when their inputs are done: `spawn(after:)`. docs/dataflow.md.

extension JobSystem {
    /// Submits `body` as a job that starts once every counter of `inputs` (handles are
    /// counters) has completed, and returns its handle, whose `wait(for:)` gives the value.
    ///
    /// Until its inputs are done the job is not queued and has no fiber: it waits as a node on
    /// each input's waiter list, and the input that completes last submits it, from the thread
    /// that completed it (docs/dataflow.md). Inputs already complete count as done. The handle
    /// counts the job from this call on, so it may be waited for, or passed to a later
    /// `spawn(after:)`, at once.
    ///
    /// Thread-safety: callable from any thread.
    /// - Parameters: as for `spawn(priority:affinity:file:line:_:)`.
    /// - Precondition: as for `run(priority:affinity:file:line:_:)`; an input completed after
    ///   `shutdown()` by a thread outside the system traps as a late submission would.
    /// - Complexity: O(inputs); never blocks or switches fibers. Allocates the handle, the job's
    ///   closure context and the deferred start (one object holding its input nodes).
    @inlinable
    public func spawn<Value: Sendable, Failure: Error>(
        after inputs: JobCounter..., priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        spawn(afterAll: inputs, priority: priority, affinity: affinity, file: file, line: line, body)
    }

    /// `spawn(after:…)` with the inputs in a collection.
    @inlinable
    public func spawn<Value: Sendable, Failure: Error>(
        afterAll inputs: some Collection<JobCounter>, priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        scheduler.spawnAfter(inputs, priority: priority, affinity: affinity, api: "JobSystem.spawn(after:)",
                             site: submissionSite(file, line), body)
    }
}

extension Scheduler {
    /// `spawn(after:)`: the handle, and its job deferred until `inputs` are done.
    @inlinable
    func spawnAfter<Value: Sendable, Failure: Error>(
        _ inputs: some Collection<JobCounter>, priority: Priority, affinity: JobAffinity, api: StaticString,
        site: SubmissionSite, _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        let handle = JobHandle<Value, Failure>()
        submitDeferred(after: Array(inputs), counter: handle, priority: priority, affinity: affinity, api: api, site: site) { context in
            handle.finish(body, context)
        }
        return handle
    }

    /// Counts a job on `counter` now and submits `body` as that job once `inputs` are done.
    @usableFromInline
    func submitDeferred(after inputs: [JobCounter], counter: JobCounter, priority: Priority, affinity: JobAffinity,
                        api: StaticString, site: SubmissionSite, _ body: @escaping @Sendable (JobContext) -> Void) {
        counter.increment()
        DeferredStart.arm(after: inputs, scheduler: self, counter: counter, priority: priority, affinity: affinity,
                          api: api, site: site, body)
    }
}

extension JobContext {
    /// `JobSystem.spawn(after:…)` from inside a job (the same system's).
    ///
    /// - Complexity: as for `JobSystem.spawn(after:…)`; never blocks or switches fibers.
    @inlinable
    public func spawn<Value: Sendable, Failure: Error>(
        after inputs: JobCounter..., priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        spawn(afterAll: inputs, priority: priority, affinity: affinity, file: file, line: line, body)
    }

    /// `spawn(after:…)` with the inputs in a collection.
    @inlinable
    public func spawn<Value: Sendable, Failure: Error>(
        afterAll inputs: some Collection<JobCounter>, priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> JobHandle<Value, Failure> {
        scheduler.spawnAfter(inputs, priority: priority, affinity: affinity, api: "JobContext.spawn(after:)",
                             site: submissionSite(file, line), body)
    }
}
