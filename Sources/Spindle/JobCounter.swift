import CSpindle
import Synchronization

/// A completion counter: the number of jobs (or other events) still pending.
///
/// Jobs started with a counter add one to it when submitted and subtract one when they finish.
/// Waiting on a counter returns once it has been zero at some instant after the wait began;
/// inside a job, waiting parks the job's fiber and its worker runs other jobs meanwhile
/// (`JobContext.wait(for:)`); outside, `JobSystem.wait(for:)` blocks the thread on a futex.
///
/// A counter can be reused: after it reached zero, new jobs can start with it again. It can also
/// count events of your own: create it with a value and call `decrement()` once per event.
///
/// Thread-safety: all members are thread-safe and lock-free. A counter may be shared by jobs of
/// several job systems.
///
/// Memory: a counter with pending work keeps itself alive (it retains itself when it leaves
/// zero and releases itself when it returns to zero), so dropping your last reference while jobs
/// are still running is safe.
public class JobCounter: @unchecked Sendable {
    // Not final: `JobHandle` is its one subclass (the class is not open, so no other module can
    // add one). Every member is final, so calls stay direct (docs/scheduler.md, "Jobs that
    // return values").
    // SAFETY: all mutable state is atomic.

    /// The pending count (low 40 bits) and the *zero epoch* (high 24 bits), which advances in
    /// the same atomic step that takes the count to zero. A waiter remembers the epoch it saw
    /// with a non-zero count and ends its wait only once the epoch moved: the wake-up of an
    /// earlier round, still running when the counter was reused, cannot end a wait of the next
    /// one (docs/scheduler.md, "Waiting").
    @usableFromInline let word: Atomic<UInt64>
    /// Head of the waiter list (`WaitNode` pointers); see `WaitList`.
    @usableFromInline let waiters = Atomic<UInt>(0)

    @usableFromInline static let countBits: UInt64 = 40
    @usableFromInline static let countMask: UInt64 = (1 << countBits) - 1
    @usableFromInline static let epochUnit: UInt64 = 1 << countBits

    /// The largest number of pending events a counter holds.
    public static let maximumValue = Int(countMask)

    /// A counter at `initialValue` (zero or more).
    public init(_ initialValue: Int = 0) {
        require(initialValue >= 0 && initialValue <= JobCounter.maximumValue,
                "JobCounter(\(initialValue)): a counter starts between 0 and JobCounter.maximumValue (\(JobCounter.maximumValue))")
        word = Atomic(UInt64(initialValue))
        if initialValue > 0 { _ = Unmanaged.passUnretained(self).retain() }
    }

    /// The number of pending events at this instant: a hint. Workers apply the completions of
    /// consecutive jobs of one counter in batches (up to 64, and always before they wait, switch
    /// to other work or idle), so the value may lag behind finished jobs; waits never do.
    public final var value: Int { Int(word.load(ordering: .acquiring) & JobCounter.countMask) }

    /// Whether the counter is zero at this instant.
    public final var isComplete: Bool { word.load(ordering: .acquiring) & JobCounter.countMask == 0 }

    /// Adds `count` pending events. Thread-safe; never blocks.
    ///
    /// - Precondition: the counter stays at or below `maximumValue`.
    /// - Complexity: O(1), one atomic add.
    @inlinable
    public final func increment(by count: Int = 1) {
        require(count >= 0, "JobCounter.increment(by: \(count)): the amount must not be negative")
        // Relaxed is enough for the count itself: the job that will decrement is published by
        // the queue that carries it. The 0 -> n transition takes the self-reference.
        let old = word.wrappingAdd(UInt64(count), ordering: .relaxed).oldValue & JobCounter.countMask
        if old == 0 && count > 0 {
            _ = Unmanaged.passUnretained(self).retain()
        }
        if old + UInt64(count) > JobCounter.countMask {
            misuse("JobCounter.increment(by: \(count)) took the counter above JobCounter.maximumValue (\(JobCounter.maximumValue)); it held \(old)")
        }
    }

