import Synchronization

/// A mutual-exclusion lock around a value that jobs may hold across a wait: a contended `lock`
/// parks the waiting job's fiber (its worker runs other jobs meanwhile), and blocks a thread
/// outside the job system. The exception to the rule "never hold a lock across a wait"
/// (docs/synchronization.md).
///
/// ```swift
/// let totals = JobMutex([String: Int]())
/// jobs.parallelFor(0..<files.count) { i in
///     let counts = count(words: files[i])
///     totals.withLock { totals in totals.merge(counts, uniquingKeysWith: +) }
/// }
/// ```
///
/// Waiters queue in the order they asked and are woken one per unlock; a running job may take
/// the lock before the woken waiter does (the waiter then goes back to the front of the queue),
/// which keeps a contended mutex from costing a park per lock. Not recursive: a job that locks a mutex it holds waits forever (a stall report names
/// the wait).
///
/// Thread-safety: all members are thread-safe; usable from jobs of any system and from any
/// thread, but not from async code on a `JobSystem` executor (waiting would block its worker).
public final class JobMutex<Value>: @unchecked Sendable {
    // SAFETY: `value` is read and written only between `lock` and `unlock`; `state` is atomic;
    // `waiters` only under `queueLock` (docs/synchronization.md).
    @usableFromInline let state = Atomic<Int>(0)
    private let queueLock = Lock()
    private var waiters = WaiterQueue()
    @usableFromInline let storage: UnsafeMutablePointer<Value>

    /// `state`: bit 0 held, bit 1 waiters may be queued.
    private static var lockedBit: Int { 1 }
    private static var queuedBit: Int { 2 }
    /// Attempts before a contended lock queues (a few hundred nanoseconds).
    private static var spins: Int { 32 }

    /// A mutex around `value`, unlocked.
    public init(_ value: sending Value) {
        storage = .allocate(capacity: 1)
        storage.initialize(to: value)
    }

    deinit {
        storage.deinitialize(count: 1)
        storage.deallocate()
    }

    /// Calls `body` with exclusive access to the value and returns its result. `body` may wait
    /// (park) while it holds the lock.
    ///
    /// May switch fibers (in a job, when the lock is held by someone else: the fiber parks until
    /// it is handed the lock) or block the thread (outside the system).
    /// - Precondition: not called from async code on a `JobSystem` executor; the calling job
    ///   does not already hold this mutex.
    /// - Complexity: one compare-and-swap to lock and one to unlock when uncontended.
    @discardableResult @inlinable
    public func withLock<Result, Failure: Error>(
        file: StaticString = #fileID, line: UInt = #line,
        _ body: (inout sending Value) throws(Failure) -> sending Result
    ) throws(Failure) -> sending Result {
        // The uncontended paths inline: one compare-and-swap each (acquiring to lock, releasing
        // to unlock, pairing with each other across owners).
        if !state.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            lockContended(file: file, line: line)
        }
        defer {
            if !state.compareExchange(expected: 1, desired: 0, ordering: .releasing).exchanged { unlockContended() }
        }
        return try body(&storage.pointee)
    }

    /// Calls `body` with the value if the lock is free now, else returns nil without waiting.
    ///
    /// Never blocks or switches fibers.
    public func withLockIfAvailable<Result, Failure: Error>(
        _ body: (inout sending Value) throws(Failure) -> sending Result
    ) throws(Failure) -> sending Result? {
        guard tryLock() else { return nil }
        defer {
            if !state.compareExchange(expected: 1, desired: 0, ordering: .releasing).exchanged { unlockContended() }
        }
        return try body(&storage.pointee)
    }

    /// Takes the lock if it is not held (waiters may be queued: a running job may take it
    /// before a woken waiter, which is what keeps a contended mutex from a park per lock).
    @inline(__always)
    private func tryLock() -> Bool {
        var current = state.load(ordering: .relaxed)
        while current & JobMutex.lockedBit == 0 {
            // Acquiring: pairs with the releasing unlock, so the last owner's writes are visible.
            let (exchanged, seen) = state.compareExchange(expected: current, desired: current | JobMutex.lockedBit,
                                                          ordering: .acquiring)
            if exchanged { return true }
            current = seen
        }
        return false
    }

    /// `withLock` found the lock held: spin briefly, then queue and wait.
    @usableFromInline
    func lockContended(file: StaticString, line: UInt) {
        // A short spin: the owner is most often running and about to unlock.
        for _ in 0..<JobMutex.spins {
            if tryLock() { return }
            spinPause()
        }
        var woken = false
        while true {
            let waiter: JobCounter? = queueLock.withLock {
                while true {
                    let current = state.load(ordering: .relaxed)
                    if current & JobMutex.lockedBit == 0 {
                        if tryLock() { return nil }
                        continue
                    }
                    // Marked under the queue lock, so the unlock that clears it sees this waiter.
                    if current & JobMutex.queuedBit != 0
                        || state.compareExchange(expected: current, desired: current | JobMutex.queuedBit, ordering: .relaxed).exchanged {
                        let waiter = JobCounter(1)
                        // A waiter that was woken and lost the race goes back to the front.
                        if woken { waiters.prepend(waiter) } else { waiters.append(waiter) }
                        return waiter
                    }
                }
            }
            guard let waiter else { return }
            waiter.waitAnywhere("JobMutex.withLock", file: file, line: line)
            woken = true
            if tryLock() { return }
        }
    }

    /// The unlock found waiters queued: wake the first.
    @usableFromInline
    func unlockContended() {
        let next: JobCounter? = queueLock.withLock {
            let first = waiters.removeFirst()
            // Unlocked; the queued bit stays while waiters remain.
            state.store(waiters.isEmpty ? 0 : JobMutex.queuedBit, ordering: .releasing)
            return first
        }
        // The woken waiter tries again (and queues at the front if a running job took the lock).
        next?.decrement()
    }
}
