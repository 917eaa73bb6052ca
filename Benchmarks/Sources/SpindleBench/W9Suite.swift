// W9, the dataflow stencil (docs/workloads.md): tasks (t, x) over T timesteps of w points, each
// reading its three neighbours of the step before, created in program order inside the sample.
// Entries per implementation, width and body length; Scripts/w9-metg turns one run's JSON into
// efficiency, overhead per task and METG (docs/benchmarking.md, "W9-dataflow").

import Dispatch
import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

enum W9Suite {
    static let steps = 1_000
    /// Body lengths swept, in microseconds (0: empty bodies, for the overhead per task).
    static let bodies: [(label: String, microseconds: Double)] = [
        ("0us", 0), ("0.25us", 0.25), ("0.5us", 0.5), ("1us", 1), ("2us", 2), ("4us", 4), ("8us", 8), ("16us", 16),
    ]

    /// K for a body of about `microseconds` (W5's K spins for about 1 µs).
    static func k(_ microseconds: Double) -> Int { Int((Double(Workloads.w5K) * microseconds).rounded()) }

    /// Task `index` = t·w + x: `value[index] = spin(index + Σ value[(t−1, x−1…x+1)], K)`.
    @inline(__always)
    static func body(_ index: Int, width: Int, values: UnsafeMutablePointer<UInt64>, k: Int) {
        let t = index / width, x = index - t * width
        var seed = UInt64(index)
        if t > 0 {
            let base = index - width - x
            for neighbour in Swift.max(0, x - 1)...Swift.min(width - 1, x + 1) { seed &+= values[base + neighbour] }
        }
        values[index] = Workloads.spin(seed, k)
    }

    /// The inputs of task `index`: the indices of its neighbours of the step before.
    @inline(__always)
    static func inputs(_ index: Int, width: Int) -> ClosedRange<Int>? {
        let t = index / width, x = index - t * width
        guard t > 0 else { return nil }
        let base = index - width - x
        return (base + Swift.max(0, x - 1))...(base + Swift.min(width - 1, x + 1))
    }

    /// The check: XOR of the last step's values.
    static func check(_ values: UnsafeMutablePointer<UInt64>, width: Int) -> UInt64 {
        (0..<width).reduce(UInt64(0)) { $0 ^ values[(steps - 1) * width + $1] }
    }

