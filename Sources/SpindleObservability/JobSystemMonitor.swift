// A periodic look at a running job system (and its pipelines): a status report through swift-log
// and counters, gauges and timers through swift-metrics. docs/observability.md.

// Compiled with the `SpindleObservability` package trait only (Package.swift).
#if SpindleObservability
import Logging
import Metrics
import Spindle
import Synchronization

/// Watches a job system: every `interval` it reads `JobSystem.metrics()` (and the stage metrics
/// of pipelines it was given), logs a status report when asked to, and reports the changes
/// through swift-metrics.
///
/// ```swift
/// let monitor = JobSystemMonitor(jobs, logger: logger, options: .init(statusReport: true))
/// … // work
/// monitor.stop()   // or let the job system shut down
/// ```
///
/// The workers do no extra work for it: a sample reads their counters from the monitor's thread
/// ("sp-report"). Metrics, all with the label prefix `options.label` (default "spindle"):
///
/// | Label | Kind | Dimensions | What |
/// |---|---|---|---|
/// | `spindle.jobs` | counter | worker | jobs finished |
/// | `spindle.steals` | counter | worker | jobs taken from another worker |
/// | `spindle.steal_attempts` | counter | worker | steal attempts on a non-empty-looking deque |
/// | `spindle.fiber.parks` | counter | worker | fibers parked on a counter or join |
/// | `spindle.sleeps` | counter | worker | times the worker slept on its futex |
/// | `spindle.queue_depth` | gauge | worker | jobs in the worker's deques |
/// | `spindle.workers.sleeping` | gauge | | workers asleep |
/// | `spindle.fiber.stacks` | gauge | | fiber stacks mapped |
/// | `spindle.memory.frame_bytes` | gauge | | frame-allocator memory held |
/// | `spindle.memory.record_bytes` | gauge | | job-record chunk memory |
/// | `spindle.pipeline.items_in`, `…items_out` | counter | pipeline, stage | items through a stage |
/// | `spindle.pipeline.queued` | gauge | pipeline, stage | items waiting in its input channels |
/// | `spindle.pipeline.item_time` | timer | pipeline, stage | busy time per item (mean of a sample) |
/// | `spindle.pipeline.waiting_for_input`, `…waiting_for_room` | timer | pipeline, stage | time blocked in a sample |
///
/// Thread-safety: all members are thread-safe. `sample()` and `stop()` may block for the length
/// of a sample in progress.
public final class JobSystemMonitor: Sendable {
    /// What the monitor reports and how often.
    public struct Options: Sendable {
        /// Time between samples. Default: one second.
        public var interval: Duration
        /// Whether every sample is logged as `spindle.status` (per-worker jobs, steals, parks,
        /// queue depth). Default: off (the start-up and shutdown events are logged regardless
        /// when a logger is given).
        public var statusReport: Bool
        /// The level of the status report. Default: info.
        public var statusLevel: Logger.Level
        /// Whether swift-metrics receives counters, gauges and timers. Default: on.
        public var metrics: Bool
        /// The prefix of every metric label. Default: "spindle".
        public var label: String

        /// Options; every parameter defaults to the documented default of its property.
        public init(interval: Duration = .seconds(1), statusReport: Bool = false, statusLevel: Logger.Level = .info,
                    metrics: Bool = true, label: String = "spindle") {
            self.interval = interval
            self.statusReport = statusReport
            self.statusLevel = statusLevel
            self.metrics = metrics
            self.label = label
        }
    }

    private let jobs: JobSystem
    private let logger: Logger?
    private let options: Options
    private let state: Mutex<State>
    private let report: Mutex<JobSystem.MetricsReport?>

    /// Starts watching `jobs`: the first sample is taken one interval from now.
    ///
    /// - Parameters:
    ///   - logger: where the status report goes; nil for metrics only.
    ///   - metricsFactory: the swift-metrics backend; nil for the one the application
    ///     bootstrapped (`MetricsSystem.factory`).
    /// - Precondition: `options.interval` is positive.
    public init(_ jobs: JobSystem, logger: Logger? = nil, options: Options = Options(),
                metricsFactory: (any MetricsFactory)? = nil) {
        self.jobs = jobs
        self.logger = logger
        self.options = options
        let factory = metricsFactory ?? MetricsSystem.factory
        state = Mutex(State(workers: (0..<jobs.workerCount).map { WorkerMetrics(worker: $0, label: options.label, factory: factory) },
                            system: SystemMetrics(label: options.label, factory: factory),
                            factory: factory))
        report = Mutex(nil)
        let started = jobs.reportMetrics(every: options.interval) { [weak self] snapshot in
            self?.record(snapshot)
        }
        report.withLock { $0 = started }
    }

    deinit {
        report.withLock { $0 }?.stop()
    }

