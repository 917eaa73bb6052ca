import Foundation
@testable @_spi(Internals) import Spindle
import Testing

/// Shutting down (or releasing) a job system runs the work submitted before.
extension JobSystemTests {
    @Suite(.serialized)
    struct ShutdownTests {
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
