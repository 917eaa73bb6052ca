/// A reusable graph of jobs: nodes run when all their predecessors have finished.
///
/// Build the graph once, then run it as often as you like:
///
/// ```swift
/// let graph = TaskGraph("frame")
/// let load = graph.node("load") { ctx in … }
/// let decode = graph.node("decode", priority: .high) { ctx in … }
/// try load.precedes(decode)
/// try jobs.runAndWait(graph)
/// ```
///
/// Each node keeps a count of predecessors still pending; a finishing node counts its successors
/// down and schedules the ones that reach zero, running one of them next on the same worker.
/// There is no coordinator and no lock, and a run allocates nothing once the graph has run once
/// (docs/graphs.md).
///
/// Node bodies are jobs: they run on fibers, may spawn work, `wait`, `join` and run parallel
/// loops. A node may also be a whole graph (`subgraph(_:priority:_:)`).
///
/// **Errors.** The first body that throws stops the run: nodes that have not started are skipped,
/// the run still completes (its counter reaches zero), and `lastFailure` (or `runAndWait`) reports
/// the error and the node that threw. The graph can be run again.
///
/// **Thread-safety.** Building (`node`, `subgraph`, `precedes`) is thread-safe but must not
/// overlap a run of the graph (that traps). One run at a time: starting a run while the previous
/// one is still in progress traps; wait for it, or build a second graph for concurrent runs.
/// Everything else may be called from any thread at any time.
public final class TaskGraph: @unchecked Sendable {
    // SAFETY: `builder` and `plan` are touched only with `lock` held; `runState` is thread-safe.

    /// The graph's name (shown in `dot()` and in subgraph failures).
    public let name: String

    let lock = Lock()
    // Unchecked exclusivity: only touched under `lock`.
    @exclusivity(unchecked) var builder = Builder()
    /// The compiled form of the graph, rebuilt by the first run after a change.
    var plan: GraphPlan?
    let runState = GraphRunState()

    /// An empty graph called `name`.
    public init(_ name: String = "graph") {
        self.name = name
    }

    // MARK: Building

    /// Adds a node that runs `body` as a job at `priority`, and returns it.
    ///
    /// - Parameters:
    ///   - name: shown in `dot()`, cycle errors and failures. Names need not be unique.
    ///   - priority: the priority the node's job runs at.
    ///   - body: the job. It runs on a fiber of the system the graph runs on, once per run.
    /// - Precondition: the graph is not running.
    /// - Complexity: amortized O(1).
    @discardableResult
    public func node(
        _ name: String, priority: Priority = .normal,
        _ body: @escaping @Sendable (JobContext) throws -> Void
    ) -> Node {
        add(name, priority: priority, subgraph: nil, .plain(body))
    }

    /// Adds a node that runs `body(argument, context)`, and returns it: `node(_:priority:_:)`
    /// for a body shared by many nodes, which then costs no closure per node (as
    /// `run(counter:argument:)` does for jobs).
    ///
    /// - Precondition: the graph is not running.
    /// - Complexity: amortized O(1); no allocation besides amortized array growth.
    @discardableResult
    public func node(
        _ name: String, argument: Int, priority: Priority = .normal,
        _ body: @escaping @Sendable (Int, JobContext) throws -> Void
    ) -> Node {
        add(name, priority: priority, subgraph: nil, .argument(argument, body))
    }

    /// Adds `count` nodes named `name` that run `body(i, context)` for `i` in `0..<count`, and
    /// returns their range of indices (`node(at:)` gives each node). The graph's arrays grow
    /// once.
    ///
    /// - Precondition: `count >= 0`; the graph is not running.
    /// - Complexity: O(count); no allocation besides the arrays' one growth.
    @discardableResult
    public func nodes(
        _ name: String, count: Int, priority: Priority = .normal,
        _ body: @escaping @Sendable (Int, JobContext) throws -> Void
    ) -> Range<Int> {
        require(count >= 0, "TaskGraph.nodes(\"\(name)\", count: \(count)): the count must not be negative")
        return lock.withLock {
            requireIdle("add nodes \"\(name)\" to")
            builder.reserve(nodes: count, edges: 0)
            let first = builder.nodeCount
            for index in 0..<count {
                _ = builder.addNode(name, priority: priority, body: .argument(index, body), subgraph: nil)
            }
            return first..<(first + count)
        }
    }

