// Building a task graph in linear time: edges in flat arrays, and a topological order kept up
// to date incrementally (Pearce and Kelly), so an edge that agrees with the order costs O(1) and
// the cycle check searches only the region an edge disturbs. docs/graphs.md, "Building".

/// A node's body: a closure, or a closure shared by many nodes and called with each node's
/// integer. Stored in a plan line as its two words (function, context), with the argument beside
/// it (`GraphPlan`).
enum NodeBody {
    case plain(@Sendable (JobContext) throws -> Void)
    case argument(Int, @Sendable (Int, JobContext) throws -> Void)
}

extension TaskGraph {
    /// The graph as built so far (guarded by the graph's lock).
    ///
    /// Nodes and edges live in two flat arrays, each node's outgoing and incoming edges as
    /// linked lists through the edges (newest first), so adding a node or an edge is one append.
    /// The nodes' `order` fields are a topological order (a node's position): a new node goes
    /// last; an edge `x → y` with `x.order < y.order` keeps it valid as it is;
    /// otherwise `reorder` searches forward from `y` and backward from `x` within the positions
    /// between them, finds a cycle if `x` is reachable from `y`, and else gives the nodes it
    /// visited the same positions in a valid order (backward ones first).
    struct Builder {
        /// What the builder keeps per node: one array element, so adding a node is one append.
        struct NodeEntry {
            var name: String
            var body: NodeBody
            var subgraph: TaskGraph?
            /// The newest outgoing and incoming edge (-1: none).
            var firstOut: Int32 = -1
            var firstIn: Int32 = -1
            var outDegree: Int32 = 0
            var inDegree: Int32 = 0
            /// The node's topological position.
            var order: Int32
            var priority: Priority
        }

        /// Per edge: its ends and the next older edge of the same source / target.
        struct EdgeEntry {
            var from: Int32
            var to: Int32
            var nextOut: Int32
            var nextIn: Int32
        }

        var nodes: [NodeEntry] = []
        var edges: [EdgeEntry] = []
        /// The targets of nodes with many successors, for the duplicate check.
        var targetSets: [Int32: Set<Int32>] = [:]
        /// Scratch of `reorder`: visit stamps, search parents, the two visited sets.
        private var stamp: [UInt32] = []
        private var currentStamp: UInt32 = 0
        private var parent: [Int32] = []
        private var forward: [Int32] = []
        private var backward: [Int32] = []
        private var positions: [Int32] = []
        /// Changes with every addition, so a run knows when to compile a new plan.
        var version = 0

        /// Above this many successors a node keeps a set of them for the duplicate check.
        static let setThreshold = 16

        var nodeCount: Int { nodes.count }
        var edgeCount: Int { edges.count }
        var names: [String] { nodes.map(\.name) }

        /// Room for `nodes` more nodes and `edges` more edges (one growth of each array).
        mutating func reserve(nodes count: Int, edges edgeCount: Int) {
            nodes.reserveCapacity(nodes.count + count)
            edges.reserveCapacity(edges.count + edgeCount)
        }

        /// Adds a node (last in the order) and returns its index. O(1) amortized.
        mutating func addNode(_ name: String, priority: Priority, body: NodeBody, subgraph: TaskGraph?) -> Int {
            let index = nodes.count
            nodes.append(NodeEntry(name: name, body: body, subgraph: subgraph, order: Int32(index), priority: priority))
            version &+= 1
            return index
        }

        /// Whether the edge `from → to` exists: O(1) for the newest edge of `from` and for nodes
        /// with a target set, else O(out-degree ≤ setThreshold).
        func hasEdge(from: Int, to: Int) -> Bool {
            let target = Int32(to)
            if let set = targetSets[Int32(from)] { return set.contains(target) }
            var edge = nodes[from].firstOut
            while edge >= 0 {
                if edges[Int(edge)].to == target { return true }
                edge = edges[Int(edge)].nextOut
            }
            return false
        }

        /// Adds `from → to` unless it exists; on a cycle, throws it and changes nothing.
        ///
        /// - Complexity: amortized O(1) when `from` precedes `to` in the current order (edges
        ///   that agree with the order nodes were added in); otherwise O(visited + their edges)
        ///   for the nodes between the two positions that the edge reaches.
        mutating func addEdge(from: Int, to: Int) throws(CycleError) {
            if from == to { throw CycleError(cycle: [nodes[from].name, nodes[from].name]) }
            if hasEdge(from: from, to: to) { return }
            if nodes[from].order > nodes[to].order { try reorder(from: from, to: to) }
            let edge = Int32(edges.count)
            edges.append(EdgeEntry(from: Int32(from), to: Int32(to), nextOut: nodes[from].firstOut, nextIn: nodes[to].firstIn))
            nodes[from].firstOut = edge
            nodes[from].outDegree += 1
            nodes[to].firstIn = edge
            nodes[to].inDegree += 1
            let source = Int32(from)
            if nodes[from].outDegree > Builder.setThreshold {
                if targetSets[source] != nil {
                    targetSets[source]!.insert(Int32(to))
                } else {
                    targetSets[source] = Set(successors(of: from))
                }
            }
            version &+= 1
        }

