// Scoped jobs: jobs that may borrow from the frame that opened the scope, because the scope
// returns only after all of them finished. docs/scheduler.md, "Scoped jobs".

/// Submits jobs that may use the caller's local values: the scope that lends it
/// (`JobSystem.scope(_:)`, `JobContext.scope(_:)`) returns only after every job it submitted
/// has finished, so their closures need not be `@Sendable` and may read local values and write
/// disjoint parts of local buffers:
///
/// ```swift
/// var sums = [Int](repeating: 0, count: parts.count)
/// sums.withUnsafeMutableBufferPointer { out in
///     jobs.scope { scope in
///         for (i, part) in parts.enumerated() {
///             scope.run { _ in out[i] = part.reduce(0, +) }   // each job writes its own slot
///         }
///     }                                                      // all jobs are done here
/// }
/// ```
///
/// The scope is lent to the closure (`borrowing`, not copyable), so it cannot outlive the
/// scope. The jobs run in parallel with the closure and with each other: they must not write
/// the same memory, or memory the closure reads, without synchronization (the library does not
/// check this; Swift's `Sendable` checking is what `run` outside a scope gives instead).
///
/// Thread-safety: `run` may be called from the scope's closure and from code it runs (a nested
/// parallel loop, say) on any thread.
public struct JobScope: ~Copyable {
    @usableFromInline let scheduler: Scheduler
    @usableFromInline let counter: JobCounter

    @usableFromInline
    init(scheduler: Scheduler) {
        self.scheduler = scheduler
        counter = JobCounter()
    }

    /// Submits `body` as a job of this scope. From inside one of the system's jobs it goes to
    /// the running worker's deque, from other threads to the injection queue.
    ///
    /// - Parameters: as for `JobSystem.run(priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); never blocks or switches fibers. A closure that captures values has
    ///   one closure context (a Swift allocation); the job itself allocates nothing.
    @inlinable
    public func run(
        priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping (JobContext) -> Void
    ) {
        submit(priority: priority, affinity: affinity, site: submissionSite(file, line), body)
    }

    @usableFromInline
    func submit(priority: Priority, affinity: JobAffinity, site: SubmissionSite, _ body: @escaping (JobContext) -> Void) {
        // SAFETY: the scope waits for this job before it returns, so everything the closure
        // borrows outlives it. Whether jobs of the scope race on what they share is the caller's
        // contract (above). (An `unsafeBitCast` of the closure to the `@Sendable` type cost two
        // heap-allocated thunks per job; this wrapper costs one context.)
        nonisolated(unsafe) let body = body
        counter.increment()
        scheduler.submitRun(priority: priority, affinity: affinity, counter: counter, api: "JobScope.run", site: site) { context in
            body(context)
        }
    }
}

extension JobSystem {
    /// Calls `body` with a scope whose jobs may borrow the caller's local values, and returns
    /// `body`'s result once `body` returned and every job of the scope finished (also when
    /// `body` throws: the error is rethrown after the jobs finished).
    ///
    /// - Blocks: from a thread outside the system it blocks the thread at the end of the scope;
    ///   from inside one of this system's jobs it parks the job's fiber (prefer
    ///   `JobContext.scope(_:)` there).
    /// - Precondition: as for `wait(for:)` (not from a job of another system, not from async
    ///   code on this system's executor); from outside, the system has not shut down.
    /// - Complexity: one counter allocation, plus the jobs.
    @inlinable
    public func scope<Result, Failure: Error>(
        _ body: (borrowing JobScope) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        let scope = JobScope(scheduler: scheduler)
        defer { wait(for: scope.counter) }
        return try body(scope)
    }
}

extension JobContext {
    /// `JobSystem.scope(_:)` from inside a job: the end of the scope parks this job's fiber
    /// until the scope's jobs finished; the worker runs other jobs meanwhile.
    ///
    /// May switch fibers (at the end of the scope). Never blocks the thread.
    /// - Complexity: one counter allocation, plus the jobs.
    @inlinable
    public func scope<Result, Failure: Error>(
        file: StaticString = #fileID, line: UInt = #line,
        _ body: (borrowing JobScope) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        let scope = JobScope(scheduler: scheduler)
        defer { wait(for: scope.counter, file: file, line: line) }
        return try body(scope)
    }
}
