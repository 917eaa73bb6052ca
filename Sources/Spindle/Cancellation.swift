import Synchronization

// Cooperative cancellation for jobs, loops, graph runs and pipeline runs. docs/scheduler.md, "Cancellation".

/// A cancellation request that jobs, parallel loops and task-graph runs accept.
///
/// Cancellation is cooperative. What Spindle does by itself once `cancel()` was called:
/// a job submitted with the token that has not started is skipped (its counter still completes);
/// a loop given the token skips the chunks that have not started and returns `false`; a graph
/// run given the token skips the nodes that have not started and reports how many
/// (`TaskGraph.lastSkippedNodes`); a pipeline run started with the token is stopped as by
/// `PipelineRun.cancel()`. Work that is running stops when it looks:
/// `JobContext.isCancelled` and `checkCancellation()` in a job submitted with the token,
/// or `token.isCancelled` anywhere.
///
/// ```swift
/// let stop = CancellationToken()
/// jobs.run(counter: done, cancellation: stop) { ctx in
///     for tile in tiles { if ctx.isCancelled { return }; render(tile) }
/// }
/// stop.cancel()                                   // from any thread
/// ```
///
/// Thread-safety: all members are thread-safe; `isCancelled` is one atomic load, `cancel()` takes the
/// token's lock briefly, then stops the pipeline runs started with it. A token may be shared by any
/// number of jobs, loops and runs, of several systems; it cannot be reset.
public final class CancellationToken: @unchecked Sendable {
    // SAFETY: `flag` is atomic; `handlers` and `nextHandler` are touched only under `lock`.
    @usableFromInline let flag = Atomic<Bool>(false)
    private let lock = Lock()
    /// What runs when the token is cancelled: the stops of pipeline runs started with it.
    private var handlers: [Int: @Sendable () -> Void] = [:]
    private var nextHandler = 0

    /// A token that is not cancelled.
    public init() {}

    /// Requests cancellation. Idempotent. Never blocks on jobs: the pipeline runs started with
    /// the token are stopped from this call (`PipelineRun.cancel()`, which returns at once).
    public func cancel() {
        // Releasing: what the canceller wrote before is visible to whoever sees the request.
        flag.store(true, ordering: .releasing)
        let taken = lock.withLock { () -> [@Sendable () -> Void] in
            defer { handlers.removeAll() }
            return Array(handlers.values)
        }
        for handler in taken { handler() }
    }

    /// Runs `handler` once when the token is cancelled (at once, on this thread, if it already
    /// is); returns the key that `removeHandler` takes, or nil if it already ran.
    func addHandler(_ handler: @escaping @Sendable () -> Void) -> Int? {
        // `cancel` stores the flag before it takes the lock, so a handler added after the
        // cancelling call took the list sees the flag here and runs now.
        let key = lock.withLock { () -> Int? in
            guard !flag.load(ordering: .acquiring) else { return nil }
            nextHandler += 1
            handlers[nextHandler] = handler
            return nextHandler
        }
        if key == nil { handler() }
        return key
    }

    /// The handlers registered now (tests).
    var handlerCount: Int { lock.withLock { handlers.count } }

    /// Forgets the handler under `key` (it has not run, or is running now).
    func removeHandler(_ key: Int) {
        lock.withLock { _ = handlers.removeValue(forKey: key) }
    }

    /// Whether `cancel()` has been called. O(1), one load.
    @inlinable
    public var isCancelled: Bool { flag.load(ordering: .acquiring) }

    /// Throws `CancellationError` if `cancel()` has been called.
    @inlinable
    public func checkCancellation() throws(CancellationError) {
        if isCancelled { throw CancellationError() }
    }
}

extension FiberLocal {
    /// The cancellation token of the job running on the fiber (an unretained address, 0 for
    /// none): set around the body of a job submitted with `cancellation:`.
    static let cancellation = 1
}

extension JobContext {
    /// The token the running job was submitted with (`run(counter:priority:affinity:cancellation:_:)`),
    /// or nil. O(1).
    public var cancellation: CancellationToken? {
        let word = FiberLocal.word(FiberLocal.cancellation, of: state).pointee
        guard word != 0 else { return nil }
        // SAFETY: the job's wrapper holds the token while the body runs.
        return Unmanaged<CancellationToken>.fromOpaque(UnsafeRawPointer(bitPattern: word)!).takeUnretainedValue()
    }

    /// Whether the running job's token (if it was submitted with one) has been cancelled.
    /// O(1); never blocks.
    public var isCancelled: Bool { cancellation?.isCancelled ?? false }

