// W1–W7 (docs/workloads.md) for the in-process peers, each in its natural idiom, plus a
// serial baseline where one makes sense. One iteration of a routine is one workload sample as
// docs/workloads.md defines it (W1: spawn 1M and wait; W3: 20 passes; W5: 50 runs; W7: 10 passes),
// and throughput is given per unit (jobs, tasks, bytes, nodes, hops), so ns/unit reads directly.
// Spindle's own entries join each group as its capabilities land.

import Dispatch
import Foundation
import Spindle
import SpindleBenchKit
import Synchronization

/// A shared atomic count with 128 bytes of padding on each side, so no other heap object shares
/// its cache line or the line prefetched with it: W1's and W6's job bodies add to it on every
/// job, and a closure context or counter that the submitter writes per job must not ride on that
/// line. (W1's bimodal figures, once blamed on such sharing, were the VM's CPUs placed far
/// apart; docs/benchmarking.md, "Hand-off probe".)
final class Counter: Sendable {
    private let paddingBefore = InlineArray<16, Int>(repeating: 0)
    let value = Atomic<Int>(0)
    private let paddingAfter = InlineArray<16, Int>(repeating: 0)
}

/// Runs async code to completion from a synchronous thread (the runner's, never a cooperative
/// pool thread), blocking that thread until it is done.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    let box = Box<T>()
    Task.detached {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}

final class Box<T>: @unchecked Sendable {
    // SAFETY: written by one task before a semaphore signal, read after the wait.
    var value: T?
}

/// A buffer shared by the workers of a parallel loop that write disjoint elements.
struct SharedBuffer<Element>: @unchecked Sendable {
    // SAFETY: every user writes only its own indices, and readers read after the loop joined.
    let pointer: UnsafeMutableBufferPointer<Element>

    init(pointer: UnsafeMutableBufferPointer<Element>) {
        self.pointer = pointer
    }

    init(repeating value: Element, count: Int) {
        pointer = .allocate(capacity: count)
        pointer.initialize(repeating: value)
    }

    init(_ values: [Element]) {
        pointer = .allocate(capacity: values.count)
        _ = pointer.initialize(from: values)
    }

    var readOnly: UnsafeBufferPointer<Element> { UnsafeBufferPointer(pointer) }
}

/// Per-node atomic counters of pending predecessors (W5 with Dispatch).
struct PendingCounts: @unchecked Sendable {
    // SAFETY: only touched through atomics.
    let pointer: UnsafeMutablePointer<Atomic<Int>>

    init(count: Int) {
        pointer = .allocate(capacity: count)
        for i in 0..<count { (pointer + i).initialize(to: Atomic(0)) }
    }
}

/// Splits 0..<count into `chunks` contiguous ranges.
@inline(__always)
func chunk(_ index: Int, of chunks: Int, count: Int) -> Range<Int> {
    let size = (count + chunks - 1) / chunks
    return Swift.min(index * size, count)..<Swift.min((index + 1) * size, count)
}

/// Runs `body(0..<chunks)` as one TaskGroup child per chunk, from a blocked outside thread.
func taskGroupChunks(_ chunks: Int, _ body: @escaping @Sendable (Int) -> Void) {
    runBlocking {
        await withTaskGroup(of: Void.self) { group in
            for c in 0..<chunks { group.addTask { body(c) } }
        }
    }
}

/// Runs `body(0..<chunks)` as one BlockOperation per chunk and waits for all of them.
func operationQueueChunks(_ queue: OperationQueue, _ chunks: Int, _ body: @escaping @Sendable (Int) -> Void) {
    for c in 0..<chunks { queue.addOperation { body(c) } }
    queue.waitUntilAllOperationsAreFinished()
}

enum WorkloadSuite {
    static func register(_ registry: inout BenchmarkRegistry) {
        registerW1(&registry)
        registerW2(&registry)
        registerW3(&registry)
        registerW4(&registry)
        registerW5(&registry)
        registerW6(&registry)
        registerW7(&registry)
    }

    // MARK: W1 spawn throughput

