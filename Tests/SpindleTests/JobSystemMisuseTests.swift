import Foundation
@testable @_spi(Internals) import Spindle
import Testing

// MARK: Misuse

@Suite(.serialized)
struct JobSystemMisuseTests {
    @Test
    func waitingOnTheRunningJobsOwnCounterTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            let own = JobCounter()
            jobs.run(counter: own) { ctx in ctx.wait(for: own) }
            jobs.wait(for: own)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("own counter"))
    }

    @Test
    func decrementingBelowZeroTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let counter = JobCounter(1)
            counter.decrement()
            counter.decrement()
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("below zero"))
    }

    @Test
    func decrementingByANegativeAmountTrapsNamingTheAmount() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            JobCounter(5).decrement(by: -1)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobCounter.decrement(by: -1): the amount must not be negative"), "\(stderr)")
        #expect(!stderr.contains("below zero"), "\(stderr)")
    }

    /// A job's own completion takes its counter below zero (it was also decremented by hand):
    /// the message says that jobs did it, on which worker, and what to change.
    @Test
    func aJobCompletionBelowZeroSaysJobsDidIt() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            let counter = JobCounter()
            jobs.run(counter: counter) { _ in counter.decrement() }
            jobs.wait(for: counter)
            // The job's own completion comes after its hand decrement; shutdown waits for it.
            jobs.shutdown()
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("job(s) counted by it finished on worker 0 and took it below zero"), "\(stderr)")
    }

    @Test
    func submittingAfterShutdownTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            jobs.shutdown()
            jobs.run { _ in }
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSystem.run called after shutdown()"))
        #expect(stderr.contains("tryRun"))
    }

    @Test
    func submittingAnArgumentJobAfterShutdownTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            jobs.shutdown()
            jobs.run(counter: JobCounter(), argument: 1) { _, _ in }
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSystem.run(counter:argument:) called after shutdown()"))
    }

    /// Each API names itself when it is used after shutdown, not `JobSystem.run`.
    @Test
    func aParallelLoopAfterShutdownNamesTheLoop() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 2))
            jobs.shutdown()
            jobs.parallelFor(0..<10_000) { _ in }
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("a parallel loop (parallelFor"), "stderr: \(stderr)")
    }

    @Test
    func runAndWaitAfterShutdownNamesRunAndWait() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 2))
            jobs.shutdown()
            let graph = TaskGraph("g")
            _ = graph.node("a") { _ in }
            try? jobs.runAndWait(graph)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSystem.runAndWait(_:) called after shutdown()"), "stderr: \(stderr)")
    }

    @Test
    func pipelineStartAfterShutdownNamesPipelineStart() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 2))
            jobs.shutdown()
            let pipeline = Pipeline<Int>("p")
            pipeline.source.sink("s") { _ in }
            _ = try? pipeline.start(on: jobs)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("Pipeline.start(on:) called after the JobSystem's shutdown()"), "stderr: \(stderr)")
    }

    @Test
    func runCountAfterShutdownNamesRunCount() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 2))
            jobs.shutdown()
            jobs.run(count: 10) { _, _ in }
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSystem.run(count:) called after shutdown()"), "stderr: \(stderr)")
    }

    @Test
    func blockingWaitFromAnotherSystemsJobTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let first = try! JobSystem(configuration: .init(workers: 1, threadNamePrefix: "first-w"))
            let second = try! JobSystem(configuration: .init(workers: 1, threadNamePrefix: "second-w"))
            let never = JobCounter(1)
            first.wait(for: first.run { _ in second.wait(for: never) })
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("another JobSystem"))
    }

    @Test
    func shutdownFromInsideAJobTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            jobs.wait(for: jobs.run { _ in jobs.shutdown() })
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("wait for itself"))
    }

    @Test
    func frameAllocationOutsideAFrameTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            jobs.wait(for: jobs.run { ctx in _ = ctx.frameAllocate(Int.self, count: 4) })
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("outside a frame"))
    }
}
