// Spindle's parallel loops on W3, W4 and W7 beside the peers (same groups, same checks), a
// grain-size sweep on W3 and W4, and thread sweeps (`--threads`) of the Spindle entries.

import Foundation
import Spindle
import SpindleBenchKit

enum LoopSuite {
    static func register(_ registry: inout BenchmarkRegistry) {
        registerW3(&registry)
        registerW4(&registry)
        registerW7(&registry)
    }

    static func registerW3(_ registry: inout BenchmarkRegistry) {
        let count = Workloads.w3Count
        let throughput = Throughput.bytes(Workloads.w3BytesPerSample)
        registry.register(Benchmark(BenchmarkID(group: "W3-axpy", name: "spindle"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "jobs.parallelForChunks(0..<16Mi), adaptive partitioner: one axpy call per chunk") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return WorkloadSuite.axpyRoutine { x, y in
                jobs.parallelForChunks(0..<count) { range in Workloads.axpy(x.readOnly, y.pointer, range) }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W3-axpy", name: "spindle-per-index"), throughput: throughput, mode: .flat,
                                    note: "jobs.parallelFor(0..<16Mi) { i in y[i] = 2.5 * x[i] + y[i] }, adaptive partitioner") { _ in
            let jobs = try SharedJobSystem.get()
            return WorkloadSuite.axpyRoutine { x, y in
                jobs.parallelFor(0..<count) { i in y.pointer[i] = 2.5 * x.pointer[i] + y.pointer[i] }
            }
        })
        for grain in [4096, 65536, 1 << 20] {
            registry.register(Benchmark(BenchmarkID(group: "W3-grain", name: "spindle-fixed", parameter: "\(grain)"),
                                        throughput: throughput, mode: .flat,
                                        note: "jobs.parallelForChunks(0..<16Mi, partitioner: .fixed(grain: \(grain)))") { _ in
                let jobs = try SharedJobSystem.get()
                return WorkloadSuite.axpyRoutine { x, y in
                    jobs.parallelForChunks(0..<count, partitioner: .fixed(grain: grain)) { range in
                        Workloads.axpy(x.readOnly, y.pointer, range)
                    }
                }
            })
        }
    }

    static func registerW4(_ registry: inout BenchmarkRegistry) {
        let count = Workloads.w4Count
        let throughput = Throughput.elements(count)
        registry.register(Benchmark(BenchmarkID(group: "W4-compute", name: "spindle"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "jobs.parallelFor(0..<1Mi) { i in … }, adaptive partitioner") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return WorkloadSuite.w4Routine { x, out in
                jobs.parallelFor(0..<count) { i in out.pointer[i] = Workloads.w4Element(x.pointer[i]) }
            }
        })
        let sweep: [(name: String, grain: Int, partitioner: Partitioner)] =
            [16, 256, 4096, 65536].map { ("spindle-fixed", $0, .fixed(grain: $0)) }
            + [64, 4096].map { ("spindle-adaptive", $0, .adaptive(minimumGrain: $0)) }
        for (name, grain, partitioner) in sweep {
            registry.register(Benchmark(BenchmarkID(group: "W4-grain", name: name, parameter: "\(grain)"),
                                        throughput: throughput, mode: .flat,
                                        note: "jobs.parallelFor(0..<1Mi, partitioner: .\(partitioner))") { _ in
                let jobs = try SharedJobSystem.get()
                return WorkloadSuite.w4Routine { x, out in
                    jobs.parallelFor(0..<count, partitioner: partitioner) { i in
                        out.pointer[i] = Workloads.w4Element(x.pointer[i])
                    }
                }
            })
        }
    }

    static func registerW7(_ registry: inout BenchmarkRegistry) {
        let outer = Workloads.w7Outer, inner = Workloads.w7Inner
        let throughput = Throughput.elements(outer * inner * Workloads.w7PassesPerSample)
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "spindle"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "jobs.parallelFor(0..<256) containing jobs.parallelFor(0..<4096), one element per inner index (the inner loop parks its fiber)") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return WorkloadSuite.w7Routine { a, out in
                jobs.parallelFor(0..<outer) { o in
                    jobs.parallelFor(0..<inner) { i in
                        out.pointer[o * inner + i] = Workloads.w7Element(a.pointer[o * inner + i])
                    }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "spindle-chunks"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "jobs.parallelFor(0..<256) containing jobs.parallelForChunks(0..<4096) { range in … }: the inner body loops over its chunk") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return WorkloadSuite.w7Routine { a, out in
                jobs.parallelFor(0..<outer) { o in
                    jobs.parallelForChunks(0..<inner) { range in
                        let input = a.pointer, output = out.pointer
                        for i in range { output[o * inner + i] = Workloads.w7Element(input[o * inner + i]) }
                    }
                }
            }
        })
    }
}
