import CSpindle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A fixed-size array of plain values whose pages are placed on NUMA nodes: all on one node,
/// interleaved over all nodes, or in one block per node. Parallel loops over it
/// (`withParallelMutableSlices`, `JobSystem.parallelForChunks(over:)`) start each block on a
/// worker of the node that owns it. docs/numa.md.
///
/// Thread-safety: like an `UnsafeMutableBufferPointer`: concurrent reads are safe, concurrent
/// writes to the same element are a data race. The parallel loops hand out disjoint slices.
public final class NumaBuffer<Element: BitwiseCopyable & Sendable>: @unchecked Sendable {
    // SAFETY: `base` is written only through the element accessors, whose races are the
    // caller's (documented above) or excluded by disjoint slices.

    /// Where the pages go.
    public enum Placement: Hashable, Sendable {
        /// Every page on one node (an index into `JobSystem.topology.nodes`).
        case node(Int)
        /// Pages round-robin over all nodes.
        case interleaved
        /// One block of consecutive elements per node, in node order, split on page boundaries.
        case blocked
    }

    /// One block of a buffer: its node and its index range.
    public typealias Block = NumaBlock

    /// The number of elements.
    public let count: Int
    /// How the pages are placed on nodes.
    public let placement: Placement
    /// The blocks loops start on their nodes: one per node for `.blocked`, otherwise one block
    /// of everything (on the chosen node, or node 0 for `.interleaved`).
    public let blocks: [Block]
    let base: UnsafeMutablePointer<Element>
    private let mappedBytes: Int

    /// Maps `count` elements, places their pages, and fills them with `value` in parallel (each
    /// block by workers of its node, so first touch agrees with the placement).
    ///
    /// Blocks until filled. From a job of `jobs`, parks the job's fiber instead.
    /// - Throws: `SystemError` if the memory cannot be mapped.
    /// - Precondition: `count >= 0`; for `.node(n)`, `n` is a node index of `jobs.topology`.
    public init(repeating value: Element, count: Int, placement: Placement, on jobs: JobSystem) throws(SystemError) {
        require(count >= 0, "NumaBuffer(count: \(count)): the count must not be negative")
        let topology = jobs.topology
        let nodeIDs = topology.nodes.map(\.id)
        let page = NumaMemory.pageSize
        let stride = MemoryLayout<Element>.stride
        let bytes = Swift.max(page, (count * stride + page - 1) / page * page)
        let mapped = try PageMemory.mapThrowing(bytes)
        self.count = count
        self.placement = placement
        mappedBytes = bytes
        base = mapped.bindMemory(to: Element.self, capacity: Swift.max(count, 1))
        let placementMechanism = jobs.scheduler.placement
        var failures = 0
        switch placement {
        case .node(let node):
            require(node >= 0 && node < nodeIDs.count,
                    "NumaBuffer placement .node(\(node)): the system's topology has nodes 0..<\(nodeIDs.count) (indices into JobSystem.topology.nodes)")
            if !placementMechanism.bind(mapped, bytes, .preferred(node: nodeIDs[node])) { failures += 1 }
            blocks = [Block(node: node, range: 0..<count)]
        case .interleaved:
            if !placementMechanism.bind(mapped, bytes, .interleaved(nodes: nodeIDs)) { failures += 1 }
            blocks = [Block(node: 0, range: 0..<count)]
        case .blocked:
            let ranges = NumaPolicy.blocks(count: count, elementStride: stride, nodes: nodeIDs.count, pageSize: page)
            var made: [Block] = []
            for (node, range) in ranges.enumerated() where !range.isEmpty {
                let start = range.lowerBound * stride / page * page
                let end = node == ranges.count - 1 ? bytes : range.upperBound * stride / page * page
                if end > start && !placementMechanism.bind(mapped + start, end - start, .preferred(node: nodeIDs[node])) {
                    failures += 1
                }
                made.append(Block(node: node, range: range))
            }
            blocks = made.isEmpty ? [Block(node: 0, range: 0..<0)] : made
        }
        if failures > 0 { jobs.scheduler.bindFailures.wrappingAdd(failures, ordering: .relaxed) }
        let address = LoopBuffer(base)
        jobs.parallelForChunks(over: self) { range in
            (address.pointer + range.lowerBound).initialize(repeating: value, count: range.count)
        }
    }

    deinit {
        PageMemory.unmap(base, mappedBytes)
    }

    /// The element at `index`. Not synchronised (see the type's thread-safety note).
    /// - Precondition: `0 <= index < count`.
    public subscript(index: Int) -> Element {
        get {
            require(index >= 0 && index < count, "NumaBuffer index \(index) out of range 0..<\(count)")
            return base[index]
        }
        set {
            require(index >= 0 && index < count, "NumaBuffer index \(index) out of range 0..<\(count)")
            base[index] = newValue
        }
    }

    /// Calls `body` with the whole buffer. The pointer is valid only during the call.
    public func withUnsafeMutableBufferPointer<R, E: Error>(
        _ body: (UnsafeMutableBufferPointer<Element>) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableBufferPointer(start: base, count: count))
    }

    /// Lets `body` mutate disjoint slices in parallel on `jobs`, each block starting on a worker
    /// of its node. As `Array.withParallelMutableSlices(on:partitioner:_:)` otherwise.
    public func withParallelMutableSlices<E: Error>(
        on jobs: JobSystem, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (_ slice: UnsafeMutableBufferPointer<Element>, _ range: Range<Int>) throws(E) -> Void
    ) throws(E) {
        let address = LoopBuffer(base)
        try jobs.parallelForChunks(over: self, partitioner: partitioner) { (range: Range<Int>) throws(E) in
            try body(UnsafeMutableBufferPointer(start: address.pointer + range.lowerBound, count: range.count), range)
        }
    }
}

/// A run of a `NumaBuffer`'s elements and the node (index into the topology's nodes) it was
/// placed on.
public struct NumaBlock: Hashable, Sendable {
    /// The index of the node (in `topology.nodes`) whose memory holds the block.
    public let node: Int
    /// The element indices of the block.
    public let range: Range<Int>
}

extension JobSystem {
    /// Runs `body(chunk)` over disjoint chunks covering `0..<buffer.count`, in parallel: each of
    /// the buffer's blocks starts on a worker of the node that owns it, and is split further as
    /// `partitioner` says (halves go to same-node thieves first). Errors, blocking and
    /// thread-safety as for `parallelForChunks(_:partitioner:_:)`.
    public func parallelForChunks<Element, E: Error>(
        over buffer: NumaBuffer<Element>, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (Range<Int>) throws(E) -> Void
    ) throws(E) {
        guard buffer.count > 0 else { return }
        try LoopFailure<E>.run { failure in
            LoopEngine(scheduler).forEachBlock(buffer.blocks, partitioner) { chunk in
                guard !failure.isCancelled else { return }
                do throws(E) { try body(chunk) } catch { failure.record(error) }
            }
        }.get()
    }
}
