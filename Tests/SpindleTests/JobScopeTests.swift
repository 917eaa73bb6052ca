import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Scoped jobs (docs/scheduler.md, "Scoped jobs"): jobs borrow local buffers and values, and the
/// scope returns only after all of them finished, from outside, inside jobs, nested, and when
/// the scope's closure throws.
@Suite(.serialized)
struct JobScopeTests {
    struct Stop: Error, Equatable {}

    /// The slices of a seeded random array, summed by scoped jobs into a local buffer (one slot
    /// each), from an outside thread: equal to the serial sums.
    @Test(arguments: workerCounts)
    func scopedJobsWriteDisjointSlotsOfALocalBuffer(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "scope buffer workers=\(workers)") {
            var generator = SplitMix64(seed: testSeed(default: 0x5C0_9E))
            let values = (0..<100_000).map { _ in Int.random(in: -1_000...1_000, using: &generator) }
            let parts = 37
            let bounds = (0...parts).map { $0 * values.count / parts }
            var sums = [Int](repeating: 0, count: parts)
            let returned = sums.withUnsafeMutableBufferPointer { buffer in
                let out = buffer   // a job's closure is stored until it runs: it captures a let, not the inout
                return jobs.scope { scope in
                    for part in 0..<parts {
                        scope.run { _ in out[part] = values[bounds[part]..<bounds[part + 1]].reduce(0, +) }
                    }
                    return "scope's value"
                }
            }
            #expect(returned == "scope's value")
            let expected = (0..<parts).map { values[bounds[$0]..<bounds[$0 + 1]].reduce(0, +) }
            #expect(sums == expected)
        }
        jobs.shutdown()
    }

    /// Inside a job, scopes nest: each scoped job opens a scope of its own over its half of the
    /// range, down to small pieces that count their indices into a local buffer. Every index is
    /// counted once.
    @Test(arguments: workerCounts)
    func scopesNestInsideJobs(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "nested scopes workers=\(workers)") {
            let count = 50_000
            var marks = [UInt8](repeating: 0, count: count)
            marks.withUnsafeMutableBufferPointer { buffer in
                let out = buffer
                func visit(_ range: Range<Int>, _ context: JobContext) {
                    if range.count <= 500 {
                        for index in range { out[index] &+= 1 }
                        return
                    }
                    let middle = range.lowerBound + range.count / 2
                    context.scope { scope in
                        scope.run { visit(range.lowerBound..<middle, $0) }
                        scope.run { visit(middle..<range.upperBound, $0) }
                    }
                }
                let done = JobCounter()
                withoutActuallyEscaping(visit) { visit in
                    let entry = unsafeBitCast(visit, to: (@Sendable (Range<Int>, JobContext) -> Void).self)
                    jobs.run(counter: done) { context in entry(0..<count, context) }
                    jobs.wait(for: done)
                }
            }
            #expect(marks.allSatisfy { $0 == 1 }, "indices counted other than once: \(marks.indices.filter { marks[$0] != 1 }.prefix(5))")
        }
        jobs.shutdown()
    }

    /// A scope whose closure throws still waits for the jobs it submitted before the error
    /// reaches the caller: every job has run when the catch runs.
    @Test(arguments: workerCounts)
    func aThrowingScopeWaitsForItsJobs(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "throwing scope workers=\(workers)") {
            let ran = Atomic<Int>(0)
            let gate = JobCounter(1)
            #expect(throws: Stop.self) {
                try jobs.scope { (scope) throws(Stop) in
                    for _ in 0..<100 {
                        scope.run { context in
                            context.wait(for: gate)
                            ran.add(1, ordering: .relaxed)
                        }
                    }
                    // The jobs cannot finish before the gate opens; the scope must wait for them.
                    gate.decrement()
                    throw Stop()
                }
            }
            #expect(ran.load(ordering: .relaxed) == 100)
        }
        jobs.shutdown()
    }
}
