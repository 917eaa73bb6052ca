import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Loop bodies with a context (docs/parallel-for.md, "Bodies with a context"): the body gets the
/// running job's context, from outside and inside jobs, for tiny and large ranges, at several
/// worker counts; frame memory, spawning and errors work through it.
@Suite(.serialized)
struct LoopContextTests {
    /// The case: `frameAllocate` from a loop body over a million indices (and over 100,
    /// which fits one chunk). Every index writes and reads back its own frame scratch.
    @Test(arguments: workerCounts)
    func loopBodiesAllocateFrameMemory(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 120, "frame memory from loop bodies workers=\(workers)") {
            // A million in the plain and release runs; a tenth under the sanitizers, where every
            // access costs tens of times more.
            for count in [100, underSanitizer ? 100_000 : 1_000_000] {
                let wrong = Atomic<Int>(0)
                let workersSeen = Locked<Set<Int>>([])
                jobs.frame {
                    jobs.parallelForChunks(0..<count) { chunk, context in
                        workersSeen.withLock { _ = $0.insert(context.workerIndex) }
                        let scratch = context.frameAllocate(Int.self, count: chunk.count)
                        for (offset, index) in chunk.enumerated() { scratch[offset] = index &* 3 }
                        for (offset, index) in chunk.enumerated() where scratch[offset] != index &* 3 {
                            wrong.add(1, ordering: .relaxed)
                        }
                    }
                    jobs.parallelFor(0..<count) { index, context in
                        let slot = context.frameAllocate(Int.self, count: 1)
                        slot[0] = index
                        if slot[0] != index { wrong.add(1, ordering: .relaxed) }
                    }
                }
                #expect(wrong.load(ordering: .relaxed) == 0, "count \(count)")
                #expect(workersSeen.withLock { $0.allSatisfy { (0..<workers).contains($0) } })
            }
        }
        jobs.shutdown()
    }

    /// `parallelMap` and `parallelReduce` with a context compute what the plain forms do, from
    /// outside and from inside a job; a body may spawn and wait through its context.
    @Test(arguments: workerCounts)
    func mapAndReduceWithAContextMatchThePlainForms(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 120, "map and reduce with a context workers=\(workers)") {
            let count = 20_000
            let plainMap = jobs.parallelMap(0..<count) { $0 &* $0 }
            let mapped = jobs.parallelMap(0..<count) { index, context in
                // Every 1000th index spawns a child and waits for its value.
                guard index % 1_000 == 0 else { return index &* index }
                return context.wait(for: context.spawn { _ in index &* index })
            }
            #expect(mapped == plainMap)
            let plainSum = jobs.parallelReduce(0..<count, identity: 0, combine: +) { $0 }
            let inside = jobs.wait(for: jobs.spawn { _ in
                jobs.parallelReduce(0..<count, identity: 0, combine: +) { index, _ in index }
            })
            #expect(inside == plainSum)
            #expect(jobs.parallelReduce(0..<count, identity: 0, combine: +) { index, context in
                context.workerIndex >= 0 && context.workerIndex < workers ? index : -1_000_000
            } == plainSum)
        }
        jobs.shutdown()
    }

    /// A throwing body with a context: chunks not yet started are skipped and the error comes
    /// back to the caller; a map that fails leaves no element alive (the counts match).
    @Test(arguments: workerCounts)
    func errorsFromBodiesWithAContextReachTheCaller(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "errors with a context workers=\(workers)") {
            #expect(throws: TestFailure(index: 5_000)) {
                try jobs.parallelFor(0..<10_000, partitioner: .fixed(grain: 100)) { (index, _) throws(TestFailure) in
                    if index == 5_000 { throw TestFailure(index: index) }
                }
            }
            let live = LiveCount()
            #expect(throws: TestFailure(index: 777)) {
                _ = try jobs.parallelMap(0..<2_000, partitioner: .fixed(grain: 50)) { (index, _) throws(TestFailure) -> ContextTracked in
                    if index == 777 { throw TestFailure(index: index) }
                    return ContextTracked(live)
                }
            }
            #expect(live.value.load(ordering: .relaxed) == 0, "elements made before the failure are destroyed")
        }
        jobs.shutdown()
    }
}

/// Counts live `ContextTracked` values (this suite's own count: other suites may run at once).
final class LiveCount: Sendable {
    let value = Atomic<Int>(0)
}

final class ContextTracked: Sendable {
    let live: LiveCount
    init(_ live: LiveCount) {
        self.live = live
        live.value.add(1, ordering: .relaxed)
    }
    deinit { live.value.subtract(1, ordering: .relaxed) }
}
