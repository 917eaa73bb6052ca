import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Stateful sinks (their final state in the run's report), merges whose element type is
/// inferred, and `computeMap` over a synchronous sequence. At several worker counts.
@Suite(.serialized)
struct PipelineStateTests {
    /// Two stateful sinks behind an inferred merge: a word count and a sum, each run starting
    /// from the initial state; the report holds each run's final states.
    @Test(arguments: workerCounts)
    func statefulSinksReturnTheirFinalStateInTheReport(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "stateful sinks workers=\(workers)") {
            let pipeline = Pipeline<String>("words", channelCapacity: 16)
            let lower = pipeline.source.map("lower") { $0.lowercased() }
            let upper = pipeline.source.parallelMap("upper") { $0.uppercased() }
            let both = Pipeline.merge("both", [lower, upper])          // Input inferred
            let again = lower.merge("again", with: upper)              // as a method
            let counts = both.sink("count", state: [String: Int]()) { counts, word in counts[word, default: 0] += 1 }
            let lengths = again.sink("length", state: 0) { total, word in total += word.count }
            let words = ["a", "bb", "a", "ccc", "bb", "a"]
            for round in 1...2 {
                let run = try! pipeline.start(on: jobs)
                for _ in 0..<round { #expect(run.send(contentsOf: words) == words.count) }
                let report = try! run.finish()
                #expect(report[counts] == ["a": 3 * round, "A": 3 * round, "bb": 2 * round, "BB": 2 * round,
                                           "ccc": round, "CCC": round], "round \(round)")
                #expect(report[lengths] == 2 * 10 * round, "round \(round)")
            }
            let other = Pipeline<Int>("other")
            let foreign = other.source.sink("sum", state: 0) { $0 += $1 }
            let run = try! pipeline.start(on: jobs)
            let report = try! run.finish()
            #expect(report[counts] == [:])
            #expect(report[foreign] == nil, "a sink of another pipeline has no state in this run")
        }
        jobs.shutdown()
    }

    /// A failing stage before a stateful sink: the report (in the failure) holds the state of
    /// the items the sink consumed before the run stopped.
    @Test(arguments: workerCounts)
    func aStoppedRunStillReportsTheSinksState(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "stopped stateful sink workers=\(workers)") {
            struct Stop: Error {}
            let pipeline = Pipeline<Int>("stops", channelCapacity: 4)
            let checked = pipeline.source.map("check") { (value: Int) throws -> Int in
                if value == 100 { throw Stop() }
                return value
            }
            let seen = checked.sink("seen", state: [Int]()) { $0.append($1) }
            let run = try! pipeline.start(on: jobs)
            _ = run.send(contentsOf: 0..<1_000)
            do throws(PipelineFailure) {
                _ = try run.finish()
                Issue.record("the run did not fail")
            } catch {
                let values = error.report[seen] ?? [-1]
                #expect(values == Array(0..<values.count), "in order, without gaps")
                #expect(values.count <= 100)
                #expect(error.report.delivered == values.count)
            }
        }
        jobs.shutdown()
    }

    /// `computeMap` over an array: every element transformed as a job, delivered in order.
    @Test(arguments: workerCounts)
    func computeMapOverASequenceKeepsOrder(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        runAsync("computeMap over a Sequence workers=\(workers)") {
            var results: [Int] = []
            do {
                for try await value in Array(0..<500).computeMap(on: jobs, maxInFlight: 7, { $0 * $0 }) {
                    results.append(value)
                }
            } catch {
                Issue.record("unexpected error \(error)")
            }
            #expect(results == (0..<500).map { $0 * $0 })
        }
        jobs.shutdown()
    }
}