    /// Reserves room for `nodes` more nodes and `edges` more edges, so that building them
    /// grows the graph's arrays once. Optional.
    ///
    /// - Complexity: O(nodes + edges + current size) (one reallocation of each array).
    public func reserveCapacity(nodes: Int, edges: Int) {
        lock.withLock { builder.reserve(nodes: Swift.max(0, nodes), edges: Swift.max(0, edges)) }
    }

    /// Adds a node that runs `graph` and waits for it (parking the node's fiber), and returns
    /// it. A failure inside `graph` fails this node with it.
    ///
    /// The subgraph is an ordinary graph: do not run it elsewhere while this graph may run it,
    /// and do not use it in two nodes that may run at the same time (one run at a time).
    ///
    /// - Precondition: `graph` is not this graph and does not contain it; the graph is not
    ///   running.
    /// - Complexity: O(size of `graph`'s subgraph nesting) for the containment check.
    @discardableResult
    public func subgraph(_ name: String, priority: Priority = .normal, _ graph: TaskGraph) -> Node {
        require(graph !== self && !graph.contains(self),
                "TaskGraph.subgraph(\"\(name)\"): graph \"\(graph.name)\" is or contains \"\(self.name)\", which would make a graph run inside itself; use a separate graph")
        return add(name, priority: priority, subgraph: graph, .plain { context in
            try context.runAndWait(graph)
        })
    }

    private func add(_ name: String, priority: Priority, subgraph: TaskGraph?, _ body: NodeBody) -> Node {
        lock.withLock {
            requireIdle("add node \"\(name)\" to")
            return Node(graph: self, index: builder.addNode(name, priority: priority, body: body, subgraph: subgraph))
        }
    }

    /// Adds the edges `each of sources → to` under one lock (`Node.succeeds`).
    func addEdges(from sources: some Sequence<Node>, to target: Int) throws(CycleError) {
        if let failure = withNodes(sources, { addEdgesLocked($0) { (from: $0.index, to: target) } }) { throw failure }
    }

    /// Adds the edges `from → each of targets`, refusing one that closes a cycle (the edges
    /// before it stay). Called by `Node.precedes`; one lock for all of them.
    func addEdges(from: Int, to targets: some Sequence<Node>) throws(CycleError) {
        if let failure = withNodes(targets, { addEdgesLocked($0) { (from: from, to: $0.index) } }) { throw failure }
    }

    /// Calls `body` with the nodes of `sequence` in contiguous memory: its own storage if it has
    /// some (arrays, slices, variadic arguments: reading them runs no code of the caller's), else
    /// a copy made first. A lazy sequence may call back into the graph (`node(at:)`), which must
    /// not happen under the graph's lock.
    private func withNodes(_ sequence: some Sequence<Node>, _ body: (UnsafeBufferPointer<Node>) -> CycleError?) -> CycleError? {
        if let result = sequence.withContiguousStorageIfAvailable(body) { return result }
        return Array(sequence).withUnsafeBufferPointer(body)
    }

    /// Adds the edge `edge(node)` for each of `nodes` under the lock; returns the first cycle.
    private func addEdgesLocked(_ nodes: UnsafeBufferPointer<Node>, _ edge: (Node) -> (from: Int, to: Int)) -> CycleError? {
        lock.lock()
        defer { lock.unlock() }
        requireIdle("add an edge to")
        for node in nodes {
            let (from, to) = edge(node)
            require(node.graph === self,
                    "TaskGraph edge between \"\(name)\" and node #\(node.index) of graph \"\(node.graph.name)\": the nodes belong to different graphs; edges must stay within one graph (use subgraph(_:_:) to nest graphs)")
            do throws(CycleError) {
                try builder.addEdge(from: from, to: to)
            } catch {
                return error
            }
        }
        return nil
    }

