import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Building task graphs (docs/graphs.md, "Building"): the incrementally kept topological order
/// accepts exactly the edges that close no cycle, names the cycle of a refused one and leaves
/// the graph unchanged; graphs built in random edge order run every edge in order; nodes with an
/// integer argument run once each.
@Suite(.serialized)
struct GraphBuildingTests {
    /// Random edges between random nodes, checked against a reachability oracle: an edge is
    /// refused exactly when its target already reaches its source, the refusal names a real
    /// cycle through the new edge, and refused or duplicate edges change nothing.
    @Test func randomEdgesMatchAReachabilityOracle() throws {
        for round in 0..<4 {
            let seed = testSeed(default: 0x0DA6_0000 + UInt64(round))
            var generator = SplitMix64(seed: seed)
            let count = 300
            let graph = TaskGraph("oracle")
            let nodes = (0..<count).map { index in graph.node("n\(index)") { _ in } }
            var successors = [[Int]](repeating: [], count: count)
            func reaches(_ start: Int, _ goal: Int) -> Bool {
                var seen = Set([start])
                var stack = [start]
                while let node = stack.popLast() {
                    if node == goal { return true }
                    for next in successors[node] where seen.insert(next).inserted { stack.append(next) }
                }
                return false
            }
            for _ in 0..<3_000 {
                let from = Int.random(in: 0..<count, using: &generator)
                let to = Int.random(in: 0..<count, using: &generator)
                let edgesBefore = graph.edgeCount
                do throws(TaskGraph.CycleError) {
                    try nodes[from].precedes(nodes[to])
                    #expect(!reaches(to, from), "seed \(seed): \(from) → \(to) closes a cycle but was accepted")
                    if !successors[from].contains(to) { successors[from].append(to) }
                } catch {
                    #expect(reaches(to, from), "seed \(seed): \(from) → \(to) refused without a cycle")
                    let cycle = error.cycle.map { Int($0.dropFirst())! }
                    #expect(cycle.first == from && cycle.last == from && (from == to ? cycle.count == 2 : cycle[1] == to),
                            "seed \(seed): \(error.cycle) does not start with the edge \(from) → \(to)")
                    for (a, b) in zip(cycle.dropFirst(), cycle.dropFirst(2)) {
                        #expect(successors[a].contains(b), "seed \(seed): \(a) → \(b) on the named cycle is not an edge")
                    }
                    #expect(graph.edgeCount == edgesBefore, "seed \(seed): a refused edge changed the graph")
                }
            }
            #expect(graph.edgeCount == successors.reduce(0) { $0 + $1.count })
            for index in 0..<count {
                #expect(graph.successors(of: nodes[index]).map(\.index) == successors[index], "seed \(seed): successors of \(index)")
            }
        }
    }

    /// A DAG of up to 100,000 nodes whose edges follow a hidden random order, added in random
    /// order (so most disagree with the order the nodes were added and move nodes), then refused
    /// back edges; every run, at several worker counts, starts each node after its predecessors.
    @Test func largeDAGsBuiltInRandomOrderRunInOrder() throws {
        withTimeLimit(seconds: 120, "large random DAG") {
            let seed = testSeed(default: 0x0DA6_1000)
            var generator = SplitMix64(seed: seed)
            let count = stressCount(100_000)
            var rank = Array(0..<count)
            rank.shuffle(using: &generator)
            var edges: [(Int, Int)] = []
            for _ in 0..<(3 * count) {
                let a = Int.random(in: 0..<count, using: &generator)
                let b = Int.random(in: 0..<count, using: &generator)
                if rank[a] < rank[b] { edges.append((a, b)) } else if rank[b] < rank[a] { edges.append((b, a)) }
            }
            edges.shuffle(using: &generator)
            let graph = TaskGraph("random")
            let sequence = Atomic<Int>(0)
            let started = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
            defer { started.deallocate() }
            nonisolated(unsafe) let slots = started
            let range = graph.nodes("n", count: count) { index, _ in
                slots[index] = sequence.add(1, ordering: .relaxed).newValue
            }
            #expect(range == 0..<count)
            do {
                for (from, to) in edges { try graph.node(at: from).precedes(graph.node(at: to)) }
            } catch {
                Issue.record("seed \(seed): an edge that agrees with a topological order was refused: \(error)")
            }
            let edgeCount = graph.edgeCount
            for (from, to) in edges.prefix(100) {
                #expect(throws: TaskGraph.CycleError.self) { try graph.node(at: to).precedes(graph.node(at: from)) }
            }
            #expect(graph.edgeCount == edgeCount, "refused edges changed the graph")
            for workers in workerCounts + [16] {
                let jobs = try! makeSystem(workers: workers, "sp-gbuild-w")
                for _ in 0..<2 {
                    sequence.store(0, ordering: .relaxed)
                    try! jobs.runAndWait(graph)
                    #expect(sequence.load(ordering: .relaxed) == count)
                    let late = edges.filter { from, to in slots[from] >= slots[to] }
                    #expect(late.isEmpty, "seed \(seed) workers \(workers): \(late.count) edges ran out of order, first \(late.first.map { "\($0)" } ?? "")")
                }
                jobs.shutdown()
            }
        }
    }

    /// Nodes with an integer argument run once each with their own integer; an error names the
    /// node; `succeeds(contentsOf:)` and `precedes(contentsOf:)` add edges in bulk.
    @Test(arguments: workerCounts)
    func argumentNodesRunOnceEach(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-gbuild-w")
        struct Odd: Error, Equatable { let index: Int }
        withTimeLimit(seconds: 60, "argument nodes workers=\(workers)") {
            let graph = TaskGraph("arguments")
            let seen = UnsafeMutableBufferPointer<Int>.allocate(capacity: 1_000)
            seen.initialize(repeating: 0)
            defer { seen.deallocate() }
            nonisolated(unsafe) let slots = seen
            let body: @Sendable (Int, JobContext) throws -> Void = { index, _ in slots[index] += 1 }
            let first = graph.nodes("part", count: 500, body)
            let single = graph.node("single", argument: 500) { index, _ in slots[index] += 1 }
            let rest = graph.nodes("part", count: 499) { index, _ in slots[500 + 1 + index] += 1 }
            // Lazy sequences that call back into the graph (`node(at:)`) while the edges are
            // added: read before the graph's lock is taken, so this does not deadlock.
            try! single.succeeds(contentsOf: first.lazy.map { graph.node(at: $0) })
            try! single.precedes(contentsOf: rest.lazy.map { graph.node(at: $0) })
            #expect(graph.edgeCount == 999)
            for round in 1...3 {
                try! jobs.runAndWait(graph)
                #expect(seen.allSatisfy { $0 == round }, "every node once per run")
            }
            let failing = TaskGraph("failing")
            failing.nodes("checked", count: 10) { index, _ in if index == 7 { throw Odd(index: index) } }
            do throws(TaskGraph.NodeFailure) {
                try jobs.runAndWait(failing)
                Issue.record("the node's error was lost")
            } catch {
                #expect(error.node == "checked" && (error.error as? Odd) == Odd(index: 7))
            }
        }
        jobs.shutdown()
    }

    /// `node(at:)` out of range traps and names the range.
    @Test func nodeAtOutOfRangeTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let graph = TaskGraph("small")
            graph.node("only") { _ in }
            print(graph.node(at: 1))
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("TaskGraph \"small\".node(at: 1): the graph has 1 nodes; use an index in 0..<1"), "\(stderr)")
    }
}
