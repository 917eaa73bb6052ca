import Synchronization

/// A streaming pipeline: stages connected by bounded single-producer/single-consumer channels.
///
/// ```swift
/// let pipeline = Pipeline<Data>("images")
/// let decoded = pipeline.source.map("decode") { try decode($0) }             // serial, in order
/// let scaled = decoded.parallelMap("scale") { scale($0) }                     // parallel, in order
/// scaled.sink("write") { try write($0) }
/// let run = try pipeline.start(on: jobs)
/// for file in files { run.send(file) }                                       // waits when full
/// let report = try run.finish()                                               // drains, then waits
/// ```
///
/// Each stage reads its input channels and writes every result to each of its output channels
/// (fan-out: attach several stages to one port); `Pipeline.merge` joins several ports into one
/// (fan-in). A full channel makes its producer wait (backpressure: the stage's fiber parks, or its
/// thread blocks for a dedicated stage); nothing is dropped or reordered. Serial stages handle
/// one item at a time in arrival order and may keep state; parallel stages handle batches on the
/// job system's workers and emit each batch in input order.
///
/// A pipeline is a description: `start(on:)` wires fresh channels and starts one job (or thread)
/// per stage, so it can be started many times, also concurrently.
///
/// Thread-safety: building is thread-safe (a lock) and must finish before `start`; a started run
/// is described at `PipelineRun`.
public final class Pipeline<Input: Sendable>: @unchecked Sendable {
    // SAFETY: all state is in `builder`, which locks.
    /// The pipeline's name (used in stage thread names and failures).
    public let name: String
    let builder: PipelineBuilder

    /// An empty pipeline whose channels hold `channelCapacity` items (rounded up to a power of
    /// two).
    ///
    /// - Precondition: `channelCapacity >= 1`.
    public init(_ name: String = "pipeline", channelCapacity: Int = 1024) {
        require(channelCapacity >= 1, "Pipeline(channelCapacity: \(channelCapacity)): a channel needs room for at least one item")
        self.name = name
        builder = PipelineBuilder(name: name, capacity: channelCapacity)
    }

    /// The items sent into the run (`PipelineRun.send`). Attach stages to it.
    public var source: PipelinePort<Input> { PipelinePort(builder: builder, stage: PipelineBuilder.sourceStage) }

    /// Joins `ports` into one stream (fan-in): a serial stage that forwards the items of every
    /// input as they arrive. Items of one input keep their order; inputs interleave.
    ///
    /// - Precondition: at least one port, all of this pipeline.
    public static func merge<Element>(_ name: String, _ ports: [PipelinePort<Element>]) -> PipelinePort<Element> {
        require(!ports.isEmpty, "Pipeline.merge(\"\(name)\"): give at least one port to merge")
        let builder = ports[0].builder
        for port in ports {
            require(port.builder === builder,
                    "Pipeline.merge(\"\(name)\"): the ports belong to different pipelines; merge ports of one pipeline")
        }
        return ports[0].attach(name, execution: .shared, inputs: ports.map(\.stage)) { (item: Element) -> Element? in item }
    }

    /// Starts a run: creates the channels, then one job per shared stage on `jobs` and one
    /// thread per dedicated stage.
    ///
    /// - Throws: `PipelineError` if a stage's output is not connected (its items would be
    ///   lost), the source has no stage, or a dedicated stage's thread cannot start.
    /// - Complexity: O(stages + channels); allocates the channels.
    public func start(on jobs: JobSystem) throws(PipelineError) -> PipelineRun<Input> {
        let state = try builder.start(on: jobs)
        return PipelineRun(state: state, sources: state.sourceChannels.map { unsafeDowncast($0, to: Channel<Input>.self) })
    }

    /// Starts a run that `cancellation` stops: once the token is cancelled (also before this
    /// call), the run is stopped as by `PipelineRun.cancel()`: stages discard the items in
    /// flight and count them, later sends return false, and `wait()` returns a report whose
    /// `stopped` is true. Stage bodies may also look at `cancellation.isCancelled` to end a
    /// long item sooner.
    ///
    /// - Throws: as `start(on:)`.
    /// - Complexity: as `start(on:)`, plus one handler on the token for the run's duration.
    public func start(on jobs: JobSystem, cancellation: CancellationToken) throws(PipelineError) -> PipelineRun<Input> {
        let run = try start(on: jobs)
        run.state.stop(when: cancellation)
        return run
    }
}

