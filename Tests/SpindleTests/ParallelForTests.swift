import CSpindle
import Foundation
@testable @_spi(Internals) import Spindle
import Synchronization
import Testing

/// Chunks a loop handed to its body, to check that they are disjoint, cover the range, and obey
/// the partitioner.
final class ChunkLog: @unchecked Sendable {
    // SAFETY: `chunks` only under `lock`.
    private let lock = NSLock()
    private var chunks: [Range<Int>] = []

    func add(_ chunk: Range<Int>) {
        lock.lock()
        chunks.append(chunk)
        lock.unlock()
    }

    var sorted: [Range<Int>] {
        lock.lock()
        defer { lock.unlock() }
        return chunks.sorted { $0.lowerBound < $1.lowerBound }
    }
}

struct TestFailure: Error, Equatable {
    let index: Int
}

/// Counts live instances, to catch elements leaked or destroyed twice.
final class Tracked: Sendable {
    static let live = Atomic<Int>(0)
    let value: Int
    init(_ value: Int) {
        self.value = value
        Tracked.live.wrappingAdd(1, ordering: .relaxed)
    }
    deinit { Tracked.live.wrappingSubtract(1, ordering: .relaxed) }
}

let partitioners: [Partitioner] = [.adaptive, .adaptive(minimumGrain: 7), .adaptive(minimumGrain: 1000), .fixed(grain: 1),
                                   .fixed(grain: 13), .fixed(grain: 4096)]