    static func w1Routine(_ spawnAndWait: @escaping (Counter) -> Void) -> Routine {
        let counter = Counter()
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                counter.value.store(0, ordering: .relaxed)
                total &+= Clock.measure { spawnAndWait(counter) }
                let count = counter.value.load(ordering: .relaxed)
                guard count == Workloads.w1Jobs else {
                    throw BenchmarkCheckFailure("W1: counter = \(count), expected \(Workloads.w1Jobs)")
                }
            }
            return total
        }
    }

    static func registerW1(_ registry: inout BenchmarkRegistry) {
        let jobs = Workloads.w1Jobs
        let throughput = Throughput.elements(jobs)
        registry.register(Benchmark(BenchmarkID(group: "W1-spawn", name: "dispatch-async-group"), throughput: throughput, mode: .flat,
                                    note: "DispatchQueue.global().async(group:) ×1M from the main thread, group.wait()") { _ in
            let queue = DispatchQueue.global()
            return w1Routine { counter in
                let group = DispatchGroup()
                for _ in 0..<jobs { queue.async(group: group) { counter.value.add(1, ordering: .relaxed) } }
                group.wait()
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W1-spawn", name: "dispatch-concurrentPerform"), throughput: throughput, mode: .flat,
                                    note: "one concurrentPerform(iterations: 1M): a parallel loop, not 1M spawned jobs") { _ in
            w1Routine { counter in
                DispatchQueue.concurrentPerform(iterations: jobs) { _ in counter.value.add(1, ordering: .relaxed) }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W1-spawn", name: "taskgroup"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "withTaskGroup + addTask ×1M, awaited from a detached task") { _ in
            w1Routine { counter in
                runBlocking {
                    await withTaskGroup(of: Void.self) { group in
                        for _ in 0..<jobs { group.addTask { counter.value.add(1, ordering: .relaxed) } }
                    }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W1-spawn", name: "operationqueue"), throughput: throughput, mode: .flat,
                                    maxSamples: 10,
                                    note: "BlockOperation ×1M added to one OperationQueue, waitUntilAllOperationsAreFinished") { _ in
            let queue = OperationQueue()
            return w1Routine { counter in
                for _ in 0..<jobs { queue.addOperation { counter.value.add(1, ordering: .relaxed) } }
                queue.waitUntilAllOperationsAreFinished()
            }
        })
    }

    // MARK: W2 fork-join fib

    static func fibAsync(_ n: Int) async -> Int {
        if n < 2 { return n }
        async let child = fibAsync(n - 1)
        let inline = await fibAsync(n - 2)
        return await child + inline
    }

    static func registerW2(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(Workloads.w2Spawns)
        func checked(_ value: Int) throws {
            guard value == Workloads.w2Expected else {
                throw BenchmarkCheckFailure("W2: fib(27) = \(value), expected \(Workloads.w2Expected)")
            }
        }
        registry.register(Benchmark(BenchmarkID(group: "W2-fib", name: "serial"), throughput: throughput,
                                    note: "plain recursion, no spawns (the work without scheduling)") { _ in
            { iterations in
                var result = 0
                let time = Clock.measure { for _ in 0..<iterations { result = Workloads.fibSerial(Workloads.w2N) } }
                try checked(result)
                return time
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W2-fib", name: "async-let"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "async let for fib(n−1), fib(n−2) inline, then await") { _ in
            { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    var result = 0
                    total &+= Clock.measure { result = runBlocking { await fibAsync(Workloads.w2N) } }
                    try checked(result)
                }
                return total
            }
        })
        // Dispatch and OperationQueue have no fork-join that does not block a worker thread per
        // join: "—" (docs/workloads.md).
    }

    // MARK: W3 axpy

    static func axpyRoutine(_ pass: @escaping (SharedBuffer<Float>, SharedBuffer<Float>) -> Void) -> Routine {
        let x = SharedBuffer<Float>(repeating: 1, count: Workloads.w3Count)
        let y = SharedBuffer<Float>(repeating: 2, count: Workloads.w3Count)
        var expected: Float = 2
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                total &+= Clock.measure {
                    for _ in 0..<Workloads.w3PassesPerSample { pass(x, y) }
                }
                expected += Workloads.w3RisePerSample
                try Workloads.checkAxpy(y.readOnly, expected: expected)
            }
            return total
        }
    }

    static func registerW3(_ registry: inout BenchmarkRegistry) {
        let count = Workloads.w3Count
        let throughput = Throughput.bytes(Workloads.w3BytesPerSample)
        let chunks = 256
        registry.register(Benchmark(BenchmarkID(group: "W3-axpy", name: "serial"), throughput: throughput, mode: .flat,
                                    note: "one loop") { _ in
            axpyRoutine { x, y in Workloads.axpy(x.readOnly, y.pointer, 0..<count) }
        })
        registry.register(Benchmark(BenchmarkID(group: "W3-axpy", name: "dispatch-concurrentPerform"), throughput: throughput, mode: .flat,
                                    note: "concurrentPerform over \(chunks) chunks of 64 Ki elements") { _ in
            axpyRoutine { x, y in
                DispatchQueue.concurrentPerform(iterations: chunks) { c in
                    Workloads.axpy(x.readOnly, y.pointer, chunk(c, of: chunks, count: count))
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W3-axpy", name: "taskgroup"), throughput: throughput, mode: .flat,
                                    note: "withTaskGroup, one task per chunk of 64 Ki elements") { _ in
            axpyRoutine { x, y in
                taskGroupChunks(chunks) { c in Workloads.axpy(x.readOnly, y.pointer, chunk(c, of: chunks, count: count)) }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W3-axpy", name: "operationqueue"), throughput: throughput, mode: .flat,
                                    note: "one BlockOperation per chunk of 64 Ki elements, waitUntilAllOperationsAreFinished") { _ in
            let queue = OperationQueue()
            return axpyRoutine { x, y in
                operationQueueChunks(queue, chunks) { c in
                    Workloads.axpy(x.readOnly, y.pointer, chunk(c, of: chunks, count: count))
                }
            }
        })
    }

    // MARK: W4 compute-bound

    static func w4Routine(_ pass: @escaping (SharedBuffer<Float>, SharedBuffer<Float>) -> Void) -> Routine {
        let x = SharedBuffer(Workloads.w4Input())
        let out = SharedBuffer<Float>(repeating: 0, count: Workloads.w4Count)
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                out.pointer.update(repeating: 0)
                total &+= Clock.measure { pass(x, out) }
                try Workloads.checkW4(out.readOnly)
            }
            return total
        }
    }

    static func registerW4(_ registry: inout BenchmarkRegistry) {
        let count = Workloads.w4Count
        let throughput = Throughput.elements(count)
        let chunks = 64
        registry.register(Benchmark(BenchmarkID(group: "W4-compute", name: "serial"), throughput: throughput, mode: .flat,
                                    note: "one loop") { _ in
            w4Routine { x, out in for i in 0..<count { out.pointer[i] = Workloads.w4Element(x.pointer[i]) } }
        })
        registry.register(Benchmark(BenchmarkID(group: "W4-compute", name: "dispatch-concurrentPerform"), throughput: throughput, mode: .flat,
                                    note: "concurrentPerform(iterations: 1Mi), one element per iteration") { _ in
            w4Routine { x, out in
                DispatchQueue.concurrentPerform(iterations: count) { i in out.pointer[i] = Workloads.w4Element(x.pointer[i]) }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W4-compute", name: "dispatch-concurrentPerform-chunks"), throughput: throughput,
                                    mode: .flat,
                                    note: "concurrentPerform over \(chunks) chunks of 16 Ki elements (Dispatch's strongest idiom for a flat loop)") { _ in
            w4Routine { x, out in
                DispatchQueue.concurrentPerform(iterations: chunks) { c in
                    for i in chunk(c, of: chunks, count: count) { out.pointer[i] = Workloads.w4Element(x.pointer[i]) }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W4-compute", name: "taskgroup"), throughput: throughput, mode: .flat,
                                    note: "withTaskGroup, one task per chunk of 16 Ki elements") { _ in
            w4Routine { x, out in
                taskGroupChunks(chunks) { c in
                    for i in chunk(c, of: chunks, count: count) { out.pointer[i] = Workloads.w4Element(x.pointer[i]) }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W4-compute", name: "operationqueue"), throughput: throughput, mode: .flat,
                                    note: "one BlockOperation per chunk of 16 Ki elements") { _ in
            let queue = OperationQueue()
            return w4Routine { x, out in
                operationQueueChunks(queue, chunks) { c in
                    for i in chunk(c, of: chunks, count: count) { out.pointer[i] = Workloads.w4Element(x.pointer[i]) }
                }
            }
        })
    }

    // MARK: W5 DAG

    /// The W5 figure of docs/workloads.md: per-node overhead = (µs/run − ideal/cores) / 2048, with the
    /// ideal work taken from the serial entry measured in the same run.
    static func annotateW5(_ results: inout [BenchmarkResult], cores: Int) {
        guard let serial = results.first(where: { $0.id == BenchmarkID(group: "W5-dag", name: "serial") }) else { return }
        let runs = Double(Workloads.w5RunsPerSample)
        let ideal = serial.analysis.median.point / runs
        for index in results.indices where results[index].id.group == "W5-dag" && results[index].id.name != "serial" {
            let perRun = results[index].analysis.median.point / runs
            // A thread-sweep entry uses as many cores as it has workers (up to the allowed ones).
            let used = min(results[index].analysis.samples.threads ?? cores, cores)
            let overhead = (perRun - ideal / Double(used)) / Double(Workloads.w5Nodes)
            results[index].note = (results[index].note ?? "") + "; per-node overhead \(Format.time(overhead)) (\(used) cores)"
        }
    }

    struct Graph: @unchecked Sendable {
        // SAFETY: read-only after construction.
        let deps: [[Int]]
        let successors: [[Int]]
        let k: Int

        init() throws {
            deps = Workloads.w5Dependencies()
            let fingerprint = Workloads.w5GraphFingerprint(deps)
            guard fingerprint == Workloads.w5Fingerprint else {
                throw BenchmarkCheckFailure("W5: graph fingerprint \(fingerprint), expected \(Workloads.w5Fingerprint)")
            }
            var successors = [[Int]](repeating: [], count: Workloads.w5Nodes)
            for (node, list) in deps.enumerated() { for d in list { successors[d].append(node) } }
            self.successors = successors
            k = Workloads.w5K
        }
    }

    /// Runs the graph 50 times per iteration, checking each run's XOR against the serial
    /// reference. `prepare` runs untimed before each run (peers whose graphs run only once
    /// rebuild them there); `run` is timed.
    static func w5Routine<Prepared>(
        prepare: @escaping (Graph, SharedBuffer<UInt64>) -> Prepared, run: @escaping (Prepared) throws -> Void
    ) throws -> Routine {
        let runs = try W5Runs()
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations { total &+= try runs.sample(prepare: prepare, run: run) }
            return total
        }
    }

    /// W5's inputs, value buffer and expected XOR, and one sample: 50 runs, each timed alone
    /// (the buffer is reset untimed before it and the XOR checked untimed after it).
    struct W5Runs: @unchecked Sendable {
        // SAFETY: `values` is written only by the graph run in progress and by `sample` between
        // runs; the rest is read-only after construction.
        let graph: Graph
        let values: SharedBuffer<UInt64>
        let expected: UInt64

        init() throws {
            graph = try Graph()
            values = SharedBuffer<UInt64>(repeating: 0, count: Workloads.w5Nodes)
            expected = Workloads.w5Serial(deps: graph.deps, values: values.pointer, k: graph.k)
        }

        /// Total nanoseconds of the 50 timed runs.
        /// A run that throws (a graph node failed) fails the check with that error.
        func sample<Prepared>(prepare: (Graph, SharedBuffer<UInt64>) -> Prepared, run: (Prepared) throws -> Void) throws(BenchmarkCheckFailure) -> UInt64 {
            var total: UInt64 = 0
            for _ in 0..<Workloads.w5RunsPerSample {
                values.pointer.update(repeating: 0)
                let prepared = prepare(graph, values)
                do {
                    total &+= try Clock.measure { try run(prepared) }
                } catch {
                    throw BenchmarkCheckFailure("W5: the run failed: \(error)")
                }
                let xor = values.pointer.reduce(0, ^)
                guard xor == expected else {
                    throw BenchmarkCheckFailure("W5: XOR of values = \(xor), expected \(expected) (K = \(graph.k))")
                }
            }
            return total
        }
    }

    static func w5Routine(_ run: @escaping (Graph, SharedBuffer<UInt64>) -> Void) throws -> Routine {
        try w5Routine(prepare: { ($0, $1) }, run: run)
    }

    static func registerW5(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(Workloads.w5Nodes * Workloads.w5RunsPerSample)
        let k = "K = \(Workloads.w5K) (≈1 µs per node body)"
        registry.register(Benchmark(BenchmarkID(group: "W5-dag", name: "serial"), throughput: throughput, mode: .flat,
                                    note: "node bodies in id order (the ideal work); \(k)") { _ in
            try w5Routine { graph, values in
                for id in 0..<Workloads.w5Nodes { Workloads.w5Node(id, deps: graph.deps[id], values: values.pointer, k: graph.k) }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W5-dag", name: "dispatch"), throughput: throughput, mode: .flat,
                                    note: "DispatchQueue.async(group:) per ready node; atomic pending counts release successors; \(k)") { _ in
            let counts = PendingCounts(count: Workloads.w5Nodes)
            let queue = DispatchQueue.global()
            return try w5Routine { graph, values in
                for i in 0..<Workloads.w5Nodes { counts.pointer[i].store(graph.deps[i].count, ordering: .relaxed) }
                let group = DispatchGroup()
                @Sendable func run(_ id: Int) {
                    Workloads.w5Node(id, deps: graph.deps[id], values: values.pointer, k: graph.k)
                    for s in graph.successors[id]
                    where counts.pointer[s].subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                        queue.async(group: group) { run(s) }
                    }
                }
                for id in 0..<Workloads.w5Width { queue.async(group: group) { run(id) } }
                group.wait()
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W5-dag", name: "operationqueue"), throughput: throughput, mode: .flat,
                                    maxSamples: 10,
                                    note: "BlockOperation per node + addDependency (operations run once: 50 graphs built untimed per sample); \(k)") { _ in
            let queue = OperationQueue()
            return try w5Routine(prepare: { graph, values in
                var operations: [BlockOperation] = []
                operations.reserveCapacity(Workloads.w5Nodes)
                for id in 0..<Workloads.w5Nodes {
                    let operation = BlockOperation {
                        Workloads.w5Node(id, deps: graph.deps[id], values: values.pointer, k: graph.k)
                    }
                    for d in graph.deps[id] { operation.addDependency(operations[d]) }
                    operations.append(operation)
                }
                return operations
            }, run: { operations in
                queue.addOperations(operations, waitUntilFinished: true)
            })
        })
        registry.register(Benchmark(BenchmarkID(group: "W5-dag", name: "tasks"), throughput: throughput, mode: .flat,
                                    note: "one Task per node awaiting its dependencies' tasks (Tasks run once: created in the timed run); \(k)") { _ in
            try w5Routine { graph, values in
                runBlocking {
                    var tasks: [Task<Void, Never>] = []
                    tasks.reserveCapacity(Workloads.w5Nodes)
                    for id in 0..<Workloads.w5Nodes {
                        let predecessors = graph.deps[id].map { tasks[$0] }
                        tasks.append(Task {
                            for predecessor in predecessors { await predecessor.value }
                            Workloads.w5Node(id, deps: graph.deps[id], values: values.pointer, k: graph.k)
                        })
                    }
                    for task in tasks { await task.value }
                }
            }
        })
    }

    // MARK: W6 dependent chain

    static func registerW6(_ registry: inout BenchmarkRegistry) {
        let hops = Workloads.w6Hops
        let throughput = Throughput.elements(hops)
        func chainRoutine(_ start: @escaping (DispatchSemaphore, Counter) -> Void) -> Routine {
            let counter = Counter()
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    counter.value.store(0, ordering: .relaxed)
                    let done = DispatchSemaphore(value: 0)
                    total &+= Clock.measure {
                        start(done, counter)
                        done.wait()
                    }
                    let count = counter.value.load(ordering: .relaxed)
                    guard count == hops else { throw BenchmarkCheckFailure("W6: \(count) hops ran, expected \(hops)") }
                }
                return total
            }
        }
        registry.register(Benchmark(BenchmarkID(group: "W6-chain", name: "dispatch-async"), throughput: throughput, mode: .flat,
                                    note: "each job does DispatchQueue.global().async for the next; the last signals a semaphore") { _ in
            let queue = DispatchQueue.global()
            return chainRoutine { done, counter in
                @Sendable func hop(_ i: Int) {
                    counter.value.add(1, ordering: .relaxed)
                    if i == hops - 1 { done.signal() } else { queue.async { hop(i + 1) } }
                }
                queue.async { hop(0) }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W6-chain", name: "task"), throughput: throughput, mode: .flat,
                                    note: "each Task creates an unstructured Task for the next; the last signals a semaphore") { _ in
            chainRoutine { done, counter in
                @Sendable func hop(_ i: Int) {
                    counter.value.add(1, ordering: .relaxed)
                    if i == hops - 1 { done.signal() } else { Task { hop(i + 1) } }
                }
                Task { hop(0) }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W6-chain", name: "operationqueue"), throughput: throughput, mode: .flat,
                                    maxSamples: 20,
                                    note: "each BlockOperation adds the next to the queue; the last signals a semaphore") { _ in
            let queue = OperationQueue()
            return chainRoutine { done, counter in
                @Sendable func hop(_ i: Int) {
                    counter.value.add(1, ordering: .relaxed)
                    if i == hops - 1 { done.signal() } else { queue.addOperation { hop(i + 1) } }
                }
                queue.addOperation { hop(0) }
            }
        })
    }

    // MARK: W7 nested parallel-for

    static func w7Routine(_ pass: @escaping (SharedBuffer<Float>, SharedBuffer<Float>) -> Void) -> Routine {
        let a = SharedBuffer(Workloads.w7Input())
        let out = SharedBuffer<Float>(repeating: 0, count: Workloads.w7Outer * Workloads.w7Inner)
        return { iterations in
            var total: UInt64 = 0
            for _ in 0..<iterations {
                out.pointer.update(repeating: 0)
                total &+= Clock.measure { for _ in 0..<Workloads.w7PassesPerSample { pass(a, out) } }
                try Workloads.checkW7(out.readOnly)
            }
            return total
        }
    }

    static func registerW7(_ registry: inout BenchmarkRegistry) {
        let outer = Workloads.w7Outer, inner = Workloads.w7Inner
        let throughput = Throughput.elements(outer * inner * Workloads.w7PassesPerSample)
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "serial"), throughput: throughput, mode: .flat,
                                    note: "double loop") { _ in
            w7Routine { a, out in
                for o in 0..<outer { for i in 0..<inner { out.pointer[o * inner + i] = Workloads.w7Element(a.pointer[o * inner + i]) } }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "dispatch-concurrentPerform"), throughput: throughput, mode: .flat,
                                    note: "concurrentPerform(256) containing concurrentPerform(4096), one element per inner iteration") { _ in
            w7Routine { a, out in
                DispatchQueue.concurrentPerform(iterations: outer) { o in
                    DispatchQueue.concurrentPerform(iterations: inner) { i in
                        out.pointer[o * inner + i] = Workloads.w7Element(a.pointer[o * inner + i])
                    }
                }
            }
        })
        let innerChunks = 8
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "dispatch-concurrentPerform-chunks"), throughput: throughput,
                                    mode: .flat,
                                    note: "concurrentPerform(256) containing concurrentPerform over \(innerChunks) chunks of \(inner / innerChunks) elements (Dispatch's strongest idiom)") { _ in
            w7Routine { a, out in
                DispatchQueue.concurrentPerform(iterations: outer) { o in
                    DispatchQueue.concurrentPerform(iterations: innerChunks) { c in
                        for i in chunk(c, of: innerChunks, count: inner) {
                            out.pointer[o * inner + i] = Workloads.w7Element(a.pointer[o * inner + i])
                        }
                    }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "taskgroup-chunks"), throughput: throughput, mode: .flat,
                                    note: "withTaskGroup of 256 tasks, each a withTaskGroup of \(innerChunks) tasks of \(inner / innerChunks) elements") { _ in
            w7Routine { input, out in
                runBlocking {
                    await withTaskGroup(of: Void.self) { outerGroup in
                        for o in 0..<outer {
                            outerGroup.addTask {
                                await withTaskGroup(of: Void.self) { innerGroup in
                                    for c in 0..<innerChunks {
                                        innerGroup.addTask {
                                            for i in chunk(c, of: innerChunks, count: inner) {
                                                out.pointer[o * inner + i] = Workloads.w7Element(input.pointer[o * inner + i])
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W7-nested", name: "taskgroup"), throughput: throughput, mode: .flat,
                                    maxSamples: 5,
                                    note: "withTaskGroup of 256 tasks, each a withTaskGroup of 4096 tasks (one element each)") { _ in
            w7Routine { input, out in
                runBlocking {
                    await withTaskGroup(of: Void.self) { outerGroup in
                        for o in 0..<outer {
                            outerGroup.addTask {
                                await withTaskGroup(of: Void.self) { innerGroup in
                                    for i in 0..<inner {
                                        innerGroup.addTask {
                                            out.pointer[o * inner + i] = Workloads.w7Element(input.pointer[o * inner + i])
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
        // OperationQueue has no nested parallel loop that does not block an operation on its
        // children: "—" (docs/workloads.md).
    }
}
