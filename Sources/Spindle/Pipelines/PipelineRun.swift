import CSpindle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A started pipeline: send items, close or cancel, wait for the report.
///
/// Thread-safety: `send` and `close` belong to one producer at a time (sending from two threads
/// at once traps); `cancel`, `wait`, `finish`, `metrics` and `reportMetrics` may be called from
/// any thread.
public final class PipelineRun<Input: Sendable>: @unchecked Sendable {
    // SAFETY: `source` is used by the one producer `sourceState` admits; the rest is thread-safe.
    let state: PipelineRunState
    private let sources: [Channel<Input>]

    init(state: PipelineRunState, sources: [Channel<Input>]) {
        self.state = state
        self.sources = sources
    }

    /// Sends `item` into the pipeline, waiting while the first stage's channel is full (parks the
    /// fiber inside a job, blocks the thread outside). Returns false, without sending, once the
    /// run was cancelled or a stage failed.
    ///
    /// - Precondition: not after `close()`; not from two threads at once.
    /// - Complexity: O(1) amortized; no allocation.
    @discardableResult
    public func send(_ item: Input) -> Bool {
        guard state.beginSend() else { return false }
        let accepted = push(item)
        if accepted { for index in 0..<sources.count { sources[index].publish() } }
        state.endSend(accepted: accepted ? 1 : 0)
        return accepted
    }

    /// Sends every item of `items` (publishing them in batches). Returns how many were accepted:
    /// all of them unless the run was cancelled or failed meanwhile.
    ///
    /// - Precondition: as for `send(_:)`.
    @discardableResult
    public func send(contentsOf items: some Sequence<Input>) -> Int {
        guard state.beginSend() else { return 0 }
        var accepted = 0
        for item in items {
            guard push(item) else { break }
            accepted += 1
        }
        for index in 0..<sources.count { sources[index].publish() }
        state.endSend(accepted: accepted)
        return accepted
    }

    private func push(_ item: Input) -> Bool {
        // Index loops here and in the stage loops: this code runs unspecialized when `Input` is
        // a client's type, and iterating an array through `Sequence` there allocates an
        // iterator per loop.
        for index in 0..<sources.count where !sources[index].tryPush(item) {
            let channel = sources[index]
            channel.publish()
            state.sourceWaker.wait(on: state.jobs) { channel.hasRoom() || state.isStopped }
            if !channel.tryPush(item) { return false }
        }
        return true
    }

    /// Ends the input: the stages finish every item sent, then stop. Idempotent.
    ///
    /// - Precondition: not while another thread is in `send`.
    public func close() {
        state.closeSource()
    }

    /// Stops the run: stages stop transforming, and every item still in a channel is discarded
    /// and counted (`PipelineReport.discarded`); later sends return false. Returns at once; wait
    /// for the report with `wait()`. Idempotent.
    public func cancel() {
        state.stop(failure: nil)
    }

    /// Waits until every stage has finished (after `close()` or `cancel()`, or a failure), and
    /// returns the report. Blocks the thread outside a job; parks the fiber inside one.
    ///
    /// - Throws: `PipelineFailure` if a stage threw (the run was stopped at the first error).
    public func wait() throws(PipelineFailure) -> PipelineReport {
        state.jobs.wait(for: state.done)
        let report = state.report()
        if let failure = state.failure {
            throw PipelineFailure(stage: failure.stage, error: failure.error, report: report)
        }
        return report
    }

    /// `close()`, then `wait()`.
    public func finish() throws(PipelineFailure) -> PipelineReport {
        close()
        return try wait()
    }

    /// Whether every stage has finished.
    public var isFinished: Bool { state.done.isComplete }

    /// A snapshot of every stage's counters, in the order the stages were added.
    public func metrics() -> [StageMetrics] { state.metrics() }

