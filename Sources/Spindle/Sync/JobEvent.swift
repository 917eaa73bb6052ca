/// An event that jobs and threads wait for: a waiting job parks its fiber, a thread outside the
/// job system blocks (docs/synchronization.md).
///
/// - `.manualReset`: `set()` releases every waiter and the event stays set, so later waits
///   return at once, until `reset()`.
/// - `.autoReset`: `set()` releases one waiter (the longest waiting), or, with none waiting,
///   leaves the event set for the next wait, which takes it and leaves it unset.
///
/// Thread-safety: all members are thread-safe; usable from jobs of any system and from any
/// thread, but `wait` not from async code on a `JobSystem` executor.
public final class JobEvent: @unchecked Sendable {
    // SAFETY: `signaled` and `waiters` only under `lock`.
    /// How `set()` treats waiters and the state.
    public enum Mode: Sendable, Hashable {
        case manualReset
        case autoReset
    }

    public let mode: Mode
    private let lock = Lock()
    private var signaled: Bool
    private var waiters = WaiterQueue()

    /// An event in `mode`, set or not.
    public init(mode: Mode, isSet: Bool = false) {
        self.mode = mode
        signaled = isSet
    }

    /// Whether the event is set at this instant (a hint).
    public var isSet: Bool { lock.withLock { signaled } }

    /// Sets the event: releases every waiter (manual reset) or one (auto reset).
    ///
    /// Never blocks for long (the internal lock) and never switches fibers.
    /// - Complexity: O(waiters released).
    public func set() {
        let released: ArraySlice<JobCounter> = lock.withLock {
            switch mode {
            case .manualReset:
                signaled = true
                return waiters.removeAll()
            case .autoReset:
                if let first = waiters.removeFirst() { return [first] }
                signaled = true
                return []
            }
        }
        for waiter in released { waiter.decrement() }
    }

    /// Unsets the event. Never blocks for long; never switches fibers.
    public func reset() {
        lock.withLock { signaled = false }
    }

    /// Returns once the event is set (manual reset), or once this call took a `set()` (auto
    /// reset).
    ///
    /// May switch fibers (in a job: the fiber parks) or block the thread (outside the system).
    /// - Precondition: not called from async code on a `JobSystem` executor.
    /// - Complexity: O(1) plus the wait.
    public func wait(file: StaticString = #fileID, line: UInt = #line) {
        let waiter: JobCounter? = lock.withLock {
            if signaled {
                if mode == .autoReset { signaled = false }
                return nil
            }
            let waiter = JobCounter(1)
            waiters.append(waiter)
            return waiter
        }
        waiter?.waitAnywhere("JobEvent.wait", file: file, line: line)
    }
}

/// A counting semaphore that jobs and threads acquire: a job that finds no permit parks its
/// fiber, a thread outside the job system blocks (docs/synchronization.md). Permits are handed
/// to waiters in the order they asked.
///
/// ```swift
/// let connections = JobSemaphore(value: 4)          // at most 4 jobs talk to the database
/// connections.withPermit { query() }
/// ```
///
/// Thread-safety: all members are thread-safe; usable from jobs of any system and from any
/// thread, but `acquire` not from async code on a `JobSystem` executor.
public final class JobSemaphore: @unchecked Sendable {
    // SAFETY: `available` and `waiters` only under `lock`.
    /// The number of permits the semaphore was created with: `release()` beyond it traps.
    public let value: Int
    private let lock = Lock()
    private var available: Int
    private var waiters = WaiterQueue()

    /// A semaphore with `value` permits, all available.
    ///
    /// - Precondition: `value >= 0`.
    public init(value: Int) {
        require(value >= 0, "JobSemaphore(value: \(value)): the number of permits must not be negative")
        self.value = value
        available = value
    }

    /// The permits available at this instant (a hint).
    public var availablePermits: Int { lock.withLock { available } }

    /// Takes a permit, waiting for one if none is left.
    ///
    /// May switch fibers (in a job: the fiber parks) or block the thread (outside the system).
    /// - Precondition: not called from async code on a `JobSystem` executor.
    public func acquire(file: StaticString = #fileID, line: UInt = #line) {
        let waiter: JobCounter? = lock.withLock {
            if available > 0 {
                available -= 1
                return nil
            }
            let waiter = JobCounter(1)
            waiters.append(waiter)
            return waiter
        }
        waiter?.waitAnywhere("JobSemaphore.acquire", file: file, line: line)
    }

    /// Takes a permit if one is available now. Never blocks or switches fibers.
    public func tryAcquire() -> Bool {
        lock.withLock {
            guard available > 0 else { return false }
            available -= 1
            return true
        }
    }

    /// Returns a permit: hands it to the longest waiter, or makes it available.
    ///
    /// Never blocks for long; never switches fibers.
    /// - Precondition: a permit is held (more releases than acquires trap).
    public func release() {
        let next: JobCounter? = lock.withLock {
            if let first = waiters.removeFirst() { return first }
            require(available < value,
                    "JobSemaphore.release(): every one of its \(value) permits is already available; release only a permit you acquired")
            available += 1
            return nil
        }
        next?.decrement()
    }

    /// Runs `body` holding a permit and returns its result; the permit is released also when
    /// `body` throws. Waits as `acquire()` does.
    public func withPermit<Result, Failure: Error>(
        file: StaticString = #fileID, line: UInt = #line, _ body: () throws(Failure) -> Result
    ) throws(Failure) -> Result {
        acquire(file: file, line: line)
        defer { release() }
        return try body()
    }
}
