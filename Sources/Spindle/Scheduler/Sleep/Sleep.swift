import Synchronization

// The idle protocol, whole: who is searching for work, who sleeps, how posted work and ready
// fibers wake as few sleepers as they can use, and when the system terminates. docs/sleep.md
// walks through every step and the races it rules out; the step numbers below refer to it.
// Nothing outside this file touches `activity`, the sleeping mask or a worker's sleep word.

/// Proof that the calling worker is searching (counted in `searching`): only
/// `SleepState.startSearching` makes one, and the operations that end a search consume it. A
/// search cannot end twice, and a worker cannot fall asleep without having searched.
struct SearchToken: ~Copyable {
    fileprivate let worker: Int
    fileprivate init(worker: Int) { self.worker = worker }
}

/// What the sleep protocol reads and writes of the rest of the scheduler. `Scheduler` is the one
/// conforming type in the library; tests drive the protocol against a fake (SleepStateTests).
protocol SleepEnvironment: AnyObject {
    /// The CPU worker `index` is pinned to (nil: not pinned).
    func cpu(ofWorker index: Int) -> Int?
    /// Worker `index`'s futex word (`WorkerState.shared.sleepWord`).
    func sleepWord(ofWorker index: Int) -> UnsafeMutablePointer<Atomic<UInt32>>
    /// Whether any deque, inbox or injection queue holds work.
    func anyQueuedWork() -> Bool
    /// Step 4's re-check for worker `index`: everything it could take.
    func anyWorkVisible(forWorker index: Int) -> Bool
    /// Whether some node queue holds work.
    func anyNodeQueuedWork() -> Bool
    /// Fibers parked and not yet resumed.
    func parkedFibers() -> Int
    /// `shutdown()` was called.
    var isShutdownRequested: Bool { get }
    /// The system has terminated (every worker leaves its loop).
    var isTerminated: Bool { get }
    /// "Submissions and shutdown": raises `closing` unless another worker holds it, runs the
    /// termination check once more, and terminates (true) if it still passes; otherwise lowers
    /// `closing` again (false). False also when another worker is deciding or has decided.
    func closeForTermination() -> Bool
    /// Worker `index` goes to sleep (`woke: false`) or woke up (`woke: true`): metrics.
    func workerSlept(_ index: Int, woke: Bool)
    /// "Stalls": how long the last sleeper waits, with fibers parked, before it checks for a
    /// stall (nil: never).
    var stallNanoseconds: UInt64? { get }
    /// "Stalls": a number that changes whenever a job runs or a fiber resumes.
    func progressStamp() -> UInt64
    /// "Stalls": nothing progressed since `stamp` was taken, every worker sleeps and fibers are
    /// parked: report it (once per stall).
    func stalled(since stamp: UInt64)
}

extension SleepEnvironment {
    var stallNanoseconds: UInt64? { nil }
    func progressStamp() -> UInt64 { 0 }
    func stalled(since stamp: UInt64) {}
}

/// State: `activity` packs the number of *awake* workers (low 32 bits: running or searching) and
/// of *searching* workers (high 32 bits: awake, out of local work, spinning over every queue).
/// The sleeping mask has a bit per worker that announced it is going to sleep; each worker has
/// its own futex word (`WorkerState.shared.sleepWord`).
///
/// Thread-safety: every member is thread-safe; those that take a `SearchToken` are for the
/// worker it names.
final class SleepState: @unchecked Sendable {
    // SAFETY: raw memory accessed only through atomics.
    private let block: RawBlock
    private let maskWords: Int
    let workerCount: Int
    static let awakeOne: UInt64 = 1
    static let searchingOne: UInt64 = 1 << 32

    /// `activity` alone on the first line, then each mask word on a line of its own.
    private static var activitySlot: RawSlot<Atomic<UInt64>> { RawSlot(line: 0) }
    private static func maskSlot(_ word: Int) -> RawSlot<Atomic<UInt64>> { RawSlot(line: 2 + 2 * word) }

    /// How many workers can run at once: the workers, or the CPUs they may use if fewer.
    let parallelism: Int

