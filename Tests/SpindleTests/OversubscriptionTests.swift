import Foundation
import Synchronization
import Testing
@testable import Spindle

/// More workers than CPUs, two job systems at once, and busy threads beside the workers
/// (docs/sleep.md, "Spinning on a shared machine"; docs/parallel-for.md, "More workers than
/// CPUs"): every job still runs exactly once and every result is right. Seeded, with a time limit
/// so that a hang fails.
@Suite(.serialized)
struct OversubscriptionTests {
    // MARK: The split rule

    @Test func parallelismIsTheSmallerOfWorkersAndCPUs() {
        #expect(SleepState(workers: 8, cpus: 2).parallelism == 2)
        #expect(SleepState(workers: 2, cpus: 8).parallelism == 2)
        #expect(SleepState(workers: 3).parallelism == 3)
        #expect(SleepState(workers: 1, cpus: 0).parallelism == 1)
    }

    /// With no more workers than CPUs, a searching worker makes the loops split; with more, only
    /// a CPU without a busy worker does.
    @Test func aLoopSplitsOnlyForACPUWithoutABusyWorker() {
        let quiet = SleepState(workers: 2, cpus: 2)
        #expect(!quiet.anyWorkerHungry, "both workers awake and busy")
        let search = quiet.startSearching(worker: 1)
        #expect(quiet.anyWorkerHungry, "worker 1 searches")
        quiet.stopSearching(search, NoWork())

        let crowded = SleepState(workers: 8, cpus: 2)
        #expect(!crowded.anyWorkerHungry, "eight busy workers on two CPUs")
        // Workers 1…k search while the others stay busy: hungry only once fewer than two are busy.
        func searching(_ workers: ClosedRange<Int>, _ check: () -> Void) {
            guard let first = workers.first else { return check() }
            let token = crowded.startSearching(worker: first)
            if workers.count == 1 { check() } else { searching(first + 1...workers.upperBound, check) }
            crowded.stopSearching(token, NoWork())
        }
        for last in 1...6 {
            searching(1...last) {
                let busy = 8 - last
                #expect(crowded.anyWorkerHungry == (busy < 2), "\(busy) busy workers on two CPUs")
            }
        }
        #expect(!crowded.anyWorkerHungry, "every search stopped")
    }

    // MARK: Whole systems

    /// A nested loop (W7's shape), a fork-join tree and a task graph on `workers` workers pinned
    /// compactly onto this machine's CPUs, checked against serial results.
    @Test(arguments: [2, 4, 16, 64])
    func moreWorkersThanCPUsRunEverythingOnce(workers: Int) {
        let seed = testSeed(default: 0x5EED_0001 &+ UInt64(workers))
        withTimeLimit(seconds: 60, "workers \(workers), seed \(seed)") {
            let jobs = try! JobSystem(configuration: .init(workers: workers, pinning: .compact, threadNamePrefix: "sp-over"))
            defer { jobs.shutdown() }
            let cpus = (try? CPUSet.allowed().count) ?? workers
            #expect(jobs.scheduler.parallelism == Swift.min(workers, cpus), "\(workers) workers on \(cpus) CPUs")
            Self.checkNestedLoops(jobs, seed: seed)
            Self.checkTree(jobs, seed: seed)
            Self.checkGraph(jobs, seed: seed)
        }
    }

    /// Two systems of as many workers as CPUs each, driven at the same time from two threads.
    @Test(arguments: [1, 2, 8])
    func twoSystemsAtOnce(workersEach: Int) {
        let seed = testSeed(default: 0x5EED_0100 &+ UInt64(workersEach))
        withTimeLimit(seconds: 60, "two systems of \(workersEach) workers, seed \(seed)") {
            let systems = (0..<2).map { index in
                try! JobSystem(configuration: .init(workers: workersEach, threadNamePrefix: "sp-two\(index)"))
            }
            onThreads(2) { index in
                for round in 0..<3 {
                    Self.checkNestedLoops(systems[index], seed: seed &+ UInt64(index * 10 + round))
                    Self.checkTree(systems[index], seed: seed &+ UInt64(index * 10 + round))
                }
            }
            for system in systems { system.shutdown() }
        }
    }

    /// Busy threads of this process take the CPUs from the workers (as a competing process
    /// would) while jobs run: nothing is lost and nothing hangs.
    @Test(arguments: [1, 2, 8])
    func busyThreadsBesideTheWorkers(workers: Int) {
        let seed = testSeed(default: 0x5EED_0200 &+ UInt64(workers))
        withTimeLimit(seconds: 60, "workers \(workers) beside 2 busy threads, seed \(seed)") {
            let jobs = try! makeSystem(workers: workers, "sp-busy")
            let stop = Atomic<Bool>(false)
            let busy = (0..<2).map { _ in
                let thread = Thread {
                    var x: UInt64 = 1
                    while !stop.load(ordering: .relaxed) { x = x &* 6364136223846793005 &+ 1 }
                    _ = x
                }
                thread.start()
                return thread
            }
            _ = busy
            for round in 0..<3 {
                Self.checkNestedLoops(jobs, seed: seed &+ UInt64(round))
                Self.checkTree(jobs, seed: seed &+ UInt64(round))
                Self.checkGraph(jobs, seed: seed &+ UInt64(round))
            }
            stop.store(true, ordering: .relaxed)
            jobs.shutdown()
        }
    }