    /// Calls `handler` with a metrics snapshot every `interval` until the run finishes, from a
    /// thread of its own (named "sp-metrics"). Off unless called.
    ///
    /// - Precondition: `interval` is positive.
    public func reportMetrics(every interval: Duration, _ handler: @escaping @Sendable ([StageMetrics]) -> Void) {
        require(interval.nanosecondsSaturated > 0, "PipelineRun.reportMetrics(every: \(interval)): the interval must be positive")
        let state = self.state
        OSThread.repeating(name: "sp-metrics", every: interval, stop: { state.finishedWord }) {
            handler(state.metrics())
        }
    }
}

/// What a finished run did.
public struct PipelineReport: Sendable, Equatable {
    /// Items `send` accepted.
    public let accepted: Int
    /// Items discarded after a cancellation or failure: the items that were in flight. An item
    /// copied to two branches (fan-out) counts once per branch that discarded it.
    public let discarded: Int
    /// Whether the run was stopped by `cancel()` or a failure rather than by closing the input.
    public let stopped: Bool
    /// Every stage's counters at the end.
    public let stages: [StageMetrics]
}

/// The first error a stage threw; the run was stopped there.
public struct PipelineFailure: Error, CustomStringConvertible {
    /// The stage that threw.
    public let stage: String
    /// What it threw.
    public let error: any Error
    /// The run's report (its `discarded` counts the items stopped in flight).
    public let report: PipelineReport

    public var description: String { "Pipeline stage \"\(stage)\" failed: \(error)" }
}

/// One stage's counters.
public struct StageMetrics: Sendable, Equatable {
    /// The stage's name.
    public let name: String
    /// Items the stage took from its inputs.
    public let itemsIn: Int
    /// Items it wrote (to each output: a fan-out of two counts an item once).
    public let itemsOut: Int
    /// Items it discarded after the run was stopped.
    public let discarded: Int
    /// Time spent transforming items.
    public let busy: Duration
    /// Time spent waiting for input.
    public let waitingForInput: Duration
    /// Time spent waiting for room in an output (backpressure).
    public let waitingForRoom: Duration
    /// Items queued in the stage's input channels at the snapshot.
    public let queued: Int
    /// The capacity of its input channels together.
    public let capacity: Int
}

// MARK: - Building

/// The untyped description of a pipeline. Thread-safe (a lock).
final class PipelineBuilder: @unchecked Sendable {
    // SAFETY: `stages` and `edges` only under `lock`.
    static let sourceStage = -1

    typealias Factory = @Sendable (StageRuntime, PipelineRunState) -> @Sendable () -> Void

    struct Stage {
        let name: String
        let execution: StageExecution
        let isSink: Bool
        let factory: Factory
    }

    struct Edge {
        let from: Int
        let to: Int
        let make: @Sendable (Int, Waker, Waker) -> AnyObject
    }

    let name: String
    let capacity: Int
    private let lock = Lock()
    private var stages: [Stage] = []
    private var edges: [Edge] = []

    init(name: String, capacity: Int) {
        self.name = name
        self.capacity = capacity
    }

    func addStage(_ name: String, execution: StageExecution, inputs: [Int], isSink: Bool = false,
                  _ factory: @escaping Factory) -> Int {
        lock.withLock {
            stages.append(Stage(name: name, execution: execution, isSink: isSink, factory: factory))
            return stages.count - 1
        }
    }

    func addEdges<Element: Sendable>(from producers: [Int], to consumer: Int, _: Channel<Element>.Type) {
        lock.withLock {
            for producer in producers {
                edges.append(Edge(from: producer, to: consumer) { capacity, consumerWaker, producerWaker in
                    Channel<Element>(capacity: capacity, consumer: consumerWaker, producer: producerWaker)
                })
            }
        }
    }