    init(workers: Int, cpus: Int? = nil) {
        workerCount = workers
        parallelism = Swift.max(1, Swift.min(workers, cpus ?? workers))
        maskWords = (workers + 63) / 64
        block = .allocate(byteCount: (2 + 2 * maskWords) * RawBlock.lineSize)
        block.initialize(Self.activitySlot, to: Atomic(UInt64(workers) * Self.awakeOne))
        for word in 0..<maskWords { block.initialize(Self.maskSlot(word), to: Atomic(0)) }
    }

    deinit { block.deallocate() }

    private var activity: UnsafeMutablePointer<Atomic<UInt64>> { block[Self.activitySlot] }
    private func mask(_ word: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { block[Self.maskSlot(word)] }

    static func awake(_ value: UInt64) -> UInt64 { value & 0xFFFF_FFFF }
    static func searching(_ value: UInt64) -> UInt64 { value >> 32 }

    /// Workers searching now (a hint for the loops' split decisions; docs/parallel-for.md).
    var searchingCount: Int { Int(Self.searching(activity.pointee.load(ordering: .relaxed))) }

    /// Workers awake now (a hint).
    var awakeCount: Int { Int(Self.awake(activity.pointee.load(ordering: .relaxed))) }

    /// Whether a worker could take work now and has a CPU to run it on: fewer workers are busy
    /// (awake and not searching) than CPUs can run them (a hint for splitting decisions;
    /// docs/parallel-for.md, "More workers than CPUs"). With no more workers than CPUs this is
    /// "some worker is searching or asleep". With more, a searching or sleeping worker is no
    /// reason to split while every CPU already runs a busy worker: the half would wait for a
    /// CPU, and the split costs a join and cuts the loop into ever smaller chunks. One relaxed
    /// load.
    var anyWorkerHungry: Bool {
        let value = activity.pointee.load(ordering: .relaxed)
        return Self.awake(value) < UInt64(parallelism) &+ Self.searching(value)
    }

    /// Workers whose sleeping bit is set now.
    var sleepingCount: Int {
        (0..<maskWords).reduce(0) { $0 + mask($1).pointee.load(ordering: .relaxed).nonzeroBitCount }
    }

    // MARK: Posting work

    /// Called after every push of work that other workers could take onto a queue whose push
    /// ended with a plain store ("Posting work", steps 1–3): wakes one sleeper unless some
    /// worker is already searching.
    @inline(__always)
    func workPosted(_ scheduler: some SleepEnvironment) {
        if Self.mustWake(afterPostOn: activity) { wakeOne(scheduler) }
    }

    /// Steps 1–2 of `workPosted` on an activity word (`activityWord`, which workers keep so that
    /// `post` reads no line of this object): whether step 3, waking one sleeper, is needed.
    @inline(__always)
    static func mustWake(afterPostOn activity: UnsafeMutablePointer<Atomic<UInt64>>) -> Bool {
        // Step 1: the push must be visible before we read the counts (store-load order).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        // Step 2: a searching worker will find the work; it wakes a sleeper if it was the last.
        // Sequentially consistent: the load side of the store-load pair with the push.
        return searching(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0
    }

    /// Steps 2–3 of `workPosted`, for a push whose publishing write was a sequentially
    /// consistent read-modify-write (`InjectionQueue.push`'s exchange of `tail`, which the sleep
    /// re-check reads): that write already orders the push before the load below, so step 1's
    /// fence is left out. Its cost was the wait for the push's later plain store (the
    /// predecessor's link, a line the consumer reads) to leave the store buffer.
    @inline(__always)
    func workPublished(_ scheduler: some SleepEnvironment) {
        // Step 2: a searching worker will find the work; it wakes a sleeper if it was the last.
        // Sequentially consistent: the load side of the store-load pair with the push.
        guard Self.searching(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0 else { return }
        // Step 3.
        wakeOne(scheduler)
    }

    /// Step 0 of the wake check after an owner pushed on its own deque (`post`): true when no
    /// wake-up is needed. `heldWork`: by the owner's copy of `top`, the deque held work before
    /// the push; `storage` is the deque's, for the exact reading; `activity` is this state's
    /// word (`activityWord`), which workers keep so that posting reads no line of this object.
    /// If false, the caller continues with steps 1–3 (`mustWake(afterPostOn:)`, `wakeOne`).
    @inline(__always)
    static func postNeedsNoWake(heldWork: Bool, storage: UnsafeMutableRawPointer,
                                activity: UnsafeMutablePointer<Atomic<UInt64>>, workerCount: Int) -> Bool {
        // By the owner's copy of `top` the deque held work, and either every worker is awake
        // (nobody could be woken) or `top` itself confirms it: two elements or more now.
        heldWork && (awake(activity.pointee.load(ordering: .relaxed)) == UInt64(workerCount)
                     || WorkStealingDeque<UInt>.refreshOwnerCount(storage: storage) >= 2)
    }

    /// The `activity` word, for `postNeedsNoWake`.
    var activityWord: UnsafeMutablePointer<Atomic<UInt64>> { activity }

    /// A parked fiber of worker `index` was pushed on that worker's inbox ("Resuming a fiber"):
    /// wake that worker if it sleeps; if it is awake (perhaps inside a long job) and the fiber
    /// may migrate, make sure some worker searches.
    func fiberMadeReady(on index: Int, pinned: Bool, _ scheduler: some SleepEnvironment) {
        if !wake(worker: index, scheduler) && !pinned {
            workPosted(scheduler)
        }
    }

    // MARK: Waking

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
    func wakeOne(_ scheduler: some SleepEnvironment, callerBlocks: Bool = false, callerCPU: Int? = CurrentThread.cpu) -> Bool {
        guard let here = callerCPU else { return wakeFirst(scheduler) { _ in true } }
        return wakeFirst(scheduler) { (scheduler.cpu(ofWorker: $0) == here) == callerBlocks }
            || wakeFirst(scheduler) { _ in true }
    }

    /// Claims and wakes the first sleeper whose index `eligible` accepts.
    private func wakeFirst(_ scheduler: some SleepEnvironment, where eligible: (Int) -> Bool) -> Bool {
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
    func wakeOne(among candidates: [Int], _ scheduler: some SleepEnvironment) -> Bool {
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
    func wake(worker index: Int, _ scheduler: some SleepEnvironment) -> Bool {
        let bit = UInt64(1) << UInt64(index % 64)
        let word = mask(index / 64)
        guard word.pointee.load(ordering: .sequentiallyConsistent) & bit != 0 else { return false }
        if word.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent).oldValue & bit != 0 {
            wakeClaimed(worker: index, scheduler)
        }
        return true
    }

    /// Wakes every sleeping worker (shutdown).
    func wakeAll(_ scheduler: some SleepEnvironment) {
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
    private func wakeClaimed(worker index: Int, _ scheduler: some SleepEnvironment) {
        activity.pointee.wrappingAdd(Self.awakeOne + Self.searchingOne, ordering: .sequentiallyConsistent)
        let sleepWord = scheduler.sleepWord(ofWorker: index)
        // Releasing: pairs with the sleeper's acquiring load of its word.
        sleepWord.pointee.store(0, ordering: .releasing)
        Futex.wake(sleepWord, count: 1)
    }

    // MARK: Searching

    /// The calling worker ran out of local work and starts searching ("Searching", step 1).
    func startSearching(worker index: Int) -> SearchToken {
        activity.pointee.wrappingAdd(Self.searchingOne, ordering: .sequentiallyConsistent)
        return SearchToken(worker: index)
    }

    /// The searching worker found work and stops searching. If it was the last searcher and more
    /// work is waiting, it wakes a sleeper to look for it ("Searching", step 2). Checking for
    /// more work first keeps the wake-up (a system call, tens of microseconds when it has to
    /// rouse an idle virtual CPU) off the path of a lone job.
    func stopSearching(_ token: consuming SearchToken, _ scheduler: some SleepEnvironment) {
        _ = consume token
        let old = activity.pointee.wrappingSubtract(Self.searchingOne, ordering: .sequentiallyConsistent).oldValue
        if Self.searching(old) == 1 && scheduler.anyQueuedWork() { wakeOne(scheduler) }
    }

    // MARK: Falling asleep

    /// "Falling asleep", steps 1–6, for a searching worker that found nothing while spinning.
    /// Returns the worker's new search (woken, or work appeared during the re-check), or nil when
    /// the system has terminated and the worker leaves its loop.
    func fallAsleep(_ token: consuming SearchToken, _ scheduler: some SleepEnvironment) -> SearchToken? {
        let index = token.worker
        _ = consume token
        let bit = UInt64(1) << UInt64(index % 64)
        let word = mask(index / 64)
        let sleepWord = scheduler.sleepWord(ofWorker: index)
        // Step 1: arm the futex word before announcing, so a waker's 0 cannot be overwritten.
        sleepWord.pointee.store(1, ordering: .sequentiallyConsistent)
        // Step 2: announce.
        word.pointee.bitwiseOr(bit, ordering: .sequentiallyConsistent)
        // Step 3: no longer awake or searching.
        activity.pointee.wrappingSubtract(Self.awakeOne + Self.searchingOne, ordering: .sequentiallyConsistent)
        // Step 4: re-check every queue after announcing; work posted before our announcement
        // is seen here, work posted after it sees our bit.
        if scheduler.anyWorkVisible(forWorker: index) || scheduler.isTerminated {
            leave(index, bit: bit, word: word)
            return scheduler.isTerminated ? nil : SearchToken(worker: index)
        }
        if terminationCheck(scheduler) {
            // "Submissions and shutdown": an outside submission that checked for shutdown
            // before it was requested may be pushing now; closing first makes it wait for the
            // verdict, and the last look sees its push if it came before.
            if scheduler.closeForTermination() {
                leave(index, bit: bit, word: word)
                wakeAll(scheduler)
                return nil
            }
            leave(index, bit: bit, word: word)
            return SearchToken(worker: index)
        }
        // Step 5: sleep until a waker stores 0 (spurious returns just wait again). The last
        // worker to fall asleep while fibers are parked watches for a stall ("Stalls").
        scheduler.workerSlept(index, woke: false)
        var watch = watchesForStall(scheduler)
        while sleepWord.pointee.load(ordering: .acquiring) == 1 {
            if let stamp = watch, let timeout = scheduler.stallNanoseconds {
                if Futex.wait(on: sleepWord, expected: 1, timeoutNanoseconds: timeout) == .timedOut {
                    // Still idle with fibers parked, and nothing ran since: a stall. Watch on
                    // from the new stamp (`stalled` reports one stall once).
                    watch = watchesForStall(scheduler)
                    if watch == stamp && sleepWord.pointee.load(ordering: .acquiring) == 1 {
                        scheduler.stalled(since: stamp)
                    }
                }
            } else {
                _ = Futex.wait(on: sleepWord, expected: 1)
            }
        }
        scheduler.workerSlept(index, woke: true)
        // Step 6.
        leave(index, bit: bit, word: word)
        return scheduler.isTerminated ? nil : SearchToken(worker: index)
    }

    /// "Stalls": the progress stamp to watch from, when stall reports are on, no worker is
    /// awake, fibers are parked and no queue holds work; else nil. Idle path only.
    private func watchesForStall(_ scheduler: some SleepEnvironment) -> UInt64? {
        guard scheduler.stallNanoseconds != nil,
              Self.awake(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0,
              scheduler.parkedFibers() > 0 else { return nil }
        let stamp = scheduler.progressStamp()
        guard !scheduler.anyQueuedWork(), !scheduler.anyNodeQueuedWork(),
              Self.awake(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0 else { return nil }
        return stamp
    }

    /// Clears our sleeping bit. If it was still set, nobody claimed our wake-up, so we count
    /// ourselves awake and searching again; otherwise the waker already did.
    private func leave(_ index: Int, bit: UInt64, word: UnsafeMutablePointer<Atomic<UInt64>>) {
        if word.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent).oldValue & bit != 0 {
            activity.pointee.wrappingAdd(Self.awakeOne + Self.searchingOne, ordering: .sequentiallyConsistent)
        }
    }

    // MARK: Shutdown

    /// "Shutdown": true when shutdown was requested, no worker is awake, no fiber is parked and
    /// no queue holds work. Awake is read twice, around the queue scan, so that a worker woken
    /// during the scan (counted awake by its waker before it takes anything) is noticed.
    private func terminationCheck(_ scheduler: some SleepEnvironment) -> Bool {
        guard scheduler.isShutdownRequested else { return false }
        guard Self.awake(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0 else { return false }
        guard scheduler.parkedFibers() == 0, !scheduler.anyQueuedWork(), !scheduler.anyNodeQueuedWork() else { return false }
        return Self.awake(activity.pointee.load(ordering: .sequentiallyConsistent)) == 0
    }
}

// MARK: - What the protocol reads of the scheduler

extension Scheduler: SleepEnvironment {
    func cpu(ofWorker index: Int) -> Int? { workerCPUs[index] }

    func sleepWord(ofWorker index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        workers[index].pointee.shared.sleepWord
    }

    var isShutdownRequested: Bool { shutdownRequested.load(ordering: .sequentiallyConsistent) }
    var isTerminated: Bool { terminated.load(ordering: .acquiring) }

    func closeForTermination() -> Bool {
        // Sequentially consistent: the store side of the Dekker pair with a submitter's push
        // and its load of `closing` (`outsidePushSurvived`). One decider at a time: a worker
        // that finds `closing` raised leaves the decision to its holder, which alone may lower
        // it, and never after it terminated. Then the whole termination check once more: a
        // queue holding a record pushed before, or a worker woken by that push.
        guard closing.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else {
            return false
        }
        if SleepState.awake(sleep.activityWord.pointee.load(ordering: .sequentiallyConsistent)) != 0
            || parkedFibers() != 0 || anyQueuedWork() || anyNodeQueuedWork()
            || SleepState.awake(sleep.activityWord.pointee.load(ordering: .sequentiallyConsistent)) != 0 {
            closing.store(false, ordering: .sequentiallyConsistent)
            return false
        }
        // Set while `closing` is still raised: a waiting submitter then reads the verdict.
        terminated.store(true, ordering: .sequentiallyConsistent)
        return true
    }

    func workerSlept(_ index: Int, woke: Bool) {
        workers[index].count(woke ? .wakeups : .sleeps)
    }

    /// Whether any work is visible to worker `index` (its inbox and pinned list, any deque, any
    /// injection queue, its node's queue): step 4 of "Falling asleep".
    func anyWorkVisible(forWorker index: Int) -> Bool {
        let worker = workers[index]
        if worker.pointee.shared.inbox.pointee.load(ordering: .sequentiallyConsistent) != 0 || worker.local.pointee.pinnedReady != nil
            || worker.pointee.shared.pinnedInbox.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            return true
        }
        if multiNode && nodeQueueRefs[workerNodes[worker.pointee.index]]._withUnsafeGuaranteedRef({ $0.mayHaveWork }) {
            return true
        }
        return anyQueuedWork()
    }

    /// Whether any deque, inbox or injection queue holds work.
    func anyQueuedWork() -> Bool {
        for queue in injectionRefs where queue._withUnsafeGuaranteedRef({ $0.mayHaveWork }) { return true }
        for index in 0..<workerCount {
            let worker = workers[index]
            for priority in Priority.allCases where worker.approximateCount(priority) > 0 { return true }
            if worker.pointee.shared.inbox.pointee.load(ordering: .sequentiallyConsistent) != 0 { return true }
        }
        return false
    }

    /// Whether some node queue holds work (termination).
    func anyNodeQueuedWork() -> Bool {
        nodeQueues.contains { $0.mayHaveWork }
    }

    /// Fibers parked and not yet resumed, over all workers.
    func parkedFibers() -> Int {
        var parked: UInt64 = 0
        var resumed: UInt64 = 0
        for index in 0..<workerCount {
            parked &+= workers[index].metric(.fibersParked)
            resumed &+= workers[index].metric(.fibersResumed)
        }
        return Int(bitPattern: UInt(parked &- resumed))
    }
}
