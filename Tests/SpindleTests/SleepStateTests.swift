import Foundation
import Synchronization
import Testing
@testable import Spindle

#if canImport(Glibc)
import Glibc
#endif

/// The idle protocol of docs/sleep.md against a fake scheduler: the counts, the re-check, the
/// termination check, and whom a wake-up picks. Real threads sleep on real futexes; the fake
/// says what work is visible.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct SleepStateTests {
    /// A scheduler as the sleep protocol sees it, with every answer set by the test.
    final class FakeScheduler: SleepEnvironment, @unchecked Sendable {
        // SAFETY: every mutable field is atomic; `words` is allocated once.
        let cpus: [Int?]
        let words: UnsafeMutablePointer<Atomic<UInt32>>
        let work = Atomic<Bool>(false)
        let shutdown = Atomic<Bool>(false)
        let terminatedFlag = Atomic<Bool>(false)
        let parked = Atomic<Int>(0)
        let sleeps = Atomic<Int>(0)
        let wakeups = Atomic<Int>(0)

        init(cpus: [Int?]) {
            self.cpus = cpus
            words = .allocate(capacity: cpus.count)
            for index in cpus.indices { (words + index).initialize(to: Atomic(0)) }
        }

        deinit { words.deallocate() }

        func cpu(ofWorker index: Int) -> Int? { cpus[index] }
        func sleepWord(ofWorker index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> { words + index }
        func anyQueuedWork() -> Bool { work.load(ordering: .sequentiallyConsistent) }
        func anyWorkVisible(forWorker index: Int) -> Bool { work.load(ordering: .sequentiallyConsistent) }
        func anyNodeQueuedWork() -> Bool { false }
        func parkedFibers() -> Int { parked.load(ordering: .sequentiallyConsistent) }
        var isShutdownRequested: Bool { shutdown.load(ordering: .sequentiallyConsistent) }
        var isTerminated: Bool { terminatedFlag.load(ordering: .sequentiallyConsistent) }
        func closeForTermination() -> Bool {
            guard !work.load(ordering: .sequentiallyConsistent) else { return false }
            terminatedFlag.store(true, ordering: .sequentiallyConsistent)
            return true
        }
        func workerSlept(_ index: Int, woke: Bool) {
            if woke {
                wakeups.wrappingAdd(1, ordering: .relaxed)
            } else {
                sleeps.wrappingAdd(1, ordering: .relaxed)
            }
        }
    }

    /// Starts a thread that searches as worker `index` and falls asleep; it records whether it
    /// came back with a new search (true) or saw termination (false) in `outcome`
    /// (0: still asleep, 1: search, 2: terminated).
    func sleeper(_ sleep: SleepState, _ fake: FakeScheduler, worker index: Int,
                 outcome: UnsafeMutablePointer<Atomic<Int>>) -> Joinable {
        nonisolated(unsafe) let outcome = outcome
        return Joinable {
            let search = sleep.startSearching(worker: index)
            if let again = sleep.fallAsleep(search, fake) {
                sleep.stopSearching(again, fake)
                outcome.pointee.store(1, ordering: .sequentiallyConsistent)
            } else {
                outcome.pointee.store(2, ordering: .sequentiallyConsistent)
            }
        }
    }

    /// A started thread that can be waited for.
    struct Joinable {
        private let done = DispatchSemaphore(value: 0)

        init(_ body: @escaping @Sendable () -> Void) {
            let done = self.done
            Thread {
                body()
                done.signal()
            }.start()
        }

        func join() { done.wait() }
    }

    /// Spins (yielding the CPU) until `condition` holds; the suite's time limit ends a hang.
    func until(_ condition: () -> Bool) {
        while !condition() { sched_yield() }
    }

    @Test func searchingAndAwakeAreCounted() {
        let fake = FakeScheduler(cpus: [0, 1, 2])
        let sleep = SleepState(workers: 3)
        #expect(sleep.awakeCount == 3 && sleep.searchingCount == 0)
        #expect(!sleep.anyWorkerHungry)
        let search = sleep.startSearching(worker: 1)
        #expect(sleep.searchingCount == 1)
        #expect(sleep.anyWorkerHungry)
        sleep.stopSearching(search, fake)
        #expect(sleep.searchingCount == 0 && sleep.awakeCount == 3)
    }

    @Test func workSeenInTheRecheckEndsTheFallAtOnce() {
        let fake = FakeScheduler(cpus: [0, 1])
        let sleep = SleepState(workers: 2)
        fake.work.store(true, ordering: .sequentiallyConsistent)
        let search = sleep.startSearching(worker: 0)
        guard let again = sleep.fallAsleep(search, fake) else {
            Issue.record("the re-check saw work, yet the fall ended in termination")
            return
        }
        #expect(fake.sleeps.load(ordering: .relaxed) == 0)
        // Counted awake and searching again, not asleep.
        #expect(sleep.awakeCount == 2 && sleep.searchingCount == 1 && sleep.sleepingCount == 0)
        sleep.stopSearching(again, fake)
    }

    @Test func theLastWorkerToSleepAfterShutdownTerminates() {
        let fake = FakeScheduler(cpus: [0])
        let sleep = SleepState(workers: 1)
        fake.shutdown.store(true, ordering: .sequentiallyConsistent)
        let search = sleep.startSearching(worker: 0)
        if let again = sleep.fallAsleep(search, fake) {
            Issue.record("the last worker to sleep after shutdown, with nothing left, searched again")
            sleep.stopSearching(again, fake)
        }
        #expect(fake.isTerminated)
        #expect(fake.sleeps.load(ordering: .relaxed) == 0)
    }

    @Test func aParkedFiberKeepsTheSystemAliveUntilWoken() throws {
        let fake = FakeScheduler(cpus: [0])
        let sleep = SleepState(workers: 1)
        fake.shutdown.store(true, ordering: .sequentiallyConsistent)
        fake.parked.store(1, ordering: .sequentiallyConsistent)
        let outcome = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        outcome.initialize(to: Atomic(0))
        defer { outcome.deallocate() }
        let thread = sleeper(sleep, fake, worker: 0, outcome: outcome)
        until { fake.sleeps.load(ordering: .relaxed) == 1 }
        #expect(!fake.isTerminated)
        #expect(sleep.sleepingCount == 1 && sleep.awakeCount == 0)
        // The parked fiber is resumed: its waker wakes the sleeper, which searches again.
        fake.parked.store(0, ordering: .sequentiallyConsistent)
        fake.work.store(true, ordering: .sequentiallyConsistent)
        #expect(sleep.wake(worker: 0, fake))
        thread.join()
        #expect(outcome.pointee.load(ordering: .relaxed) == 1)
        #expect(fake.wakeups.load(ordering: .relaxed) == 1)
        #expect(sleep.sleepingCount == 0 && sleep.awakeCount == 1 && sleep.searchingCount == 0)
    }

    @Test func aWakeUpPrefersASleeperOnAnotherCPUUnlessTheCallerBlocks() throws {
        // Workers 0 and 1 on CPU 0, worker 2 on CPU 1; the caller runs on CPU 0.
        let fake = FakeScheduler(cpus: [0, 0, 1])
        let sleep = SleepState(workers: 3)
        let outcomes = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 3)
        for index in 0..<3 { (outcomes + index).initialize(to: Atomic(0)) }
        defer { outcomes.deallocate() }
        let threads = (0..<3).map { sleeper(sleep, fake, worker: $0, outcome: outcomes + $0) }
        until { sleep.sleepingCount == 3 }
        // No work is visible, so a woken worker does not wake the next one itself (it would
        // with work queued: "Searching", step 2).

        // A submitter on CPU 0 wakes the worker of CPU 1 first.
        #expect(sleep.wakeOne(fake, callerCPU: 0))
        threads[2].join()
        #expect(outcomes[2].load(ordering: .relaxed) == 1)
        #expect(outcomes[0].load(ordering: .relaxed) == 0 && outcomes[1].load(ordering: .relaxed) == 0)

        // With only sleepers on the caller's CPU left, one of them is woken all the same.
        #expect(sleep.wakeOne(fake, callerCPU: 0))
        until { outcomes[0].load(ordering: .relaxed) == 1 || outcomes[1].load(ordering: .relaxed) == 1 }

        // A caller about to block frees its CPU: the last sleeper there goes.
        #expect(sleep.wakeOne(fake, callerBlocks: true, callerCPU: 0))
        for thread in threads.prefix(2) { thread.join() }
        #expect(!sleep.wakeOne(fake, callerCPU: 0))  // nobody left asleep
        #expect(fake.wakeups.load(ordering: .relaxed) == 3)
        #expect(sleep.awakeCount == 3 && sleep.sleepingCount == 0)
    }

    @Test func postingWakesOneSleeperOnlyWhenNobodySearches() throws {
        let fake = FakeScheduler(cpus: [0, 1])
        let sleep = SleepState(workers: 2)
        let outcome = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        outcome.initialize(to: Atomic(0))
        defer { outcome.deallocate() }
        let thread = sleeper(sleep, fake, worker: 1, outcome: outcome)
        until { sleep.sleepingCount == 1 }
        // Worker 0 searches: a post wakes nobody (the searcher will find the work).
        let search = sleep.startSearching(worker: 0)
        fake.work.store(true, ordering: .sequentiallyConsistent)
        sleep.workPosted(fake)
        #expect(sleep.sleepingCount == 1)
        sleep.stopSearching(search, fake)  // the last searcher leaves with work queued: it wakes one
        thread.join()
        #expect(outcome.pointee.load(ordering: .relaxed) == 1)
        #expect(sleep.awakeCount == 2 && sleep.searchingCount == 0)
    }
}