    func start(on jobs: JobSystem) throws(PipelineError) -> PipelineRunState {
        let (stages, edges) = lock.withLock { (self.stages, self.edges) }
        guard !stages.isEmpty else { throw .emptyPipeline(pipeline: name) }
        for (index, stage) in stages.enumerated() where !stage.isSink && !edges.contains(where: { $0.from == index }) {
            throw .unconnectedOutput(stage: stage.name)
        }
        let allowed = (try? CPUSet.allowed()) ?? CPUSet()
        for stage in stages {
            if case .dedicatedThread(let cpu?, _) = stage.execution, !allowed.contains(cpu) {
                throw .cpuNotAllowed(stage: stage.name, cpu: cpu)
            }
        }
        let runtimes = stages.map { StageRuntime(name: $0.name) }
        let run = PipelineRunState(jobs: jobs, stages: runtimes)
        var sources: [AnyObject] = []
        for edge in edges {
            let consumer = runtimes[edge.to]
            let producerWaker = edge.from == Self.sourceStage ? run.sourceWaker : runtimes[edge.from].outputWaker
            let channel = edge.make(capacity, consumer.inputWaker, producerWaker)
            consumer.inputs.append(channel)
            consumer.inputOccupancy.append { (channel as! any OccupancyReporting).occupancyAndCapacity }
            if edge.from == Self.sourceStage { sources.append(channel) } else { runtimes[edge.from].outputs.append(channel) }
        }
        run.sourceChannels = sources
        if sources.isEmpty {
            // No stage reads the source: nothing can be sent; close at once.
            run.sourceState.store(PipelineRunState.closeClaimed, ordering: .relaxed)
        }
        let loops = zip(stages, runtimes).map { stage, runtime in (stage, stage.factory(runtime, run)) }
        for (stage, loop) in loops {
            switch stage.execution {
            case .shared:
                jobs.run(counter: run.jobCounter) { _ in
                    loop()
                    run.stageFinished()
                }
            case .dedicatedThread(let cpu, let prefix):
                let name = String((prefix + stage.name).utf8.prefix(15))!
                let started = OSThread.detach(name: name, cpu: cpu) {
                    loop()
                    run.stageFinished()
                }
                if let errno = started {
                    // The other stages already run: stop them, count this one as finished.
                    run.stop(failure: nil)
                    run.stageFinished()
                    throw .threadStartFailed(stage: stage.name, errno: errno)
                }
            }
        }
        return run
    }
}

/// Anything that can report its fill level (a type-erased channel).
protocol OccupancyReporting: AnyObject {
    var occupancyAndCapacity: (Int, Int) { get }
}

extension Channel: OccupancyReporting {
    var occupancyAndCapacity: (Int, Int) { (occupancy, capacity) }
}

// MARK: - Run state

/// One stage of a run: its channels, wakers and counters.
final class StageRuntime: @unchecked Sendable {
    // SAFETY: `inputs`, `outputs`, `inputOccupancy` are set before the stage starts and then
    // read-only; counters have one writer (the stage) and are atomics.
    let name: String
    let inputWaker = Waker()
    let outputWaker = Waker()
    var inputs: [AnyObject] = []
    var outputs: [AnyObject] = []
    var inputOccupancy: [() -> (Int, Int)] = []

    let itemsIn = Atomic<Int>(0)
    let itemsOut = Atomic<Int>(0)
    let discarded = Atomic<Int>(0)
    let busyNanoseconds = Atomic<UInt64>(0)
    let waitingForInputNanoseconds = Atomic<UInt64>(0)
    let waitingForRoomNanoseconds = Atomic<UInt64>(0)

    init(name: String) { self.name = name }

    func inputs<Element>(_: Element.Type) -> [Channel<Element>] { inputs.map { unsafeDowncast($0, to: Channel<Element>.self) } }
    func outputs<Element>(_: Element.Type) -> [Channel<Element>] { outputs.map { unsafeDowncast($0, to: Channel<Element>.self) } }

