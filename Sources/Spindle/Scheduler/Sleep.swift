import Synchronization

/// The idle protocol: who is searching for work, who sleeps, and how new work wakes as few
/// sleepers as it can use. docs/sleep.md walks through every step and the races it rules out;
/// the step numbers below refer to it.
///
/// State: `activity` packs the number of *awake* workers (low 32 bits: running or searching) and
/// of *searching* workers (high 32 bits: awake, out of local work, spinning over every queue).
/// `sleeping` is a bit mask of workers that announced they are going to sleep; each worker has
/// its own futex word (`WorkerState.sleepWord`).
///
/// Thread-safety: every member is thread-safe; `fallAsleep` is for the worker it names.
final class SleepState: @unchecked Sendable {
    // SAFETY: raw memory accessed only through atomics.
    private let storage: UnsafeMutableRawPointer
    private let maskWords: Int
    static let awakeOne: UInt64 = 1
    static let searchingOne: UInt64 = 1 << 32

    init(workers: Int) {
        maskWords = (workers + 63) / 64
        storage = .allocate(byteCount: 128 + maskWords * 128, alignment: 128)
        activity.initialize(to: Atomic(UInt64(workers) * Self.awakeOne))
        for word in 0..<maskWords { mask(word).initialize(to: Atomic(0)) }
    }

    deinit { storage.deallocate() }

    var activity: UnsafeMutablePointer<Atomic<UInt64>> {
        storage.assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    /// Each mask word on a line of its own.
    private func mask(_ word: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (storage + 128 + word * 128).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    static func awake(_ value: UInt64) -> UInt64 { value & 0xFFFF_FFFF }
    static func searching(_ value: UInt64) -> UInt64 { value >> 32 }

    /// Workers whose sleeping bit is set now.
    var sleepingCount: Int {
        (0..<maskWords).reduce(0) { $0 + mask($1).pointee.load(ordering: .relaxed).nonzeroBitCount }
    }

    // MARK: Posting work

    /// Called after every push of work that other workers could take ("Posting work", steps
    /// 1–3): wakes one sleeper unless some worker is already searching.
    @inline(__always)
    func workPosted(_ scheduler: Scheduler) {
        // Step 1: the push must be visible before we read the counts (store-load order).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        workPublished(scheduler)
    }

    /// Steps 2–3 of `workPosted`, for a push whose publishing write was a sequentially
    /// consistent read-modify-write (`InjectionQueue.push`'s exchange of `tail`, which the sleep
    /// re-check reads): that write already orders the push before the load below, so step 1's
    /// fence is left out. Its cost was the wait for the push's later plain store (the
    /// predecessor's link, a line the consumer reads) to leave the store buffer.
    @inline(__always)
    func workPublished(_ scheduler: Scheduler) {
        // Step 2: a searching worker will find the work; it wakes a sleeper if it was the last.
        // Sequentially consistent: the load side of the store-load pair with the push.
        guard Self.searching(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0 else { return }
        // Step 3.
        wakeOne(scheduler)
    }

    /// Wakes one sleeping worker, if any. Returns whether it woke one.
    ///
    /// Prefers a sleeper on another CPU than the caller's: the caller is busy on its own CPU (it
    /// just submitted work), so a worker woken there shares that CPU with it. When only sleepers
    /// on the caller's CPU remain, one of them is woken all the same: the workers that are awake
    /// may all be inside long jobs (or jobs waiting for this one), and a job must not wait for
    /// them while a worker sleeps. A caller about to block (an outside thread's `wait`) frees
    /// its CPU instead and passes `callerBlocks: true`: a sleeper pinned there goes first.
    /// docs/sleep.md, "Waking".
    @discardableResult
    func wakeOne(_ scheduler: Scheduler, callerBlocks: Bool = false) -> Bool {
        guard let here = CurrentThread.cpu else { return wakeFirst(scheduler) { _ in true } }
        return wakeFirst(scheduler) { (scheduler.workerCPUs[$0] == here) == callerBlocks }
            || wakeFirst(scheduler) { _ in true }
    }

    /// Claims and wakes the first sleeper whose index `eligible` accepts.
    private func wakeFirst(_ scheduler: Scheduler, where eligible: (Int) -> Bool) -> Bool {
        for word in 0..<maskWords {
            var bits = mask(word).pointee.load(ordering: .sequentiallyConsistent)
            while bits != 0 {
                let index = word * 64 + bits.trailingZeroBitCount
                let bit = UInt64(1) << UInt64(bits.trailingZeroBitCount)
                bits &= ~bit
                if !eligible(index) { continue }
                if mask(word).pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent).oldValue & bit != 0 {
                    wakeClaimed(worker: index, scheduler)
                    return true
                }
            }
        }
        return false
    }

    /// Wakes one sleeping worker among `candidates` (the workers of a node), if any
    /// (docs/numa.md, "Node queues"). Returns whether it woke one.
    @discardableResult
    func wakeOne(among candidates: [Int], _ scheduler: Scheduler) -> Bool {
        for index in candidates {
            let bit = UInt64(1) << UInt64(index % 64)
            let word = mask(index / 64)
            guard word.pointee.load(ordering: .sequentiallyConsistent) & bit != 0 else { continue }
            if word.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent).oldValue & bit != 0 {
                wakeClaimed(worker: index, scheduler)
                return true
            }
        }
        return false
    }

    /// Wakes `index` if it is asleep (a fiber of its became ready; "Resuming a fiber"). Returns
    /// whether it was asleep (then this call or a concurrent one woke it).
    @discardableResult
    func wake(worker index: Int, _ scheduler: Scheduler) -> Bool {
        let bit = UInt64(1) << UInt64(index % 64)
        let word = mask(index / 64)
        guard word.pointee.load(ordering: .sequentiallyConsistent) & bit != 0 else { return false }
        if word.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent).oldValue & bit != 0 {
            wakeClaimed(worker: index, scheduler)
        }
        return true
    }