/// How a stage runs.
public enum StageExecution: Sendable, Hashable {
    /// As a job on the system's workers (the default): the stage's fiber parks while it waits.
    case shared
    /// On a thread of its own, named `<prefix><stage name>` (cut to 15 bytes, Linux's limit) so
    /// it shows in `htop` and debuggers, and pinned to `cpu` if given. For latency-critical
    /// stages: it never waits behind other jobs. Waiting blocks the thread on a futex.
    case dedicatedThread(cpu: Int? = nil, namePrefix: String = "sp-")
}

/// Errors from `Pipeline.start(on:)`.
public enum PipelineError: Error, Equatable, CustomStringConvertible {
    /// The source has no stage attached.
    case emptyPipeline(pipeline: String)
    /// A stage's results go nowhere: attach a stage or sink to its port.
    case unconnectedOutput(stage: String)
    /// A dedicated stage asks for a CPU outside the process's allowed set.
    case cpuNotAllowed(stage: String, cpu: Int)
    /// A dedicated stage's thread could not be started (`pthread_create`'s error number).
    case threadStartFailed(stage: String, errno: Int32)

    public var description: String {
        switch self {
        case .emptyPipeline(let pipeline):
            "Pipeline \"\(pipeline)\" has no stages: attach at least a sink to its source"
        case .unconnectedOutput(let stage):
            "Pipeline stage \"\(stage)\" has an output nobody reads, so its items would be lost: attach a stage or a sink to its port"
        case .cpuNotAllowed(let stage, let cpu):
            "Pipeline stage \"\(stage)\" is to run on CPU \(cpu), which this process may not use: pick a CPU from its allowed set (taskset, cgroups) or leave cpu nil"
        case .threadStartFailed(let stage, let errno):
            "Pipeline stage \"\(stage)\": its dedicated thread could not start (pthread_create errno \(errno))"
        }
    }
}

/// The output of a stage (or the pipeline's source): attach downstream stages to it. Attaching
/// several stages to one port sends every item to each of them (fan-out; `Element` is copied).
public struct PipelinePort<Element: Sendable>: Sendable {
    let builder: PipelineBuilder
    /// The producing stage (`PipelineBuilder.sourceStage` for the source).
    let stage: Int

    /// A serial stage: `transform` runs once per item, one item at a time, in arrival order.
    ///
    /// Stages added after a `start` take part in later runs only.
    public func map<Output: Sendable>(
        _ name: String, execution: StageExecution = .shared,
        _ transform: @escaping @Sendable (Element) throws -> Output
    ) -> PipelinePort<Output> {
        attach(name, execution: execution, inputs: [stage]) { try transform($0) }
    }

    /// A serial stage that drops the items for which `transform` returns nil.
    public func compactMap<Output: Sendable>(
        _ name: String, execution: StageExecution = .shared,
        _ transform: @escaping @Sendable (Element) throws -> Output?
    ) -> PipelinePort<Output> {
        attach(name, execution: execution, inputs: [stage], transform)
    }

    /// A serial stage with state: each run starts from `initial`, and `transform` updates it
    /// item by item in arrival order (the state lives in the stage; no locking needed).
    public func map<State: Sendable, Output: Sendable>(
        _ name: String, state initial: State, execution: StageExecution = .shared,
        _ transform: @escaping @Sendable (inout State, Element) throws -> Output
    ) -> PipelinePort<Output> {
        let index = builder.addStage(name, execution: execution, inputs: [stage]) { runtime, run in
            var state = initial
            return StageLoops.serial(runtime, run, inputs: runtime.inputs(Element.self),
                                     outputs: runtime.outputs(Output.self)) { item in
                try transform(&state, item)
            }
        }
        builder.addEdges(from: [stage], to: index, Channel<Element>.self)
        return PipelinePort<Output>(builder: builder, stage: index)
    }

    /// A parallel stage: items are taken in batches of up to `batch` and transformed on the
    /// workers with `parallelMap`; each batch's results are emitted in input order.
    ///
    /// - Precondition: `batch >= 1`.
    public func parallelMap<Output: Sendable>(
        _ name: String, batch: Int = 64, execution: StageExecution = .shared,
        _ transform: @escaping @Sendable (Element) throws -> Output
    ) -> PipelinePort<Output> {
        require(batch >= 1, "PipelinePort.parallelMap(\"\(name)\", batch: \(batch)): a batch needs at least one item")
        let index = builder.addStage(name, execution: execution, inputs: [stage]) { runtime, run in
            StageLoops.parallel(runtime, run, inputs: runtime.inputs(Element.self),
                                outputs: runtime.outputs(Output.self), batch: batch, transform)
        }
        builder.addEdges(from: [stage], to: index, Channel<Element>.self)
        return PipelinePort<Output>(builder: builder, stage: index)
    }

