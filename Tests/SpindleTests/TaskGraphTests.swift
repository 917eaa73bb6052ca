import Foundation
@testable @_spi(Internals) import Spindle
import Synchronization
import Testing

/// A random DAG: edges only from lower to higher ids (after a random relabelling, so insertion
/// order is not topological order).
struct RandomDAG: CustomStringConvertible {
    let nodeCount: Int
    let edges: [(Int, Int)]

    init(seed: UInt64, maxNodes: Int) {
        var random = SplitMix64(seed: seed)
        nodeCount = 1 + Int(random.next() % UInt64(maxNodes))
        var order = Array(0..<nodeCount)
        order.shuffle(using: &random)
        var edges: [(Int, Int)] = []
        let density = 1 + random.next() % 30
        for from in 0..<nodeCount {
            for to in (from + 1)..<Swift.max(from + 1, nodeCount) where random.next() % 100 < density {
                edges.append((order[from], order[to]))
            }
        }
        self.edges = edges
    }

    var predecessors: [[Int]] {
        var result = [[Int]](repeating: [], count: nodeCount)
        for (from, to) in edges { result[to].append(from) }
        return result
    }

    var description: String {
        "\(nodeCount) nodes, edges " + edges.map { "\($0.0)->\($0.1)" }.joined(separator: " ")
    }

    /// What each node computes: a hash of its id and its predecessors' values, in a topological
    /// order (the oracle).
    func serialValues() -> [UInt64] {
        let predecessors = self.predecessors
        var values = [UInt64?](repeating: nil, count: nodeCount)
        while values.contains(where: { $0 == nil }) {
            for node in 0..<nodeCount where values[node] == nil && predecessors[node].allSatisfy({ values[$0] != nil }) {
                values[node] = Self.value(node, predecessors[node].map { values[$0]! })
            }
        }
        return values.map { $0! }
    }

    static func value(_ node: Int, _ inputs: [UInt64]) -> UInt64 {
        var h = UInt64(node) &* 0x9E37_79B9_7F4A_7C15
        for input in inputs { h = (h ^ input) &* 0xFF51_AFD7_ED55_8CCD }
        return h ^ (h >> 29)
    }
}

/// Start and end stamps per node from one global sequence, and the values nodes computed (plain
/// memory: the graph's ordering must publish them).
final class GraphLog: @unchecked Sendable {
    // SAFETY: stamps are atomics; `values[i]` is written by node i and read by its successors,
    // ordered by the graph.
    let sequence = Atomic<Int>(0)
    let starts: UnsafeMutablePointer<Atomic<Int>>
    let ends: UnsafeMutablePointer<Atomic<Int>>
    let runs: UnsafeMutablePointer<Atomic<Int>>
    let values: UnsafeMutablePointer<UInt64>
    let count: Int

    init(_ count: Int) {
        self.count = count
        starts = .allocate(capacity: count)
        ends = .allocate(capacity: count)
        runs = .allocate(capacity: count)
        values = .allocate(capacity: count)
        for i in 0..<count {
            (starts + i).initialize(to: Atomic(-1))
            (ends + i).initialize(to: Atomic(-1))
            (runs + i).initialize(to: Atomic(0))
        }
        values.initialize(repeating: 0, count: count)
    }

    deinit {
        starts.deallocate()
        ends.deallocate()
        runs.deallocate()
        values.deallocate()
    }

    func begin(_ node: Int) {
        starts[node].store(sequence.wrappingAdd(1, ordering: .relaxed).oldValue, ordering: .relaxed)
        runs[node].wrappingAdd(1, ordering: .relaxed)
    }

    func end(_ node: Int) {
        ends[node].store(sequence.wrappingAdd(1, ordering: .relaxed).oldValue, ordering: .relaxed)
    }

    func reset() {
        for i in 0..<count {
            starts[i].store(-1, ordering: .relaxed)
            ends[i].store(-1, ordering: .relaxed)
            values[i] = 0
        }
    }
}

struct NodeError: Error, Equatable {
    let node: Int
}

