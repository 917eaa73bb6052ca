import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Dataflow (docs/dataflow.md): `spawn(after:)` starts a job once its inputs are done, without a
/// fiber or a park before; `Dataflow` derives the edges from declared reads and writes, so every
/// read sees the last write before it in program order; windows, errors and cancellation.
@Suite(.serialized)
struct DataflowTests {
    struct Boom: Error, Equatable { let task: Int }

    /// A seeded random DAG of handles: each task lists random earlier handles as inputs and
    /// checks, when it runs, that they are all done; tasks waiting for inputs take no fiber, so
    /// nothing parks.
    @Test(arguments: workerCounts + [16])
    func spawnAfterStartsEachJobAfterItsInputs(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-flow-w")
        withTimeLimit(seconds: 60, "spawn(after:) workers=\(workers)") {
            let seed = testSeed(default: 0xF10E_0000 + UInt64(workers))
            var generator = SplitMix64(seed: seed)
            let count = stressCount(5_000)
            var handles: [JobHandle<Int, Never>] = []
            handles.reserveCapacity(count)
            let early = Atomic<Int>(0)
            let parkedBefore = jobs.metrics().total.fibersParked
            for index in 0..<count {
                var inputs: [JobCounter] = []
                if index > 0 {
                    for _ in 0..<Int.random(in: 0...3, using: &generator) {
                        inputs.append(handles[Int.random(in: Swift.max(0, index - 50)..<index, using: &generator)])
                    }
                }
                let captured = inputs
                handles.append(jobs.spawn(afterAll: inputs) { _ in
                    if captured.contains(where: { !$0.isComplete }) { early.add(1, ordering: .relaxed) }
                    return index
                })
            }
            // A chain whose first link waits for a counter the test holds: nothing may start.
            let gate = JobCounter(1)
            var link: JobHandle<Int, Never> = jobs.spawn(after: gate) { _ in 1 }
            for _ in 0..<100 {
                let previous = link
                link = jobs.spawn(after: previous) { context in context.wait(for: previous) + 1 }
            }
            #expect(!link.isComplete)
            gate.decrement()
            #expect(jobs.wait(for: link) == 101)
            for (index, handle) in handles.enumerated() { #expect(jobs.wait(for: handle) == index) }
            #expect(early.load(ordering: .relaxed) == 0, "seed \(seed): a job started before its inputs were done")
            #expect(jobs.metrics().total.fibersParked == parkedBefore, "waiting for inputs parked a fiber")
        }
        jobs.shutdown()
    }

    /// A seeded random program of tasks over a few keys: each task reads some keys and writes
    /// others; the values every task read and the final values equal a serial run's. Windows of
    /// 1, 2 and many; submitted from an outside thread and from inside a job.
    @Test(arguments: workerCounts)
    func aRandomProgramMatchesItsSerialRun(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-flow-w")
        withTimeLimit(seconds: 120, "dataflow program workers=\(workers)") {
            for (round, window) in [1, 2, 4096].enumerated() {
                for inside in [false, true] {
                    let seed = testSeed(default: 0xF10E_1000 + UInt64(workers * 8 + round * 2) + (inside ? 1 : 0))
                    var generator = SplitMix64(seed: seed)
                    let keys = 12, count = stressCount(3_000)
                    var program: [(reads: [Int], writes: [Int])] = []
                    for _ in 0..<count {
                        let reads = (0..<Int.random(in: 0...3, using: &generator)).map { _ in Int.random(in: 0..<keys, using: &generator) }
                        let writes = (0..<Int.random(in: 0...2, using: &generator)).map { _ in Int.random(in: 0..<keys, using: &generator) }
                        program.append((reads, writes))
                    }
                    // The serial run: a task sees the sum of its reads' values, then writes a
                    // mix of its number and that sum to each key it writes.
                    @Sendable func mix(_ task: Int, _ seen: UInt64) -> UInt64 { UInt64(task) &* 0x9E37_79B9_7F4A_7C15 ^ seen }
                    var serialValues = [UInt64](repeating: 0, count: keys)
                    var serialSeen = [UInt64](repeating: 0, count: count)
                    for (task, access) in program.enumerated() {
                        let readOnly = access.reads.filter { !access.writes.contains($0) }
                        let seen = Set(readOnly).reduce(UInt64(0)) { $0 &+ serialValues[$1] }
                        serialSeen[task] = seen
                        for key in Set(access.writes) { serialValues[key] = mix(task, seen) }
                    }
                    let values = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: keys)
                    values.initialize(repeating: 0)
                    let seenBy = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: count)
                    seenBy.initialize(repeating: 0)
                    nonisolated(unsafe) let shared = values
                    nonisolated(unsafe) let seen = seenBy
                    let tasks = program
                    let submit: @Sendable () -> Void = {
                        let flow = Dataflow<Int>(on: jobs, window: window)
                        for (task, access) in tasks.enumerated() {
                            flow.task(reads: access.reads, writes: access.writes) { _ in
                                let readOnly = access.reads.filter { !access.writes.contains($0) }
                                let sum = Set(readOnly).reduce(UInt64(0)) { $0 &+ shared[$1] }
                                seen[task] = sum
                                for key in Set(access.writes) { shared[key] = mix(task, sum) }
                            }
                        }
                        try! flow.wait()
                    }
                    if inside {
                        let done = JobCounter()
                        jobs.run(counter: done) { _ in submit() }
                        jobs.wait(for: done)
                    } else {
                        submit()
                    }
                    #expect(Array(values) == serialValues, "seed \(seed) window \(window) inside \(inside): final values")
                    #expect(Array(seenBy) == serialSeen, "seed \(seed) window \(window) inside \(inside): values read")
                    values.deallocate()
                    seenBy.deallocate()
                }
            }
        }
        jobs.shutdown()
    }

    /// A task that throws in the middle: tasks not yet started skip their bodies, every task
    /// completes, `wait()` throws the error and the count of skipped tasks, and the flow runs
    /// new tasks afterwards. A cancellation in the middle skips the same way without an error.
    @Test(arguments: workerCounts)
    func errorsAndCancellationSkipTheRest(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-flow-w")
        withTimeLimit(seconds: 60, "dataflow errors workers=\(workers)") {
            let ran = Atomic<Int>(0)
            let flow = Dataflow<Int>(on: jobs, window: 64)
            var counters: [JobCounter] = []
            for task in 0..<1_000 {
                // One key: a chain, so the tasks after the failing one cannot have started.
                counters.append(flow.task(writes: [0]) { _ in
                    ran.add(1, ordering: .relaxed)
                    if task == 500 { throw Boom(task: task) }
                })
            }
            do throws(Dataflow<Int>.Failure) {
                try flow.wait()
                Issue.record("the error was lost")
            } catch {
                #expect((error.error as? Boom) == Boom(task: 500))
                #expect(error.skipped == 499)
            }
            #expect(ran.load(ordering: .relaxed) == 501)
            #expect(counters.allSatisfy { $0.isComplete })
            let after = Atomic<Int>(0)
            for _ in 0..<10 { flow.task(writes: [0]) { _ in after.add(1, ordering: .relaxed) } }
            let skippedAfter = try? flow.wait()
            #expect(skippedAfter == 0)
            #expect(after.load(ordering: .relaxed) == 10)

            let token = CancellationToken()
            let cancellable = Dataflow<Int>(on: jobs, window: 16, cancellation: token)
            let started = Atomic<Int>(0)
            for task in 0..<1_000 {
                cancellable.task(reads: [task % 3], writes: [task % 5]) { _ in
                    started.add(1, ordering: .relaxed)
                    if task == 300 { token.cancel() }
                }
            }
            let skipped = try? cancellable.wait()
            #expect(skipped != nil && skipped! > 0 && skipped! + started.load(ordering: .relaxed) == 1_000)
        }
        jobs.shutdown()
    }

    /// A window below one traps and names the fix.
    @Test func aWindowBelowOneTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1, stallReportAfter: nil))
            _ = Dataflow<Int>(on: jobs, window: 0)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("Dataflow(on:window: 0): the window must hold at least one task"), "\(stderr)")
    }
}