    private func requireIdle(_ what: @autoclosure () -> String) {
        require(!runState.isRunning,
                "TaskGraph \"\(name)\": cannot \(what()) the graph while it is running; wait for the run to finish first")
    }

    /// Whether `graph` is among this graph's subgraphs, at any depth.
    func contains(_ graph: TaskGraph) -> Bool {
        let direct = lock.withLock { builder.nodes.compactMap(\.subgraph) }
        return direct.contains { $0 === graph || $0.contains(graph) }
    }

    // MARK: Inspecting

    /// The number of nodes.
    public var nodeCount: Int { lock.withLock { builder.nodeCount } }

    /// The number of edges.
    public var edgeCount: Int { lock.withLock { builder.edgeCount } }

    /// Every node, in the order they were added.
    public var nodes: [Node] { (0..<nodeCount).map { Node(graph: self, index: $0) } }

    /// The node at `index` (in the order nodes were added).
    ///
    /// - Precondition: `0 <= index < nodeCount`.
    /// - Complexity: O(1).
    public func node(at index: Int) -> Node {
        let count = nodeCount
        require(index >= 0 && index < count, "TaskGraph \"\(name)\".node(at: \(index)): the graph has \(count) nodes; use an index in 0..<\(count)")
        return Node(graph: self, index: index)
    }

    /// The nodes `node` precedes, in the order the edges were added.
    public func successors(of node: Node) -> [Node] {
        requireOwn(node, "successors(of:)")
        return lock.withLock { builder.successors(of: node.index).map { Node(graph: self, index: Int($0)) } }
    }

    /// Whether a run is in progress.
    public var isRunning: Bool { runState.isRunning }

    /// The failure of the most recent run that has finished, or nil if it succeeded. Cleared when
    /// the next run starts. Read it after waiting for the run.
    public var lastFailure: NodeFailure? { runState.failure }

    /// How many nodes the most recent finished run skipped: after a node failed, or after the
    /// run's cancellation token (`JobSystem.run(_:cancellation:)`) was cancelled. Read it after
    /// waiting for the run.
    public var lastSkippedNodes: Int { runState.skippedNodes }

    /// Whether the most recent run was given a token that has been cancelled. Read it after
    /// waiting for the run.
    public var lastRunWasCancelled: Bool { runState.wasCancelled }

    /// The graph's completion counter: one pending event per run in progress. `JobSystem.run(_:)`
    /// returns it.
    public var counter: JobCounter { runState.counter }

    func name(of index: Int) -> String { lock.withLock { builder.nodes[index].name } }

    func requireOwn(_ node: Node, _ what: String) {
        require(node.graph === self,
                "TaskGraph \"\(name)\".\(what): node \"\(node.name)\" belongs to graph \"\(node.graph.name)\"; use nodes of this graph")
    }

    // MARK: Running (called by JobSystem and JobContext)

    /// Claims the graph for a run and returns its plan, retained for the run, or nil when the
    /// graph is empty (nothing to run). Traps if a run is in progress.
    func beginRun(cancellation: CancellationToken? = nil) -> Unmanaged<GraphPlan>? {
        lock.withLock {
            require(runState.claim(),
                    "TaskGraph \"\(name)\" run while a previous run is still in progress: wait for the graph's counter first, or build a second graph to run concurrently")
            if builder.nodes.isEmpty {
                runState.finishEmpty()
                return nil
            }
            if plan?.version != builder.version {
                plan = GraphPlan(builder, runState: runState)
            }
            let plan = plan!
            runState.start(sinks: plan.sinkCount, cancellation: cancellation)
            return Unmanaged.passRetained(plan)
        }
    }

    // MARK: Export

