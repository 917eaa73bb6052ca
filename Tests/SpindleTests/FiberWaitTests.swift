import Foundation
@testable @_spi(Internals) import Spindle
import Synchronization
import Testing

/// Waiting on counters: fibers park and resume (on their worker when pinned), outside threads
/// block, and a reused counter's wait ends only with its own round.
extension JobSystemTests {
    @Suite(.serialized)
    struct FiberWaitTests {
        // MARK: Parking

        @Test(arguments: workerCounts)
        func thousandsOfFibersParkAtOnce(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            let parkers = 3_000
            withTimeLimit(seconds: 120, "thousandsOfFibersParkAtOnce workers=\(workers)") {
                let gate = JobCounter(1)
                let passed = Tally()
                let all = JobCounter()
                for _ in 0..<parkers {
                    jobs.run(counter: all) { ctx in
                        ctx.wait(for: gate)
                        passed.add()
                    }
                }
                // The gate is closed, so no job can finish: every one of them must park. Polling the
                // scheduler's own park count is a condition, not a guess about timing.
                while jobs.scheduler.parkedFibers() < parkers { sched_yield() }
                #expect(passed.current == 0)
                gate.decrement()
                jobs.wait(for: all)
                #expect(passed.current == parkers)
                let metrics = jobs.metrics()
                #expect(metrics.total.fibersParked >= UInt64(parkers))
                #expect(metrics.total.fibersParked == metrics.total.fibersResumed)
                // One fiber per parked job plus the ones that kept the workers running.
                #expect(metrics.total.fibersCreated >= UInt64(parkers))
            }
            jobs.shutdown()
        }

        @Test(arguments: [2, 4, 8])
        func pinnedJobsResumeOnTheirWorker(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 60, "pinnedJobsResumeOnTheirWorker workers=\(workers)") {
                let moved = Tally()
                let all = JobCounter()
                for _ in 0..<200 {
                    jobs.run(counter: all, affinity: .pinned) { ctx in
                        let home = ctx.workerIndex
                        for _ in 0..<5 {
                            let children = ctx.run(count: 8) { _, _ in }
                            ctx.wait(for: children)
                            if ctx.workerIndex != home { moved.add() }
                        }
                    }
                }
                jobs.wait(for: all)
                #expect(moved.current == 0)
            }
            jobs.shutdown()
        }

        /// A counter reused round after round: a wait of round r must not return on the wake-up of
        /// round r − 1, whose last decrement may still be waking its list when round r begins
        /// (docs/scheduler.md, "Waiting", the zero epoch).
        @Test(arguments: workerCounts)
        func aReusedCountersWaitEndsOnlyWithItsOwnRound(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            let rounds = stressCount(50_000)
            withTimeLimit(seconds: 120, "reusedCounter workers=\(workers) rounds=\(rounds)") {
                let finished = Atomic<Int>(0)
                let early = Tally()
                let counter = JobCounter()
                // Outside: a blocked thread.
                for round in 1...rounds {
                    counter.increment()
                    jobs.run { _ in
                        finished.store(round, ordering: .relaxed)
                        counter.decrement()
                    }
                    jobs.wait(for: counter)
                    if finished.load(ordering: .relaxed) != round { early.add() }
                }
                #expect(early.current == 0, "\(early.current) of \(rounds) outside waits returned before their round's decrement")
                // Inside: a parked fiber, woken by a job that decrements by hand.
                let insideEarly = Tally()
                let done = jobs.run { ctx in
                    for round in 1...rounds {
                        counter.increment()
                        ctx.run { _ in
                            finished.store(-round, ordering: .relaxed)
                            counter.decrement()
                        }
                        ctx.wait(for: counter)
                        if finished.load(ordering: .relaxed) != -round { insideEarly.add() }
                    }
                }
                jobs.wait(for: done)
                #expect(insideEarly.current == 0, "\(insideEarly.current) of \(rounds) fiber waits returned before their round's decrement")
                #expect(counter.value == 0)
            }
            jobs.shutdown()
        }