/// Counts `TrackedError` instances made and released.
final class ErrorTally: Sendable {
    let created = Atomic<Int>(0)
    let released = Atomic<Int>(0)
}

/// An error object that numbers itself and reports its deinit.
final class TrackedError: Error, Sendable {
    let tally: ErrorTally
    let serial: Int

    init(_ tally: ErrorTally) {
        self.tally = tally
        serial = tally.created.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    deinit { tally.released.wrappingAdd(1, ordering: .relaxed) }
}

/// Throws in the nodes listed (mutable between runs).
final class FailurePlan: @unchecked Sendable {
    // SAFETY: changed only between runs (the run's start and end order it with the nodes).
    var failing: Set<Int> = []
}

func buildGraph(_ dag: RandomDAG, log: GraphLog, failures: FailurePlan? = nil, priorities: Bool = false) throws -> TaskGraph {
    let graph = TaskGraph("random")
    let predecessors = dag.predecessors
    var nodes: [TaskGraph.Node] = []
    for id in 0..<dag.nodeCount {
        let inputs = predecessors[id]
        let priority: Priority = priorities ? Priority.allCases[id % 3] : .normal
        nodes.append(graph.node("n\(id)", priority: priority) { context in
            log.begin(id)
            if failures?.failing.contains(id) == true {
                log.end(id)
                throw NodeError(node: id)
            }
            log.values[id] = RandomDAG.value(id, inputs.map { log.values[$0] })
            if priorities { #expect(context.priority == priority) }
            log.end(id)
        })
    }
    for (from, to) in dag.edges { try nodes[from].precedes(nodes[to]) }
    return graph
}

@Suite(.serialized)
struct TaskGraphTests {
    /// Random DAGs against a topological-order oracle: every node runs once per run, after all of
    /// its predecessors ended, and computes the oracle's value from theirs. Runs alternate between
    /// outside the system and inside a job.
    @Test(arguments: workerCounts)
    func randomDAGsRunInTopologicalOrder(workers: Int) throws {
        let seed = testSeed(default: 0xDA6_0001)
        let jobs = try makeSystem(workers: workers, "sp-graph-w")
        withTimeLimit(seconds: 120, "randomDAGsRunInTopologicalOrder workers=\(workers) seed=\(seed)") {
            var random = SplitMix64(seed: seed)
            for round in 0..<30 {
                let dagSeed = random.next()
                let dag = RandomDAG(seed: dagSeed, maxNodes: round < 5 ? 8 : 300)
                let log = GraphLog(dag.nodeCount)
                let graph = try! buildGraph(dag, log: log, priorities: round % 3 == 0)
                #expect(graph.edgeCount == dag.edges.count)
                let expected = dag.serialValues()
                for run in 0..<4 {
                    log.reset()
                    if run % 2 == 0 {
                        try! jobs.runAndWait(graph)
                    } else {
                        jobs.wait(for: jobs.run { context in try! context.runAndWait(graph) })
                    }
                    let context = "seed \(seed) round \(round) run \(run), DAG seed \(dagSeed): \(dag)"
                    for node in 0..<dag.nodeCount {
                        #expect(log.runs[node].load(ordering: .relaxed) == run + 1, "node \(node) ran a wrong number of times; \(context)")
                    }
                    for (from, to) in dag.edges {
                        let end = log.ends[from].load(ordering: .relaxed)
                        let start = log.starts[to].load(ordering: .relaxed)
                        #expect(end >= 0 && end < start, "edge \(from)->\(to): predecessor ended at \(end), successor started at \(start); \(context)")
                    }
                    #expect(Array(UnsafeBufferPointer(start: log.values, count: dag.nodeCount)) == expected, "values differ from the oracle; \(context)")
                    #expect(!graph.isRunning && graph.counter.isComplete && graph.lastFailure == nil)
                }
            }
        }
    }

    /// One graph run 1,000 times: every node exactly once per run.
    @Test(arguments: workerCounts)
    func everyNodeOncePerRunOverAThousandRuns(workers: Int) throws {
        let seed = testSeed(default: 0xDA6_0002)
        let jobs = try makeSystem(workers: workers, "sp-graph-w")
        withTimeLimit(seconds: 120, "everyNodeOncePerRunOverAThousandRuns workers=\(workers) seed=\(seed)") {
            let dag = RandomDAG(seed: seed, maxNodes: 60)
            let log = GraphLog(dag.nodeCount)
            let graph = try! buildGraph(dag, log: log)
            for run in 1...1000 {
                try! jobs.runAndWait(graph)
                if run % 250 == 0 {
                    for node in 0..<dag.nodeCount {
                        #expect(log.runs[node].load(ordering: .relaxed) == run, "seed \(seed) node \(node) after \(run) runs; \(dag)")
                    }
                }
            }
        }
    }

    /// A throwing node stops the run: nodes that had not started are skipped, the run completes
    /// and reports the first error and its node, and the next run (without the failure) runs
    /// every node.
    @Test(arguments: workerCounts)
    func aFailureSkipsUnstartedNodesAndTheGraphRunsAgain(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-graph-w")
        withTimeLimit(seconds: 60, "aFailureSkipsUnstartedNodes workers=\(workers)") {
            // A chain 0 -> 1 -> … -> 9; node 4 throws.
            let dag = RandomDAG(chain: 10)
            let log = GraphLog(10)
            let failures = FailurePlan()
            failures.failing = [4]
            let graph = try! buildGraph(dag, log: log, failures: failures)
            do throws(TaskGraph.NodeFailure) {
                try jobs.runAndWait(graph)
                Issue.record("the run should have thrown")
            } catch {
                #expect(error.node == "n4")
                #expect(error.error as? NodeError == NodeError(node: 4))
            }
            #expect(graph.counter.isComplete && !graph.isRunning)
            #expect(graph.lastFailure?.node == "n4")
            for node in 0..<10 {
                #expect(log.runs[node].load(ordering: .relaxed) == (node <= 4 ? 1 : 0), "node \(node)")
            }
            failures.failing = []
            try! jobs.runAndWait(graph)
            #expect(graph.lastFailure == nil)
            for node in 0..<10 {
                #expect(log.runs[node].load(ordering: .relaxed) == (node <= 4 ? 2 : 1), "node \(node) on the second run")
            }
        }
    }

    /// The error a node throws reaches `lastFailure` as the same object and is released exactly
    /// once after the failure is cleared: a class error counts its instances and deinits over
    /// 100 failing runs, then a successful run drops the last failure.
    @Test(arguments: workerCounts)
    func thrownErrorsAreDeliveredAndReleasedOnce(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-graph-w")
        withTimeLimit(seconds: 60, "thrownErrorsAreDeliveredAndReleasedOnce workers=\(workers)") {
            let tally = ErrorTally()
            let fail = Atomic<Bool>(true)
            let graph = TaskGraph("errors")
            let first = graph.node("first") { _ in }
            let thrower = graph.node("thrower") { _ in
                if fail.load(ordering: .relaxed) { throw TrackedError(tally) }
            }
            try! first.precedes(thrower)
            for run in 0..<100 {
                jobs.wait(for: jobs.run(graph))
                let failure = graph.lastFailure
                #expect(failure?.node == "thrower")
                #expect((failure?.error as? TrackedError)?.serial == run)
            }
            fail.store(false, ordering: .relaxed)
            try! jobs.runAndWait(graph)
            #expect(graph.lastFailure == nil)
            #expect(tally.created.load(ordering: .relaxed) == 100)
            #expect(tally.released.load(ordering: .relaxed) == 100)
        }
    }

    /// Wide graphs where several nodes throw: exactly one failure is reported, one of the
    /// throwing nodes, and the run completes.
    @Test(arguments: workerCounts)
    func manyFailuresReportOne(workers: Int) throws {
        let seed = testSeed(default: 0xDA6_0003)
        let jobs = try makeSystem(workers: workers, "sp-graph-w")
        withTimeLimit(seconds: 60, "manyFailuresReportOne workers=\(workers) seed=\(seed)") {
            var random = SplitMix64(seed: seed)
            for _ in 0..<20 {
                let dag = RandomDAG(seed: random.next(), maxNodes: 200)
                let log = GraphLog(dag.nodeCount)
                let failures = FailurePlan()
                failures.failing = Set((0..<3).map { _ in Int(random.next() % UInt64(dag.nodeCount)) })
                let graph = try! buildGraph(dag, log: log, failures: failures)
                jobs.wait(for: jobs.run(graph))
                let failure = graph.lastFailure
                #expect(failure != nil, "seed \(seed): \(dag)")
                if let failure {
                    let node = (failure.error as? NodeError)?.node ?? -1
                    #expect(failures.failing.contains(node) && failure.node == "n\(node)")
                }
                for node in 0..<dag.nodeCount {
                    #expect(log.runs[node].load(ordering: .relaxed) <= 1)
                }
            }
        }
    }

    @Test
    func cyclesAreRefusedAndNamed() throws {
        let graph = TaskGraph("cycles")
        let a = graph.node("a") { _ in }
        let b = graph.node("b") { _ in }
        let c = graph.node("c") { _ in }
        try a.precedes(b)
        try b.precedes(c)
        #expect(throws: TaskGraph.CycleError(cycle: ["c", "a", "b", "c"])) { try c.precedes(a) }
        #expect(throws: TaskGraph.CycleError(cycle: ["b", "b"])) { try b.precedes(b) }
        #expect(throws: TaskGraph.CycleError(cycle: ["c", "a", "b", "c"])) { try a.succeeds(c) }
        // Unchanged by the refused edges; a duplicate edge is ignored.
        try a.precedes(b)
        #expect(graph.edgeCount == 2)
        #expect(graph.successors(of: a) == [b] && graph.successors(of: c).isEmpty)
        let description = String(describing: TaskGraph.CycleError(cycle: ["c", "a", "b", "c"]))
        #expect(description.contains("c → a → b → c"))
        let jobs = try makeSystem(workers: 2, "sp-graph-w")
        try jobs.runAndWait(graph)
    }

    @Test(arguments: workerCounts)
    func nodesSpawnWaitAndLoop(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-graph-w")
        withTimeLimit(seconds: 60, "nodesSpawnWaitAndLoop workers=\(workers)") {
            let graph = TaskGraph("nested")
            let total = Tally()
            let first = graph.node("spawn") { context in
                let counter = JobCounter()
                for _ in 0..<100 { context.run(counter: counter) { _ in total.add() } }
                context.wait(for: counter)
                // Each run adds 1,100 in all: this node's 100 are in, the loop's 1,000 not yet.
                #expect(total.current % 1100 == 100)
            }
            let second = graph.node("loop") { _ in
                jobs.parallelFor(0..<1000) { _ in total.add() }
                #expect(total.current % 1100 == 0)
            }
            try! first.precedes(second)
            for run in 1...20 {
                try! jobs.runAndWait(graph)
                #expect(total.current == 1100 * run)
            }
        }
    }

    @Test(arguments: workerCounts)
    func subgraphsRunBetweenTheirNeighbours(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-graph-w")
        withTimeLimit(seconds: 60, "subgraphsRunBetweenTheirNeighbours workers=\(workers)") {
            let log = GraphLog(6)
            let inner = TaskGraph("inner")
            let x = inner.node("x") { _ in log.begin(2); log.end(2) }
            let y = inner.node("y") { _ in log.begin(3); log.end(3) }
            let failures = FailurePlan()
            let z = inner.node("z") { _ in
                log.begin(4)
                log.end(4)
                if failures.failing.contains(4) { throw NodeError(node: 4) }
            }
            try! x.precedes(y, z)
            let outer = TaskGraph("outer")
            let before = outer.node("before") { _ in log.begin(0); log.end(0) }
            let nested = outer.subgraph("inner-node", inner)
            let after = outer.node("after") { _ in log.begin(5); log.end(5) }
            try! before.precedes(nested)
            try! nested.precedes(after)
            try! jobs.runAndWait(outer)
            for node in [2, 3, 4] {
                #expect(log.ends[0].load(ordering: .relaxed) < log.starts[node].load(ordering: .relaxed))
                #expect(log.ends[node].load(ordering: .relaxed) < log.starts[5].load(ordering: .relaxed))
            }
            failures.failing = [4]
            do throws(TaskGraph.NodeFailure) {
                try jobs.runAndWait(outer)
                Issue.record("the run should have thrown")
            } catch {
                #expect(error.node == "inner-node")
                let innerFailure = error.error as? TaskGraph.NodeFailure
                #expect(innerFailure?.node == "z")
                #expect(innerFailure?.error as? NodeError == NodeError(node: 4))
            }
            #expect(log.runs[5].load(ordering: .relaxed) == 1, "the node after the failed subgraph was skipped")
        }
    }

    @Test
    func emptyGraphCompletesAtOnce() throws {
        let jobs = try makeSystem(workers: 2, "sp-graph-w")
        let graph = TaskGraph()
        #expect(jobs.run(graph).isComplete)
        try jobs.runAndWait(graph)
        #expect(!graph.isRunning)
    }

    @Test
    func dotExportNamesNodesAndEdges() throws {
        let graph = TaskGraph("frame \"7\"")
        let load = graph.node("load") { _ in }
        let decode = graph.node("decode", priority: .high) { _ in }
        let log = graph.node("log", priority: .low) { _ in }
        let inner = TaskGraph("inner")
        inner.node("x") { _ in }
        let nested = graph.subgraph("post", inner)
        try load.precedes(decode, log)
        try decode.precedes(nested)
        let dot = graph.dot()
        #expect(dot.hasPrefix("digraph \"frame \\\"7\\\"\" {\n"))
        #expect(dot.contains("n0 [label=\"load\"];"))
        #expect(dot.contains("n1 [label=\"decode\", style=bold];"))
        #expect(dot.contains("n2 [label=\"log\", style=dashed];"))
        #expect(dot.contains("n3 [label=\"post\", shape=folder, tooltip=\"subgraph inner\"];"))
        #expect(dot.contains("n0 -> n1;") && dot.contains("n0 -> n2;") && dot.contains("n1 -> n3;"))
        #expect(dot.components(separatedBy: "->").count - 1 == 3)
        #expect(dot.hasSuffix("}\n"))
    }
}

extension RandomDAG {
    /// The chain `0 -> 1 -> … -> count-1`.
    init(chain count: Int) {
        nodeCount = count
        edges = (0..<(count - 1)).map { ($0, $0 + 1) }
    }
}

/// A system and a graph whose one node waits forever: the graph stays running.
func startBlockedGraph() -> (JobSystem, TaskGraph) {
    let jobs = try! JobSystem(configuration: .init(workers: 2))
    let graph = TaskGraph("busy")
    let release = JobCounter(1)
    graph.node("blocker") { context in context.wait(for: release) }
    jobs.run(graph)
    return (jobs, graph)
}

struct TaskGraphMisuseTests {
    @Test
    func edgeAcrossGraphsTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let first = TaskGraph("first")
            let second = TaskGraph("second")
            let a = first.node("a") { _ in }
            let b = second.node("b") { _ in }
            _ = try? a.precedes(b)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("belong to different graphs"))
    }

    @Test
    func concurrentRunTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (jobs, graph) = startBlockedGraph()
            jobs.run(graph)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("previous run is still in progress"))
    }

    @Test
    func changingARunningGraphTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (jobs, graph) = startBlockedGraph()
            graph.node("late") { _ in }
            withExtendedLifetime(jobs) {}
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("while it is running"))
    }

    @Test
    func aGraphInsideItselfTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let outer = TaskGraph("outer")
            let inner = TaskGraph("inner")
            inner.subgraph("nested", outer)
            outer.subgraph("loop", inner)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("would make a graph run inside itself"))
    }
}
