// Jobs that return values without allocating: `spawnUnique` and its non-copyable handle, whose
// outcome lives in the job's record. docs/scheduler.md, "Unique handles: results in the job
// record".

/// The one owner of a job's value: returned by `spawnUnique`, consumed by the wait that
/// returns the value.
///
/// ```swift
/// let sum = jobs.run { ctx in
///     let left = ctx.spawnUnique { _ in total(of: lower) }   // offered to idle workers
///     let right = total(of: upper)
///     return try ctx.wait(for: left) + right    // runs `left` here if nobody took it
/// }
/// ```
///
/// Unlike `JobHandle`, a unique handle cannot be copied or waited for twice: the compiler
/// rejects a second use. In return it costs no allocation: the value (up to 64 bytes, the size
/// of a few words or a small struct; larger values get a box when the job finishes) is stored in
/// the job's record, and a body that captures nothing forms no closure context.
///
/// Dropping a handle without waiting detaches the job: it still runs, and its value is
/// discarded when it finishes.
///
/// Thread-safety: a handle may be sent to another thread and waited for there (`Sendable`).
/// `isComplete` may be read by the owner at any time.
@frozen
public struct UniqueJobHandle<Value: Sendable, Failure: Error>: ~Copyable, @unchecked Sendable {
    // SAFETY: the record is owned by this handle and by its job, which meet on the record's
    // latch (docs/scheduler.md, "Unique handles"); the handle is not copyable, so one thread at a
    // time uses it.
    @usableFromInline let record: UnsafeMutableRawPointer

    @inlinable
    init(record: UnsafeMutableRawPointer) {
        self.record = record
    }

    /// Whether the job is done (its value can be taken without waiting). Never blocks.
    ///
    /// - Complexity: O(1), one atomic load.
    @inlinable
    public var isComplete: Bool { UniqueRecord.isDone(record) }

    /// Moves the outcome out once the job is done and releases the record.
    @inlinable
    consuming func take() -> Result<Value, Failure> {
        let outcome = UniqueRecord.outcome(record, Result<Value, Failure>.self)
        let result = outcome.move()
        if !UniqueRecord.isInline(Result<Value, Failure>.self) { outcome.deallocate() }
        UniqueRecord.release(record)
        discard self
        return result
    }

    deinit {
        if UniqueRecord.detach(record) {
            UniqueJobs.destroyOutcome(record, Result<Value, Failure>.self)
            UniqueRecord.release(record)
        }
    }
}

/// The generic halves of the unique-handle protocol, inlined where `spawnUnique` is called.
@usableFromInline
enum UniqueJobs {
    /// The job: moves the body out of the record at `address`, runs it, stores its outcome and
    /// completes the latch (the runner of every `spawnUnique` record).
    @inlinable
    static func run<Value: Sendable, Failure: Error>(
        _ address: Int, _ context: JobContext, _: Value.Type, _: Failure.Type
    ) {
        let record = UnsafeMutableRawPointer(bitPattern: address).unsafelyUnwrapped
        let body = UniqueRecord.block(record)[UniqueRecord.body]
            .withMemoryRebound(to: UniqueBody<Value, Failure>.self, capacity: 1) { $0.move() }
        let outcome = JobOutcome.of(body.call, context)
        let slot: UnsafeMutablePointer<Result<Value, Failure>>
        if UniqueRecord.isInline(Result<Value, Failure>.self) {
            slot = UniqueRecord.outcome(record, Result<Value, Failure>.self)
        } else {
            slot = .allocate(capacity: 1)
            (record + UniqueRecord.outcomeOffset).storeBytes(of: slot, as: UnsafeMutablePointer<Result<Value, Failure>>.self)
        }
        slot.initialize(to: outcome)
        if UniqueRecord.complete(record) {
            destroyOutcome(record, Result<Value, Failure>.self)
            UniqueRecord.release(record)
        }
    }

    /// Destroys a finished job's outcome nobody will read (and its box).
    @inlinable
    static func destroyOutcome<Outcome>(_ record: UnsafeMutableRawPointer, _ type: Outcome.Type) {
        let outcome = UniqueRecord.outcome(record, type)
        outcome.deinitialize(count: 1)
        if !UniqueRecord.isInline(type) { outcome.deallocate() }
    }

    /// Fills the generic slot of a record (the body) for `Scheduler.submitUnique`.
    @inlinable
    static func initializeBody<Value: Sendable, Failure: Error>(
        _ record: UnsafeMutableRawPointer, _ body: __owned @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) {
        UniqueRecord.block(record)[UniqueRecord.body]
            .withMemoryRebound(to: UniqueBody<Value, Failure>.self, capacity: 1) { $0.initialize(to: UniqueBody(call: body)) }
    }

    /// The size of a record whose outcome is a `Result<Value, Failure>`.
    @inlinable
    static func recordSize<Value: Sendable, Failure: Error>(_: Value.Type, _: Failure.Type) -> Int {
        UniqueRecord.outcomeOffset + UniqueRecord.outcomeBytes(Result<Value, Failure>.self)
    }
}