        /// The interleaving behind the test above, made deterministic: round 1's last decrement
        /// reaches zero but has not woken its list yet; the counter is reused for round 2 and a
        /// waiter registers; then round 1's wake-up runs. The waiter must go back to waiting, and
        /// return only with round 2's zero.
        @Test(arguments: ["thread", "fiber"])
        func aWakeUpOfAnEarlierRoundDoesNotEndAWait(waiter: String) throws {
            let jobs = try makeSystem(workers: 2)
            withTimeLimit(seconds: 60, "aWakeUpOfAnEarlierRound waiter=\(waiter)") {
                let counter = JobCounter(1)
                #expect(counter.subtract(1, byJobs: nil), "round 1 reaches zero; its wake-up is held back")
                counter.increment()
                let returned = Atomic<Bool>(false)
                let ended = JobCounter(1)
                if waiter == "thread" {
                    Thread {
                        jobs.wait(for: counter)
                        returned.store(true, ordering: .releasing)
                        ended.decrement()
                    }.start()
                } else {
                    jobs.run { ctx in
                        ctx.wait(for: counter)
                        returned.store(true, ordering: .releasing)
                        ended.decrement()
                    }
                }
                // The waiter is on the list once the head is set.
                while counter.waiters.load(ordering: .acquiring) == 0 { sched_yield() }
                counter.reachedZero()
                // Round 1's wake-up took the list: the waiter either returns (wrongly) or registers
                // again.
                while !returned.load(ordering: .acquiring) && counter.waiters.load(ordering: .acquiring) == 0 {
                    sched_yield()
                }
                let endedEarly = returned.load(ordering: .acquiring)
                #expect(!endedEarly, "a wait of round 2 ended with round 1's wake-up")
                counter.decrement()
                jobs.wait(for: ended)
                let endedAtLast = returned.load(ordering: .acquiring)
                #expect(endedAtLast)
            }
            jobs.shutdown()
        }

        /// A fiber made ready while the worker it parked on is inside a long job is resumed by
        /// another worker (the long job here even waits for it: without that, it would never end).
        @Test(arguments: [2, 4])
        func aReadyFiberDoesNotWaitForABusyWorker(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 60, "aReadyFiberDoesNotWaitForABusyWorker workers=\(workers)") {
                for round in 0..<20 {
                    let gate = JobCounter(1)
                    let childStarted = JobCounter(1)
                    let resumed = Atomic<Bool>(false)
                    let childWorker = Atomic<Int>(-1)
                    let resumedOn = Atomic<Int>(-1)
                    let done = jobs.run { ctx in
                        ctx.run { child in
                            childWorker.store(child.workerIndex, ordering: .relaxed)
                            childStarted.decrement()
                            // A long job: it ends only once the parked parent ran again.
                            while !resumed.load(ordering: .acquiring) { spinPause() }
                        }
                        ctx.wait(for: gate)
                        resumedOn.store(ctx.workerIndex, ordering: .relaxed)
                        resumed.store(true, ordering: .releasing)
                    }
                    jobs.wait(for: childStarted)
                    gate.decrement()
                    jobs.wait(for: done)
                    let child = childWorker.load(ordering: .relaxed), parent = resumedOn.load(ordering: .relaxed)
                    #expect(child != parent, "round \(round): the parent resumed on the worker of the job it was waiting behind")
                }
            }
            jobs.shutdown()
        }

        @Test
        func outsideWaitBlocksUntilTheCounterReachesZero() throws {
            let jobs = try makeSystem(workers: 2)
            withTimeLimit(seconds: 30, "outsideWait") {
                let manual = JobCounter(3)
                let order = Locked<[String]>([])
                let waiter = JobCounter()
                // Three outside threads each decrement once; an outside thread waits.
                onThreads(3) { _ in manual.decrement() }
                jobs.wait(for: manual)
                order.withLock { $0.append("waited") }
                // A job waiting through jobs.wait(for:) parks instead of blocking its worker.
                jobs.run(counter: waiter) { _ in jobs.wait(for: manual) }
                jobs.wait(for: waiter)
                #expect(order.withLock { $0 } == ["waited"])
                #expect(manual.value == 0)
            }
            jobs.shutdown()
            // With one worker, a job blocking in jobs.wait(for:) would starve the job it waits for.
            let single = try makeSystem(workers: 1)
            withTimeLimit(seconds: 30, "jobs.wait(for:) inside a job parks") {
                let gate = JobCounter(1)
                let done = single.run { _ in single.wait(for: gate) }
                single.run { _ in gate.decrement() }
                single.wait(for: done)
                #expect(gate.value == 0)
            }
        }
    }
}
