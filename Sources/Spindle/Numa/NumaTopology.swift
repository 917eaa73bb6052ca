import CSpindle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The machine's NUMA nodes as far as this process is concerned: which allowed CPUs belong to
/// which node, and how far apart the nodes are. docs/numa.md.
///
/// `system()` asks libnuma, loaded at run time, so Spindle builds and runs where libnuma is
/// absent; then the topology is one node and `source` says why. A topology can also be built by
/// hand (`init(nodes:distances:)`), for example to try placement policies on a one-node machine.
///
/// Thread-safety: a value; `system()` may be called from any thread.
public struct NumaTopology: Hashable, Sendable, CustomStringConvertible {
    /// One node: its number (as the kernel numbers it) and the allowed CPUs on it.
    public struct Node: Hashable, Sendable {
        /// The node number as the kernel numbers it.
        public let id: Int
        /// The node's CPUs that this process may use.
        public let cpus: CPUSet

        /// Node `id` with `cpus`.
        public init(id: Int, cpus: CPUSet) {
            self.id = id
            self.cpus = cpus
        }
    }

    /// Where the topology came from.
    public enum Source: Hashable, Sendable {
        /// libnuma answered.
        case libnuma
        /// libnuma could not be used; one node holds every CPU. `reason` says why.
        case fallback(reason: String)
        /// Built by the application (`init(nodes:distances:)`).
        case custom
    }

    /// Nodes with at least one allowed CPU, by ascending id.
    public let nodes: [Node]
    /// `distances[i][j]`: the distance between `nodes[i]` and `nodes[j]` (10 for a node to
    /// itself, by the ACPI SLIT convention libnuma reports).
    public let distances: [[Int]]
    /// Where the topology came from: libnuma, the application, or a fallback and its reason.
    public let source: Source

    /// Errors in a hand-built topology.
    public enum Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        case noNodes
        case duplicateNodeID(Int)
        case overlappingCPUs(cpu: Int, nodes: [Int])
        case emptyNode(Int)
        case distanceMatrixShape(nodes: Int, rows: [Int])