    /// One entry's routine: `run` fills the values; every sample is checked against the serial
    /// result for the same width and K.
    static func routine(width: Int, k: Int, _ run: @escaping (UnsafeMutablePointer<UInt64>) throws -> Void) -> Routine {
        let count = width * steps
        let values = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        values.initialize(repeating: 0, count: count)
        for index in 0..<count { body(index, width: width, values: values, k: k) }
        let expected = check(values, width: width)
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                values.update(repeating: 0, count: count)
                total &+= try Clock.measure { try run(values) }
                let got = check(values, width: width)
                guard got == expected else { throw BenchmarkCheckFailure("W9: XOR \(got), expected \(expected) (width \(width), K \(k))") }
            }
            return total
        }
    }

    static func register(_ registry: inout BenchmarkRegistry) {
        // w = cores: the CPUs this process may use, which is what the shared system's workers
        // default to (the system itself starts only when an entry runs).
        let cores = Swift.max(1, (try? CPUSet.allowed().count) ?? 1)
        for width in [cores, 8 * cores] {
            for (label, microseconds) in bodies {
                register(&registry, width: width, label: label, k: k(microseconds))
            }
        }
    }

    static func register(_ registry: inout BenchmarkRegistry, width: Int, label: String, k: Int) {
        let count = width * steps
        let throughput = Throughput.elements(count)
        let suffix = "w\(width)-\(label)"
        let shape = "\(steps) steps × \(width) points, K = \(k)"
        func id(_ name: String) -> BenchmarkID { BenchmarkID(group: "W9-dataflow", name: "\(name)-\(suffix)") }

        registry.register(Benchmark(id("serial"), throughput: throughput, mode: .flat, maxSamples: 20,
                                    note: "every body in program order on one thread (the ideal work); \(shape)") { _ in
            routine(width: width, k: k) { values in
                for index in 0..<count { body(index, width: width, values: values, k: k) }
            }
        })
        registry.register(Benchmark(id("taskgraph"), throughput: throughput, mode: .flat, maxSamples: 20,
                                    note: "a TaskGraph built inside the sample (nodes(_:count:), succeeds(contentsOf:) slices) and run once; \(shape)") { _ in
            let jobs = try SharedJobSystem.get()
            return routine(width: width, k: k) { values in
                nonisolated(unsafe) let cells = values
                let graph = TaskGraph("W9")
                graph.reserveCapacity(nodes: count, edges: 3 * count)
                graph.nodes("cell", count: count) { index, _ in body(index, width: width, values: cells, k: k) }
                let nodes = graph.nodes
                for index in width..<count { try nodes[index].succeeds(contentsOf: nodes[inputs(index, width: width)!]) }
                try jobs.runAndWait(graph)
            }
        })
        registry.register(Benchmark(id("taskgraph-reused"), throughput: throughput, mode: .flat, maxSamples: 20,
                                    note: "the same TaskGraph built once before the samples (labelled: building is not in the sample); \(shape)") { _ in
            let jobs = try SharedJobSystem.get()
            let slot = UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>.allocate(capacity: 1)
            slot.initialize(to: nil)
            nonisolated(unsafe) let target = slot
            let graph = TaskGraph("W9")
            graph.nodes("cell", count: count) { index, _ in body(index, width: width, values: target.pointee!, k: k) }
            let nodes = graph.nodes
            for index in width..<count { try nodes[index].succeeds(contentsOf: nodes[inputs(index, width: width)!]) }
            return routine(width: width, k: k) { values in
                target.pointee = values
                try jobs.runAndWait(graph)
            }
        })
        registry.register(Benchmark(id("spawn-after"), throughput: throughput, mode: .flat, maxSamples: 20,
                                    note: "jobs.spawn(afterAll: handles of the inputs) per task from the benchmark thread, then a wait for the last step; \(shape)") { _ in
            let jobs = try SharedJobSystem.get()
            return routine(width: width, k: k) { values in
                nonisolated(unsafe) let cells = values
                var handles: [JobCounter] = []
                handles.reserveCapacity(count)
                for index in 0..<count {
                    // A copy of the inputs, not a slice: a slice would keep `handles`' buffer
                    // shared, and the next append would copy it whole.
                    let inputHandles: [JobCounter] = inputs(index, width: width).map { Array(handles[$0]) } ?? []
                    handles.append(jobs.spawn(afterAll: inputHandles) { _ in body(index, width: width, values: cells, k: k) })
                }
                for index in (count - width)..<count { jobs.wait(for: handles[index]) }
            }
        })
        registry.register(Benchmark(id("dataflow"), throughput: throughput, mode: .flat, maxSamples: 20,
                                    note: "Dataflow<Int>.task(reads: the three input cells, writes: its cell) per task from the benchmark thread, then flow.wait(); \(shape)") { _ in
            let jobs = try SharedJobSystem.get()
            return routine(width: width, k: k) { values in
                nonisolated(unsafe) let cells = values
                let flow = Dataflow<Int>(on: jobs, window: count)
                for index in 0..<count {
                    let reads = inputs(index, width: width).map(Array.init) ?? []
                    flow.task(reads: reads, writes: [index]) { _ in body(index, width: width, values: cells, k: k) }
                }
                try flow.wait()
            }
        })
        registry.register(Benchmark(id("counters"), throughput: throughput, mode: .flat, maxSamples: 20,
                                    note: "every task spawned at once with its own counter; each parks on its inputs' counters (ctx.wait) before its body; \(shape)") { _ in
            let jobs = try SharedJobSystem.get()
            return routine(width: width, k: k) { values in
                nonisolated(unsafe) let cells = values
                let counters = (0..<count).map { _ in JobCounter() }
                for index in 0..<count {
                    let range = inputs(index, width: width)
                    jobs.run(counter: counters[index]) { context in
                        if let range { for input in range { context.wait(for: counters[input]) } }
                        body(index, width: width, values: cells, k: k)
                    }
                }
                for index in (count - width)..<count { jobs.wait(for: counters[index]) }
            }
        })
        registry.register(Benchmark(id("dispatch"), throughput: throughput, mode: .flat, maxSamples: 20,
                                    note: "DispatchQueue.global().async(group:) per ready task; atomic pending counts (set in the sample) release successors, as W5's Dispatch entry; \(shape)") { _ in
            let counts = PendingCounts(count: count)
            let queue = DispatchQueue.global()
            return routine(width: width, k: k) { values in
                nonisolated(unsafe) let cells = values
                for index in 0..<count { counts.pointer[index].store(inputs(index, width: width)?.count ?? 0, ordering: .relaxed) }
                let group = DispatchGroup()
                @Sendable func run(_ index: Int) {
                    body(index, width: width, values: cells, k: k)
                    let t = index / width, x = index - t * width
                    guard t + 1 < steps else { return }
                    let next = index + width - x
                    for neighbour in Swift.max(0, x - 1)...Swift.min(width - 1, x + 1)
                    where counts.pointer[next + neighbour].subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                        queue.async(group: group) { run(next + neighbour) }
                    }
                }
                for index in 0..<width { queue.async(group: group) { run(index) } }
                group.wait()
            }
        })
    }
}