    /// Stops the periodic samples (after one last sample). Idempotent.
    public func stop() {
        guard let running = report.withLock({ report in defer { report = nil }; return report }) else { return }
        running.stop()
        record(jobs.metrics())
    }

    /// Takes a sample now, outside the schedule: logs the status report (if on) and updates
    /// the metrics with what changed since the previous sample.
    public func sample() {
        record(jobs.metrics())
    }

    /// Adds `run`'s stages to every sample until the run finishes (its last counts included).
    /// `name` is the `pipeline` dimension of its metrics.
    public func observe<Input>(_ run: PipelineRun<Input>, name: String) {
        let source = PipelineSource(name: name, metrics: { run.metrics() }, isFinished: { run.isFinished })
        state.withLock { $0.pipelines.append(PipelineState(source: source)) }
    }

    // MARK: Sampling

    private struct State: ~Copyable {
        var previous: JobSystem.Metrics?
        var workers: [WorkerMetrics]
        var system: SystemMetrics
        let factory: any MetricsFactory
        var pipelines: [PipelineState] = []
        var reportedBindFailures = 0
    }

    private func record(_ snapshot: JobSystem.Metrics) {
        state.withLock { state in
            // What each worker did since the previous sample (everything, at the first).
            let changes = snapshot.workers.indices.map { index in
                snapshot.workers[index].changes(since: state.previous?.workers[index] ?? JobSystem.Metrics.Counters())
            }
            if options.metrics {
                for (index, change) in changes.enumerated() where index < state.workers.count {
                    state.workers[index].record(change)
                }
                state.system.record(snapshot)
                for index in state.pipelines.indices {
                    state.pipelines[index].record(label: options.label, factory: state.factory)
                }
            } else {
                for index in state.pipelines.indices { state.pipelines[index].skip() }
            }
            state.pipelines.removeAll { $0.finished }
            if let logger {
                if options.statusReport { logStatus(snapshot, changes: changes, logger: logger) }
                if snapshot.numaBindFailures > state.reportedBindFailures {
                    logger.warning("spindle.numa-bind-refused", metadata: [
                        "refused": "\(snapshot.numaBindFailures)",
                        "errno": "\(snapshot.numaLastBindErrno.map(String.init) ?? "unknown")",
                        "meaning": "the kernel refused to place memory on a node; it is used unplaced",
                    ])
                    state.reportedBindFailures = snapshot.numaBindFailures
                }
            }
            state.previous = snapshot
        }
    }

    private func logStatus(_ snapshot: JobSystem.Metrics, changes: [JobSystem.Metrics.Counters], logger: Logger) {
        let workers: [Logger.MetadataValue] = changes.enumerated().map { index, change in
            .dictionary([
                "worker": "\(index)",
                "jobs": "\(change.jobsRun)",
                "steals": "\(change.steals)",
                "parks": "\(change.fibersParked)",
                "sleeps": "\(change.sleeps)",
                "queued": "\(change.queued)",
            ])
        }
        let total = changes.reduce(JobSystem.Metrics.Counters(), +)
        logger.log(level: options.statusLevel, "spindle.status", metadata: [
            "jobs": "\(total.jobsRun)",
            "steals": "\(total.steals)",
            "queued": "\(total.queued)",
            "injection-pending": "\(snapshot.injectionPending)",
            "sleeping": "\(snapshot.sleepingWorkers)",
            "fiber-stacks": "\(snapshot.fiberStacks)",
            "workers": .array(workers),
        ])
    }
}

extension JobSystem.Metrics.Counters {
    /// The events counted since `earlier` (wrapping differences); the levels (`frameBytes`,
    /// `queued`) as they are now.
    fileprivate func changes(since earlier: Self) -> Self {
        var change = self
        change.jobsRun &-= earlier.jobsRun
        change.stealAttempts &-= earlier.stealAttempts
        change.steals &-= earlier.steals
        change.fibersCreated &-= earlier.fibersCreated
        change.fibersParked &-= earlier.fibersParked
        change.fibersResumed &-= earlier.fibersResumed
        change.sleeps &-= earlier.sleeps
        change.wakeups &-= earlier.wakeups
        return change
    }
}

/// Makes swift-metrics handles named `<label>.<name>` with one set of dimensions.
private struct MetricMaker {
    let label: String
    let dimensions: [(String, String)]
    let factory: any MetricsFactory

    func counter(_ name: String) -> Counter {
        Counter(label: "\(label).\(name)", dimensions: dimensions, factory: factory)
    }

    func gauge(_ name: String) -> Gauge {
        Gauge(label: "\(label).\(name)", dimensions: dimensions, factory: factory)
    }

    func timer(_ name: String) -> Timer {
        Timer(label: "\(label).\(name)", dimensions: dimensions, factory: factory)
    }
}

