// The async bridge beside Swift Concurrency's own ways (docs/async.md): a compute round trip
// from async code, and a task group's children on the default executor and on Spindle's.

import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

enum AsyncSuite {
    static let groupChildren = 100_000

    static func register(_ registry: inout BenchmarkRegistry) {
        registerRoundTrip(&registry)
        registerTaskGroup(&registry)
    }

    /// Times `iterations` awaits of `once` inside one detached task, preferring `executor` when
    /// given (the task's start is not timed).
    static func roundTrips(_ iterations: Int, on executor: (any TaskExecutor)? = nil,
                           _ once: @escaping @Sendable () async -> Int) throws -> UInt64 {
        let (elapsed, sum) = runBlocking { () async -> (UInt64, Int) in
            await withTaskExecutorPreference(executor) { () async -> (UInt64, Int) in
                await loop(iterations, once)
            }
        }
        guard sum == iterations else {
            throw BenchmarkCheckFailure("async round trip: \(sum) results of 1, expected \(iterations)")
        }
        return elapsed
    }

    static func loop(_ iterations: Int, _ once: @Sendable () async -> Int) async -> (UInt64, Int) {
        var sum = 0
        let start = SpindleBenchKit.Clock.nanoseconds()
        for _ in 0..<iterations { sum &+= await once() }
        return (SpindleBenchKit.Clock.nanoseconds() &- start, sum)
    }

    static func registerRoundTrip(_ registry: inout BenchmarkRegistry) {
        registry.register(Benchmark(BenchmarkID(group: "async-roundtrip", name: "spindle-compute"),
                                    note: "from a detached task: await jobs.compute { _ in 1 } (one job on a worker, the task suspended meanwhile)") { _ in
            let jobs = try SharedJobSystem.get()
            return { iterations in try roundTrips(iterations) { await jobs.compute { _ in 1 } } }
        })
        registry.register(Benchmark(BenchmarkID(group: "async-roundtrip", name: "spindle-compute-on-executor"),
                                    note: "the same loop in a task on Spindle's executor (Task(executorPreference: jobs)): no cooperative-pool thread to wake") { _ in
            let jobs = try SharedJobSystem.get()
            return { iterations in
                try roundTrips(iterations, on: jobs) { await jobs.compute { _ in 1 } }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "async-roundtrip", name: "task-detached"),
                                    note: "from a detached task: await Task.detached { 1 }.value") { _ in
            { iterations in try roundTrips(iterations) { await Task.detached { 1 }.value } }
        })
    }

    /// A task group of `groupChildren` children that each return their index; checks the sum.
    @Sendable
    static func group() async -> Int {
        await withTaskGroup(of: Int.self) { group in
            for index in 0..<groupChildren { group.addTask { index } }
            var sum = 0
            for await value in group { sum &+= value }
            return sum
        }
    }

    static func checkGroup(_ sum: Int) throws {
        let expected = groupChildren * (groupChildren - 1) / 2
        guard sum == expected else {
            throw BenchmarkCheckFailure("task group: children summed to \(sum), expected \(expected)")
        }
    }

    static func registerTaskGroup(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(groupChildren)
        registry.register(Benchmark(BenchmarkID(group: "async-taskgroup", name: "default-executor"),
                                    throughput: throughput, mode: .flat, maxSamples: 30,
                                    note: "withTaskGroup, 10^5 addTask children returning their index, on the default executor") { _ in
            { iterations in
                try SpindleBenchKit.Clock.measure {
                    for _ in 0..<iterations { try checkGroup(runBlocking(group)) }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "async-taskgroup", name: "spindle-executor"),
                                    throughput: throughput, mode: .flat, maxSamples: 30,
                                    note: "the same group in Task(executorPreference: jobs): the parent and its children run on Spindle's workers") { _ in
            let jobs = try SharedJobSystem.get()
            return { iterations in
                try SpindleBenchKit.Clock.measure {
                    for _ in 0..<iterations {
                        try checkGroup(runBlocking { await Task(executorPreference: jobs) { await group() }.value })
                    }
                }
            }
        })
    }
}
