import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Cancellation (docs/scheduler.md, "Cancellation"): jobs not yet started are skipped and their
/// counters complete, running jobs see the token, loops skip chunks not yet started, graph runs
/// skip nodes not yet started and count them. At several worker counts, with time limits.
@Suite(.serialized)
struct CancellationTests {
    @Test(arguments: workerCounts)
    func jobsOfACancelledTokenAreSkippedAndTheirCountersComplete(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "cancelled jobs workers=\(workers)") {
            let token = CancellationToken()
            token.cancel()
            let ran = Atomic<Int>(0)
            let done = JobCounter()
            for _ in 0..<1_000 {
                jobs.run(counter: done, cancellation: token) { _ in ran.add(1, ordering: .relaxed) }
            }
            jobs.run(counter: done) { context in
                for _ in 0..<1_000 {
                    context.run(counter: done, cancellation: token) { _ in ran.add(1, ordering: .relaxed) }
                }
            }
            jobs.wait(for: done)
            #expect(ran.load(ordering: .relaxed) == 0)
        }
        jobs.shutdown()
    }

    /// A running job sees its token: not cancelled at first, cancelled after `cancel()`;
    /// `checkCancellation()` throws then. A job without a token sees none.
    @Test(arguments: workerCounts)
    func aRunningJobSeesItsToken(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "running job's token workers=\(workers)") {
            let token = CancellationToken()
            let started = JobCounter(1)
            let gate = JobCounter(1)
            let observations = Locked<[String]>([])
            let done = JobCounter()
            jobs.run(counter: done, cancellation: token) { context in
                observations.withLock { $0.append("before: \(context.isCancelled) same: \(context.cancellation === token)") }
                started.decrement()
                context.wait(for: gate)
                do throws(CancellationError) {
                    try context.checkCancellation()
                    observations.withLock { $0.append("after: not cancelled") }
                } catch {
                    observations.withLock { $0.append("after: cancelled") }
                }
            }
            jobs.run(counter: done) { context in
                observations.withLock { $0.append("plain: \(context.cancellation == nil) \(context.isCancelled)") }
            }
            jobs.wait(for: started)
            token.cancel()
            gate.decrement()
            jobs.wait(for: done)
            #expect(Set(observations.withLock { $0 }) == ["before: false same: true", "after: cancelled", "plain: true false"])
        }
        jobs.shutdown()
    }

    /// A loop cancelled by its first chunk: at most one chunk per worker runs (those that
    /// started before the request), the others are skipped, and the loop says so.
    @Test(arguments: workerCounts)
    func aCancelledLoopSkipsChunksNotYetStarted(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "cancelled loop workers=\(workers)") {
            let token = CancellationToken()
            let chunks = Atomic<Int>(0)
            let complete = jobs.parallelForChunks(0..<100_000, partitioner: .fixed(grain: 100), cancellation: token) { _ in
                chunks.add(1, ordering: .relaxed)
                token.cancel()
            }
            #expect(!complete)
            #expect(chunks.load(ordering: .relaxed) >= 1)
            #expect(chunks.load(ordering: .relaxed) <= workers, "chunks that ran: \(chunks.load(ordering: .relaxed))")
            let all = Atomic<Int>(0)
            #expect(jobs.parallelFor(0..<10_000, cancellation: CancellationToken()) { _ in all.add(1, ordering: .relaxed) })
            #expect(all.load(ordering: .relaxed) == 10_000)
        }
        jobs.shutdown()
    }

    /// A chain of 100 graph nodes whose 11th cancels the run: the 89 after it are skipped and
    /// counted, the counter completes; the next run without a token runs every node.
    @Test(arguments: workerCounts)
    func aCancelledGraphRunSkipsAndCountsTheRest(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "cancelled graph workers=\(workers)") {
            let graph = TaskGraph("chain")
            let ran = Atomic<Int>(0)
            let token = Locked<CancellationToken?>(nil)
            var previous: TaskGraph.Node?
            for index in 0..<100 {
                let node = graph.node("n\(index)") { _ in
                    ran.add(1, ordering: .relaxed)
                    if index == 10 { token.withLock { $0 }?.cancel() }
                }
                if let previous { try! previous.precedes(node) }
                previous = node
            }
            let cancel = CancellationToken()
            token.withLock { $0 = cancel }
            jobs.wait(for: jobs.run(graph, cancellation: cancel))
            #expect(ran.load(ordering: .relaxed) == 11)
            #expect(graph.lastSkippedNodes == 89)
            #expect(graph.lastRunWasCancelled)
            #expect(graph.lastFailure == nil)

            token.withLock { $0 = nil }
            ran.store(0, ordering: .relaxed)
            jobs.wait(for: jobs.run(graph))
            #expect(ran.load(ordering: .relaxed) == 100)
            #expect(graph.lastSkippedNodes == 0)
            #expect(!graph.lastRunWasCancelled)

            let cancelled = CancellationToken()
            cancelled.cancel()
            ran.store(0, ordering: .relaxed)
            let inside = jobs.run { context in context.wait(for: context.run(graph, cancellation: cancelled)) }
            jobs.wait(for: inside)
            #expect(ran.load(ordering: .relaxed) == 0)
            #expect(graph.lastSkippedNodes == 100)
        }
        jobs.shutdown()
    }

    /// A pipeline run started with a token stops when the token is cancelled, even with its
    /// input open and idle: `wait()` returns a stopped report whose accounting holds, and later
    /// sends are refused. A token cancelled before the start stops the run at once. A token
    /// shared by many runs holds no handler once they finished.
    @Test(arguments: workerCounts)
    func aTokenStopsPipelineRuns(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "pipeline cancellation workers=\(workers)") {
            let shared = CancellationToken()
            for round in 0..<20 {
                let token = CancellationToken()
                let pipeline = Pipeline<Int>("cancel-\(round)", channelCapacity: 16)
                let total = Atomic<Int>(0)
                pipeline.source.map("double") { $0 * 2 }.sink("add") { total.add($0, ordering: .relaxed) }
                let run = try! pipeline.start(on: jobs, cancellation: token)
                let other = Pipeline<Int>("shared-\(round)")
                other.source.sink("drop") { _ in }
                let finished = try! other.start(on: jobs, cancellation: shared)
                for value in 0..<(round * 50) { #expect(run.send(value)) }
                _ = finished.send(round)
                #expect(try! finished.finish().stopped == false)
                // Cancelled from another thread while the input is open and nothing is sent.
                onNewThread { token.cancel() }
                let report = try! run.wait()
                #expect(report.stopped)
                #expect(report.accepted == round * 50)
                #expect(report.accepted == report.delivered + report.discarded, "round \(round)")
                #expect(!run.send(1), "a send after the cancellation is refused")
                #expect(token.handlerCount == 0)
            }
            #expect(shared.handlerCount == 0, "finished runs removed their handlers")
            let early = CancellationToken()
            early.cancel()
            let pipeline = Pipeline<Int>("early")
            pipeline.source.sink("never") { _ in Issue.record("an item passed a cancelled run") }
            let run = try! pipeline.start(on: jobs, cancellation: early)
            #expect(!run.send(1))
            let report = try! run.wait()
            #expect(report.stopped && report.accepted == 0)
        }
        jobs.shutdown()
    }
}