    /// Throws `CancellationError` if the running job's token has been cancelled.
    public func checkCancellation() throws(CancellationError) {
        if isCancelled { throw CancellationError() }
    }

    /// Submits `body` as a job on `counter` that is skipped if `cancellation` is cancelled
    /// before it starts (the counter completes either way); while it runs, `isCancelled` and
    /// `checkCancellation()` of its context look at the token.
    ///
    /// - Complexity: O(1); never blocks or switches fibers. One closure context (the body and
    ///   the token) besides the body's own.
    public func run(
        counter: JobCounter, priority: Priority = .normal, affinity: JobAffinity = .migratable,
        cancellation: CancellationToken, file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) -> Void
    ) {
        submitRun(counter: counter, priority: priority, affinity: affinity, site: submissionSite(file, line),
                  Cancellable.wrap(body, cancellation))
    }
}

extension JobSystem {
    /// Submits `body` as a job on `counter` that is skipped if `cancellation` is cancelled
    /// before it starts (the counter completes either way); while it runs, `isCancelled` and
    /// `checkCancellation()` of its context look at the token.
    ///
    /// - Precondition: as for `run(counter:priority:affinity:file:line:_:)`.
    /// - Complexity: O(1); never blocks. One closure context (the body and the token) besides
    ///   the body's own.
    public func run(
        counter: JobCounter, priority: Priority = .normal, affinity: JobAffinity = .migratable,
        cancellation: CancellationToken, file: StaticString = #fileID, line: UInt = #line,
        _ body: @escaping @Sendable (JobContext) -> Void
    ) {
        submitRun(counter: counter, priority: priority, affinity: affinity, site: submissionSite(file, line),
                  Cancellable.wrap(body, cancellation))
    }
}

enum Cancellable {
    /// `body` as a job that is skipped when `token` is cancelled before it starts, and that
    /// lends the token to its context while it runs.
    static func wrap(_ body: @escaping @Sendable (JobContext) -> Void, _ token: CancellationToken) -> @Sendable (JobContext) -> Void {
        { context in
            guard !token.isCancelled else { return }
            let word = FiberLocal.word(FiberLocal.cancellation, of: context.state)
            let saved = word.pointee
            word.pointee = UInt(bitPattern: Unmanaged.passUnretained(token).toOpaque())
            body(context)
            // The job may have continued on another worker, but the fiber is the same.
            FiberLocal.word(FiberLocal.cancellation, of: context.state).pointee = saved
            withExtendedLifetime(token) {}
        }
    }
}

// MARK: Loops

extension JobSystem {
    /// `parallelFor(_:partitioner:_:)` that stops starting chunks once `cancellation` is
    /// cancelled: chunks already running finish (the body may check `cancellation.isCancelled`
    /// to stop sooner), the others are skipped. Returns whether every index ran.
    ///
    /// Errors, blocking and thread-safety as for `parallelFor(_:partitioner:_:)`.
    /// - Complexity: as for `parallelFor(_:partitioner:_:)`, plus one load per chunk.
    @inlinable @discardableResult
    public func parallelFor<E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive, cancellation: CancellationToken,
        _ body: @Sendable (Int) throws(E) -> Void
    ) throws(E) -> Bool {
        try parallelForChunks(range, partitioner: partitioner, cancellation: cancellation) { (chunk: Range<Int>) throws(E) in
            for index in chunk { try body(index) }
        }
    }

    /// `parallelForChunks(_:partitioner:_:)` that skips the chunks not yet started once
    /// `cancellation` is cancelled. Returns whether every chunk ran. See
    /// `parallelFor(_:partitioner:cancellation:_:)`.
    @inlinable @discardableResult
    public func parallelForChunks<E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive, cancellation: CancellationToken,
        _ body: @Sendable (Range<Int>) throws(E) -> Void
    ) throws(E) -> Bool {
        let skipped = SkippedFlag()
        try parallelForChunks(range, partitioner: partitioner) { (chunk: Range<Int>) throws(E) in
            if cancellation.isCancelled {
                skipped.set()
                return
            }
            try body(chunk)
        }
        return !skipped.isSet
    }
}

/// Whether a cancelled loop skipped a chunk.
@usableFromInline
final class SkippedFlag: Sendable {
    let state = Atomic<Bool>(false)
    @usableFromInline init() {}
    @usableFromInline func set() { state.store(true, ordering: .relaxed) }
    @usableFromInline var isSet: Bool { state.load(ordering: .relaxed) }
}
