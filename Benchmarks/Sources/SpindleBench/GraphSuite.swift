// Spindle's task graphs on W5 beside the peers (same group, same checks), with a thread sweep.

import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

enum GraphSuite {
    static func register(_ registry: inout BenchmarkRegistry) {
        registerW5(&registry)
    }

    /// W5's graph as a `TaskGraph`, built once over the routine's value buffer.
    final class W5Graph: @unchecked Sendable {
        // SAFETY: `built` is only touched by the runner's thread (prepare runs there).
        private var built: TaskGraph?

        func graph(for workload: WorkloadSuite.Graph, values: SharedBuffer<UInt64>) -> TaskGraph {
            if let built { return built }
            let graph = TaskGraph("W5")
            var nodes: [TaskGraph.Node] = []
            nodes.reserveCapacity(Workloads.w5Nodes)
            for id in 0..<Workloads.w5Nodes {
                let deps = workload.deps[id]
                let k = workload.k
                nodes.append(graph.node("n\(id)") { _ in Workloads.w5Node(id, deps: deps, values: values.pointer, k: k) })
            }
            for id in 0..<Workloads.w5Nodes {
                for d in workload.deps[id] {
                    // W5's graph is layered, so no edge can close a cycle: a refusal is a bug in
                    // the workload's generator or in TaskGraph, and says which edge.
                    do {
                        try nodes[d].precedes(nodes[id])
                    } catch {
                        preconditionFailure("W5: TaskGraph refused the edge n\(d) → n\(id) of a layered graph: \(error)")
                    }
                }
            }
            built = graph
            return graph
        }
    }

    static func registerW5(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(Workloads.w5Nodes * Workloads.w5RunsPerSample)
        let k = "K = \(Workloads.w5K) (≈1 µs per node body)"
        registry.register(Benchmark(BenchmarkID(group: "W5-dag", name: "spindle"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "TaskGraph built once (2048 nodes, 7936 edges), jobs.runAndWait(graph) per run; \(k)") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let cache = W5Graph()
            return try WorkloadSuite.w5Routine(prepare: { workload, values in
                cache.graph(for: workload, values: values)
            }, run: { graph in
                try jobs.runAndWait(graph)
            })
        })
        registry.register(Benchmark(BenchmarkID(group: "W5-dag", name: "spindle-inside"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "the same TaskGraph, each run started and awaited inside a job (ctx.runAndWait(graph): the waiter is a parked fiber, not a blocked thread); \(k)") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let cache = W5Graph()
            let runs = try WorkloadSuite.W5Runs()
            let graph = cache.graph(for: runs.graph, values: runs.values)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    // One job drives the sample's 50 runs; each run is timed inside it.
                    let outcome = Mutex<Result<UInt64, BenchmarkCheckFailure>?>(nil)
                    jobs.wait(for: jobs.run { ctx in
                        let result = Result { () throws(BenchmarkCheckFailure) in
                            try runs.sample(prepare: { _, _ in graph }, run: { try ctx.runAndWait($0) })
                        }
                        outcome.withLock { $0 = result }
                    })
                    guard let result = outcome.withLock({ $0 }) else { throw BenchmarkCheckFailure("W5: the driving job did not run") }
                    total &+= try result.get()
                }
                return total
            }
        })
    }
}