extension Scheduler {
    /// `spawnUnique` of `JobSystem` and `JobContext`: the record sized for the outcome, its
    /// runner (formed here, from types only, so that it is specialized where `spawnUnique` is
    /// called) and its body.
    @inlinable
    func spawnUnique<Value: Sendable, Failure: Error>(
        priority: Priority, affinity: JobAffinity, api: StaticString, site: SubmissionSite,
        _ body: __owned @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> UniqueJobHandle<Value, Failure> {
        UniqueJobHandle(record: submitUnique(
            priority: priority, affinity: affinity, size: UniqueJobs.recordSize(Value.self, Failure.self),
            api: api, site: site,
            runner: { address, context in UniqueJobs.run(address, context, Value.self, Failure.self) },
            initialize: { UniqueJobs.initializeBody($0, body) }))
    }
}

/// The body of a `spawnUnique` record: one closure, two words.
@usableFromInline
struct UniqueBody<Value: Sendable, Failure: Error> {
    @usableFromInline var call: @Sendable (JobContext) throws(Failure) -> Value

    @inlinable
    init(call: @escaping @Sendable (JobContext) throws(Failure) -> Value) {
        self.call = call
    }
}

// MARK: Spawning

extension JobSystem {
    /// Submits `body` as a job and returns the unique handle of its value: `spawn` without the
    /// shared handle object. The handle is consumed by `wait(for:)`; dropping it detaches the job.
    ///
    /// From a thread outside the system the job goes to the injection queue of its priority;
    /// from inside one of this system's jobs it goes to the running worker's deque.
    ///
    /// - Parameters: as for `run(priority:affinity:file:line:_:)`.
    /// - Precondition: as for `run(priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); never blocks or switches fibers. No heap allocation besides the
    ///   body's own closure context when it captures values (and a box when the job finishes, for
    ///   a value over 64 bytes).
    @inlinable
    public func spawnUnique<Value: Sendable, Failure: Error>(
        priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: __owned @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> UniqueJobHandle<Value, Failure> {
        scheduler.spawnUnique(priority: priority, affinity: affinity, api: "JobSystem.spawnUnique",
                              site: submissionSite(file, line), body)
    }

    /// Returns the value of `handle`'s job once it is done, or throws the error it threw,
    /// consuming the handle.
    ///
    /// From a thread outside the system it blocks the thread; from inside one of this system's
    /// jobs it waits as `JobContext.wait(for:)` does (prefer that one there).
    ///
    /// - Precondition: not from a job of another system, not from async code on this system's
    ///   executor (as for `wait(for:)` with a counter).
    /// - Complexity: O(1) plus a move of the value when the job is done; otherwise one block and
    ///   one wake-up.
    @inlinable
    public func wait<Value: Sendable, Failure: Error>(for handle: consuming UniqueJobHandle<Value, Failure>) throws(Failure) -> Value {
        scheduler.waitUnique(handle.record, api: "JobSystem.wait(for:)")
        return try handle.take().get()
    }

    /// Suspends the calling task until `handle`'s job is done, then returns its value or throws
    /// its error, consuming the handle.
    ///
    /// Thread-safety: callable from any task. Suspends the caller; never blocks.
    /// - Complexity: O(1) when the job is done; otherwise one heap-allocated wait node.
    @inlinable
    public func wait<Value: Sendable, Failure: Error>(for handle: consuming UniqueJobHandle<Value, Failure>) async throws(Failure) -> Value {
        await UniqueRecord.suspend(handle.record)
        return try handle.take().get()
    }
}

extension JobContext {
    /// Submits `body` as a job on this worker's deque (where idle workers may steal it) and
    /// returns the unique handle of its value. See `JobSystem.spawnUnique`.
    ///
    /// - Complexity: O(1); never blocks or switches fibers. No heap allocation besides the
    ///   body's own closure context when it captures values.
    @inlinable
    public func spawnUnique<Value: Sendable, Failure: Error>(
        priority: Priority = .normal, affinity: JobAffinity = .migratable,
        file: StaticString = #fileID, line: UInt = #line,
        _ body: __owned @escaping @Sendable (JobContext) throws(Failure) -> Value
    ) -> UniqueJobHandle<Value, Failure> {
        scheduler.spawnUnique(priority: priority, affinity: affinity, api: "JobContext.spawnUnique",
                              site: submissionSite(file, line), body)
    }

    /// Returns the value of `handle`'s job once it is done, or throws the error it threw,
    /// consuming the handle. If nobody took the job yet, it runs here, on this fiber; otherwise
    /// this worker runs its own queued jobs, and parks this fiber if the job is still running
    /// elsewhere when they are done.
    ///
    /// May switch fibers. Never blocks the thread.
    /// - Complexity: O(1) plus a move of the value when the job is done; otherwise as for
    ///   `join`'s second half.
    @inlinable
    public func wait<Value: Sendable, Failure: Error>(for handle: consuming UniqueJobHandle<Value, Failure>) throws(Failure) -> Value {
        _waitUnique(handle.record)
        return try handle.take().get()
    }
}
