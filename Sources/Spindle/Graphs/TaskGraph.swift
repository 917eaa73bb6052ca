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
    var builder = Builder()
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
        add(name, priority: priority, subgraph: nil, body)
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
        return add(name, priority: priority, subgraph: graph) { context in
            try context.runAndWait(graph)
        }
    }

    private func add(
        _ name: String, priority: Priority, subgraph: TaskGraph?,
        _ body: @escaping @Sendable (JobContext) throws -> Void
    ) -> Node {
        lock.withLock {
            requireIdle("add node \"\(name)\" to")
            let index = builder.names.count
            builder.names.append(name)
            builder.priorities.append(priority)
            builder.bodies.append(NodeBody(call: body))
            builder.successors.append([])
            builder.predecessorCounts.append(0)
            builder.subgraphs.append(subgraph)
            builder.version &+= 1
            return Node(graph: self, index: index)
        }
    }

    /// Adds the edge `from → to`, refusing one that closes a cycle. Called by `Node.precedes`.
    func addEdge(from: Int, to: Int) throws(CycleError) {
        lock.lock()
        defer { lock.unlock() }
        requireIdle("add an edge to")
        if builder.successors[from].contains(Int32(to)) { return }
        if let path = builder.path(from: to, to: from) {
            throw CycleError(cycle: ([from] + path).map { builder.names[$0] })
        }
        builder.successors[from].append(Int32(to))
        builder.predecessorCounts[to] += 1
        builder.edgeCount += 1
        builder.version &+= 1
    }

    private func requireIdle(_ what: String) {
        require(!runState.isRunning,
                "TaskGraph \"\(name)\": cannot \(what) the graph while it is running; wait for the run to finish first")
    }

    /// Whether `graph` is among this graph's subgraphs, at any depth.
    func contains(_ graph: TaskGraph) -> Bool {
        let direct = lock.withLock { builder.subgraphs.compactMap { $0 } }
        return direct.contains { $0 === graph || $0.contains(graph) }
    }

    // MARK: Inspecting

    /// The number of nodes.
    public var nodeCount: Int { lock.withLock { builder.names.count } }

    /// The number of edges.
    public var edgeCount: Int { lock.withLock { builder.edgeCount } }

    /// Every node, in the order they were added.
    public var nodes: [Node] { (0..<nodeCount).map { Node(graph: self, index: $0) } }

    /// The nodes `node` precedes, in the order the edges were added.
    public func successors(of node: Node) -> [Node] {
        requireOwn(node, "successors(of:)")
        return lock.withLock { builder.successors[node.index].map { Node(graph: self, index: Int($0)) } }
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

    func name(of index: Int) -> String { lock.withLock { builder.names[index] } }

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
            if builder.names.isEmpty {
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
            for index in builder.names.indices {
                var attributes = ["label=\(Self.quoted(builder.names[index]))"]
                if let subgraph = builder.subgraphs[index] {
                    attributes.append("shape=folder")
                    attributes.append("tooltip=\(Self.quoted("subgraph \(subgraph.name)"))")
                }
                switch builder.priorities[index] {
                case .high: attributes.append("style=bold")
                case .low: attributes.append("style=dashed")
                case .normal: break
                }
                text += "  n\(index) [\(attributes.joined(separator: ", "))];\n"
            }
            for (from, list) in builder.successors.enumerated() {
                for to in list { text += "  n\(from) -> n\(to);\n" }
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
        /// - Complexity: O(nodes + edges) per edge (the cycle search).
        @discardableResult
        public func precedes(_ successors: Node...) throws(CycleError) -> Node {
            try precedes(contentsOf: successors)
        }

        /// `precedes` for a sequence of successors.
        @discardableResult
        public func precedes(contentsOf successors: some Sequence<Node>) throws(CycleError) -> Node {
            for successor in successors {
                require(successor.graph === graph,
                        "TaskGraph edge \"\(name)\" → \"\(successor.name)\": the nodes belong to different graphs (\"\(graph.name)\" and \"\(successor.graph.name)\"); edges must stay within one graph (use subgraph(_:_:) to nest graphs)")
                try graph.addEdge(from: index, to: successor.index)
            }
            return self
        }

        /// Makes this node wait for each of `predecessors`.
        ///
        /// - Throws, Precondition, Complexity: as for `precedes(_:)`.
        @discardableResult
        public func succeeds(_ predecessors: Node...) throws(CycleError) -> Node {
            for predecessor in predecessors { try predecessor.precedes(self) }
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

// MARK: - Builder

/// A node's body, wrapped so that the plan can hold it in a node's line and call it through its
/// two words (function, context) without copying it (`spindle_throwing_closure_invoke`).
struct NodeBody {
    var call: @Sendable (JobContext) throws -> Void
}

extension TaskGraph {
    /// The graph as built so far (guarded by the graph's lock).
    struct Builder {
        var names: [String] = []
        var priorities: [Priority] = []
        var bodies: [NodeBody] = []
        var successors: [[Int32]] = []
        var predecessorCounts: [Int32] = []
        var subgraphs: [TaskGraph?] = []
        var edgeCount = 0
        /// Changes with every addition, so a run knows when to compile a new plan.
        var version = 0

        /// A path `start → … → goal` along successor edges, if there is one (iterative
        /// depth-first search).
        func path(from start: Int, to goal: Int) -> [Int]? {
            if start == goal { return [start] }
            var parent = [Int32](repeating: -1, count: names.count)
            parent[start] = Int32(start)
            var stack = [start]
            while let node = stack.popLast() {
                for next in successors[node] where parent[Int(next)] < 0 {
                    parent[Int(next)] = Int32(node)
                    if Int(next) == goal {
                        var path = [goal]
                        var current = goal
                        while current != start {
                            current = Int(parent[current])
                            path.append(current)
                        }
                        return path.reversed()
                    }
                    stack.append(Int(next))
                }
            }
            return nil
        }
    }
}
