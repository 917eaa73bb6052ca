import CSpindle
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Building a pipeline run and its shared state: channels, stage runtimes, accounting.
// docs/pipelines.md.

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
        require(!jobs.isShutDown, "Pipeline.start(on:) called after the JobSystem's shutdown(): start pipelines before shutting down")
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
        let runtimes = stages.enumerated().map { StageRuntime(name: $1.name, isSink: $1.isSink, index: $0) }
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
        jobs.pipelineRunStarted(run)
        if sources.isEmpty {
            // No stage reads the source: nothing can be sent; close at once.
            run.sourceState.store(PipelineRunState.closeClaimed, ordering: .relaxed)
        }
        let loops = zip(stages, runtimes).map { stage, runtime in (stage, stage.factory(runtime, run)) }
        for (stage, loop) in loops {
            switch stage.execution {
            case .shared:
                run.jobCounter.increment()
                jobs.scheduler.submitRun(priority: .normal, affinity: .migratable, counter: run.jobCounter,
                                         api: "Pipeline.start(on:)", site: madeByLibrary) { _ in
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
    let isSink: Bool
    /// The stage's index in its pipeline.
    let index: Int
    let inputWaker = Waker()
    let outputWaker = Waker()
    var inputs: [AnyObject] = []
    var outputs: [AnyObject] = []
    var inputOccupancy: [() -> (Int, Int)] = []

    let itemsIn = Atomic<Int>(0)
    let itemsOut = Atomic<Int>(0)
    let discarded = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let filtered = Atomic<Int>(0)
    let busyNanoseconds = Atomic<UInt64>(0)
    let waitingForInputNanoseconds = Atomic<UInt64>(0)
    let waitingForRoomNanoseconds = Atomic<UInt64>(0)

    init(name: String, isSink: Bool, index: Int) {
        self.name = name
        self.isSink = isSink
        self.index = index
    }

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
            failed: failed.load(ordering: .relaxed), filtered: filtered.load(ordering: .relaxed),
            isSink: isSink,
            busy: .nanoseconds(Int64(busyNanoseconds.load(ordering: .relaxed))),
            waitingForInput: .nanoseconds(Int64(waitingForInputNanoseconds.load(ordering: .relaxed))),
            waitingForRoom: .nanoseconds(Int64(waitingForRoomNanoseconds.load(ordering: .relaxed))),
            queued: levels.reduce(0) { $0 + $1.0 }, capacity: levels.reduce(0) { $0 + $1.1 })
    }
}

/// What every stage of a run shares: the stop flag, the first failure, the source's state, the
/// completion counter.
final class PipelineRunState: @unchecked Sendable {
    // SAFETY: `storedFailure`, `sinkStates`, `cancellationHandler` and `finishedAll` only under `lock`; `sourceChannels` is set before any stage or
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
    /// The final states of stateful sinks, by stage index (written when the sink stage ends).
    private var sinkStates: [Int: any Sendable] = [:]
    /// The token that stops this run and the key of its handler there, until the run finishes.
    private var cancellationHandler: (CancellationToken, Int)?
    private var finishedAll = false

    func storeSinkState(_ state: any Sendable, stage: Int) {
        lock.withLock { sinkStates[stage] = state }
    }

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

    /// Stops the run when `token` is cancelled, until the run finishes (docs/pipelines.md,
    /// "Cancellation").
    func stop(when token: CancellationToken) {
        let key = token.addHandler { [weak self] in self?.stop(failure: nil) }
        guard let key else { return }
        let installed = lock.withLock { () -> Bool in
            guard !finishedAll else { return false }
            cancellationHandler = (token, key)
            return true
        }
        if !installed { token.removeHandler(key) }
    }

    func stageFinished() {
        if remainingStages.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            let handler = lock.withLock { () -> (CancellationToken, Int)? in
                finishedAll = true
                defer { cancellationHandler = nil }
                return cancellationHandler
            }
            if let (token, key) = handler { token.removeHandler(key) }
            jobs.pipelineRunFinished(self)
            finishedWord.pointee.store(1, ordering: .releasing)
            _ = Futex.wake(finishedWord, count: Int32.max)
        }
        done.decrement()
    }

    /// Whether the source is still open (no close claimed): the run may still receive items.
    var isSourceOpen: Bool { sourceState.load(ordering: .acquiring) & Self.closeClaimed == 0 }

    func metrics() -> [StageMetrics] { stages.map(\.snapshot) }

    func report() -> PipelineReport {
        let stages = metrics()
        return PipelineReport(accepted: accepted.load(ordering: .relaxed),
                              delivered: stages.reduce(0) { $0 + ($1.isSink ? $1.itemsIn - $1.discarded - $1.failed : 0) },
                              discarded: stages.reduce(0) { $0 + $1.discarded },
                              failed: stages.reduce(0) { $0 + $1.failed },
                              filtered: stages.reduce(0) { $0 + $1.filtered },
                              stopped: isStopped, stages: stages,
                              sinkStates: lock.withLock { sinkStates })
    }
}

/// A type-erased close, for the source's channels.
protocol Closing: AnyObject {
    func closeChannel()
}

extension Channel: Closing {
    func closeChannel() { close() }
}
