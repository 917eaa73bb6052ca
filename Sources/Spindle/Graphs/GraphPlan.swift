import CSpindle
import Synchronization

// The compiled graph and its executor. docs/graphs.md describes the protocol.

/// Per-graph run state: the flags the executor reads, the first failure, the graph's counter.
/// Thread-safe.
final class GraphRunState: @unchecked Sendable {
    // SAFETY: the flags are atomics in `control`; `storedFailure` only under `lock`.

    /// Three cache lines: `failed` (with the run's cancellation token and its count of skipped
    /// nodes, which only cancellation or failure touch), `remaining` (sinks left in the run),
    /// `running`. Raw memory, so a plan can reach them without touching this object's
    /// reference count.
    private let control: RawBlock
    private static var failedSlot: RawSlot<Atomic<Bool>> { RawSlot(line: 0) }
    private static var tokenSlot: RawSlot<Atomic<UInt>> { RawSlot(line: 0, word: 1) }
    private static var skippedSlot: RawSlot<Atomic<Int>> { RawSlot(line: 0, word: 2) }
    private static var remainingSlot: RawSlot<Atomic<Int>> { RawSlot(line: 1) }
    private static var runningSlot: RawSlot<Atomic<Bool>> { RawSlot(line: 2) }
    /// The run's token, held for the run (its address is in `tokenSlot`).
    private var token: CancellationToken?
    let counter = JobCounter()
    private let lock = Lock()
    private var storedFailure: TaskGraph.NodeFailure?

    init() {
        control = .allocate(byteCount: 3 * RawBlock.lineSize, alignment: RawBlock.lineSize)
        control.initialize(Self.failedSlot, to: Atomic(false))
        control.initialize(Self.tokenSlot, to: Atomic(0))
        control.initialize(Self.skippedSlot, to: Atomic(0))
        control.initialize(Self.remainingSlot, to: Atomic(0))
        control.initialize(Self.runningSlot, to: Atomic(false))
    }

    deinit {
        control.deallocate()
    }

    var failed: UnsafeMutablePointer<Atomic<Bool>> { control[Self.failedSlot] }
    var tokenWord: UnsafeMutablePointer<Atomic<UInt>> { control[Self.tokenSlot] }
    var skipped: UnsafeMutablePointer<Atomic<Int>> { control[Self.skippedSlot] }

    /// Nodes the last finished run skipped (after a failure or a cancellation).
    var skippedNodes: Int { skipped.pointee.load(ordering: .relaxed) }

    /// Whether the last run's token was cancelled (read after the run).
    var wasCancelled: Bool { lock.withLock { token?.isCancelled ?? false } }
    var remaining: UnsafeMutablePointer<Atomic<Int>> { control[Self.remainingSlot] }
    var running: UnsafeMutablePointer<Atomic<Bool>> { control[Self.runningSlot] }

    var isRunning: Bool { running.pointee.load(ordering: .acquiring) }

    var failure: TaskGraph.NodeFailure? { lock.withLock { storedFailure } }

    /// Takes the run flag; false if a run is in progress.
    func claim() -> Bool {
        // Acquiring: the previous run's last writes (its finish released the flag).
        running.pointee.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    }

    /// Resets the state for a run over a plan with `sinks` sinks and counts the run.
    func start(sinks: Int, cancellation: CancellationToken?) {
        lock.withLock {
            storedFailure = nil
            token = cancellation
        }
        tokenWord.pointee.store(cancellation.map { UInt(bitPattern: Unmanaged.passUnretained($0).toOpaque()) } ?? 0,
                                ordering: .relaxed)
        skipped.pointee.store(0, ordering: .relaxed)
        failed.pointee.store(false, ordering: .relaxed)
        remaining.pointee.store(sinks, ordering: .relaxed)
        // The launch job is published by the queue that carries it, after these stores.
        counter.increment()
    }

    /// A run of an empty graph: nothing to do.
    func finishEmpty() {
        lock.withLock { storedFailure = nil }
        running.pointee.store(false, ordering: .releasing)
    }

    /// Records `error` thrown by `node` if it is the run's first, and stops the run.
    func fail(node: String, _ error: any Error) {
        if !failed.pointee.exchange(true, ordering: .relaxed) {
            lock.withLock { storedFailure = TaskGraph.NodeFailure(node: node, error: error) }
        }
    }
}

