// W10, async offload (docs/workloads.md): C concurrent tasks on the default executor, each in a
// loop awaiting one offloaded computation of spin(i, K) (K ≈ 100 µs, i the computation's global
// index) until 20,000 computations are done in all. Offloaded inline, by a Dispatch hop, by
// Task.detached, by jobs.compute, and on Spindle's task executor. The check is the XOR of every
// result; each entry's note gets p50 and p99 of one await (from before the call until the task
// has resumed), from its last sample.

import Dispatch
import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

enum OffloadSuite {
    /// The check value, computed once per run (two seconds of serial spinning).
    static let expected = Workloads.w10Expected(k: Workloads.w10K)

    /// The latency percentiles of each entry's last sample, for the notes.
    nonisolated(unsafe) static var percentiles: [String: String] = [:]

    /// One W10 sample: `concurrency` tasks share the computations; returns the XOR of the
    /// results, and writes each await's latency into `latencies`.
    static func sample(concurrency: Int, k: Int, latencies: UnsafeMutableBufferPointer<UInt64>,
                       _ offload: @escaping @Sendable (UInt64, Int) async -> UInt64) -> UInt64 {
        let shared = Progress()
        let slots = SharedBuffer(pointer: latencies)
        return runBlocking {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<concurrency {
                    group.addTask {
                        var mine: UInt64 = 0
                        while true {
                            let index = shared.next.wrappingAdd(1, ordering: .relaxed).oldValue
                            if index >= Workloads.w10Computations { break }
                            let start = SpindleBenchKit.Clock.nanoseconds()
                            mine ^= await offload(UInt64(index), k)
                            slots.pointer[index] = SpindleBenchKit.Clock.nanoseconds() &- start
                        }
                        shared.xor.bitwiseXor(mine, ordering: .relaxed)
                    }
                }
            }
            return shared.xor.load(ordering: .relaxed)
        }
    }

    /// The computations handed out so far and the XOR of the results, shared by the tasks.
    final class Progress: Sendable {
        let next = Atomic<Int>(0)
        let xor = Atomic<UInt64>(0)
    }

    static func routine(_ name: String, concurrency: Int,
                        _ offload: @escaping @Sendable (UInt64, Int) async -> UInt64) -> Routine {
        let k = Workloads.w10K
        let expected = Self.expected
        let latencies = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: Workloads.w10Computations)
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                var result: UInt64 = 0
                total &+= Clock.measure { result = sample(concurrency: concurrency, k: k, latencies: latencies, offload) }
                guard result == expected else {
                    throw BenchmarkCheckFailure("W10-offload/\(name): XOR \(result), expected \(expected) (K = \(k))")
                }
            }
            var sorted = Array(latencies)
            sorted.sort()
            func at(_ q: Double) -> String {
                Format.time(Double(sorted[Swift.min(sorted.count - 1, Int(q * Double(sorted.count)))]))
            }
            percentiles["\(name)/\(concurrency)"] = "await p50 \(at(0.5)), p99 \(at(0.99))"
            return total
        }
    }

    static func annotate(_ results: inout [BenchmarkResult]) {
        for index in results.indices where results[index].id.group == "W10-offload" {
            let key = "\(results[index].id.name)/\(results[index].id.parameter ?? "")"
            if let text = percentiles[key] {
                results[index].note = (results[index].note ?? "") + "; \(text)"
            }
        }
    }

    static func register(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(Workloads.w10Computations)
        let ways: [(name: String, note: String, make: () throws -> @Sendable (UInt64, Int) async -> UInt64)] = [
            ("inline", "the task computes spin itself on the cooperative pool", {
                { seed, k in Workloads.spin(seed, k) }
            }),
            ("dispatch-hop", "withCheckedContinuation + DispatchQueue.global().async { spin; resume }", {
                { seed, k in
                    await withCheckedContinuation { continuation in
                        DispatchQueue.global().async { continuation.resume(returning: Workloads.spin(seed, k)) }
                    }
                }
            }),
            ("task-detached", "await Task.detached { spin }.value", {
                { seed, k in await Task.detached { Workloads.spin(seed, k) }.value }
            }),
            ("spindle-compute", "await jobs.compute { _ in spin } on a JobSystem with the default configuration", {
                let jobs = try SharedJobSystem.get()
                return { seed, k in await jobs.compute { _ in Workloads.spin(seed, k) } }
            }),
            ("spindle-executor", "await withTaskExecutorPreference(jobs) { spin }: the computation runs as a task on Spindle's workers", {
                let jobs = try SharedJobSystem.get()
                return { seed, k in await withTaskExecutorPreference(jobs) { Workloads.spin(seed, k) } }
            }),
        ]
        for way in ways {
            for concurrency in Workloads.w10Concurrency {
                registry.register(Benchmark(BenchmarkID(group: "W10-offload", name: way.name, parameter: "\(concurrency)"),
                                            throughput: throughput, mode: .flat, maxSamples: 10,
                                            note: "\(concurrency) tasks; \(way.note); K = \(Workloads.w10K) (≈100 µs)") { _ in
                    routine(way.name, concurrency: concurrency, try way.make())
                })
            }
        }
    }
}