    /// The graph in Graphviz DOT: one vertex per node, labelled with its name (subgraphs drawn
    /// as folders, high-priority nodes bold, low-priority nodes dashed), one arrow per edge.
    ///
    /// - Complexity: O(nodes + edges).
    public func dot() -> String {
        lock.withLock {
            var text = "digraph \(Self.quoted(name)) {\n"
            for index in builder.nodes.indices {
                var attributes = ["label=\(Self.quoted(builder.nodes[index].name))"]
                if let subgraph = builder.nodes[index].subgraph {
                    attributes.append("shape=folder")
                    attributes.append("tooltip=\(Self.quoted("subgraph \(subgraph.name)"))")
                }
                switch builder.nodes[index].priority {
                case .high: attributes.append("style=bold")
                case .low: attributes.append("style=dashed")
                case .normal: break
                }
                text += "  n\(index) [\(attributes.joined(separator: ", "))];\n"
            }
            for from in builder.nodes.indices {
                for to in builder.successors(of: from) { text += "  n\(from) -> n\(to);\n" }
            }
            return text + "}\n"
        }
    }

    static func quoted(_ text: String) -> String {
        var result = "\""
        for character in text {
            switch character {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            default: result.append(character)
            }
        }
        return result + "\""
    }
}

extension TaskGraph {
    /// A node of a `TaskGraph`: a handle to add edges with. Holds its graph.
    public struct Node: Hashable, Sendable {
        /// The graph the node belongs to.
        public let graph: TaskGraph
        /// The node's position in `graph.nodes`.
        public let index: Int

        /// The node's name.
        public var name: String { graph.name(of: index) }

        /// Makes each of `successors` wait for this node: they start only after it finished.
        ///
        /// - Throws: `CycleError` naming the cycle if an edge would close one; edges added before
        ///   it in the same call stay. Adding an edge twice has no effect.
        /// - Precondition: the successors belong to the same graph; the graph is not running.
        /// - Complexity: amortized O(1) per edge from a node added before its successor (or
        ///   already ordered before it by earlier edges), the usual case; otherwise the cycle
        ///   search visits only the nodes between the two in the graph's topological order that
        ///   the edge reaches (docs/graphs.md, "Building"). The duplicate check is O(1) for a
        ///   node's newest edge and for nodes with over 16 successors, else O(successors).
        @discardableResult
        public func precedes(_ successors: Node...) throws(CycleError) -> Node {
            try precedes(contentsOf: successors)
        }

        /// `precedes` for a sequence of successors.
        @discardableResult
        public func precedes(contentsOf successors: some Sequence<Node>) throws(CycleError) -> Node {
            try graph.addEdges(from: index, to: successors)
            return self
        }

        /// Makes this node wait for each of `predecessors`.
        ///
        /// - Throws, Precondition, Complexity: as for `precedes(_:)`.
        @discardableResult
        public func succeeds(_ predecessors: Node...) throws(CycleError) -> Node {
            try succeeds(contentsOf: predecessors)
        }

        /// `succeeds` for a sequence of predecessors (one lock for all the edges).
        ///
        /// - Throws, Precondition, Complexity: as for `precedes(_:)`.
        @discardableResult
        public func succeeds(contentsOf predecessors: some Sequence<Node>) throws(CycleError) -> Node {
            try graph.addEdges(from: predecessors, to: index)
            return self
        }

        public static func == (lhs: Node, rhs: Node) -> Bool {
            lhs.graph === rhs.graph && lhs.index == rhs.index
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(ObjectIdentifier(graph))
            hasher.combine(index)
        }
    }

    /// An edge that would have closed a cycle. The graph is unchanged.
    public struct CycleError: Error, Equatable, CustomStringConvertible {
        /// The names of the nodes on the cycle, starting and ending with the edge's source:
        /// `["a", "b", "c", "a"]` for `a → b → c → a`.
        public let cycle: [String]

        public var description: String {
            "TaskGraph cycle: \(cycle.joined(separator: " → ")); remove one of these edges"
        }
    }

    /// The first error thrown by a node during a run.
    public struct NodeFailure: Error, CustomStringConvertible {
        /// The name of the node that threw.
        public let node: String
        /// What it threw (for a subgraph node: the subgraph's `NodeFailure`).
        public let error: any Error

        public var description: String { "TaskGraph node \"\(node)\" failed: \(error)" }
    }
}