        /// Restores a topological order before adding `x → y` with `order[y] < order[x]`
        /// (Pearce and Kelly's algorithm; docs/graphs.md, "Building"), or throws the cycle the
        /// edge would close, leaving the order unchanged.
        private mutating func reorder(from x: Int, to y: Int) throws(CycleError) {
            let lower = nodes[y].order, upper = nodes[x].order
            nextStamp()
            // Forward from y through nodes placed before x: reaching x is a cycle.
            forward.removeAll(keepingCapacity: true)
            var stack = [Int32(y)]
            stamp[y] = currentStamp
            while let node = stack.popLast() {
                forward.append(node)
                var edge = nodes[Int(node)].firstOut
                while edge >= 0 {
                    let next = Int(edges[Int(edge)].to)
                    if next == x {
                        parent[x] = node
                        throw CycleError(cycle: cycle(from: x, to: y))
                    }
                    if stamp[next] != currentStamp && nodes[next].order < upper {
                        stamp[next] = currentStamp
                        parent[next] = node
                        stack.append(Int32(next))
                    }
                    edge = edges[Int(edge)].nextOut
                }
            }
            // Backward from x through nodes placed after y. Disjoint from `forward`: a node in
            // both would lie on a path y → … → x, found above.
            backward.removeAll(keepingCapacity: true)
            stack.append(Int32(x))
            stamp[x] = currentStamp
            while let node = stack.popLast() {
                backward.append(node)
                var edge = nodes[Int(node)].firstIn
                while edge >= 0 {
                    let previous = Int(edges[Int(edge)].from)
                    if stamp[previous] != currentStamp && nodes[previous].order > lower {
                        stamp[previous] = currentStamp
                        stack.append(Int32(previous))
                    }
                    edge = edges[Int(edge)].nextIn
                }
            }
            // The visited nodes take the same positions: those that reach x first, then those
            // y reaches, each group in its old relative order.
            // The scratch arrays are moved out while `nodes` is read and written, so that
            // neither is copied.
            var forward: [Int32] = [], backward: [Int32] = [], positions: [Int32] = []
            swap(&forward, &self.forward)
            swap(&backward, &self.backward)
            swap(&positions, &self.positions)
            defer {
                swap(&forward, &self.forward)
                swap(&backward, &self.backward)
                swap(&positions, &self.positions)
            }
            forward.sort { nodes[Int($0)].order < nodes[Int($1)].order }
            backward.sort { nodes[Int($0)].order < nodes[Int($1)].order }
            positions.removeAll(keepingCapacity: true)
            for node in backward { positions.append(nodes[Int(node)].order) }
            for node in forward { positions.append(nodes[Int(node)].order) }
            positions.sort()
            var slot = 0
            for node in backward {
                nodes[Int(node)].order = positions[slot]
                slot += 1
            }
            for node in forward {
                nodes[Int(node)].order = positions[slot]
                slot += 1
            }
        }

        /// A fresh visit stamp (clearing the stamps when they wrap), with scratch for every node.
        private mutating func nextStamp() {
            if stamp.count < nodeCount {
                stamp.append(contentsOf: repeatElement(0, count: nodeCount - stamp.count))
                parent.append(contentsOf: repeatElement(-1, count: nodeCount - parent.count))
            }
            if currentStamp == UInt32.max {
                for index in stamp.indices { stamp[index] = 0 }
                currentStamp = 0
            }
            currentStamp += 1
        }

        /// The names on the cycle `x → y → … → x`, from the forward search's parents.
        private func cycle(from x: Int, to y: Int) -> [String] {
            var path = [x]
            var current = Int(parent[x])
            while current != y {
                path.append(current)
                current = Int(parent[current])
            }
            path.append(y)
            path.append(x)
            return path.reversed().map { nodes[$0].name }
        }

        /// The successors of `node`, in the order their edges were added.
        func successors(of node: Int) -> [Int32] {
            var list = [Int32](repeating: 0, count: Int(nodes[node].outDegree))
            list.withUnsafeMutableBufferPointer { writeSuccessors(of: node, to: $0.baseAddress!) }
            return list
        }

        /// Writes the successors of `node`, in the order their edges were added, to `out`.
        func writeSuccessors(of node: Int, to out: UnsafeMutablePointer<Int32>) {
            var slot = Int(nodes[node].outDegree)
            var edge = nodes[node].firstOut
            while edge >= 0 {
                slot -= 1
                out[slot] = edges[Int(edge)].to
                edge = edges[Int(edge)].nextOut
            }
        }
    }
}