    /// Adds to a counter this stage alone writes.
    @inline(__always)
    static func add(_ counter: borrowing Atomic<Int>, _ amount: Int) {
        counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    @inline(__always)
    static func add(_ counter: borrowing Atomic<UInt64>, _ amount: UInt64) {
        counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    var snapshot: StageMetrics {
        let levels = inputOccupancy.map { $0() }
        return StageMetrics(
            name: name,
            itemsIn: itemsIn.load(ordering: .relaxed), itemsOut: itemsOut.load(ordering: .relaxed),
            discarded: discarded.load(ordering: .relaxed),
            busy: .nanoseconds(Int64(busyNanoseconds.load(ordering: .relaxed))),
            waitingForInput: .nanoseconds(Int64(waitingForInputNanoseconds.load(ordering: .relaxed))),
            waitingForRoom: .nanoseconds(Int64(waitingForRoomNanoseconds.load(ordering: .relaxed))),
            queued: levels.reduce(0) { $0 + $1.0 }, capacity: levels.reduce(0) { $0 + $1.1 })
    }
}

/// What every stage of a run shares: the stop flag, the first failure, the source's state, the
/// completion counter.
final class PipelineRunState: @unchecked Sendable {
    // SAFETY: `storedFailure` only under `lock`; `sourceChannels` is set before any stage or
    // sender runs; the rest are atomics.
    let jobs: JobSystem
    let stages: [StageRuntime]
    let sourceWaker = Waker()
    var sourceChannels: [AnyObject] = []
    /// One per stage: zero when all have finished.
    let done: JobCounter
    /// The counter the stage jobs are started with (unused for waiting).
    let jobCounter = JobCounter()
    /// Set to 1 (and futex-woken) when the last stage finishes: the metrics reporter's stop.
    let finishedWord: UnsafeMutablePointer<Atomic<UInt32>>
    private let remainingStages: Atomic<Int>
    private let stopped = Atomic<Bool>(false)
    private let lock = Lock()
    private var storedFailure: (stage: String, error: any Error)?

    /// `sourceState` bits: a sender is inside `send`; the run was stopped; the source's close
    /// has been claimed (by `close()`, or by the stop on the sender's behalf).
    static let sending = 1
    static let stopRequested = 2
    static let closeClaimed = 4
    let sourceState = Atomic<Int>(0)
    let accepted = Atomic<Int>(0)

    init(jobs: JobSystem, stages: [StageRuntime]) {
        self.jobs = jobs
        self.stages = stages
        done = JobCounter(stages.count)
        remainingStages = Atomic(stages.count)
        finishedWord = .allocate(capacity: 1)
        finishedWord.initialize(to: Atomic(0))
    }

    deinit {
        finishedWord.deallocate()
    }

    var isStopped: Bool { stopped.load(ordering: .relaxed) }

    var failure: (stage: String, error: any Error)? { lock.withLock { storedFailure } }

    /// Records the first failure (if `failure` is given) and stops the run: stages discard what
    /// is queued, the source closes once no sender is inside `send`.
    func stop(failure: (stage: String, error: any Error)?) {
        if let failure {
            lock.withLock { if storedFailure == nil { storedFailure = failure } }
        }
        stopped.store(true, ordering: .sequentiallyConsistent)
        // Acquiring and releasing: the last sender's producer-side state, if we close for it.
        let old = sourceState.bitwiseOr(Self.stopRequested, ordering: .acquiringAndReleasing).oldValue
        if old & Self.sending == 0 { claimAndCloseSource() }
        // A sender blocked on a full source re-checks `isStopped`.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        sourceWaker.signal()
    }

    /// Admits a sender. False once the run is stopped.
    func beginSend() -> Bool {
        let old = sourceState.bitwiseOr(Self.sending, ordering: .acquiringAndReleasing).oldValue
        require(old & Self.sending == 0,
                "PipelineRun.send called from two threads at once: the source has a single producer; send from one thread (or serialise the senders)")
        if old & Self.stopRequested != 0 {
            _ = sourceState.bitwiseAnd(~Self.sending, ordering: .acquiringAndReleasing).oldValue
            return false
        }
        require(old & Self.closeClaimed == 0,
                "PipelineRun.send after close(): the input has ended; send every item before closing")
        return true
    }

    func endSend(accepted count: Int) {
        accepted.wrappingAdd(count, ordering: .relaxed)
        let old = sourceState.bitwiseAnd(~Self.sending, ordering: .acquiringAndReleasing).oldValue
        // A stop arrived while we were sending: it left the close to us.
        if old & Self.stopRequested != 0 { claimAndCloseSource() }
    }

    func closeSource() {
        let old = sourceState.load(ordering: .relaxed)
        require(old & Self.sending == 0,
                "PipelineRun.close() while another thread is in send: close from the sending thread, after its last send")
        claimAndCloseSource()
    }

    private func claimAndCloseSource() {
        let old = sourceState.bitwiseOr(Self.closeClaimed, ordering: .acquiringAndReleasing).oldValue
        guard old & Self.closeClaimed == 0 else { return }
        for channel in sourceChannels { (channel as! any Closing).closeChannel() }
    }

    func fail(stage: String, _ error: any Error) {
        stop(failure: (stage, error))
    }

    func stageFinished() {
        if remainingStages.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            finishedWord.pointee.store(1, ordering: .releasing)
            _ = Futex.wake(finishedWord, count: Int32.max)
        }
        done.decrement()
    }

    func metrics() -> [StageMetrics] { stages.map(\.snapshot) }

    func report() -> PipelineReport {
        let stages = metrics()
        return PipelineReport(accepted: accepted.load(ordering: .relaxed),
                              discarded: stages.reduce(0) { $0 + $1.discarded },
                              stopped: isStopped, stages: stages)
    }
}

/// A type-erased close, for the source's channels.
protocol Closing: AnyObject {
    func closeChannel()
}

extension Channel: Closing {
    func closeChannel() { close() }
}

// MARK: - Stage loops

/// The loops stages run. docs/pipelines.md, "Stages".
enum StageLoops {
    /// Items taken from one input before looking at the next.
    static let pass = 64