    // MARK: Checks

    /// A parallel loop over rows whose body runs a chunked loop over the row's columns; every
    /// element is written once with a value that depends on its position and the seed.
    static func checkNestedLoops(_ jobs: JobSystem, seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let rows = Int(random.next() % 200) + 20
        let columns = Int(random.next() % 3000) + 100
        let cells = UnsafeMutableBufferPointer<Atomic<UInt64>>.allocate(capacity: rows * columns)
        for index in cells.indices { (cells.baseAddress! + index).initialize(to: Atomic(0)) }
        defer { cells.deallocate() }
        nonisolated(unsafe) let shared = cells
        jobs.parallelFor(0..<rows) { row in
            jobs.parallelForChunks(0..<columns) { range in
                for column in range {
                    shared[row * columns + column].wrappingAdd(UInt64(row * columns + column) ^ seed, ordering: .relaxed)
                }
            }
        }
        for index in cells.indices {
            let value = cells[index].load(ordering: .relaxed)
            #expect(value == UInt64(index) ^ seed, "cell \(index) of \(rows)×\(columns) (seed \(seed))")
            if value != UInt64(index) ^ seed { return }
        }
    }

    /// A random tree summed with nested `join`s, against its serial sum.
    static func checkTree(_ jobs: JobSystem, seed: UInt64) {
        typealias Node = JobSystemTests.TreeNode
        let size = 3000
        @Sendable func sum(_ context: JobContext, _ seed: UInt64, _ size: Int) -> UInt64 {
            let children = Node.children(seed: seed, size: size)
            var total = Node.mix(seed)
            var index = 0
            while index < children.count {
                if index + 1 < children.count {
                    let (a, b) = (children[index], children[index + 1])
                    let pair = context.join({ sum($0, a.seed, a.size) }, { sum($0, b.seed, b.size) })
                    total &+= pair.0 &+ pair.1
                    index += 2
                } else {
                    total &+= sum(context, children[index].seed, children[index].size)
                    index += 1
                }
            }
            return total
        }
        let result = ResultBox<UInt64>()
        let counter = JobCounter()
        jobs.run(counter: counter) { context in result.value = sum(context, seed, size) }
        jobs.wait(for: counter)
        #expect(result.value == Node.oracle(seed: seed, size: size), "tree of \(size) (seed \(seed))")
    }

    /// A layered graph where every node adds its predecessors' values: run three times, each run's
    /// sink value against the serial one.
    static func checkGraph(_ jobs: JobSystem, seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let width = Int(random.next() % 6) + 2
        let layers = Int(random.next() % 20) + 5
        let values = UnsafeMutableBufferPointer<Atomic<UInt64>>.allocate(capacity: width * layers)
        for index in values.indices { (values.baseAddress! + index).initialize(to: Atomic(0)) }
        defer { values.deallocate() }
        nonisolated(unsafe) let shared = values
        let graph = TaskGraph()
        var nodes: [TaskGraph.Node] = []
        for layer in 0..<layers {
            for column in 0..<width {
                let index = layer * width + column
                let node = graph.node("n\(index)") { _ in
                    var total = UInt64(index) ^ seed
                    if layer > 0 {
                        for from in 0..<width {
                            total &+= shared[(layer - 1) * width + from].load(ordering: .relaxed)
                        }
                    }
                    shared[index].store(total, ordering: .relaxed)
                }
                if layer > 0 {
                    for from in 0..<width { try! nodes[(layer - 1) * width + from].precedes(node) }
                }
                nodes.append(node)
            }
        }
        var expected = [UInt64](repeating: 0, count: width * layers)
        for layer in 0..<layers {
            for column in 0..<width {
                let index = layer * width + column
                var total = UInt64(index) ^ seed
                if layer > 0 { for from in 0..<width { total &+= expected[(layer - 1) * width + from] } }
                expected[index] = total
            }
        }
        for run in 0..<3 {
            try! jobs.runAndWait(graph)
            for index in values.indices where values[index].load(ordering: .relaxed) != expected[index] {
                Issue.record("graph \(width)×\(layers), run \(run), node \(index) (seed \(seed))")
                return
            }
        }
    }
}

/// A sleep environment with no work anywhere, for stopping a search in unit tests.
private final class NoWork: SleepEnvironment {
    func cpu(ofWorker index: Int) -> Int? { nil }
    func sleepWord(ofWorker index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> { fatalError("no sleeper") }
    func anyQueuedWork() -> Bool { false }
    func anyWorkVisible(forWorker index: Int) -> Bool { false }
    func anyNodeQueuedWork() -> Bool { false }
    func parkedFibers() -> Int { 0 }
    var isShutdownRequested: Bool { false }
    var isTerminated: Bool { false }
    func closeForTermination() -> Bool { false }
    func workerSlept(_ index: Int, woke: Bool) {}
}
