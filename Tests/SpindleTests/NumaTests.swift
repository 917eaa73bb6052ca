import Foundation
@testable @_spi(Internals) import Spindle
import Synchronization
import Testing

/// Placement requests recorded instead of sent to the kernel (a fake topology names nodes this
/// machine does not have).
final class PlacementRecorder: @unchecked Sendable {
    // SAFETY: `binds` only under `lock`.
    private let lock = NSLock()
    private var binds: [(start: UInt, end: UInt, policy: PlacementPolicy)] = []

    var placement: MemoryPlacement {
        MemoryPlacement { address, length, policy in
            self.lock.lock()
            self.binds.append((UInt(bitPattern: address), UInt(bitPattern: address) + UInt(length), policy))
            self.lock.unlock()
            return true
        }
    }

    /// The most recent policy recorded for a range holding `address`.
    func policy(at address: UnsafeRawPointer) -> PlacementPolicy? {
        let value = UInt(bitPattern: address)
        lock.lock()
        defer { lock.unlock() }
        return binds.last { $0.start <= value && value < $0.end }?.policy
    }
}

/// Two fake nodes over this process's CPUs (first half, second half), or nil with one CPU.
func fakeTwoNodes() -> NumaTopology? {
    let allowed = Array((try? CPUSet.allowed()) ?? [])
    guard allowed.count >= 2 else { return nil }
    let half = allowed.count / 2
    return try? NumaTopology(nodes: [.init(id: 0, cpus: CPUSet(allowed[..<half])), .init(id: 1, cpus: CPUSet(allowed[half...]))],
                             distances: [[10, 21], [21, 10]])
}

/// The usable stack of the fiber running the calling job: its lowest address and its top page
/// (in use: the fiber runs on it). Locals are not used as probes: AddressSanitizer moves them to
/// a heap "fake stack".
func currentFiberStack() -> (bottom: UnsafeRawPointer, topPage: UnsafeRawPointer) {
    let control = Scheduler.anyCurrentWorker()!.local.pointee.running!.pointee.fiber.control.pointee
    let bottom = UnsafeRawPointer(control.stack_bottom!)
    return (bottom, bottom + Int(control.stack_size) - NumaMemory.pageSize)
}

/// The fiber pool (NUMA node index) of the calling job's stack.
func currentFiberPool() -> Int {
    Scheduler.anyCurrentWorker()!.local.pointee.running!.pointee.pool
}

/// The worker running the calling code, if any.
func currentWorkerIndex() -> Int? {
    Scheduler.anyCurrentWorker()?.pointee.index
}

