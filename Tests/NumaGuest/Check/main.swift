// spindle-numa-check: asks the kernel where Spindle's memory and work actually landed, on
// whatever machine it runs: this one (one node), or the two-node guest of Tests/NumaGuest/run.sh.
// Prints one line per check and exits non-zero if any failed. docs/numa.md, "Verification".

#if canImport(Glibc)
import Glibc
#endif
@_spi(Internals) import Spindle
import Synchronization

nonisolated(unsafe) var failures = 0  // main thread only
func check(_ condition: Bool, _ what: String) {
    print("\(condition ? "PASS" : "FAIL")  \(what)")
    if !condition { failures += 1 }
}

/// Shared results written by jobs, read after they finished.
final class Slots: @unchecked Sendable {
    // SAFETY: each job writes only its own slot; read after the loop returned.
    var values: [Int]
    init(_ count: Int) { values = Array(repeating: -1, count: count) }
}

let topology = NumaTopology.system()
print("topology: \(topology)")
print("distances: \(topology.distances)")
check(topology.source == .libnuma, "topology comes from libnuma")
let nodeIDs = topology.nodes.map(\.id)

let jobs = try JobSystem()
let workerNodes = (0..<jobs.workerCount).map { jobs.node(ofWorker: $0) }
print("workers: \(jobs.workerCount), their nodes: \(workerNodes.map { nodeIDs[$0] })")
for worker in 0..<jobs.workerCount {
    let cpu = jobs.topology.nodes[workerNodes[worker]].cpus
    check(!cpu.isEmpty, "worker \(worker) has a node with CPUs \(cpu)")
}

// 1. Fiber stacks: a job's local variable lives on its fiber's stack; the kernel says which
//    node holds that page. Run many jobs so every worker takes part.
let stackNodes = Slots(4 * jobs.workerCount * 16)
let stackWorkers = Slots(stackNodes.values.count)
jobs.parallelFor(0..<stackNodes.values.count, partitioner: .fixed(grain: 1)) { index in
    var local = index
    withUnsafeMutablePointer(to: &local) { pointer in
        let node = (try? NumaMemory.nodes(ofPagesAt: [UnsafeRawPointer(pointer)]))?.first ?? nil
        stackNodes.values[index] = node ?? -1
        stackWorkers.values[index] = CurrentThread.cpu.flatMap { jobs.topology.nodeIndex(ofCPU: $0) } ?? -1
    }
}
var stackMismatches = 0
var stackNodesSeen = Set<Int>()
for index in stackNodes.values.indices {
    let expected = stackWorkers.values[index] >= 0 ? nodeIDs[stackWorkers.values[index]] : -2
    if stackNodes.values[index] != expected { stackMismatches += 1 }
    stackNodesSeen.insert(stackNodes.values[index])
}
check(stackMismatches == 0, "job stacks are on their worker's node (\(stackNodes.values.count) jobs, nodes seen \(stackNodesSeen.sorted()), mismatches \(stackMismatches))")

// 2. Job-record chunks: each node's pool holds chunks on that node. Jobs spawned from a loop
//    over a blocked buffer come from workers of every node (their arenas use their node's pool).
do {
    let spawner = try NumaBuffer<Int32>(repeating: 0, count: 1 << 20, placement: .blocked, on: jobs)
    spawner.withParallelMutableSlices(on: jobs, partitioner: .fixed(grain: 1 << 16)) { slice, _ in
        let children = JobCounter()
        for _ in 0..<64 { jobs.run(counter: children) { _ in } }
        jobs.wait(for: children)
        slice[0] = 1
    }
}
for (node, addresses) in jobs.recordChunkAddresses.enumerated() {
    let found = (try? NumaMemory.nodes(ofPagesAt: addresses)) ?? []
    let wrong = found.filter { $0 != nodeIDs[node] }.count
    check(wrong == 0, "record chunks of node \(nodeIDs[node]): \(addresses.count) chunks, \(wrong) elsewhere")
}