    /// A serial stage: one item at a time, in arrival order; `transform` returning nil drops the
    /// item (compactMap; sinks).
    static func serial<Input: Sendable, Output: Sendable>(
        _ stage: StageRuntime, _ run: PipelineRunState, inputs: [Channel<Input>], outputs: [Channel<Output>],
        _ transform: @escaping (Input) throws -> Output?
    ) -> @Sendable () -> Void {
        let body = UncheckedSendable(transform)
        return {
            var live = inputs
            while !live.isEmpty {
                let start = MonotonicTime.now()
                var took = 0
                for index in 0..<live.count {
                    let channel = live[index]
                    var taken = 0
                    while taken < pass, let item = channel.tryPop() {
                        taken += 1
                        if run.isStopped {
                            StageRuntime.add(stage.discarded, 1)
                            continue
                        }
                        do {
                            if let result = try body.value(item) {
                                send(result, to: outputs, stage, run, inputs: live)
                            }
                        } catch {
                            run.fail(stage: stage.name, error)
                        }
                    }
                    took += taken
                }
                StageRuntime.add(stage.itemsIn, took)
                StageRuntime.add(stage.busyNanoseconds, MonotonicTime.now() &- start)
                if took == 0 {
                    live = waitForInput(live, outputs, stage, run)
                }
            }
            for output in outputs { output.close() }
        }
    }

