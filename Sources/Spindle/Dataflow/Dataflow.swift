import Synchronization

// Sequential task flow: tasks submitted in program order with the keys they read and write; the
// flow derives the edges and starts each task when its inputs are done. docs/dataflow.md.

/// Tasks submitted in program order, each naming the data it reads and writes; each starts once
/// the tasks it depends on are done, as OpenMP's `task depend(in/out)` and StarPU's sequential
/// task flow do.
///
/// ```swift
/// let flow = Dataflow<Int>(on: jobs)                 // keys: block numbers
/// for step in 0..<steps {
///     for b in blocks {
///         flow.task(reads: [b - 1, b, b + 1], writes: [b + blocks.count]) { ctx in … }
///     }
/// }
/// try flow.wait()                                    // every task done; rethrows the first error
/// ```
///
/// A task that reads a key waits for the last task before it that writes the key; a task that
/// writes a key waits for that writer and for every task that read the key since. Tasks waiting
/// for their inputs take no fiber and are not queued (docs/dataflow.md).
///
/// Thread-safety: `task` is called by one thread at a time (it defines the program order; a
/// lock keeps concurrent calls safe, but their order, and so the edges, would be arbitrary);
/// `wait`, `unfinished` and `cancel` may be called from any thread.
public final class Dataflow<Key: Hashable & Sendable>: @unchecked Sendable {
    // SAFETY: `keys`, `recent`, `recentStart` and `storedFailure` only under `lock`; `failed` and
    // `skipped` are atomic; `jobs`, `window` and `cancellation` are immutable.

    /// The first error a task threw, with how many tasks skipped their bodies after it (or after
    /// a cancellation).
    public struct Failure: Error, CustomStringConvertible {
        /// What the first failing task threw.
        public let error: any Error
        /// Tasks that did not run their bodies because of the failure or a cancellation.
        public let skipped: Int

        public var description: String { "Dataflow task failed: \(error) (\(skipped) task(s) skipped)" }
    }

    private struct Accesses {
        var writer: JobCounter?
        var readers: [JobCounter] = []
    }

    let jobs: JobSystem
    /// The most tasks unfinished at once.
    public let window: Int
    let cancellation: CancellationToken?
    private let lock = Lock()
    private var keys: [Key: Accesses] = [:]
    /// Unfinished tasks in submission order (some may have finished since).
    private var recent: [JobCounter] = []
    private var recentStart = 0
    private let failed = Atomic<Bool>(false)
    private let skipped = Atomic<Int>(0)
    private var storedFailure: (any Error)?

    /// A flow on `jobs` keeping at most `window` tasks unfinished; `cancellation`, once
    /// cancelled, makes tasks that have not started skip their bodies.
    ///
    /// - Precondition: `window >= 1`.
    public init(on jobs: JobSystem, window: Int = 4096, cancellation: CancellationToken? = nil) {
        require(window >= 1, "Dataflow(on:window: \(window)): the window must hold at least one task; use 1 to run tasks one after another")
        self.jobs = jobs
        self.window = window
        self.cancellation = cancellation
    }

