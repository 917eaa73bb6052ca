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
    /// Edges live in flat arrays, each node's outgoing and incoming edges as linked lists
    /// through them (newest first), so adding a node or an edge allocates nothing but amortized
    /// array growth. `order` is a topological order of the nodes (`order[n]` is `n`'s position):
    /// a new node goes last; an edge `x → y` with `order[x] < order[y]` keeps it valid as it is;
    /// otherwise `reorder` searches forward from `y` and backward from `x` within the positions
    /// between them, finds a cycle if `x` is reachable from `y`, and else gives the nodes it
    /// visited the same positions in a valid order (backward ones first).
    struct Builder {
        var names: [String] = []
        var priorities: [Priority] = []
        var bodies: [NodeBody] = []
        var subgraphs: [TaskGraph?] = []
        /// Per node: the newest outgoing and incoming edge (-1: none), and the degrees.
        var firstOut: [Int32] = []
        var firstIn: [Int32] = []
        var outDegree: [Int32] = []
        var inDegree: [Int32] = []
        /// Per edge: its ends and the next older edge of the same source / target.
        var edgeFrom: [Int32] = []
        var edgeTo: [Int32] = []
        var nextOut: [Int32] = []
        var nextIn: [Int32] = []
        /// The targets of nodes with many successors, for the duplicate check.
        var targetSets: [Int32: Set<Int32>] = [:]
        /// The topological position of each node.
        var order: [Int32] = []
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

        var nodeCount: Int { names.count }
        var edgeCount: Int { edgeTo.count }

        /// Room for `nodes` more nodes and `edges` more edges (one growth of each array).
        mutating func reserve(nodes: Int, edges: Int) {
            let n = nodeCount + nodes
            names.reserveCapacity(n)
            priorities.reserveCapacity(n)
            bodies.reserveCapacity(n)
            subgraphs.reserveCapacity(n)
            firstOut.reserveCapacity(n)
            firstIn.reserveCapacity(n)
            outDegree.reserveCapacity(n)
            inDegree.reserveCapacity(n)
            order.reserveCapacity(n)
            let e = edgeCount + edges
            edgeFrom.reserveCapacity(e)
            edgeTo.reserveCapacity(e)
            nextOut.reserveCapacity(e)
            nextIn.reserveCapacity(e)
        }

        /// Adds a node (last in the order) and returns its index. O(1) amortized.
        mutating func addNode(_ name: String, priority: Priority, body: NodeBody, subgraph: TaskGraph?) -> Int {
            let index = names.count
            names.append(name)
            priorities.append(priority)
            bodies.append(body)
            subgraphs.append(subgraph)
            firstOut.append(-1)
            firstIn.append(-1)
            outDegree.append(0)
            inDegree.append(0)
            order.append(Int32(index))
            version &+= 1
            return index
        }

        /// Whether the edge `from → to` exists: O(1) for the newest edge of `from` and for nodes
        /// with a target set, else O(out-degree ≤ setThreshold).
        func hasEdge(from: Int, to: Int) -> Bool {
            let target = Int32(to)
            if let set = targetSets[Int32(from)] { return set.contains(target) }
            var edge = firstOut[from]
            while edge >= 0 {
                if edgeTo[Int(edge)] == target { return true }
                edge = nextOut[Int(edge)]
            }
            return false
        }

        /// Adds `from → to` unless it exists; on a cycle, throws it and changes nothing.
        ///
        /// - Complexity: amortized O(1) when `from` precedes `to` in the current order (edges
        ///   that agree with the order nodes were added in); otherwise O(visited + their edges)
        ///   for the nodes between the two positions that the edge reaches.
        mutating func addEdge(from: Int, to: Int) throws(CycleError) {
            if from == to { throw CycleError(cycle: [names[from], names[from]]) }
            if hasEdge(from: from, to: to) { return }
            if order[from] > order[to] { try reorder(from: from, to: to) }
            let edge = Int32(edgeTo.count)
            edgeFrom.append(Int32(from))
            edgeTo.append(Int32(to))
            nextOut.append(firstOut[from])
            nextIn.append(firstIn[to])
            firstOut[from] = edge
            firstIn[to] = edge
            outDegree[from] += 1
            inDegree[to] += 1
            let source = Int32(from)
            if targetSets[source] != nil {
                targetSets[source]!.insert(Int32(to))
            } else if outDegree[from] > Builder.setThreshold {
                targetSets[source] = Set(successors(of: from))
            }
            version &+= 1
        }

        /// Restores a topological order before adding `x → y` with `order[y] < order[x]`
        /// (Pearce and Kelly's algorithm; docs/graphs.md, "Building"), or throws the cycle the
        /// edge would close, leaving the order unchanged.
        private mutating func reorder(from x: Int, to y: Int) throws(CycleError) {
            let lower = order[y], upper = order[x]
            nextStamp()
            // Forward from y through nodes placed before x: reaching x is a cycle.
            forward.removeAll(keepingCapacity: true)
            var stack = [Int32(y)]
            stamp[y] = currentStamp
            while let node = stack.popLast() {
                forward.append(node)
                var edge = firstOut[Int(node)]
                while edge >= 0 {
                    let next = Int(edgeTo[Int(edge)])
                    if next == x {
                        parent[x] = node
                        throw CycleError(cycle: cycle(from: x, to: y))
                    }
                    if stamp[next] != currentStamp && order[next] < upper {
                        stamp[next] = currentStamp
                        parent[next] = node
                        stack.append(Int32(next))
                    }
                    edge = nextOut[Int(edge)]
                }
            }
            // Backward from x through nodes placed after y. Disjoint from `forward`: a node in
            // both would lie on a path y → … → x, found above.
            backward.removeAll(keepingCapacity: true)
            stack.append(Int32(x))
            stamp[x] = currentStamp
            while let node = stack.popLast() {
                backward.append(node)
                var edge = firstIn[Int(node)]
                while edge >= 0 {
                    let previous = Int(edgeFrom[Int(edge)])
                    if stamp[previous] != currentStamp && order[previous] > lower {
                        stamp[previous] = currentStamp
                        stack.append(Int32(previous))
                    }
                    edge = nextIn[Int(edge)]
                }
            }
            // The visited nodes take the same positions: those that reach x first, then those
            // y reaches, each group in its old relative order.
            let order = self.order
            forward.sort { order[Int($0)] < order[Int($1)] }
            backward.sort { order[Int($0)] < order[Int($1)] }
            positions.removeAll(keepingCapacity: true)
            for node in backward { positions.append(order[Int(node)]) }
            for node in forward { positions.append(order[Int(node)]) }
            positions.sort()
            var slot = 0
            for node in backward {
                self.order[Int(node)] = positions[slot]
                slot += 1
            }
            for node in forward {
                self.order[Int(node)] = positions[slot]
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
            return path.reversed().map { names[$0] }
        }

        /// The successors of `node`, in the order their edges were added.
        func successors(of node: Int) -> [Int32] {
            var list = [Int32](repeating: 0, count: Int(outDegree[node]))
            var slot = list.count
            var edge = firstOut[node]
            while edge >= 0 {
                slot -= 1
                list[slot] = edgeTo[Int(edge)]
                edge = nextOut[Int(edge)]
            }
            return list
        }

        /// Writes the successors of `node`, in the order their edges were added, to `out`.
        func writeSuccessors(of node: Int, to out: UnsafeMutablePointer<Int32>) {
            var slot = Int(outDegree[node])
            var edge = firstOut[node]
            while edge >= 0 {
                slot -= 1
                out[slot] = edgeTo[Int(edge)]
                edge = nextOut[Int(edge)]
            }
        }
    }
}