/// The swift-metrics handles of one worker.
private struct WorkerMetrics {
    let jobs, steals, stealAttempts, parks, sleeps: Counter
    let queued: Gauge

    init(worker: Int, label: String, factory: any MetricsFactory) {
        let make = MetricMaker(label: label, dimensions: [("worker", String(worker))], factory: factory)
        jobs = make.counter("jobs")
        steals = make.counter("steals")
        stealAttempts = make.counter("steal_attempts")
        parks = make.counter("fiber.parks")
        sleeps = make.counter("sleeps")
        queued = make.gauge("queue_depth")
    }

    /// `change`: what the worker did since the previous sample (`changes(since:)`).
    func record(_ change: JobSystem.Metrics.Counters) {
        for (count, counter) in [(change.jobsRun, jobs), (change.steals, steals), (change.stealAttempts, stealAttempts),
                                 (change.fibersParked, parks), (change.sleeps, sleeps)] where count > 0 {
            counter.increment(by: Int64(clamping: count))
        }
        queued.record(Int64(clamping: change.queued))
    }
}

/// The swift-metrics handles of the system as a whole.
private struct SystemMetrics {
    let sleeping, fiberStacks, frameBytes, recordBytes: Gauge

    init(label: String, factory: any MetricsFactory) {
        let make = MetricMaker(label: label, dimensions: [], factory: factory)
        sleeping = make.gauge("workers.sleeping")
        fiberStacks = make.gauge("fiber.stacks")
        frameBytes = make.gauge("memory.frame_bytes")
        recordBytes = make.gauge("memory.record_bytes")
    }

    func record(_ snapshot: JobSystem.Metrics) {
        sleeping.record(snapshot.sleepingWorkers)
        fiberStacks.record(snapshot.fiberStacks)
        frameBytes.record(Int64(clamping: snapshot.total.frameBytes))
        recordBytes.record(snapshot.recordBytes)
    }
}

/// A pipeline run, type-erased.
private struct PipelineSource: Sendable {
    let name: String
    let metrics: @Sendable () -> [StageMetrics]
    let isFinished: @Sendable () -> Bool
}

/// A watched pipeline: its handles per stage and the previous sample.
private struct PipelineState {
    let source: PipelineSource
    var previous: [StageMetrics] = []
    var handles: [StageHandles] = []
    var finished = false

    init(source: PipelineSource) { self.source = source }

    /// The swift-metrics handles of one stage, made when the stage is first seen.
    struct StageHandles {
        let itemsIn, itemsOut: Counter
        let queued: Gauge
        let itemTime, waitingForInput, waitingForRoom: Timer

        init(label: String, pipeline: String, stage: String, factory: any MetricsFactory) {
            let make = MetricMaker(label: "\(label).pipeline", dimensions: [("pipeline", pipeline), ("stage", stage)], factory: factory)
            itemsIn = make.counter("items_in")
            itemsOut = make.counter("items_out")
            queued = make.gauge("queued")
            itemTime = make.timer("item_time")
            waitingForInput = make.timer("waiting_for_input")
            waitingForRoom = make.timer("waiting_for_room")
        }
    }

    /// Reads the stages (finished is read first, so a finished run's last counts are included).
    private mutating func read() -> [StageMetrics] {
        finished = source.isFinished()
        return source.metrics()
    }

    mutating func skip() {
        previous = read()
    }

    mutating func record(label: String, factory: any MetricsFactory) {
        let stages = read()
        // A run's stages keep their order and number, so a stage is known by its index.
        for (index, stage) in stages.enumerated() {
            if index == handles.count {
                handles.append(StageHandles(label: label, pipeline: source.name, stage: stage.name, factory: factory))
            }
            let stageHandles = handles[index]
            let old = index < previous.count ? previous[index] : nil
            let itemsIn = stage.itemsIn - (old?.itemsIn ?? 0)
            let itemsOut = stage.itemsOut - (old?.itemsOut ?? 0)
            if itemsIn > 0 { stageHandles.itemsIn.increment(by: itemsIn) }
            if itemsOut > 0 { stageHandles.itemsOut.increment(by: itemsOut) }
            stageHandles.queued.record(stage.queued)
            if itemsIn > 0 {
                stageHandles.itemTime.recordNanoseconds(Self.nanoseconds(stage.busy - (old?.busy ?? .zero)) / Int64(itemsIn))
            }
            stageHandles.waitingForInput.recordNanoseconds(Self.nanoseconds(stage.waitingForInput - (old?.waitingForInput ?? .zero)))
            stageHandles.waitingForRoom.recordNanoseconds(Self.nanoseconds(stage.waitingForRoom - (old?.waitingForRoom ?? .zero)))
        }
        previous = stages
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return max(0, seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
    }
}
#endif  // SpindleObservability
