import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Fiber-aware synchronization (docs/synchronization.md): JobMutex held across waits by jobs and
/// outside threads, JobEvent in both modes, JobSemaphore bounding concurrency; at several
/// worker counts, each with a time limit.
@Suite(.serialized)
struct SyncTests {
    /// Jobs and outside threads increment a value under the mutex, and the jobs wait for a child
    /// job while they hold it (which a pthread mutex would deadlock on one worker). No two
    /// holders overlap, and no increment is lost.
    @Test(arguments: workerCounts)
    func aMutexExcludesHoldersThatWait(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 120, "JobMutex workers=\(workers)") {
            let mutex = JobMutex(0)
            let inside = Atomic<Bool>(false)
            let overlaps = Atomic<Int>(0)
            let jobCount = 2_000
            let done = JobCounter()
            for index in 0..<jobCount {
                jobs.run(counter: done) { context in
                    mutex.withLock { value in
                        if inside.exchange(true, ordering: .relaxed) { overlaps.add(1, ordering: .relaxed) }
                        let before = value
                        if index % 4 == 0 {
                            // Held across a park: the child runs elsewhere (or here, after the park).
                            context.wait(for: context.run { _ in })
                        }
                        value = before + 1
                        inside.store(false, ordering: .relaxed)
                    }
                }
            }
            let threads = 4, perThread = 500
            let outside = DispatchGroup()
            for _ in 0..<threads {
                DispatchQueue.global().async(group: outside) {
                    for _ in 0..<perThread {
                        mutex.withLock { value in
                            if inside.exchange(true, ordering: .relaxed) { overlaps.add(1, ordering: .relaxed) }
                            value += 1
                            inside.store(false, ordering: .relaxed)
                        }
                    }
                }
            }
            jobs.wait(for: done)
            outside.wait()
            #expect(overlaps.load(ordering: .relaxed) == 0)
            #expect(mutex.withLock { $0 } == jobCount + threads * perThread)
        }
        jobs.shutdown()
    }

    /// `withLockIfAvailable` does not wait: nil while another job holds the lock (held across a
    /// wait for a counter the test controls), the value once it is free.
    @Test(arguments: workerCounts)
    func tryingALockedMutexReturnsNil(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "JobMutex try workers=\(workers)") {
            let mutex = JobMutex("free")
            let holding = JobCounter(1)
            let gate = JobCounter(1)
            let holder = jobs.run { context in
                mutex.withLock { value in
                    value = "held"
                    holding.decrement()
                    context.wait(for: gate)
                    value = "released"
                }
            }
            jobs.wait(for: holding)
            #expect(mutex.withLockIfAvailable { $0 } == nil)
            gate.decrement()
            jobs.wait(for: holder)
            #expect(mutex.withLockIfAvailable { $0 } == "released")
        }
        jobs.shutdown()
    }

    /// A manual-reset event releases every waiter and stays set; an auto-reset event releases
    /// one waiter per `set()`.
    @Test(arguments: workerCounts)
    func eventsReleaseWaitersByMode(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "JobEvent workers=\(workers)") {
            let manual = JobEvent(mode: .manualReset)
            let allWaiting = JobCounter(50)
            let released = JobCounter()
            for _ in 0..<50 {
                jobs.run(counter: released) { _ in
                    allWaiting.decrement()
                    manual.wait()
                }
            }
            jobs.wait(for: allWaiting)
            manual.set()
            jobs.wait(for: released)
            #expect(manual.isSet)
            manual.wait()   // set: returns at once
            manual.reset()
            #expect(!manual.isSet)

            // Auto reset: each set lets exactly one waiter through, whether it was queued or
            // arrives later and takes the set event. (Sets while the event is already set would
            // merge into one, so each set waits for its waiter to pass first.)
            let auto = JobEvent(mode: .autoReset)
            let waiterCount = 10
            let passed = Atomic<Int>(0)
            let passes = (0..<waiterCount).map { _ in JobCounter(1) }
            let autoWaiters = JobCounter()
            for _ in 0..<waiterCount {
                jobs.run(counter: autoWaiters) { _ in
                    auto.wait()
                    passes[passed.add(1, ordering: .relaxed).newValue - 1].decrement()
                }
            }
            for round in 0..<waiterCount {
                auto.set()
                jobs.wait(for: passes[round])
                #expect(passed.load(ordering: .relaxed) == round + 1, "one set, one waiter through")
            }
            jobs.wait(for: autoWaiters)
            #expect(!auto.isSet, "each set was taken by a waiter")
            auto.set()
            #expect(auto.isSet)
            auto.wait()     // takes it
            #expect(!auto.isSet)
        }
        jobs.shutdown()
    }

    /// A semaphore of 3 permits: jobs that hold one across a wait never number more than 3 at
    /// once, and all finish.
    @Test(arguments: workerCounts)
    func aSemaphoreBoundsConcurrency(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "JobSemaphore workers=\(workers)") {
            let permits = JobSemaphore(value: 3)
            let current = Atomic<Int>(0)
            let highest = Atomic<Int>(0)
            let done = JobCounter()
            for _ in 0..<300 {
                jobs.run(counter: done) { context in
                    permits.withPermit {
                        let now = current.add(1, ordering: .relaxed).newValue
                        _ = highest.max(now, ordering: .relaxed)
                        context.wait(for: context.run { _ in })
                        current.subtract(1, ordering: .relaxed)
                    }
                }
            }
            jobs.wait(for: done)
            #expect(highest.load(ordering: .relaxed) <= 3)
            #expect(highest.load(ordering: .relaxed) >= 1)
            #expect(permits.availablePermits == 3)
            #expect(permits.tryAcquire())
            permits.release()
        }
        jobs.shutdown()
    }

    @Test func releasingAnUnheldPermitTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            JobSemaphore(value: 2).release()
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSemaphore.release(): every one of its 2 permits is already available"), "\(stderr)")
    }
}