    /// A final stage with state, for results that outlive the run (counts, sums, collected
    /// items) without a class outside the pipeline: each run starts from `initial`, `body`
    /// updates it item by item in arrival order, and the run's `PipelineReport` (from
    /// `finish()` or `wait()`) holds the final state: `report[sink]`.
    ///
    /// ```swift
    /// let counts = words.sink("count", state: [String: Int]()) { counts, word in counts[word, default: 0] += 1 }
    /// let report = try run.finish()
    /// print(report[counts]!)
    /// ```
    @discardableResult
    public func sink<State: Sendable>(
        _ name: String, state initial: State, execution: StageExecution = .shared,
        _ body: @escaping @Sendable (inout State, Element) throws -> Void
    ) -> PipelineSink<State> {
        let index = builder.addStage(name, execution: execution, inputs: [stage], isSink: true) { runtime, run in
            let state = SinkState(initial)
            let loop = StageLoops.serial(runtime, run, inputs: runtime.inputs(Element.self),
                                         outputs: [] as [Channel<Never>]) { item -> Never? in
                try body(&state.value, item)
                return nil
            }
            return {
                loop()
                run.storeSinkState(state.value, stage: runtime.index)
            }
        }
        builder.addEdges(from: [stage], to: index, Channel<Element>.self)
        return PipelineSink(stage: index)
    }

    /// Joins this port and `others` into one stream (fan-in): `Pipeline.merge` as a method, so
    /// the element type comes from the ports.
    ///
    /// - Precondition: all ports belong to one pipeline.
    public func merge(_ name: String, with others: PipelinePort<Element>...) -> PipelinePort<Element> {
        PipelinePort.merge(name, [self] + others)
    }

    /// Joins `ports` into one stream (fan-in). The same as `Pipeline.merge(_:_:)`, callable
    /// without naming the pipeline's input type: `PipelinePort.merge("join", [a, b])`.
    ///
    /// - Precondition: at least one port, all of one pipeline.
    public static func merge(_ name: String, _ ports: [PipelinePort<Element>]) -> PipelinePort<Element> {
        require(!ports.isEmpty, "PipelinePort.merge(\"\(name)\"): give at least one port to merge")
        let builder = ports[0].builder
        for port in ports {
            require(port.builder === builder,
                    "PipelinePort.merge(\"\(name)\"): the ports belong to different pipelines; merge ports of one pipeline")
        }
        return ports[0].attach(name, execution: .shared, inputs: ports.map(\.stage)) { (item: Element) -> Element? in item }
    }

    /// A final stage: `body` consumes each item, serially, in arrival order.
    public func sink(
        _ name: String, execution: StageExecution = .shared,
        _ body: @escaping @Sendable (Element) throws -> Void
    ) {
        let index = builder.addStage(name, execution: execution, inputs: [stage], isSink: true) { runtime, run in
            StageLoops.serial(runtime, run, inputs: runtime.inputs(Element.self),
                              outputs: [] as [Channel<Never>]) { item -> Never? in
                try body(item)
                return nil
            }
        }
        builder.addEdges(from: [stage], to: index, Channel<Element>.self)
    }

    func attach<Output: Sendable>(
        _ name: String, execution: StageExecution, inputs: [Int],
        _ transform: @escaping @Sendable (Element) throws -> Output?
    ) -> PipelinePort<Output> {
        let index = builder.addStage(name, execution: execution, inputs: inputs) { runtime, run in
            StageLoops.serial(runtime, run, inputs: runtime.inputs(Element.self),
                              outputs: runtime.outputs(Output.self), transform)
        }
        builder.addEdges(from: inputs, to: index, Channel<Element>.self)
        return PipelinePort<Output>(builder: builder, stage: index)
    }
}

extension Pipeline where Input == Never {
    /// `Pipeline.merge("join", [a, b])` with the element type taken from the ports: without
    /// this overload, Swift cannot infer the pipeline's `Input` for the static call. The same
    /// as `Pipeline<Input>.merge(_:_:)` and `PipelinePort.merge(_:_:)`.
    ///
    /// - Precondition: at least one port, all of one pipeline.
    public static func merge<Element>(_ name: String, _ ports: [PipelinePort<Element>]) -> PipelinePort<Element> {
        PipelinePort.merge(name, ports)
    }
}

/// The state of one stateful sink in one run: written only by the sink's stage, read after it
/// ended (the stage's completion orders the two).
final class SinkState<State>: @unchecked Sendable {
    var value: State
    init(_ value: State) { self.value = value }
}