    /// Subtracts `count` events; when the counter reaches zero, every waiter is resumed.
    /// Thread-safe; never blocks.
    ///
    /// - Precondition: the counter holds at least `count` (going below zero means some job or
    ///   event was counted twice, or the counter was reused while still in use).
    /// - Complexity: O(1), plus O(waiters) when it reaches zero.
    @inlinable
    public final func decrement(by count: Int = 1) {
        require(count >= 0, "JobCounter.decrement(by: \(count)): the amount must not be negative; to add pending events use increment(by: \(count.magnitude))")
        if subtract(count, byJobs: nil) { reachedZero() }
    }

    /// `count` jobs counted by this counter finished on worker `worker` (the worker's batched
    /// completions): like `decrement(by:)`, with a message that says so if it underflows.
    @inlinable
    final func jobsFinished(_ count: Int, onWorker worker: Int) {
        if subtract(count, byJobs: worker) { reachedZero() }
    }

    /// Subtracts `count`; returns whether that took the count to zero (and advanced the epoch),
    /// in which case the caller must call `reachedZero()`. `byJobs`: the worker whose finished
    /// jobs these are (nil: a `decrement(by:)` call), for the underflow message only.
    @inlinable
    final func subtract(_ count: Int, byJobs worker: Int?) -> Bool {
        let amount = UInt64(truncatingIfNeeded: count)
        var old = word.load(ordering: .relaxed)
        while true {
            let pending = old & JobCounter.countMask
            if pending < amount {
                underflow(count, pending: pending, byJobs: worker)
            }
            let zero = pending == amount
            let new = zero ? (old &- amount) &+ JobCounter.epochUnit : old &- amount
            // Sequentially consistent: the waiter's zero must be visible to waiters that
            // registered (the Dekker pair with `WaitList.register`), and acquiring and releasing
            // so the waiter that sees zero sees everything the counted jobs wrote.
            let (exchanged, original) = word.compareExchange(
                expected: old, desired: new,
                successOrdering: .sequentiallyConsistent, failureOrdering: .relaxed)
            if exchanged { return zero }
            old = original
        }
    }

    @usableFromInline
    final func underflow(_ count: Int, pending: UInt64, byJobs worker: Int?) -> Never {
        let name = "JobCounter \(ObjectIdentifier(self))"
        if let worker {
            misuse("\(name): \(count) job(s) counted by it finished on worker \(worker) and took it below zero (it was \(pending)): it was also decremented by hand for those jobs (a job passed as run(counter:) is counted by the system; do not decrement for it), or it was passed to a new run while jobs of an earlier round still ran")
        }
        misuse("JobCounter.decrement(by: \(count)) took the counter below zero (it was \(pending)): an event was counted twice, or the counter was reused while still in use")
    }

    @usableFromInline
    final func reachedZero() {
        WaitList.wakeAll(waiters)
        // The last touch of `self` by this thread: the self-reference taken when it left zero.
        Unmanaged.passUnretained(self).release()
    }

    /// The word a waiter observes before it waits: nil when the count is zero (nothing to wait
    /// for), else the word (its epoch identifies the round being waited on).
    @inlinable
    final func observeForWait() -> UInt64? {
        // Acquiring: pairs with the decrement, so the counted jobs' writes are visible.
        let observed = word.load(ordering: .acquiring)
        return observed & JobCounter.countMask == 0 ? nil : observed
    }

    /// Whether a wait that observed `observed` may end: the count reached zero since (the epoch
    /// moved on), or it is zero now.
    @inlinable
    final func waitIsOver(observed: UInt64) -> Bool {
        // Sequentially consistent: the waiter's side of the Dekker pair with `subtract` when
        // called by `WaitList.register` (a plain load on x86-64).
        let now = word.load(ordering: .sequentiallyConsistent)
        return now & JobCounter.countMask == 0
            || (now >> JobCounter.countBits) != (observed >> JobCounter.countBits)
    }
}