/// A job record that runs graph nodes: `node >= 0` runs that node (and the continuations it
/// leads to); `node == -1` launches a run.
struct GraphRecord: JobRecordKind {
    var header: JobHeader
    var plan: Unmanaged<GraphPlan>
    var node: Int

    static var kind: JobKind { .graphNode }
    static var execute: ExecuteFunction { GraphExecution.executeGraph }
}

/// A node's body as a plan line holds it: the closure's two words, called in place.
struct NodeCall {
    var call: @Sendable (JobContext) throws -> Void
}

/// The body of a node that takes its integer, as a plan line holds it.
struct NodeArgumentCall {
    var call: @Sendable (Int, JobContext) throws -> Void
}

/// A graph compiled for running: one cache line per node, flattened successor lists, roots.
/// Immutable after init except for the pending counts, which each run counts down and restores.
final class GraphPlan: @unchecked Sendable {
    // SAFETY: after init only `pending` counts change, atomically, as docs/graphs.md describes.

    /// One cache line per node: the pending count (counted down by a run, restored by the
    /// owner of the node), where its successors start in `successors` and how many, its
    /// predecessor count (the value restored), its priority, and its body (two words).
    static let lineSize = RawBlock.lineSize
    static var pending: RawSlot<Atomic<Int>> { RawSlot(line: 0, word: 0) }
    static var successorStart: RawSlot<Int32> { RawSlot(byteOffset: 8) }
    static var successorCount: RawSlot<Int32> { RawSlot(byteOffset: 12) }
    static var predecessors: RawSlot<Int32> { RawSlot(byteOffset: 16) }
    static var priority: RawSlot<Priority> { RawSlot(byteOffset: 20) }
    /// Whether the body takes the node's integer (`argument`).
    static var takesArgument: RawSlot<Bool> { RawSlot(byteOffset: 21) }
    static var body: RawSlot<NodeCall> { RawSlot(line: 0, word: 4) }
    static var argument: RawSlot<Int> { RawSlot(line: 0, word: 6) }

    let version: Int
    let nodeCount: Int
    /// The nodes' names (for traces).
    let names: [String]
    let lines: UnsafeMutableRawPointer
    let successors: UnsafeMutablePointer<Int32>
    let roots: [Int32]
    let sinkCount: Int
    let launchPriority: Priority
    let runState: GraphRunState
    /// `runState`'s flags, reached without its reference count.
    let failed: UnsafeMutablePointer<Atomic<Bool>>
    let tokenWord: UnsafeMutablePointer<Atomic<UInt>>
    let skipped: UnsafeMutablePointer<Atomic<Int>>
    let remaining: UnsafeMutablePointer<Atomic<Int>>
    let running: UnsafeMutablePointer<Atomic<Bool>>
    let counter: Unmanaged<JobCounter>

    init(_ builder: TaskGraph.Builder, runState: GraphRunState) {
        version = builder.version
        nodeCount = builder.nodeCount
        names = builder.names
        self.runState = runState
        failed = runState.failed
        tokenWord = runState.tokenWord
        skipped = runState.skipped
        remaining = runState.remaining
        running = runState.running
        counter = Unmanaged.passUnretained(runState.counter)
        lines = .allocate(byteCount: nodeCount * Self.lineSize, alignment: Self.lineSize)
        successors = .allocate(capacity: Swift.max(1, builder.edgeCount))
        Self.checkLayout()
        var start = 0
        var roots: [Int32] = []
        var sinks = 0
        for node in 0..<nodeCount {
            let line = RawBlock(lines + node * Self.lineSize, byteCount: Self.lineSize)
            let entry = builder.nodes[node]
            let predecessors = entry.inDegree
            let count = Int(entry.outDegree)
            line.initialize(Self.pending, to: Atomic(Int(predecessors)))
            line.initialize(Self.successorStart, to: Int32(start))
            line.initialize(Self.successorCount, to: Int32(count))
            line.initialize(Self.predecessors, to: predecessors)
            line.initialize(Self.priority, to: entry.priority)
            switch entry.body {
            case .plain(let body):
                line.initialize(Self.takesArgument, to: false)
                line.initialize(Self.body, to: NodeCall(call: body))
                line.initialize(Self.argument, to: 0)
            case .argument(let argument, let body):
                line.initialize(Self.takesArgument, to: true)
                line[Self.body].withMemoryRebound(to: NodeArgumentCall.self, capacity: 1) {
                    $0.initialize(to: NodeArgumentCall(call: body))
                }
                line.initialize(Self.argument, to: argument)
            }
            builder.writeSuccessors(of: node, to: successors + start)
            start += count
            if predecessors == 0 { roots.append(Int32(node)) }
            if count == 0 { sinks += 1 }
        }
        // Highest priority first among the roots, so the launch job runs the most urgent one.
        roots.sort { builder.nodes[Int($0)].priority.index < builder.nodes[Int($1)].priority.index }
        self.roots = roots
        sinkCount = sinks
        launchPriority = builder.nodes[Int(roots[0])].priority
    }

