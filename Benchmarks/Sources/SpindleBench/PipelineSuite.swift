// Producer–consumer pipeline throughput and per-item latency: Spindle's Pipeline beside
// baselines built from Dispatch serial queues (per item, and in batches: Dispatch's strongest
// idiom for throughput) and from AsyncStream.
//
// The workload: 200,000 items through two transforming stages into a summing sink. Each item
// carries the time it was sent; the sink records its latency (send → sink). Throughput is items
// per second of the timed run; the latency percentiles of the last sample are added to the note.

import Dispatch
import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

enum PipelineSuite {
    static let items = 200_000
    static let capacity = 1024
    /// Items per batch of the batched Dispatch pipeline.
    static let batch = 256

    struct Item: Sendable {
        let index: Int
        let value: UInt64
        let sent: UInt64
    }

    @inline(__always)
    static func first(_ item: Item) -> Item {
        Item(index: item.index, value: item.value &* 0x9E37_79B9_7F4A_7C15, sent: item.sent)
    }

    @inline(__always)
    static func second(_ item: Item) -> Item {
        Item(index: item.index, value: item.value ^ (item.value >> 31), sent: item.sent)
    }

    static let expected: UInt64 = (0..<items).reduce(0) { sum, index in
        sum &+ second(first(Item(index: index, value: UInt64(index), sent: 0))).value
    }

    /// The sink's state: the sum and one latency slot per item (written by the sink only).
    final class Sink: @unchecked Sendable {
        // SAFETY: written by the single sink stage, read after the run completed.
        var sum: UInt64 = 0
        let latencies = UnsafeMutablePointer<UInt64>.allocate(capacity: PipelineSuite.items)

        @inline(__always)
        func take(_ item: Item) {
            sum &+= item.value
            latencies[item.index] = Clock.nanoseconds() &- item.sent
        }

        func reset() { sum = 0 }
    }

    /// Latency percentiles of each entry's last sample, for the notes.
    nonisolated(unsafe) static var percentiles: [String: String] = [:]

    static func routine(_ name: String, _ run: @escaping (Sink) throws -> Void) -> Routine {
        let sink = Sink()
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                sink.reset()
                total &+= try Clock.measure { try run(sink) }
                guard sink.sum == expected else {
                    throw BenchmarkCheckFailure("pipeline/\(name): sum \(sink.sum), expected \(expected)")
                }
            }
            var sorted = Array(UnsafeBufferPointer(start: sink.latencies, count: items))
            sorted.sort()
            func at(_ q: Double) -> String { Format.time(Double(sorted[min(items - 1, Int(q * Double(items)))])) }
            percentiles[name] = "latency p50 \(at(0.5)), p99 \(at(0.99)), p99.9 \(at(0.999))"
            return total
        }
    }

    static func annotate(_ results: inout [BenchmarkResult]) {
        for index in results.indices where results[index].id.group == "pipeline" {
            if let text = percentiles[results[index].id.name] {
                results[index].note = (results[index].note ?? "") + "; \(text)"
            }
        }
    }

    static func register(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(items)
        registry.register(Benchmark(BenchmarkID(group: "pipeline", name: "spindle"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "Pipeline: 2 map stages + sink as jobs, channels of \(capacity), send per item") { _ in
            let jobs = try SharedJobSystem.get()
            return routine("spindle") { sink in
                let pipeline = Pipeline<Item>("bench", channelCapacity: capacity)
                pipeline.source.map("first", first).map("second", second).sink("sum") { sink.take($0) }
                let run = try pipeline.start(on: jobs)
                for index in 0..<items { run.send(Item(index: index, value: UInt64(index), sent: Clock.nanoseconds())) }
                _ = try run.finish()
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "pipeline", name: "dispatch-queues"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "a serial DispatchQueue per stage, async per item, a DispatchSemaphore of \(capacity) per stage for backpressure") { _ in
            routine("dispatch-queues") { sink in
                let q1 = DispatchQueue(label: "first"), q2 = DispatchQueue(label: "second"), q3 = DispatchQueue(label: "sum")
                let room1 = DispatchSemaphore(value: capacity), room2 = DispatchSemaphore(value: capacity)
                let room3 = DispatchSemaphore(value: capacity)
                let done = DispatchSemaphore(value: 0)
                for index in 0..<items {
                    let item = Item(index: index, value: UInt64(index), sent: Clock.nanoseconds())
                    room1.wait()
                    q1.async {
                        let a = first(item)
                        room1.signal()
                        room2.wait()
                        q2.async {
                            let b = second(a)
                            room2.signal()
                            room3.wait()
                            q3.async {
                                sink.take(b)
                                room3.signal()
                                if b.index == items - 1 { done.signal() }
                            }
                        }
                    }
                }
                done.wait()
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "pipeline", name: "dispatch-batched"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "Dispatch's strongest idiom: the producer gathers \(batch) items, a serial DispatchQueue per stage maps a whole batch per async, a DispatchSemaphore of \(capacity / batch) batches per stage for backpressure (each item's latency includes waiting for its batch to fill)") { _ in
            routine("dispatch-batched") { sink in
                let q1 = DispatchQueue(label: "first"), q2 = DispatchQueue(label: "second"), q3 = DispatchQueue(label: "sum")
                let room1 = DispatchSemaphore(value: capacity / batch), room2 = DispatchSemaphore(value: capacity / batch)
                let room3 = DispatchSemaphore(value: capacity / batch)
                let done = DispatchSemaphore(value: 0)
                func ship(_ items: [Item]) {
                    room1.wait()
                    q1.async {
                        let a = items.map(first)
                        room1.signal()
                        room2.wait()
                        q2.async {
                            let b = a.map(second)
                            room2.signal()
                            room3.wait()
                            q3.async {
                                for item in b { sink.take(item) }
                                room3.signal()
                                if b.last?.index == PipelineSuite.items - 1 { done.signal() }
                            }
                        }
                    }
                }
                var pending: [Item] = []
                pending.reserveCapacity(batch)
                for index in 0..<items {
                    pending.append(Item(index: index, value: UInt64(index), sent: Clock.nanoseconds()))
                    if pending.count == batch {
                        ship(pending)
                        pending.removeAll(keepingCapacity: true)
                    }
                }
                if !pending.isEmpty { ship(pending) }
                done.wait()
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "pipeline", name: "asyncstream"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "a Task per stage reading an AsyncStream (bufferingPolicy .bufferingOldest(\(capacity)) refuses when full: the producer retries after Task.yield)") { _ in
            routine("asyncstream") { sink in
                runBlocking {
                    let (s1, c1) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(capacity))
                    let (s2, c2) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(capacity))
                    let (s3, c3) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .bufferingOldest(capacity))
                    @Sendable func push(_ item: Item, _ continuation: AsyncStream<Item>.Continuation) async {
                        while case .dropped = continuation.yield(item) { await Task.yield() }
                    }
                    let stage1 = Task { for await item in s1 { await push(first(item), c2) }; c2.finish() }
                    let stage2 = Task { for await item in s2 { await push(second(item), c3) }; c3.finish() }
                    let stage3 = Task { for await item in s3 { sink.take(item) } }
                    for index in 0..<items {
                        await push(Item(index: index, value: UInt64(index), sent: Clock.nanoseconds()), c1)
                    }
                    c1.finish()
                    await stage1.value
                    await stage2.value
                    await stage3.value
                }
            }
        })
    }
}