        public var description: String {
            switch self {
            case .noNodes:
                "NumaTopology needs at least one node"
            case .duplicateNodeID(let id):
                "NumaTopology: node \(id) is listed twice; give each node once with all its CPUs"
            case .overlappingCPUs(let cpu, let nodes):
                "NumaTopology: CPU \(cpu) is in nodes \(nodes); a CPU belongs to exactly one node"
            case .emptyNode(let id):
                "NumaTopology: node \(id) has no CPUs; leave out nodes without CPUs"
            case .distanceMatrixShape(let nodes, let rows):
                "NumaTopology: distances must be a \(nodes)×\(nodes) matrix (one row per node, in node order); got rows of \(rows)"
            }
        }
    }

    /// A hand-built topology.
    ///
    /// - Parameters:
    ///   - nodes: disjoint, non-empty CPU sets with distinct ids (any order; sorted by id).
    ///   - distances: one row per node in the order of `nodes` after sorting by id; default: 10
    ///     on the diagonal, 20 elsewhere.
    /// - Throws: `NumaTopology.Error` naming the inconsistency.
    public init(nodes: [Node], distances: [[Int]]? = nil) throws(Error) {
        guard !nodes.isEmpty else { throw .noNodes }
        let sorted = nodes.sorted { $0.id < $1.id }
        var owner: [Int: Int] = [:]
        for (index, node) in sorted.enumerated() {
            if index > 0 && sorted[index - 1].id == node.id { throw .duplicateNodeID(node.id) }
            guard !node.cpus.isEmpty else { throw .emptyNode(node.id) }
            for cpu in node.cpus {
                if let other = owner[cpu] { throw .overlappingCPUs(cpu: cpu, nodes: [other, node.id]) }
                owner[cpu] = node.id
            }
        }
        let matrix = distances ?? sorted.indices.map { i in sorted.indices.map { j in i == j ? 10 : 20 } }
        guard matrix.count == sorted.count, matrix.allSatisfy({ $0.count == sorted.count }) else {
            throw .distanceMatrixShape(nodes: sorted.count, rows: matrix.map(\.count))
        }
        self.nodes = sorted
        self.distances = matrix
        self.source = .custom
    }

    init(nodes: [Node], distances: [[Int]], source: Source) {
        self.nodes = nodes
        self.distances = distances
        self.source = source
    }

    /// One node holding `cpus`, with the reason libnuma was not used.
    static func single(_ cpus: CPUSet, reason: String) -> NumaTopology {
        NumaTopology(nodes: [Node(id: 0, cpus: cpus)], distances: [[10]], source: .fallback(reason: reason))
    }

    /// The index in `nodes` of the node holding `cpu`, or nil if no node holds it.
    public func nodeIndex(ofCPU cpu: Int) -> Int? {
        nodes.firstIndex { $0.cpus.contains(cpu) }
    }

    public var description: String {
        let list = nodes.map { "node \($0.id): CPUs \($0.cpus)" }.joined(separator: "; ")
        switch source {
        case .libnuma: return "\(list) (libnuma)"
        case .custom: return "\(list) (custom)"
        case .fallback(let reason): return "\(list) (one node: \(reason))"
        }
    }

    // MARK: Discovery

    /// The topology of the CPUs this process may use, from libnuma.
    ///
    /// Never fails: without a usable libnuma the result is one node of every allowed CPU, with
    /// `source == .fallback(reason:)`. Blocks for a few system calls.
    public static func system() -> NumaTopology {
        let allowed = (try? CPUSet.allowed()) ?? CPUSet([])
        return load(library: "libnuma.so.1", allowed: allowed)
    }

    /// `system()` with the library name and the CPU set injectable (tests).
    static func load(library: String, allowed: CPUSet) -> NumaTopology {
        switch LibNuma.open(library) {
        case .failure(let reason):
            return single(allowed, reason: reason)
        case .success(let numa):
            // libnuma fills its per-node CPU mask cache lazily and without a lock: two threads
            // asking at once can both allocate it and one allocation is lost (LeakSanitizer
            // reported it when two test suites created job systems concurrently). One query at
            // a time per process.
            LibNuma.queries.lock()
            defer { LibNuma.queries.unlock() }
            var byNode: [Int: [Int]] = [:]
            for cpu in allowed {
                let node = numa.nodeOfCPU(cpu)
                guard node >= 0 else { return single(allowed, reason: "numa_node_of_cpu(\(cpu)) failed") }
                byNode[node, default: []].append(cpu)
            }
            let ids = byNode.keys.sorted()
            guard !ids.isEmpty else { return single(allowed, reason: "no allowed CPUs") }
            let nodes = ids.map { Node(id: $0, cpus: CPUSet(byNode[$0]!)) }
            let distances = ids.map { from in ids.map { to in numa.distance(from, to) } }
            return NumaTopology(nodes: nodes, distances: distances, source: .libnuma)
        }
    }
}

/// libnuma's functions, found with dlopen and dlvsym (docs/numa.md, "Topology").
struct LibNuma {
    /// Serialises topology queries (see `NumaTopology.load`).
    static let queries = Lock()
    let nodeOfCPU: @convention(c) (Int32) -> Int32
    let distanceFunction: @convention(c) (Int32, Int32) -> Int32

    func nodeOfCPU(_ cpu: Int) -> Int { Int(nodeOfCPU(Int32(cpu))) }
    func distance(_ from: Int, _ to: Int) -> Int { Int(distanceFunction(Int32(from), Int32(to))) }

    enum Opened {
        case success(LibNuma)
        case failure(String)
    }

    static func open(_ library: String) -> Opened {
        let handle: DynamicLibrary
        switch DynamicLibrary.open(library) {
        case .success(let opened): handle = opened
        case .failure(let detail):
            return .failure("\(library) not loadable (\(detail)); install libnuma1 for NUMA placement")
        }
        func symbol(_ name: String, _ version: String) -> UnsafeMutableRawPointer? {
            handle.symbol(name, version: version)
        }
        guard let available = symbol("numa_available", "libnuma_1.1"),
              let nodeOfCPU = symbol("numa_node_of_cpu", "libnuma_1.2"),
              let distance = symbol("numa_distance", "libnuma_1.1") else {
            return .failure("\(library) lacks numa_available, numa_node_of_cpu or numa_distance")
        }
        typealias Available = @convention(c) () -> Int32
        guard unsafeBitCast(available, to: Available.self)() >= 0 else {
            return .failure("numa_available() reports no NUMA support in this kernel")
        }
        // The handle stays open for the life of the process (the functions are kept).
        return .success(LibNuma(
            nodeOfCPU: unsafeBitCast(nodeOfCPU, to: (@convention(c) (Int32) -> Int32).self),
            distanceFunction: unsafeBitCast(distance, to: (@convention(c) (Int32, Int32) -> Int32).self)))
    }
}