    /// A parallel stage: batches of up to `batch` items transformed with `parallelMap`, each
    /// batch emitted in input order.
    static func parallel<Input: Sendable, Output: Sendable>(
        _ stage: StageRuntime, _ run: PipelineRunState, inputs: [Channel<Input>], outputs: [Channel<Output>],
        batch: Int, _ transform: @escaping @Sendable (Input) throws -> Output
    ) -> @Sendable () -> Void {
        return {
            var live = inputs
            var items: [Input] = []
            items.reserveCapacity(batch)
            while !live.isEmpty {
                items.removeAll(keepingCapacity: true)
                for index in 0..<live.count {
                    let channel = live[index]
                    while items.count < batch, let item = channel.tryPop() { items.append(item) }
                }
                if items.isEmpty {
                    live = waitForInput(live, outputs, stage, run)
                    continue
                }
                StageRuntime.add(stage.itemsIn, items.count)
                if run.isStopped {
                    StageRuntime.add(stage.discarded, items.count)
                    continue
                }
                let start = MonotonicTime.now()
                let batchItems = items
                do {
                    let results = try run.jobs.parallelMap(0..<batchItems.count, partitioner: .fixed(grain: 1)) { index in
                        try transform(batchItems[index])
                    }
                    StageRuntime.add(stage.busyNanoseconds, MonotonicTime.now() &- start)
                    for index in 0..<results.count { send(results[index], to: outputs, stage, run, inputs: live) }
                } catch {
                    run.fail(stage: stage.name, error)
                }
            }
            for output in outputs { output.close() }
        }
    }

    /// Writes `item` to every output, waiting for room (after releasing the inputs' slots and
    /// publishing what the outputs hold, so nobody waits on us meanwhile).
    @inline(__always)
    static func send<Input, Output>(_ item: Output, to outputs: [Channel<Output>], _ stage: StageRuntime,
                                    _ run: PipelineRunState, inputs: [Channel<Input>]) {
        for index in 0..<outputs.count where !outputs[index].tryPush(item) {
            let output = outputs[index]
            flush(inputs, outputs)
            let start = MonotonicTime.now()
            stage.outputWaker.wait(on: run.jobs) { output.hasRoom() }
            StageRuntime.add(stage.waitingForRoomNanoseconds, MonotonicTime.now() &- start)
            let pushed = output.tryPush(item)
            require(pushed, "Spindle pipeline: a channel reported room but refused an item (a bug in Spindle)")
        }
        StageRuntime.add(stage.itemsOut, 1)
    }

    /// Nothing to take: release and publish, drop finished inputs, and wait for an item or a
    /// close. Returns the inputs still open.
    static func waitForInput<Input, Output>(_ live: [Channel<Input>], _ outputs: [Channel<Output>],
                                            _ stage: StageRuntime, _ run: PipelineRunState) -> [Channel<Input>] {
        flush(live, outputs)
        // The same array unless an input finished: no allocation per wait.
        let open = any(live) { $0.isFinished() } ? live.filter { !$0.isFinished() } : live
        if open.isEmpty { return open }
        let start = MonotonicTime.now()
        stage.inputWaker.wait(on: run.jobs) { any(open) { $0.hasItemOrIsClosed() } }
        StageRuntime.add(stage.waitingForInputNanoseconds, MonotonicTime.now() &- start)
        return open
    }

    @inline(__always)
    static func flush<Input, Output>(_ inputs: [Channel<Input>], _ outputs: [Channel<Output>]) {
        for index in 0..<inputs.count { inputs[index].release() }
        for index in 0..<outputs.count { outputs[index].publish() }
    }

    /// Whether `test` holds for one of `channels` (an index loop: see `PipelineRun.push`).
    @inline(__always)
    static func any<Element>(_ channels: [Channel<Element>], _ test: (Channel<Element>) -> Bool) -> Bool {
        for index in 0..<channels.count where test(channels[index]) { return true }
        return false
    }
}

/// A closure the stage loop alone calls (the loop runs on one fiber or thread at a time).
struct UncheckedSendable<Value>: @unchecked Sendable {
    // SAFETY: used by a single stage loop.
    let value: Value
    init(_ value: Value) { self.value = value }
}
