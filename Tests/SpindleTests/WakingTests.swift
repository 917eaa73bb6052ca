import Foundation
@testable @_spi(Internals) import Spindle
import Testing

/// Posting work wakes a sleeping worker (docs/sleep.md).
extension JobSystemTests {
    @Suite(.serialized)
    struct WakingTests {
        /// A job submitted from outside starts while a worker sleeps, even when the only sleeper is
        /// pinned to the submitter's CPU and the worker that is awake runs a job waiting for the new
        /// one (docs/sleep.md, "Waking"). Both workers and the submitting thread share one CPU; the
        /// second job is submitted once the other worker is asleep, and the submitter does not block.
        @Test
        func anOutsideJobWakesASleeperOnTheSubmittersCPU() throws {
            let cpu = try #require(try CurrentThread.allowedCPUs().min())
            withTimeLimit(seconds: 60, "anOutsideJobWakesASleeperOnTheSubmittersCPU cpu=\(cpu)") {
                do {
                    try CurrentThread.pin(to: [cpu])
                    let jobs = try JobSystem(configuration: .init(workers: 2, cpus: [cpu], threadNamePrefix: "sp-wake-w"))
                    let started = Tally()
                    let holder = jobs.run { _ in
                        started.add()
                        while started.current < 2 { sched_yield() }
                    }
                    while started.current < 1 || jobs.sleepingWorkers < 1 { sched_yield() }
                    let waited = jobs.run { _ in started.add() }
                    while started.current < 2 { sched_yield() }
                    jobs.wait(for: waited)
                    jobs.wait(for: holder)
                    jobs.shutdown()
                } catch {
                    Issue.record("setup failed: \(error)")
                }
            }
        }

        /// A job whose deque a thief emptied, and which posts again once that thief sleeps, wakes it:
        /// the owner's copy of `top` still counts the stolen jobs, so the post must read `top` itself
        /// (docs/sleep.md, "Posting work", step 0). The job spins until its new child has started,
        /// never popping it, so a post that wakes nobody hangs and the time limit fails.
        @Test(arguments: [2, 4])
        func aPostAfterThievesEmptiedTheDequeWakesASleeper(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 60, "aPostAfterThievesEmptiedTheDequeWakesASleeper workers=\(workers)") {
                let started = Tally()
                let done = jobs.run { ctx in
                    let stolen = JobCounter()
                    let sleepsBefore = jobs.metrics().total.sleeps
                    for _ in 0..<8 { ctx.run(counter: stolen) { _ in } }
                    // This job never pops while it spins: the other workers take all eight...
                    while !stolen.isComplete { sched_yield() }
                    // ...and then all fall asleep with nothing left to take (a sleep counted since the
                    // eight were posted is one past its re-check).
                    while jobs.metrics().total.sleeps == sleepsBefore || jobs.sleepingWorkers < workers - 1 { sched_yield() }
                    ctx.run { _ in started.add() }
                    while started.current < 1 { sched_yield() }
                }
                jobs.wait(for: done)
            }
            jobs.shutdown()
        }
    }
}
