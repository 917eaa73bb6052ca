// Compiled with the `SpindleObservability` package trait only (`swift test --enable-all-traits`).
#if SpindleObservability
import Logging
import Metrics
import MetricsTestKit
import Spindle
import SpindleObservability
import Synchronization
import Testing

/// Keeps every record logged through it.
final class RecordingLog: Sendable {
    struct Record: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: Logger.Metadata
    }

    private let records = Mutex<[Record]>([])

    var all: [Record] { records.withLock { $0 } }

    func messages(_ message: String) -> [Record] { all.filter { $0.message == message } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: RecordingLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let record = Record(level: event.level, message: "\(event.message)", metadata: event.metadata ?? [:])
            log.records.withLock { $0.append(record) }
        }
    }
}

@Suite
struct ObservabilityTests {
    @Test(arguments: [1, 2, 4])
    func startAndShutdownAreLoggedWithWhatTheSystemIs(workers: Int) throws {
        let log = RecordingLog()
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: workers), logger: log.logger)
        let done = jobs.run(count: 40) { _, _ in }
        jobs.wait(for: done)
        #expect(log.messages("spindle.stopped").isEmpty, "nothing is logged as stopped before shutdown")
        jobs.shutdown()

        let started = try #require(log.messages("spindle.started").first)
        #expect(started.level == .info)
        #expect(started.metadata["workers"] == "\(workers)")
        #expect(started.metadata["pinning"] == "compact")
        #expect(started.metadata["numa-nodes"] == "\(jobs.topology.nodes.count)")
        guard case .array(let placement) = started.metadata["placement"] else {
            Issue.record("no placement array in \(started.metadata)")
            return
        }
        #expect(placement.count == workers)
        #expect("\(placement[0])".hasPrefix("w0: cpu \(jobs.cpu(ofWorker: 0)!)"))

        let stopped = try #require(log.messages("spindle.stopped").first)
        #expect(stopped.metadata["jobs"] == "40")
        #expect(log.messages("spindle.stopped").count == 1)
    }

    @Test
    func aFallbackTopologyIsAWarning() throws {
        // Whether libnuma is here or not, the log says which: a warning exactly when it fell back.
        let log = RecordingLog()
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: 1), logger: log.logger)
        jobs.shutdown()
        let warned = !log.messages("spindle.numa-fallback").isEmpty
        if case .fallback = jobs.topology.source {
            #expect(warned)
        } else {
            #expect(!warned)
        }
    }

    @Test
    func aMisconfigurationIsLoggedAndThrown() {
        let log = RecordingLog()
        #expect(throws: JobSystem.ConfigurationError.notEnoughWorkers(0)) {
            _ = try JobSystem(configuration: JobSystem.Configuration(workers: 0), logger: log.logger)
        }
        let record = log.messages("spindle.misconfigured").first
        #expect(record?.level == .error)
        #expect(record?.metadata["error"] == "\(JobSystem.ConfigurationError.notEnoughWorkers(0))")
        #expect(log.messages("spindle.started").isEmpty)
    }

    @Test(arguments: [1, 2, 4, 8])
    func metricsCountWhatTheWorkersDid(workers: Int) throws {
        let metrics = TestMetrics()
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: workers))
        defer { jobs.shutdown() }
        // A long interval: the samples below are the ones taken.
        let monitor = JobSystemMonitor(jobs, options: .init(interval: .seconds(3600)), metricsFactory: metrics)
        defer { monitor.stop() }

        let first = jobs.run(count: 500) { _, _ in }
        jobs.wait(for: first)
        monitor.sample()
        #expect(metrics.counterTotal(label: "spindle.jobs") == 500)
        let second = jobs.run(count: 250) { _, context in
            let inner = context.run { _ in }
            context.wait(for: inner)
        }
        jobs.wait(for: second)
        monitor.sample()
        // Counters carry the differences between samples, so the total is every job once.
        #expect(metrics.counterTotal(label: "spindle.jobs") == 1000)
        #expect(metrics.counters(label: "spindle.jobs").count <= workers)
        let snapshot = jobs.metrics().total
        #expect(metrics.counterTotal(label: "spindle.steals") == Int64(snapshot.steals))
        #expect(metrics.counterTotal(label: "spindle.fiber.parks") == Int64(snapshot.fibersParked))
        for worker in 0..<workers {
            let depth = try metrics.expectGauge("spindle.queue_depth", [("worker", "\(worker)")])
            #expect(depth.lastValue == 0, "nothing is queued once the work is done")
        }
        #expect(try metrics.expectGauge("spindle.fiber.stacks").lastValue ?? 0 >= 1)
    }

    @Test
    func queueDepthAndInjectionShowWorkThatWaits() throws {
        // One worker, held by a job that has queued 10 children; then 5 jobs from outside.
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: 1))
        defer { jobs.shutdown() }
        let queued = Atomic(false)
        let release = Atomic(false)
        let holder = jobs.run { context in
            for _ in 0..<10 { context.run { _ in } }
            queued.store(true, ordering: .releasing)
            while !release.load(ordering: .acquiring) {}
        }
        while !queued.load(ordering: .acquiring) {}
        let outside = jobs.run(count: 5) { _, _ in }
        let held = jobs.metrics()
        release.store(true, ordering: .releasing)
        jobs.wait(for: holder)
        jobs.wait(for: outside)
        #expect(held.workers[0].queued == 10)
        #expect(held.injectionPending)
        let after = jobs.metrics()
        #expect(after.workers[0].queued == 0)
        #expect(!after.injectionPending)
    }

    @Test
    func theStatusReportIsLoggedEachSampleWhenAskedFor() throws {
        let log = RecordingLog()
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: 2))
        defer { jobs.shutdown() }
        let quiet = JobSystemMonitor(jobs, logger: log.logger, options: .init(interval: .seconds(3600), metrics: false))
        quiet.sample()
        quiet.stop()
        #expect(log.messages("spindle.status").isEmpty, "the status report is off by default")

        let monitor = JobSystemMonitor(jobs, logger: log.logger,
                                       options: .init(interval: .seconds(3600), statusReport: true, statusLevel: .notice, metrics: false))
        let done = jobs.run(count: 64) { _, _ in }
        jobs.wait(for: done)
        monitor.sample()
        monitor.stop()
        let reports = log.messages("spindle.status")
        #expect(reports.count == 2, "one for sample(), one for the last sample of stop()")
        let first = try #require(reports.first)
        #expect(first.level == .notice)
        #expect(first.metadata["jobs"] == "64")
        guard case .array(let workers) = first.metadata["workers"] else {
            Issue.record("no workers array in \(first.metadata)")
            return
        }
        #expect(workers.count == 2)
        #expect(reports.last?.metadata["jobs"] == "0", "the second report counts what happened since the first")
    }

    @Test
    func thePeriodicReportRunsWithoutBeingAsked() throws {
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: 2))
        defer { jobs.shutdown() }
        let calls = Mutex(0)
        let reached = JobCounter(1)
        let report = jobs.reportMetrics(every: .milliseconds(1)) { _ in
            let count = calls.withLock { count in
                count += 1
                return count
            }
            if count == 3 { reached.decrement() }
        }
        jobs.wait(for: reached)
        report.stop()
        let after = calls.withLock { $0 }
        #expect(after >= 3)
        #expect(report.isStopped)
        // No call starts after stop() returns.
        let done = jobs.run(count: 100) { _, _ in }
        jobs.wait(for: done)
        #expect(calls.withLock { $0 } == after)
    }

    @Test
    func aShutdownStopsTheReportAndRunsShutdownHandlersOnce() throws {
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: 2))
        let report = jobs.reportMetrics(every: .seconds(3600)) { _ in }
        let handled = Mutex<[UInt64]>([])
        jobs.onShutdown { final in handled.withLock { $0.append(final.total.jobsRun) } }
        let done = jobs.run(count: 10) { _, _ in }
        jobs.wait(for: done)
        jobs.shutdown()
        jobs.shutdown()
        #expect(report.isStopped)
        #expect(handled.withLock { $0 } == [10])
        // Added after the shutdown: called at once.
        jobs.onShutdown { final in handled.withLock { $0.append(final.total.jobsRun) } }
        #expect(handled.withLock { $0 } == [10, 10])
    }

    @Test(arguments: [1, 2, 4])
    func pipelineStagesAreReportedUntilTheRunEnds(workers: Int) throws {
        let metrics = TestMetrics()
        let jobs = try JobSystem(configuration: JobSystem.Configuration(workers: workers))
        defer { jobs.shutdown() }
        let monitor = JobSystemMonitor(jobs, options: .init(interval: .seconds(3600)), metricsFactory: metrics)
        defer { monitor.stop() }

        let pipeline = Pipeline<Int>("numbers", channelCapacity: 8)
        let doubled = pipeline.source.parallelMap("double", batch: 4) { $0 * 2 }
        let total = Mutex(0)
        doubled.sink("sum") { value in total.withLock { $0 += value } }
        let run = try pipeline.start(on: jobs)
        monitor.observe(run, name: "numbers")
        for value in 0..<1000 { run.send(value) }
        _ = try run.finish()
        monitor.sample()
        #expect(total.withLock { $0 } == 999 * 1000)
        let stage = [("pipeline", "numbers"), ("stage", "double")]
        #expect(metrics.counterTotal(label: "spindle.pipeline.items_in", dimensions: stage) == 1000)
        #expect(metrics.counterTotal(label: "spindle.pipeline.items_out", dimensions: stage) == 1000)
        #expect(metrics.counterTotal(label: "spindle.pipeline.items_in", dimensions: [("pipeline", "numbers"), ("stage", "sum")]) == 1000)
        #expect(try metrics.expectTimer("spindle.pipeline.item_time", stage).values.count == 1)
        // The finished run is no longer sampled.
        monitor.sample()
        #expect(try metrics.expectTimer("spindle.pipeline.item_time", stage).values.count == 1)
    }
}
#endif  // SpindleObservability
