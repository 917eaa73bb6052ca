import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Jobs that return values (docs/scheduler.md, "Jobs that return values"): the handle's wait
/// gives the body's value or throws its error, inside jobs, outside and from async code; a
/// handle is its job's counter.
@Suite(.serialized)
struct JobHandleTests {
    enum Failure: Error, Equatable { case odd(Int) }

    /// A random tree of spawned jobs (seeded): each node spawns its children, waits for their
    /// handles and returns its own number plus their sums. Equal to the sum over the tree.
    @Test(arguments: workerCounts)
    func aRandomTreeOfHandlesSumsLikeTheOracle(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 120, "handle tree workers=\(workers)") {
            for round in 0..<3 {
                let seed = testSeed(default: 0x5EED_0000 + UInt64(round))
                var generator = SplitMix64(seed: seed)
                // The tree as child lists: node i's children are consecutive later indices.
                let size = 4_000
                var children = [[Int]](repeating: [], count: size)
                var next = 1
                var frontier = [0]
                while next < size, !frontier.isEmpty {
                    let parent = frontier.removeFirst()
                    let count = Int.random(in: 1...4, using: &generator)
                    for _ in 0..<count where next < size {
                        children[parent].append(next)
                        frontier.append(next)
                        next += 1
                    }
                }
                let tree = children
                @Sendable func sum(_ node: Int, _ context: JobContext) -> Int {
                    let handles = tree[node].map { child in context.spawn { sum(child, $0) } }
                    return handles.reduce(node) { $0 + context.wait(for: $1) }
                }
                let total = jobs.wait(for: jobs.spawn { sum(0, $0) })
                #expect(total == (0..<next).reduce(0, +), "seed \(seed)")
            }
        }
        jobs.shutdown()
    }

    /// A job's error reaches the waiter, typed, inside a job and outside; the other handles'
    /// values are unaffected.
    @Test(arguments: workerCounts)
    func errorsAreCarriedToTheWaiter(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "handle errors workers=\(workers)") {
            @Sendable func check(_ value: Int) throws(Failure) -> Int {
                if value % 2 == 1 { throw .odd(value) }
                return value * 10
            }
            let handles = (0..<100).map { index in jobs.spawn { _ throws(Failure) in try check(index) } }
            for (index, handle) in handles.enumerated() {
                if index % 2 == 1 {
                    #expect(throws: Failure.odd(index)) { try jobs.wait(for: handle) }
                } else {
                    #expect((try? jobs.wait(for: handle)) == index * 10)
                }
            }
            let inside = jobs.spawn { context in
                let failing = context.spawn { _ throws(Failure) in try check(7) }
                do throws(Failure) {
                    _ = try context.wait(for: failing)
                    return "no error"
                } catch {
                    return "\(error)"
                }
            }
            #expect(jobs.wait(for: inside) == "odd(7)")
        }
        jobs.shutdown()
    }

    /// `result` is nil while the job cannot have finished (it waits for a counter the test
    /// holds) and the outcome after; a handle is a counter that every wait accepts.
    @Test(arguments: workerCounts)
    func resultIsNilUntilTheJobIsDone(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "handle result workers=\(workers)") {
            let gate = JobCounter(1)
            let handle = jobs.spawn { context in
                context.wait(for: gate)
                return [Int](0..<1_000)
            }
            #expect(handle.result == nil)
            #expect(!handle.isComplete)
            gate.decrement()
            jobs.wait(for: handle as JobCounter)
            #expect(handle.result?.get() == Array(0..<1_000))
            // Read again: the value stays.
            #expect(jobs.wait(for: handle).count == 1_000)
        }
        jobs.shutdown()
    }

    /// Dropping the handle right after spawning does not lose the job (the handle keeps itself
    /// alive while its job is pending); the handle is freed after.
    @Test(arguments: workerCounts)
    func aDroppedHandleStillRunsItsJob(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "dropped handles workers=\(workers)") {
            let ran = Atomic<Int>(0)
            let gate = JobCounter(1)
            let done = JobCounter()
            weak var weakHandle: JobHandle<Int, Never>?
            do {
                let handle = jobs.spawn { context in
                    context.wait(for: gate)
                    ran.add(1, ordering: .relaxed)
                    return 1
                }
                weakHandle = handle
                jobs.run(counter: done) { context in context.wait(for: handle) }
            }
            for _ in 0..<1_000 {
                _ = jobs.spawn { _ in ran.add(1, ordering: .relaxed) }
            }
            gate.decrement()
            jobs.wait(for: done)
            jobs.shutdown()
            #expect(ran.load(ordering: .relaxed) == 1_001)
            #expect(weakHandle == nil, "the handle is freed once its job is done and nobody holds it")
        }
    }

    /// From async code: `await jobs.wait(for:)` returns the value and carries the error.
    @Test(arguments: workerCounts)
    func asyncCodeAwaitsAHandle(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        runAsync("handle await workers=\(workers)") {
            let squares = (0..<50).map { index in jobs.spawn { _ in index * index } }
            var total = 0
            for handle in squares { total += await jobs.wait(for: handle) }
            #expect(total == (0..<50).reduce(0) { $0 + $1 * $1 })
            let failing = jobs.spawn { _ throws(Failure) -> Int in throw .odd(3) }
            do throws(Failure) {
                _ = try await jobs.wait(for: failing)
                Issue.record("the error was not carried")
            } catch {
                #expect(error == .odd(3))
            }
        }
        jobs.shutdown()
    }

    /// A handle decremented by hand reaches zero before its job stored a value: the wait traps
    /// and says why.
    @Test func aHandleDecrementedByHandTrapsTheWait() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1, stallReportAfter: nil))
            let gate = JobCounter(1)
            let handle = jobs.spawn { context in
                context.wait(for: gate)
                return 1
            }
            handle.decrement()
            let value = jobs.wait(for: handle)
            print(value)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSystem.wait(for:): the handle reached zero before its job stored a value"), "\(stderr)")
    }
}