    /// Wakes every sleeping worker (shutdown).
    func wakeAll(_ scheduler: Scheduler) {
        for word in 0..<maskWords {
            var bits = mask(word).pointee.exchange(0, ordering: .sequentiallyConsistent)
            while bits != 0 {
                let bit = bits.trailingZeroBitCount
                bits &= bits - 1
                wakeClaimed(worker: word * 64 + bit, scheduler)
            }
        }
    }

    /// The caller cleared `index`'s sleeping bit, so it owns the wake-up: it counts the worker
    /// awake and searching on its behalf, then releases its futex ("Waking", steps 1–3).
    private func wakeClaimed(worker index: Int, _ scheduler: Scheduler) {
        activity.pointee.wrappingAdd(Self.awakeOne + Self.searchingOne, ordering: .sequentiallyConsistent)
        let worker = scheduler.workers[index]
        // Releasing: pairs with the sleeper's acquiring load of its word.
        worker.pointee.sleepWord.pointee.store(0, ordering: .releasing)
        Futex.wake(worker.pointee.sleepWord, count: 1)
    }

    // MARK: Searching

    /// The calling worker ran out of local work and starts searching.
    func startSearching() {
        activity.pointee.wrappingAdd(Self.searchingOne, ordering: .sequentiallyConsistent)
    }

    /// The calling worker found work and stops searching. If it was the last searcher and more
    /// work is waiting, it wakes a sleeper to look for it ("Searching", step 2). Checking for
    /// more work first keeps the wake-up (a system call, tens of microseconds when it has to
    /// rouse an idle virtual CPU) off the path of a lone job.
    func stopSearching(_ scheduler: Scheduler) {
        let old = activity.pointee.wrappingSubtract(Self.searchingOne, ordering: .sequentiallyConsistent).oldValue
        if Self.searching(old) == 1 && scheduler.anyQueuedWork() { wakeOne(scheduler) }
    }

    // MARK: Falling asleep

    enum Outcome {
        /// Woken, or work appeared during the re-check: the worker is searching again.
        case searchAgain
        /// The system has shut down: the worker leaves its loop.
        case terminated
    }

    /// "Falling asleep", steps 1–6, for a searching worker that found nothing while spinning.
    func fallAsleep(_ worker: UnsafeMutablePointer<WorkerState>, _ scheduler: Scheduler) -> Outcome {
        let index = worker.pointee.index
        let bit = UInt64(1) << UInt64(index % 64)
        let word = mask(index / 64)
        // Step 1: arm the futex word before announcing, so a waker's 0 cannot be overwritten.
        worker.pointee.sleepWord.pointee.store(1, ordering: .sequentiallyConsistent)
        // Step 2: announce.
        word.pointee.bitwiseOr(bit, ordering: .sequentiallyConsistent)
        // Step 3: no longer awake or searching.
        activity.pointee.wrappingSubtract(Self.awakeOne + Self.searchingOne, ordering: .sequentiallyConsistent)
        // Step 4: re-check every queue after announcing; work posted before our announcement
        // is seen here, work posted after it sees our bit.
        if scheduler.anyWorkVisible(for: worker) || scheduler.terminated.load(ordering: .acquiring) {
            leave(worker, bit: bit, word: word)
            return scheduler.terminated.load(ordering: .acquiring) ? .terminated : .searchAgain
        }
        if terminationCheck(scheduler) {
            scheduler.terminated.store(true, ordering: .sequentiallyConsistent)
            leave(worker, bit: bit, word: word)
            wakeAll(scheduler)
            return .terminated
        }
        // Step 5: sleep until a waker stores 0 (spurious returns just wait again).
        worker.count(.sleeps)
        while worker.pointee.sleepWord.pointee.load(ordering: .acquiring) == 1 {
            _ = Futex.wait(on: worker.pointee.sleepWord, expected: 1)
        }
        worker.count(.wakeups)
        // Step 6.
        leave(worker, bit: bit, word: word)
        return scheduler.terminated.load(ordering: .acquiring) ? .terminated : .searchAgain
    }

    /// Clears our sleeping bit. If it was still set, nobody claimed our wake-up, so we count
    /// ourselves awake and searching again; otherwise the waker already did.
    private func leave(_ worker: UnsafeMutablePointer<WorkerState>, bit: UInt64, word: UnsafeMutablePointer<Atomic<UInt64>>) {
        if word.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent).oldValue & bit != 0 {
            activity.pointee.wrappingAdd(Self.awakeOne + Self.searchingOne, ordering: .sequentiallyConsistent)
        }
    }

    /// "Shutdown": true when shutdown was requested, no worker is awake, no fiber is parked and
    /// no queue holds work. Awake is read twice, around the queue scan, so that a worker woken
    /// during the scan (counted awake by its waker before it takes anything) is noticed.
    private func terminationCheck(_ scheduler: Scheduler) -> Bool {
        guard scheduler.shutdownRequested.load(ordering: .sequentiallyConsistent) else { return false }
        guard Self.awake(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0 else { return false }
        guard scheduler.parkedFibers() == 0, !scheduler.anyQueuedWork(), !scheduler.anyNodeQueuedWork() else { return false }
        return Self.awake(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0
    }
}
