// Jobs that return values and scoped jobs: what a handle and a scope cost beside the way each
// peer returns values from parallel work (docs/benchmarking.md, "results").
//
// Every entry computes the same thing: 100,000 jobs, job i produces i·3, and the caller sums
// the values (checked against the closed form).

import Dispatch
import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

enum ResultSuite {
    static let jobs = 100_000
    static let expected = 3 * (jobs - 1) * jobs / 2

    static func check(_ sum: Int, _ what: String) throws {
        guard sum == expected else { throw BenchmarkCheckFailure("\(what): sum \(sum), expected \(expected)") }
    }

    static func register(_ registry: inout BenchmarkRegistry) {
        let count = jobs
        let throughput = Throughput.elements(count)
        registry.register(Benchmark(BenchmarkID(group: "results", name: "spindle-spawn"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "one job spawns 100k jobs with ctx.spawn (each returns i·3) and sums ctx.wait(for:) of each handle") { threads in
            let system = try SharedJobSystem.get(workers: threads)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    var sum = 0
                    total &+= Clock.measure {
                        sum = system.wait(for: system.spawn { ctx in
                            var handles: [JobHandle<Int, Never>] = []
                            handles.reserveCapacity(count)
                            for i in 0..<count { handles.append(ctx.spawn { _ in i &* 3 }) }
                            return handles.reduce(0) { $0 &+ ctx.wait(for: $1) }
                        })
                    }
                    try check(sum, "results/spindle-spawn")
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "results", name: "spindle-spawn-unique"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "the same with ctx.spawnUnique: the value lives in the job's record, the handles (not copyable) in a preallocated buffer; ctx.wait(for:) consumes each") { threads in
            let system = try SharedJobSystem.get(workers: threads)
            let slots = UnsafeMutablePointer<UniqueJobHandle<Int, Never>>.allocate(capacity: count)
            nonisolated(unsafe) let handles = slots
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    var sum = 0
                    total &+= Clock.measure {
                        sum = system.wait(for: system.spawnUnique { (ctx: JobContext) -> Int in
                            for i in 0..<count { (handles + i).initialize(to: ctx.spawnUnique { _ in i &* 3 }) }
                            var sum = 0
                            for i in 0..<count { sum &+= ctx.wait(for: (handles + i).move()) }
                            return sum
                        })
                    }
                    try check(sum, "results/spindle-spawn-unique")
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "results", name: "spindle-run-counter"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "the same without handles: one job runs 100k ctx.run(counter:) writing slot i of a buffer, waits once, sums the buffer") { threads in
            let system = try SharedJobSystem.get(workers: threads)
            let slots = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
            let out = SendableBuffer(slots)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    var sum = 0
                    total &+= Clock.measure {
                        sum = system.wait(for: system.spawn { ctx in
                            let done = JobCounter()
                            for i in 0..<count { ctx.run(counter: done) { _ in out.buffer[i] = i &* 3 } }
                            ctx.wait(for: done)
                            return out.buffer.reduce(0, &+)
                        })
                    }
                    try check(sum, "results/spindle-run-counter")
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "results", name: "spindle-scope"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "jobs.scope from the main thread: 100k scope.run jobs write slot i of a local array's buffer (non-Sendable closures), then the sum") { threads in
            let system = try SharedJobSystem.get(workers: threads)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    var values = [Int](repeating: 0, count: count)
                    total &+= Clock.measure {
                        values.withUnsafeMutableBufferPointer { buffer in
                            let out = buffer
                            system.scope { scope in
                                for i in 0..<count { scope.run { _ in out[i] = i &* 3 } }
                            }
                        }
                    }
                    try check(values.reduce(0, &+), "results/spindle-scope")
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "results", name: "taskgroup"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "withTaskGroup(of: Int.self): addTask ×100k (each returns i·3), summed with for await, from a detached task") { _ in
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    var sum = 0
                    total &+= Clock.measure {
                        sum = runBlocking {
                            await withTaskGroup(of: Int.self) { group in
                                for i in 0..<count { group.addTask { i &* 3 } }
                                var sum = 0
                                for await value in group { sum &+= value }
                                return sum
                            }
                        }
                    }
                    try check(sum, "results/taskgroup")
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "results", name: "dispatch-async-group"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "DispatchQueue.global().async(group:) ×100k writing slot i of a buffer, group.wait(), then the sum") { _ in
            let slots = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
            let out = SendableBuffer(slots)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    var sum = 0
                    total &+= Clock.measure {
                        let group = DispatchGroup()
                        let queue = DispatchQueue.global()
                        for i in 0..<count { queue.async(group: group) { out.buffer[i] = i &* 3 } }
                        group.wait()
                        sum = out.buffer.reduce(0, &+)
                    }
                    try check(sum, "results/dispatch-async-group")
                }
                return total
            }
        })
    }
}

/// A buffer whose slots the jobs of one iteration write, each its own.
struct SendableBuffer: @unchecked Sendable {
    // SAFETY: every job writes a distinct slot; the sum reads after the wait.
    let buffer: UnsafeMutableBufferPointer<Int>
    init(_ buffer: UnsafeMutableBufferPointer<Int>) { self.buffer = buffer }
}