    /// Submits `body` as a task that reads `reads` and writes `writes`, and returns its counter
    /// (complete once the task finished; it may be waited for or passed to `spawn(after:)`).
    ///
    /// The task starts once the last earlier task writing a key of `reads` or `writes`, and
    /// every earlier task reading a key of `writes` since that writer, are done. A key in both
    /// lists is written. If `window` tasks are unfinished, waits first for the oldest: inside a
    /// job of the flow's system its fiber parks (the worker runs tasks meanwhile); on another
    /// thread the thread blocks.
    ///
    /// - Precondition: as for `JobSystem.run`; not from a job of another system.
    /// - Complexity: one hash-table lookup per key, plus O(reads × writes) comparisons and the
    ///   readers of each written key; allocates the task's counter, its job's closure and its
    ///   deferred start.
    // Specialized for integer keys (array indices, cell numbers), the common case: generic code
    // would look up the metadata of the key table's types on every call.
    @_specialize(exported: true, where Key == Int)
    @discardableResult
    public func task(
        reads: [Key] = [], writes: [Key] = [], priority: Priority = .normal,
        _ body: @escaping @Sendable (JobContext) throws -> Void
    ) -> JobCounter {
        waitForRoom()
        let done = JobCounter()
        let inputs = lock.withLock { () -> [JobCounter] in
            var inputs: [JobCounter] = []
            func add(_ counter: JobCounter?) {
                guard let counter, !counter.isComplete, !inputs.contains(where: { $0 === counter }) else { return }
                inputs.append(counter)
            }
            // One hash lookup per key: a read takes the last writer as an input and joins the
            // readers (dropping finished ones once they pile up); a write takes the last writer
            // and the readers since, and becomes the last writer.
            for key in reads where !writes.contains(key) {
                Dataflow.read(&keys[key, default: Accesses()], by: done, add)
            }
            for key in writes {
                if let previous = keys.updateValue(Accesses(writer: done), forKey: key) {
                    add(previous.writer)
                    for reader in previous.readers { add(reader) }
                }
            }
            recent.append(done)
            return inputs
        }
        let flow = self
        jobs.scheduler.submitDeferred(after: inputs, counter: done, priority: priority, affinity: .migratable,
                                      api: "Dataflow.task", site: madeByLibrary) { context in
            flow.runTask(body, context)
        }
        return done
    }

    @_specialize(where Key == Int)
    private static func read(_ accesses: inout Accesses, by task: JobCounter, _ add: (JobCounter?) -> Void) {
        add(accesses.writer)
        if accesses.readers.count >= 16 { accesses.readers.removeAll { $0.isComplete } }
        accesses.readers.append(task)
    }

    private func runTask(_ body: @Sendable (JobContext) throws -> Void, _ context: JobContext) {
        // Relaxed: a hint, as in graph runs; a task already running finishes in any case.
        if failed.load(ordering: .relaxed) || cancellation?.isCancelled == true {
            skipped.wrappingAdd(1, ordering: .relaxed)
            return
        }
        do {
            try body(context)
        } catch {
            lock.withLock { if storedFailure == nil { storedFailure = error } }
            failed.store(true, ordering: .relaxed)
        }
    }

    /// Waits while `window` tasks are unfinished, for the oldest one each time.
    private func waitForRoom() {
        while true {
            let oldest = lock.withLock { () -> JobCounter? in
                while recentStart < recent.count && recent[recentStart].isComplete { recentStart += 1 }
                if recentStart > 1024 && recentStart * 2 > recent.count {
                    recent.removeFirst(recentStart)
                    recentStart = 0
                }
                return recent.count - recentStart >= window ? recent[recentStart] : nil
            }
            guard let oldest else { return }
            jobs.wait(for: oldest)
        }
    }

    /// Tasks submitted and not yet finished, at this instant (a hint).
    ///
    /// - Complexity: O(unfinished tasks).
    public var unfinished: Int {
        lock.withLock { recent[recentStart...].reduce(0) { $0 + ($1.isComplete ? 0 : 1) } }
    }

    /// Returns once every task submitted so far has finished, with the number of tasks that
    /// skipped their bodies (after a failure or a cancellation); throws the first error a task
    /// threw. Resets the flow (its failure, its skipped count and its key table) for more tasks.
    ///
    /// Blocks the thread outside a job; parks the fiber inside one of the system's jobs.
    /// - Throws: `Dataflow.Failure` if a task threw.
    /// - Complexity: O(keys) to reset, plus the wait.
    @discardableResult
    public func wait() throws(Failure) -> Int {
        // Every task's own counter, so that each is complete when this returns.
        while true {
            let pending = lock.withLock { recent[recentStart...].filter { !$0.isComplete } }
            if pending.isEmpty { break }
            for counter in pending { jobs.wait(for: counter) }
        }
        let (failure, count) = lock.withLock { () -> ((any Error)?, Int) in
            let failure = storedFailure
            storedFailure = nil
            keys.removeAll(keepingCapacity: true)
            recent.removeAll(keepingCapacity: true)
            recentStart = 0
            return (failure, skipped.exchange(0, ordering: .relaxed))
        }
        failed.store(false, ordering: .relaxed)
        if let failure { throw Failure(error: failure, skipped: count) }
        return count
    }
}