@Suite(.serialized)
struct ParallelForTests {
    /// Random ranges (offsets, sizes from 0 to 200k) and every partitioner: each index runs exactly
    /// once, from outside and from inside a job.
    @Test(arguments: workerCounts)
    func everyIndexRunsExactlyOnce(workers: Int) throws {
        let seed = testSeed(default: 0x5EED_0F0F)
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 120, "everyIndexRunsExactlyOnce workers=\(workers) seed=\(seed)") {
            var random = SplitMix64(seed: seed)
            for round in 0..<40 {
                let size = [0, 1, 2, 3, 100, 1023, 4097, 200_000][Int(random.next() % 8)]
                let start = Int(random.next() % 1000) - 500
                let partitioner = partitioners[round % partitioners.count]
                let flags = Flags(size)
                let twice = Tally()
                let range = start..<(start + size)
                let body: @Sendable (Int) -> Void = { index in
                    if !flags.mark(index - start) { twice.add() }
                }
                if round % 2 == 0 {
                    jobs.parallelFor(range, partitioner: partitioner, body)
                } else {
                    jobs.wait(for: jobs.run { _ in jobs.parallelFor(range, partitioner: partitioner, body) })
                }
                #expect(twice.current == 0, "seed \(seed) round \(round) \(partitioner): indices ran twice")
                #expect(flags.unmarked.isEmpty, "seed \(seed) round \(round) \(partitioner) size \(size): \(flags.unmarked.count) indices never ran")
            }
        }
    }

    /// Chunks are disjoint and cover the range; fixed chunks are exactly the grain (last may be
    /// shorter) at multiples of it; adaptive chunks are never below the minimum grain.
    @Test(arguments: workerCounts)
    func chunksFollowThePartitioner(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 60, "chunksFollowThePartitioner workers=\(workers)") {
            for partitioner in partitioners {
                for range in [5..<5, 3..<4, -17..<2000, 0..<100_003] {
                    let log = ChunkLog()
                    jobs.parallelForChunks(range, partitioner: partitioner) { chunk in
                        log.add(chunk)
                        // Give thieves time to split the rest.
                        for _ in 0..<(chunk.count * 20) { spindle_cpu_relax() }
                    }
                    let chunks = log.sorted
                    var next = range.lowerBound
                    for chunk in chunks {
                        #expect(!chunk.isEmpty, "\(partitioner) \(range): empty chunk")
                        #expect(chunk.lowerBound == next, "\(partitioner) \(range): gap or overlap at \(chunk)")
                        next = chunk.upperBound
                        switch partitioner.kind {
                        case .fixed:
                            #expect((chunk.lowerBound - range.lowerBound) % partitioner.grain == 0, "\(partitioner) \(range): \(chunk) not at a grain multiple")
                            #expect(chunk.count == partitioner.grain || chunk.upperBound == range.upperBound,
                                    "\(partitioner) \(range): \(chunk) is not one grain")
                        case .adaptive:
                            #expect(chunk.count >= partitioner.grain || chunk == range,
                                    "\(partitioner) \(range): \(chunk) is smaller than the minimum grain")
                        }
                    }
                    #expect(next == range.upperBound, "\(partitioner) \(range): chunks end at \(next)")
                }
            }
        }
    }

    /// W7's shape: a parallel loop inside every index of a parallel loop, from outside and from a
    /// job; every inner index runs once.
    @Test(arguments: workerCounts)
    func nestedLoopsRunEveryInnerIndex(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 120, "nestedLoopsRunEveryInnerIndex workers=\(workers)") {
            let outer = 64, inner = 2048
            let flags = Flags(outer * inner)
            let twice = Tally()
            jobs.parallelFor(0..<outer) { o in
                jobs.parallelFor(0..<inner) { i in
                    if !flags.mark(o * inner + i) { twice.add() }
                }
            }
            #expect(twice.current == 0)
            #expect(flags.unmarked.isEmpty, "\(flags.unmarked.count) inner indices never ran")
            // Three levels, started from a job.
            let sum = Tally()
            jobs.wait(for: jobs.run { _ in
                jobs.parallelFor(0..<16) { a in
                    jobs.parallelFor(0..<16) { b in
                        jobs.parallelFor(0..<16) { c in sum.add(a * 256 + b * 16 + c) }
                    }
                }
            })
            #expect(sum.current == (0..<4096).reduce(0, +))
        }
    }

    /// An adaptive leaf whose elements run nested loops hands out one element at a time (it
    /// cannot share a batch once started, and such elements are long); a leaf of plain elements
    /// grows its batches.
    @Test(arguments: workerCounts.filter { $0 > 1 })
    func leavesOfNestedLoopsStayAtTheGrain(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 60, "leavesOfNestedLoopsStayAtTheGrain workers=\(workers)") {
            let nested = ChunkLog()
            let inner = Tally()
            jobs.parallelForChunks(0..<300) { range in
                nested.add(range)
                for _ in range { jobs.parallelFor(0..<4) { _ in inner.add() } }
            }
            let chunks = nested.sorted
            #expect(chunks.reduce(0) { $0 + $1.count } == 300 && inner.current == 1200)
            #expect(chunks.allSatisfy { $0.count == 1 }, "chunks of nested loops: \(chunks.map(\.count))")

            // The plain loop runs in a job while every other worker is held in a job of its
            // own: then no worker is hungry, so its leaf is never split and only doubles its
            // batches. (Left to timing, hungry workers on a loaded machine may split a leaf
            // after every batch, and all its chunks are then single elements.)
            let plain = ChunkLog()
            let held = Tally()
            let released = Tally()
            let holders = JobCounter()
            for _ in 0..<(workers - 1) {
                jobs.run(counter: holders) { _ in
                    held.add()
                    while released.current == 0 { sched_yield() }
                }
            }
            while held.current < workers - 1 { sched_yield() }
            jobs.wait(for: jobs.run { _ in
                jobs.parallelForChunks(0..<100_000) { range in plain.add(range) }
            })
            released.add()
            jobs.wait(for: holders)
            #expect(plain.sorted.contains { $0.count > 1 }, "a leaf of plain elements never grew its batch")
        }
    }

    @Test(arguments: workerCounts)
    func reduceMatchesTheSerialFold(workers: Int) throws {
        let seed = testSeed(default: 0xFEED_BEEF)
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 60, "reduceMatchesTheSerialFold workers=\(workers) seed=\(seed)") {
            var random = SplitMix64(seed: seed)
            for partitioner in partitioners {
                let size = Int(random.next() % 300_000)
                let total = jobs.parallelReduce(0..<size, identity: 0, partitioner: partitioner, combine: { $0 &+ $1 }) { $0 &* 3 &+ 1 }
                #expect(total == (0..<size).reduce(0) { $0 &+ $1 &* 3 &+ 1 }, "seed \(seed) \(partitioner) size \(size)")
            }
            #expect(jobs.parallelReduce(7..<7, identity: 42, combine: +) { $0 } == 42)
            // Non-commutative but associative: concatenation keeps index order.
            let text = jobs.parallelReduce(0..<500, identity: "", partitioner: .adaptive(minimumGrain: 3), combine: +) { "\($0)," }
            #expect(text == (0..<500).map { "\($0)," }.joined())
        }
    }

    /// Floating-point sums with a fixed partitioner give the same bits at every worker count
    /// and on every run (the split tree does not depend on scheduling).
    @Test
    func fixedReduceIsBitwiseDeterministic() throws {
        let results = Locked<Set<UInt64>>([])
        for workers in workerCounts {
            let jobs = try makeSystem(workers: workers, "sp-pf-w")
            withTimeLimit(seconds: 60, "fixedReduceIsBitwiseDeterministic workers=\(workers)") {
                for _ in 0..<5 {
                    let sum = jobs.parallelReduce(0..<1_000_003, identity: Float(0), partitioner: .fixed(grain: 1000), combine: +) {
                        Float($0 % 977) * 0.001 + 1e-3
                    }
                    results.withLock { _ = $0.insert(UInt64(sum.bitPattern)) }
                }
            }
        }
        let bits = results.withLock { $0 }
        #expect(bits.count == 1, "sums differ: \(bits)")
    }

    @Test(arguments: workerCounts)
    func mapKeepsOrderAndCollectionsWork(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 60, "mapKeepsOrderAndCollectionsWork workers=\(workers)") {
            let squares = jobs.parallelMap(-5..<50_000) { $0 * $0 }
            #expect(squares == (-5..<50_000).map { $0 * $0 })
            #expect(jobs.parallelMap(3..<3) { $0 }.isEmpty)
            let words = (0..<10_000).map { "w\($0)" }
            #expect(words.parallelMap(on: jobs) { $0.count } == words.map { $0.count })
            let slice = words[100..<9000]
            let lengths = Tally()
            slice.parallelForEach(on: jobs, partitioner: .fixed(grain: 64)) { lengths.add($0.count) }
            #expect(lengths.current == slice.reduce(0) { $0 + $1.count })
            let objects = jobs.parallelMap(0..<1000) { Tracked($0) }
            #expect(objects.map(\.value) == Array(0..<1000))
        }
    }

    @Test(arguments: workerCounts)
    func mutableSlicesAreDisjointAndCover(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 60, "mutableSlicesAreDisjointAndCover workers=\(workers)") {
            for partitioner in partitioners {
                var values = [Int](repeating: 0, count: 77_777)
                values.withParallelMutableSlices(on: jobs, partitioner: partitioner) { slice, range in
                    #expect(slice.count == range.count)
                    for offset in slice.indices { slice[offset] += range.lowerBound + offset + 1 }
                }
                #expect(values == Array(1...77_777), "\(partitioner)")
            }
            var empty: [Int] = []
            empty.withParallelMutableSlices(on: jobs) { _, _ in Issue.record("body called for an empty array") }
        }
    }

    /// A throwing body: the first error comes back, chunks after the failure are skipped, and a
    /// failed map leaves no element alive.
    @Test(arguments: workerCounts)
    func errorsCancelAndRethrow(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pf-w")
        withTimeLimit(seconds: 60, "errorsCancelAndRethrow workers=\(workers)") {
            let ran = Tally()
            do throws(TestFailure) {
                try jobs.parallelFor(0..<1_000_000, partitioner: .fixed(grain: 100)) { (index: Int) throws(TestFailure) in
                    ran.add()
                    if index == 1234 { throw TestFailure(index: index) }
                }
                Issue.record("no error")
            } catch {
                #expect(error == TestFailure(index: 1234))
            }
            #expect(ran.current < 1_000_000, "the failure cancelled nothing")

            let baseline = Tracked.live.load(ordering: .relaxed)
            for failing in [0, 5_000, 99_999] {
                do throws(TestFailure) {
                    _ = try jobs.parallelMap(0..<100_000) { (index: Int) throws(TestFailure) -> Tracked in
                        if index == failing { throw TestFailure(index: index) }
                        return Tracked(index)
                    }
                    Issue.record("no error")
                } catch {
                    #expect(error.index == failing)
                }
                #expect(Tracked.live.load(ordering: .relaxed) == baseline, "failed map at \(failing) left elements alive")
            }

            var values = [Int](repeating: 0, count: 10_000)
            #expect(throws: TestFailure.self) {
                try values.withParallelMutableSlices(on: jobs) { (slice, range) throws(TestFailure) in
                    if range.contains(5000) { throw TestFailure(index: 5000) }
                }
            }
            #expect(throws: TestFailure.self) {
                try jobs.parallelReduce(0..<10_000, identity: 0, combine: +) { (index: Int) throws(TestFailure) -> Int in
                    if index == 10 { throw TestFailure(index: index) }
                    return index
                }
            }
        }
    }
}

struct ParallelForMisuseTests {
    @Test
    func zeroGrainTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            jobs.parallelFor(0..<10, grain: 0) { _ in }
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("grain of 1 or more"))
    }

    @Test
    func loopFromAnotherSystemsJobTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let first = try! JobSystem(configuration: .init(workers: 2, threadNamePrefix: "first-w"))
            let second = try! JobSystem(configuration: .init(workers: 2, threadNamePrefix: "second-w"))
            first.wait(for: first.run { _ in second.parallelFor(0..<100) { _ in } })
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("job of another"))
    }
}
