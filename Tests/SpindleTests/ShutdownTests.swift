import Foundation
@testable @_spi(Internals) import Spindle
import Testing

/// Shutting down (or releasing) a job system runs the work submitted before.
extension JobSystemTests {
    @Suite(.serialized)
    struct ShutdownTests {
        /// A submission from another thread racing `shutdown()` either runs or is refused, never
        /// lost (docs/sleep.md, "Submissions and shutdown"). A producer submits until it is
        /// refused while the main thread shuts down: every accepted job must have run. Before
        /// the door was closed, a submission could return normally after the last worker had
        /// looked at the queues, and its job never ran.
        @Test(arguments: workerCounts)
        func submissionsRacingShutdownRunOrAreRefused(workers: Int) throws {
            let rounds = stressCount(200)
            withTimeLimit(seconds: 120, "submissionsRacingShutdownRunOrAreRefused workers=\(workers)") {
                for round in 0..<rounds {
                    let jobs = try! makeSystem(workers: workers)
                    let counter = JobCounter()
                    let ran = Tally()
                    let accepted = ResultBox<Int>()
                    let started = DispatchSemaphore(value: 0)
                    let done = DispatchSemaphore(value: 0)
                    Thread {
                        var count = 0
                        started.signal()
                        while jobs.tryRun(counter: counter, { _ in ran.add() }) { count += 1 }
                        accepted.value = count
                        done.signal()
                    }.start()
                    started.wait()
                    jobs.shutdown()
                    done.wait()
                    let count = accepted.value!
                    let ranAtReturn = ran.current
                    #expect(ranAtReturn == count, "workers \(workers) round \(round): \(count) accepted, \(ranAtReturn) ran, counter \(counter.value), ran now \(ran.current)")
                    #expect(counter.value == 0, "round \(round): the counter holds \(counter.value)")
                    // Refused after the fact, and nothing runs after it returned false.
                    #expect(!jobs.tryRun(counter: counter) { _ in ran.add() })
                    #expect(counter.value == 0 && ran.current == count)
                }
            }
        }

        @Test(arguments: workerCounts)
        func shutdownRunsEverySubmittedJob(workers: Int) throws {
            let ran = Tally()
            withTimeLimit(seconds: 60, "shutdownRunsEverySubmittedJob workers=\(workers)") {
                let jobs = try! makeSystem(workers: workers)
                for _ in 0..<20_000 {
                    jobs.run { ctx in
                        ran.add()
                        // Work submitted by work being drained is part of the drain.
                        ctx.run { _ in ran.add() }
                    }
                }
                jobs.shutdown()
                #expect(ran.current == 40_000)
                #expect(jobs.isShutDown)
                jobs.shutdown()  // idempotent
            }
            // Releasing a system with pending work (deinit) finishes it too.
            let released = Tally()
            withTimeLimit(seconds: 60, "deinit finishes work workers=\(workers)") {
                do {
                    let jobs = try! makeSystem(workers: workers)
                    for _ in 0..<5_000 { jobs.run { _ in released.add() } }
                }
                #expect(released.current == 5_000)
            }
        }
    }
}
