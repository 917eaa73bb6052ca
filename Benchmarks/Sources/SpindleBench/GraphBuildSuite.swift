// Building task graphs: what adding nodes and edges costs as graphs grow, and a graph built and
// run once beside one run of the same graph reused (docs/graphs.md, "Building";
// docs/benchmarking.md, "graph-build").
//
// The graph: layers 4 nodes wide, each node depending on its (up to) three neighbours of the
// layer before (2.5 edges per node), nodes and edges added in program order with bodies that do
// nothing.

import Spindle
import SpindleBenchKit

enum GraphBuildSuite {
    static let width = 4

    /// The layered graph of `count` nodes built with `node` and `precedes`, as a user writes it.
    static func buildLayered(_ count: Int) throws -> TaskGraph {
        let graph = TaskGraph("layered")
        var nodes: [TaskGraph.Node] = []
        nodes.reserveCapacity(count)
        for index in 0..<count {
            let node = graph.node("n") { _ in }
            if index >= width {
                let x = index % width, previous = index - width - x
                for neighbour in Swift.max(0, x - 1)...Swift.min(width - 1, x + 1) {
                    try nodes[previous + neighbour].precedes(node)
                }
            }
            nodes.append(node)
        }
        return graph
    }

    /// The same graph through the bulk forms: `nodes(_:count:)` (one shared body, each node its
    /// integer) and `precedes(contentsOf:)`.
    static func buildLayeredInBulk(_ count: Int) throws -> TaskGraph {
        let graph = TaskGraph("layered")
        graph.reserveCapacity(nodes: count, edges: count * 3)
        let range = graph.nodes("n", count: count) { _, _ in }
        let all = graph.nodes
        for index in range.dropFirst(width) {
            let x = index % width, previous = index - width - x
            try all[index].succeeds(contentsOf: all[(previous + Swift.max(0, x - 1))...(previous + Swift.min(width - 1, x + 1))])
        }
        return graph
    }

    static func edges(_ count: Int) -> Int {
        (0..<count).reduce(0) { total, index in
            guard index >= width else { return total }
            let x = index % width
            return total + Swift.min(width - 1, x + 1) - Swift.max(0, x - 1) + 1
        }
    }

    static func register(_ registry: inout BenchmarkRegistry) {
        for (label, count) in [("10k", 10_000), ("100k", 100_000), ("1m", 1_000_000)] {
            let edges = edges(count)
            registry.register(Benchmark(BenchmarkID(group: "graph-build", name: "layered-\(label)"), throughput: .elements(count), mode: .flat,
                                        maxSamples: 20,
                                        note: "build a layered graph of \(count) nodes and \(edges) edges with node(_:) and precedes(_:) one by one; per unit: per node with its edges") { _ in
                return { iterations in
                    var total: UInt64 = 0
                    for _ in 0..<iterations {
                        var graph: TaskGraph?
                        total &+= try Clock.measure { graph = try buildLayered(count) }
                        guard graph?.nodeCount == count, graph?.edgeCount == edges else {
                            throw BenchmarkCheckFailure("graph-build: \(graph?.nodeCount ?? 0) nodes and \(graph?.edgeCount ?? 0) edges, expected \(count) and \(edges)")
                        }
                    }
                    return total
                }
            })
            registry.register(Benchmark(BenchmarkID(group: "graph-build", name: "layered-bulk-\(label)"), throughput: .elements(count), mode: .flat,
                                        maxSamples: 20,
                                        note: "the same graph with reserveCapacity, nodes(_:count:) (one shared body, an integer per node), graph.nodes once, and succeeds(contentsOf:) a slice of it per node; per unit: per node with its edges") { _ in
                return { iterations in
                    var total: UInt64 = 0
                    for _ in 0..<iterations {
                        var graph: TaskGraph?
                        total &+= try Clock.measure { graph = try buildLayeredInBulk(count) }
                        guard graph?.nodeCount == count, graph?.edgeCount == edges else {
                            throw BenchmarkCheckFailure("graph-build: \(graph?.nodeCount ?? 0) nodes and \(graph?.edgeCount ?? 0) edges, expected \(count) and \(edges)")
                        }
                    }
                    return total
                }
            })
        }
        let count = 10_000
        registry.register(Benchmark(BenchmarkID(group: "graph-build", name: "build-and-run-10k"), throughput: .elements(count), mode: .flat,
                                    sweepsThreads: true,
                                    note: "build the 10k-node layered graph (node + precedes) and run it once with jobs.runAndWait; per unit: per node") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    total &+= try Clock.measure { try jobs.runAndWait(try buildLayered(count)) }
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "graph-build", name: "run-reused-10k"), throughput: .elements(count), mode: .flat,
                                    sweepsThreads: true,
                                    note: "one run of the same graph built once before the samples (jobs.runAndWait); per unit: per node") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let graph = try buildLayered(count)
            try jobs.runAndWait(graph)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    total &+= try Clock.measure { try jobs.runAndWait(graph) }
                }
                return total
            }
        })
    }
}