    /// The line of `node`.
    @inline(__always)
    func line(_ node: Int) -> RawBlock {
        RawBlock(lines + node * Self.lineSize, byteCount: Self.lineSize)
    }

    /// The priority of `node`.
    @inline(__always)
    func priority(of node: Int) -> Priority {
        line(node)[Self.priority].pointee
    }

    /// The executor calls a line's body through its two words; both kinds of body must be
    /// exactly those two words.
    static func checkLayout() {
        require(MemoryLayout<NodeCall>.size == 2 * MemoryLayout<Int>.size
                    && MemoryLayout<NodeArgumentCall>.size == 2 * MemoryLayout<Int>.size,
                "Spindle internal error: graph node body layout changed")
    }

    deinit {
        for node in 0..<nodeCount {
            // Either kind of body is a closure's two words: releasing it as one releases its
            // context.
            line(node)[Self.body].deinitialize(count: 1)
        }
        lines.deallocate()
        successors.deallocate()
    }
}

// MARK: - Executor

enum GraphExecution {
    /// Claims `graph` for a run and hands its launch record to `submit` (which queues it where
    /// the caller runs); returns the graph's counter.
    @inline(__always)
    static func launch(
        _ graph: TaskGraph, cancellation: CancellationToken? = nil,
        submit: (Priority, (UnsafeMutableRawPointer) -> Void) -> Void
    ) -> JobCounter {
        guard let plan = graph.beginRun(cancellation: cancellation) else { return graph.counter }
        let priority = plan._withUnsafeGuaranteedRef { $0.launchPriority }
        submit(priority) { memory in initializeLaunch(memory, plan: plan, priority: priority) }
        return graph.counter
    }

    static func initializeLaunch(_ memory: UnsafeMutableRawPointer, plan: Unmanaged<GraphPlan>, priority: Priority) {
        memory.bindMemory(to: GraphRecord.self, capacity: 1).initialize(to: GraphRecord(
            header: JobHeader(for: GraphRecord.self, counter: nil, priority: priority, pinned: false),
            plan: plan, node: -1))
    }

    static let executeGraph: ExecuteFunction = { memory, rawState in
        let state = rawState.assumingMemoryBound(to: FiberState.self)
        let record = memory.assumingMemoryBound(to: GraphRecord.self)
        let plan = record.pointee.plan
        let first = record.pointee.node
        Execution.markRetired(memory)
        state.pointee.worker.releaseRecord(memory)
        state.pointee.worker.flushDecrements()
        let saved = (state.pointee.currentCounter, state.pointee.priority, state.pointee.pinned)
        #if DEBUG
        let savedOrigin = state.pointee.origin
        #endif
        let ended = plan._withUnsafeGuaranteedRef { plan in
            run(plan, from: first, on: state)
        }
        state.pointee.currentCounter = saved.0
        state.pointee.priority = saved.1
        state.pointee.pinned = saved.2
        #if DEBUG
        state.pointee.origin = savedOrigin
        #endif
        // The run's reference to the plan (taken by `beginRun`): the last touch of the plan.
        if ended { plan.release() }
    }