@Suite(.serialized)
struct NumaTests {
    @Test
    func systemTopologyComesFromLibnumaAndCoversTheAllowedCPUs() throws {
        let topology = NumaTopology.system()
        // CI installs libnuma1 (.ci/run), so the real library is exercised.
        #expect(topology.source == .libnuma, "\(topology)")
        let allowed = try CPUSet.allowed()
        var seen: [Int] = []
        for node in topology.nodes { seen += Array(node.cpus) }
        #expect(seen.sorted() == Array(allowed).sorted())
        #expect(topology.distances.count == topology.nodes.count)
        for (index, row) in topology.distances.enumerated() { #expect(row[index] == 10) }
    }

    @Test
    func aMissingLibraryFallsBackToOneNodeAndSaysSo() throws {
        let topology = NumaTopology.load(library: "libnuma-absent.so.9", allowed: [0, 1])
        guard case .fallback(let reason) = topology.source else {
            Issue.record("expected a fallback, got \(topology.source)")
            return
        }
        #expect(reason.contains("libnuma-absent.so.9"))
        #expect(topology.nodes == [.init(id: 0, cpus: [0, 1])])
        let allowed = try CPUSet.allowed()
        let fallback = NumaTopology.load(library: "libnuma-absent.so.9", allowed: allowed)
        let jobs = try JobSystem(configuration: .init(workers: 2, threadNamePrefix: "sp-numa-w", topology: fallback))
        #expect(jobs.metrics().numaFallback?.contains("libnuma-absent.so.9") == true)
        let real = try makeSystem(workers: 1, "sp-numa-w")
        #expect(real.metrics().numaFallback == nil)
    }

    @Test
    func handBuiltTopologiesAreValidated() throws {
        #expect(throws: NumaTopology.Error.noNodes) { try NumaTopology(nodes: []) }
        #expect(throws: NumaTopology.Error.overlappingCPUs(cpu: 1, nodes: [0, 1])) {
            try NumaTopology(nodes: [.init(id: 0, cpus: [0, 1]), .init(id: 1, cpus: [1, 2])])
        }
        #expect(throws: NumaTopology.Error.duplicateNodeID(3)) {
            try NumaTopology(nodes: [.init(id: 3, cpus: [0]), .init(id: 3, cpus: [1])])
        }
        #expect(throws: NumaTopology.Error.emptyNode(2)) { try NumaTopology(nodes: [.init(id: 2, cpus: [])]) }
        #expect(throws: NumaTopology.Error.distanceMatrixShape(nodes: 2, rows: [2])) {
            try NumaTopology(nodes: [.init(id: 0, cpus: [0]), .init(id: 1, cpus: [1])], distances: [[10, 20]])
        }
        let allowed = try CPUSet.allowed()
        let lacking = try NumaTopology(nodes: [.init(id: 0, cpus: [CPUSet.maximumCPU])])
        do {
            _ = try JobSystem(configuration: .init(workers: 1, topology: lacking))
            Issue.record("a topology without the workers' CPUs was accepted")
        } catch let error as JobSystem.ConfigurationError {
            #expect(error == .cpuNotInTopology(cpu: allowed.first { _ in true }!, topology: lacking))
            #expect(error.description.contains("no node with CPU"))
        }
    }

    @Test
    func victimsOnTheSameNodeComeFirstThenByDistance() {
        // Workers 0…5 on nodes 0, 1, 2, 0, 1, 2; node 2 is nearer to node 0 than node 1 is.
        let nodes = [0, 1, 2, 0, 1, 2]
        let distances = [[10, 30, 20], [30, 10, 20], [20, 20, 10]]
        #expect(NumaPolicy.victimGroups(of: 0, workerNodes: nodes, distances: distances) == [[3], [2, 5], [1, 4]])
        #expect(NumaPolicy.victimGroups(of: 4, workerNodes: nodes, distances: distances) == [[1], [2, 5], [0, 3]])
        // Ties by node index; a node without other workers contributes no group.
        #expect(NumaPolicy.victimGroups(of: 0, workerNodes: [0, 1, 2], distances: [[10, 20, 20], [20, 10, 20], [20, 20, 10]]) == [[1], [2]])
    }

    @Test
    func aRefusedBindIsReportedWithItsErrno() throws {
        // A node that cannot exist: the kernel refuses the bind, the memory stays usable, and
        // the metrics say why.
        let length = 4096
        let memory = try #require(mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        defer { munmap(memory, length) }
        #expect(!MemoryPlacement.kernel.bind(memory, length, .preferred(node: 4000)))
        memory.storeBytes(of: 7, as: Int.self)
        #expect(memory.load(as: Int.self) == 7)
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: 1))
        defer { jobs.shutdown() }
        let reported = jobs.metrics().numaLastBindErrno
        #expect(reported == EINVAL || reported == ENOSYS || reported == EPERM, "errno \(String(describing: reported))")
    }

    @Test
    func blocksSplitOnPageBoundariesAndCoverEverything() {
        for (count, nodes) in [(10_000, 2), (1, 4), (0, 2), (1 << 20, 3), (4097, 4)] {
            let blocks = NumaPolicy.blocks(count: count, elementStride: 4, nodes: nodes, pageSize: 4096)
            #expect(blocks.count == nodes)
            #expect(blocks.first?.lowerBound == 0 && blocks.last?.upperBound == count)
            for index in 1..<blocks.count {
                #expect(blocks[index].lowerBound == blocks[index - 1].upperBound)
                #expect(blocks[index].lowerBound % 1024 == 0 || blocks[index].lowerBound == count, "\(count) \(nodes): \(blocks)")
            }
        }
    }

    /// On this machine: the kernel's own answer for pages of buffers, fiber stacks and record
    /// chunks matches the node the policy asked for.
    @Test
    func realPagesLandWhereTheyWereAsked() throws {
        let jobs = try makeSystem(workers: 2, "sp-numa-w")
        let firstNode = jobs.topology.nodes[0].id
        withTimeLimit(seconds: 60, "realPagesLandWhereTheyWereAsked") {
            for placement in [NumaBuffer<Float>.Placement.node(0), .blocked, .interleaved] {
                let buffer = try! NumaBuffer<Float>(repeating: 1.5, count: 1 << 20, placement: placement, on: jobs)
                #expect(buffer[12345] == 1.5 && buffer[buffer.count - 1] == 1.5)
                let pages = stride(from: 0, to: buffer.count, by: 1024).map { UnsafeRawPointer(buffer.base + $0) }
                let found = try! NumaMemory.nodes(ofPagesAt: pages)
                #expect(found.allSatisfy { $0 != nil }, "\(placement): untouched pages after the parallel fill")
                if jobs.topology.nodes.count == 1 {
                    #expect(found.allSatisfy { $0 == firstNode }, "\(placement): pages on \(Set(found.compactMap { $0 }))")
                }
                let (mode, nodes) = try! NumaMemory.policy(of: pages[0])
                #expect(mode == (placement == .interleaved ? NumaMemory.interleaveMode : NumaMemory.preferredMode), "\(placement)")
                #expect(nodes.contains(firstNode), "\(placement): policy nodes \(nodes)")
            }
            // A job's fiber stack is bound to its worker's node, and its top page lies there.
            let checked = Tally()
            jobs.parallelFor(0..<64, partitioner: .fixed(grain: 1)) { _ in
                let stack = currentFiberStack()
                let expected = jobs.topology.nodes[jobs.node(ofWorker: currentWorkerIndex()!)].id
                let (mode, nodes) = try! NumaMemory.policy(of: stack.bottom)
                if mode == NumaMemory.preferredMode && nodes == [expected]
                    && (try! NumaMemory.nodes(ofPagesAt: [stack.topPage])) == [expected] {
                    checked.add()
                }
            }
            // A bind the kernel refused (for example when the process is out of memory-map
            // entries while other suites run) is counted in the metrics, never silent: every
            // stack is either placed or accounted for there.
            let refused = jobs.metrics().numaBindFailures
            #expect(checked.current + refused >= 64 && checked.current > 0,
                    "stack pages not on their worker's node: \(checked.current) of 64 placed, \(refused) binds refused (latest errno \(jobs.metrics().numaLastBindErrno.map(String.init) ?? "none"))")
            jobs.frame {
                jobs.wait(for: jobs.run(count: 16) { _, ctx in
                    let scratch = ctx.frameAllocate(Int64.self, count: 4096)
                    scratch.initialize(repeating: 7)
                    let (mode, nodes) = try! NumaMemory.policy(of: scratch.baseAddress!)
                    if mode == NumaMemory.preferredMode && nodes == [firstNode]
                        && (try! NumaMemory.nodes(ofPagesAt: [UnsafeRawPointer(scratch.baseAddress!)])) == [firstNode] {
                        checked.add()
                    }
                })
            }
            #expect(checked.current + jobs.metrics().numaBindFailures >= 64 + 16,
                    "frame memory not on its worker's node: \(checked.current) of 80 placed, \(jobs.metrics().numaBindFailures) binds refused (latest errno \(jobs.metrics().numaLastBindErrno.map(String.init) ?? "none"))")
            for chunk in jobs.scheduler.chunkPools[0].mappedChunks {
                let (mode, nodes) = try! NumaMemory.policy(of: chunk)
                #expect(mode == NumaMemory.preferredMode && nodes == [firstNode])
            }
            #expect(jobs.metrics().numaBindFailures == 0,
                    "latest refused bind: errno \(jobs.metrics().numaLastBindErrno.map(String.init) ?? "none")")
        }
    }

    /// A fake two-node machine: workers get their CPU's node, stacks are bound to their worker's
    /// node, buffer blocks to their nodes, and each block's loop starts on its node.
    @Test(.enabled(if: fakeTwoNodes() != nil), arguments: [1, 2, 4, 8])
    func fakeNodesDrivePlacementAndLoops(workers: Int) throws {
        let topology = fakeTwoNodes()!
        let recorder = PlacementRecorder()
        let jobs = try JobSystem(configuration: .init(workers: workers, threadNamePrefix: "sp-numa-w", topology: topology),
                                 placement: recorder.placement)
        let plan = try WorkerPlan(jobs.configuration, allowed: CPUSet.allowed())
        for worker in 0..<workers {
            #expect(jobs.node(ofWorker: worker) == topology.nodeIndex(ofCPU: plan.homes[worker]))
        }
        withTimeLimit(seconds: 60, "fakeNodesDrivePlacementAndLoops workers=\(workers)") {
            // Stacks: every job's stack page was bound, at creation, to the node of the worker
            // that made it (the node of the pool it belongs to). A parked fiber may later be
            // resumed by a worker of the other node (an idle worker takes a busy one's stalled
            // ready fibers), so the check is against the stack's pool, not the running worker.
            let wrong = Tally()
            let checked = Tally()
            // (From a job: a one-worker system runs an outside loop on the caller's thread.)
            jobs.wait(for: jobs.run { _ in
                jobs.parallelFor(0..<200) { _ in
                    let pool = currentFiberPool()
                    if recorder.policy(at: currentFiberStack().bottom) != .preferred(node: topology.nodes[pool].id) { wrong.add() }
                    checked.add()
                }
            })
            #expect(checked.current == 200 && wrong.current == 0)
            // Frame memory: each worker's frame chunks are bound to its node.
            let frameWrong = Tally()
            let frameChecked = Tally()
            jobs.frame {
                jobs.wait(for: jobs.run(count: 100) { _, ctx in
                    let scratch = ctx.frameAllocate(Int64.self, count: 512)
                    let node = jobs.node(ofWorker: ctx.workerIndex)
                    if recorder.policy(at: scratch.baseAddress!) != .preferred(node: topology.nodes[node].id) { frameWrong.add() }
                    frameChecked.add()
                })
            }
            #expect(frameChecked.current == 100 && frameWrong.current == 0)
            // Buffer blocks: bound to their nodes; each block's first chunk runs on its node.
            let buffer = try! NumaBuffer<Int32>(repeating: 0, count: 300_000, placement: .blocked, on: jobs)
            #expect(buffer.blocks.map(\.node) == [0, 1])
            for block in buffer.blocks {
                let policy = recorder.policy(at: UnsafeRawPointer(buffer.base + block.range.lowerBound))
                #expect(policy == .preferred(node: topology.nodes[block.node].id), "block \(block)")
            }
            let firstChunkNodes = Locked<[Int: Int]>([:])
            let servedNodes = Set((0..<workers).map { jobs.node(ofWorker: $0) })
            for _ in 0..<20 {
                buffer.withParallelMutableSlices(on: jobs) { slice, range in
                    for index in slice.indices { slice[index] &+= 1 }
                    if let block = buffer.blocks.first(where: { $0.range.lowerBound == range.lowerBound }) {
                        let node = jobs.node(ofWorker: currentWorkerIndex()!)
                        firstChunkNodes.withLock { $0[block.node] = ($0[block.node] == nil || $0[block.node] == node) ? node : -1 }
                    }
                }
            }
            #expect(buffer.withUnsafeMutableBufferPointer { $0.allSatisfy { $0 == 20 } })
            for block in buffer.blocks where servedNodes.contains(block.node) {
                #expect(firstChunkNodes.withLock { $0[block.node] } == block.node, "block \(block) started off its node")
            }
        }
    }
}