// 3. Frame memory: a job's frame scratch lies on its worker's node.
do {
    let frameNodes = Slots(8 * jobs.workerCount)
    let frameWorkers = Slots(frameNodes.values.count)
    jobs.frame {
        jobs.wait(for: jobs.run(count: frameNodes.values.count) { index, ctx in
            let scratch = ctx.frameAllocate(Int64.self, count: 8192)
            scratch.initialize(repeating: Int64(index))
            frameNodes.values[index] = ((try? NumaMemory.nodes(ofPagesAt: [UnsafeRawPointer(scratch.baseAddress!)]))?.first ?? nil) ?? -1
            frameWorkers.values[index] = nodeIDs[jobs.node(ofWorker: ctx.workerIndex)]
        })
    }
    let wrong = frameNodes.values.indices.filter { frameNodes.values[$0] != frameWorkers.values[$0] }.count
    check(wrong == 0, "frame memory on its worker's node (\(frameNodes.values.count) jobs, nodes seen \(Set(frameNodes.values).sorted()), \(wrong) elsewhere)")
}

// 4. Buffers: where every page of each placement went.
func pageNodes(_ buffer: NumaBuffer<Float>) -> [Int?] {
    buffer.withUnsafeMutableBufferPointer { elements in
        let pages = stride(from: 0, to: elements.count, by: 1024).map { UnsafeRawPointer(elements.baseAddress! + $0) }
        return (try? NumaMemory.nodes(ofPagesAt: pages)) ?? []
    }
}
let count = 1 << 22  // 16 MiB of Float
for node in 0..<nodeIDs.count {
    let buffer = try NumaBuffer<Float>(repeating: 1, count: count, placement: .node(node), on: jobs)
    let found = pageNodes(buffer)
    check(found.allSatisfy { $0 == nodeIDs[node] }, ".node(\(node)): all \(found.count) pages on node \(nodeIDs[node]) (saw \(Set(found.map { $0 ?? -1 }).sorted()))")
}
do {
    let buffer = try NumaBuffer<Float>(repeating: 1, count: count, placement: .interleaved, on: jobs)
    let found = pageNodes(buffer)
    let perNode = nodeIDs.map { id in found.filter { $0 == id }.count }
    let balanced = perNode.allSatisfy { abs($0 - found.count / nodeIDs.count) <= found.count / (4 * nodeIDs.count) + 1 }
    check(balanced && found.allSatisfy { $0 != nil }, ".interleaved: pages per node \(perNode)")
}
do {
    let buffer = try NumaBuffer<Float>(repeating: 1, count: count, placement: .blocked, on: jobs)
    let found = pageNodes(buffer)
    var wrong = 0
    for block in buffer.blocks {
        let pages = (block.range.lowerBound / 1024)..<((block.range.upperBound + 1023) / 1024)
        for page in pages where found[page] != nodeIDs[block.node] { wrong += 1 }
    }
    check(wrong == 0, ".blocked: \(buffer.blocks.count) blocks \(buffer.blocks.map { "node \(nodeIDs[$0.node]): \($0.range)" }), \(wrong) pages elsewhere")

    // 5. Loops over the blocked buffer start each block on a worker of its node.
    let starts = Slots(buffer.blocks.count)
    for _ in 0..<10 {
        buffer.withParallelMutableSlices(on: jobs) { slice, range in
            for index in slice.indices { slice[index] += 1 }
            if let block = buffer.blocks.firstIndex(where: { $0.range.lowerBound == range.lowerBound }) {
                let node = CurrentThread.cpu.flatMap { jobs.topology.nodeIndex(ofCPU: $0) } ?? -1
                if starts.values[block] == -1 || starts.values[block] == node { starts.values[block] = node } else { starts.values[block] = -3 }
            }
        }
    }
    let served = Set(workerNodes)
    for (index, block) in buffer.blocks.enumerated() where served.contains(block.node) {
        check(starts.values[index] == block.node, "block \(index) (node \(nodeIDs[block.node])) started on node \(starts.values[index] >= 0 ? nodeIDs[starts.values[index]] : starts.values[index]) in 10 loops")
    }
    check(buffer.withUnsafeMutableBufferPointer { $0.allSatisfy { $0 == 11 } }, "every element of the blocked buffer was updated 10 times")
}
check(jobs.metrics().numaBindFailures == 0, "the kernel accepted every placement (numaBindFailures \(jobs.metrics().numaBindFailures), latest errno \(jobs.metrics().numaLastBindErrno.map(String.init) ?? "none"))")
jobs.shutdown()
print(failures == 0 ? "numa-check: all passed" : "numa-check: \(failures) failed")
exit(failures == 0 ? 0 : 1)