    /// Runs `first` (or launches the run) and the continuations it leads to. Returns whether
    /// this call ended the run.
    @inline(__always)
    private static func run(_ plan: GraphPlan, from first: Int, on state: UnsafeMutablePointer<FiberState>) -> Bool {
        var node = first
        if node < 0 {
            // Launch: queue every root but the most urgent, which runs here.
            let worker = state.pointee.worker
            for root in plan.roots.dropFirst() { push(Int(root), of: plan, on: worker) }
            node = Int(plan.roots[0])
        }
        let successors = plan.successors
        state.pointee.currentCounter = plan.counter.toOpaque()
        state.pointee.pinned = false
        while true {
            let line = plan.line(node)
            state.pointee.priority = line[GraphPlan.priority].pointee
            #if DEBUG
            state.pointee.origin = JobOrigin(kind: .graphNode, graph: Unmanaged.passUnretained(plan).toOpaque(), node: node)
            #endif
            // Relaxed: a hint; nodes already running finish their bodies in any case.
            if !plan.failed.pointee.load(ordering: .relaxed) && !cancelled(plan) {
                // SAFETY: the body's two words, called without copying the closure; the plan
                // (retained for the run) keeps it alive.
                let before = state.pointee.worker
                let traced = before.isObserved
                if traced {
                    before.observe(.begin, fiber: state, label: .name(plan.names[node]),
                                   priority: state.pointee.priority, detail: UInt(bitPattern: plan.counter.toOpaque()))
                }
                let words = UnsafeMutableRawPointer(line[GraphPlan.body]).assumingMemoryBound(to: UnsafeMutableRawPointer.self)
                let error = line[GraphPlan.takesArgument].pointee
                    ? spindle_throwing_closure_invoke_with_integer(words, line[GraphPlan.argument].pointee, UnsafeMutableRawPointer(state))
                    : spindle_throwing_closure_invoke(words, UnsafeMutableRawPointer(state))
                if let error {
                    plan.runState.fail(node: plan.names[node], takeError(error))
                }
                if traced { state.pointee.worker.observe(.end, fiber: state) }
            } else {
                // Skipped after a failure or a cancellation: counted for `lastSkippedNodes`.
                plan.skipped.pointee.wrappingAdd(1, ordering: .relaxed)
            }
            // The body may have waited and continued on another worker.
            let worker = state.pointee.worker
            worker.count(.jobsRun)
            let start = Int(line[GraphPlan.successorStart].pointee)
            let count = Int(line[GraphPlan.successorCount].pointee)
            if count == 0 {
                // A sink. Acquiring and releasing: the last one sees every node's writes and
                // passes them on to the counter's waiters.
                guard plan.remaining.pointee.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else {
                    return false
                }
                plan.running.pointee.store(false, ordering: .releasing)
                plan.counter._withUnsafeGuaranteedRef { $0.decrement() }
                return true
            }
            var next = -1
            var nextPriority = Priority.high
            for offset in 0..<count {
                let successor = Int(successors[start + offset])
                let successorLine = plan.line(successor)
                let pending = successorLine[GraphPlan.pending]
                // Acquiring and releasing: the owner of the successor sees all its predecessors'
                // writes. Not reaching zero: someone else owns it.
                guard pending.pointee.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { continue }
                // This worker owns `successor` for the run: restore its count for the next run.
                pending.pointee.store(Int(successorLine[GraphPlan.predecessors].pointee), ordering: .relaxed)
                let priority = successorLine[GraphPlan.priority].pointee
                if next < 0 {
                    next = successor
                    nextPriority = priority
                } else if priority < nextPriority {
                    push(next, of: plan, on: worker)
                    next = successor
                    nextPriority = priority
                } else {
                    push(successor, of: plan, on: worker)
                }
            }
            if next < 0 { return false }
            node = next
        }
    }

    /// Whether the run's cancellation token (if any) has been cancelled: one load when the run
    /// has none.
    @inline(__always)
    private static func cancelled(_ plan: GraphPlan) -> Bool {
        let word = plan.tokenWord.pointee.load(ordering: .relaxed)
        guard word != 0 else { return false }
        // SAFETY: the run state holds the token for the run.
        return Unmanaged<CancellationToken>.fromOpaque(UnsafeRawPointer(bitPattern: word)!).takeUnretainedValue().isCancelled
    }

    /// The error a node body threw, from the owned error box `spindle_throwing_closure_invoke`
    /// returned. On this platform `any Error` is one reference to that box.
    private static func takeError(_ box: UnsafeMutableRawPointer) -> any Error {
        let object = Unmanaged<AnyObject>.fromOpaque(box).takeRetainedValue()
        return unsafeBitCast(object, to: (any Error).self)
    }

    /// Queues `node` as a job on `worker`'s deque of the node's priority.
    @inline(__always)
    private static func push(_ node: Int, of plan: GraphPlan, on worker: UnsafeMutablePointer<WorkerState>) {
        let priority = plan.priority(of: node)
        let unmanaged = Unmanaged.passUnretained(plan)
        // This worker runs another node next: the pushed one is for sharing at once.
        worker.markNextPushShared(priority)
        worker.submit(priority: priority, size: MemoryLayout<GraphRecord>.stride) { memory in
            memory.bindMemory(to: GraphRecord.self, capacity: 1).initialize(to: GraphRecord(
                header: JobHeader(for: GraphRecord.self, counter: nil, priority: priority, pinned: false),
                plan: unmanaged, node: node))
        }
    }
}

// MARK: - Entry points

extension JobSystem {
    /// Starts a run of `graph` and returns the graph's counter, which reaches zero when every
    /// node has finished (or been skipped after a failure; see `TaskGraph.lastFailure`).
    ///
    /// From outside the system this queues one launch job; inside one of its jobs, the launch
    /// job goes to the running worker's deque. Never blocks.
    ///
    /// - Precondition: no run of `graph` is in progress; `shutdown()` has not been called.
    /// - Complexity: O(1), plus O(nodes + edges) to compile the graph on the first run after a
    ///   change. No heap allocation once compiled.
    @discardableResult
    public func run(_ graph: TaskGraph) -> JobCounter {
        run(graph, api: "JobSystem.run(_:) of a TaskGraph")
    }

    /// `run(_:)` whose nodes not yet started are skipped once `cancellation` is cancelled
    /// (nodes already running finish; the counter still reaches zero). After the run,
    /// `graph.lastSkippedNodes` says how many were skipped and `graph.lastRunWasCancelled`
    /// whether the token was cancelled.
    ///
    /// - Complexity: as for `run(_:)`, plus one load per node.
    @discardableResult
    public func run(_ graph: TaskGraph, cancellation: CancellationToken) -> JobCounter {
        run(graph, api: "JobSystem.run(_:cancellation:) of a TaskGraph", cancellation: cancellation)
    }

    /// `run(_:)` naming the public call `api` in its misuse messages.
    func run(_ graph: TaskGraph, api: StaticString, cancellation: CancellationToken? = nil) -> JobCounter {
        GraphExecution.launch(graph, cancellation: cancellation) { priority, initialize in
            scheduler.submit(priority: priority, size: MemoryLayout<GraphRecord>.stride, api: api, initialize)
        }
    }

    /// Runs `graph` and returns when it has finished: blocks an outside thread, parks the fiber
    /// inside a job (as `wait(for:)`).
    ///
    /// - Throws: the run's `TaskGraph.NodeFailure` if a node threw.
    /// - Precondition: as for `run(_:)` and `wait(for:)`.
    public func runAndWait(_ graph: TaskGraph) throws(TaskGraph.NodeFailure) {
        wait(for: run(graph, api: "JobSystem.runAndWait(_:)"))
        if let failure = graph.lastFailure { throw failure }
    }
}

extension JobContext {
    /// Starts a run of `graph` from this job: the launch job goes on this worker's deque.
    /// Returns the graph's counter. See `JobSystem.run(_:)`.
    ///
    /// Never blocks or switches fibers.
    @discardableResult
    public func run(_ graph: TaskGraph) -> JobCounter {
        GraphExecution.launch(graph) { priority, initialize in
            state.pointee.worker.submit(priority: priority, size: MemoryLayout<GraphRecord>.stride, initialize)
        }
    }

    /// `run(_:)` with a cancellation token: see `JobSystem.run(_:cancellation:)`.
    ///
    /// Never blocks or switches fibers.
    @discardableResult
    public func run(_ graph: TaskGraph, cancellation: CancellationToken) -> JobCounter {
        GraphExecution.launch(graph, cancellation: cancellation) { priority, initialize in
            state.pointee.worker.submit(priority: priority, size: MemoryLayout<GraphRecord>.stride, initialize)
        }
    }

    /// Runs `graph` and waits for it, parking this job's fiber meanwhile.
    ///
    /// May switch fibers.
    /// - Throws: the run's `TaskGraph.NodeFailure` if a node threw.
    public func runAndWait(_ graph: TaskGraph) throws(TaskGraph.NodeFailure) {
        wait(for: run(graph))
        if let failure = graph.lastFailure { throw failure }
    }
}
