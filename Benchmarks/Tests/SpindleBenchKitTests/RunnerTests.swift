import Foundation
import Testing
@testable import SpindleBenchKit

@Suite("Benchmark runner")
struct RunnerTests {
    func settings(samples: Int) -> MeasurementSettings {
        var settings = MeasurementSettings()
        settings.sampleSize = samples
        settings.warmUpNanoseconds = 1_000_000
        settings.measurementNanoseconds = 55_000_000
        settings.resamples = 1000
        return settings
    }

    @Test func samplingPlans() {
        let runner = Runner(settings: settings(samples: 10))
        // 55 ms over Σ i·d = 55·d iterations of 1 µs: d = 1000.
        #expect(runner.iterationCounts(mode: .linear, meanPerIteration: 1000, sampleSize: 10) == (1...10).map { Double($0 * 1000) })
        #expect(runner.iterationCounts(mode: .flat, meanPerIteration: 1000, sampleSize: 10) == Array(repeating: 5500, count: 10))
        #expect(runner.iterationCounts(mode: .single, meanPerIteration: 1000, sampleSize: 10) == Array(repeating: 1, count: 10))
        // A routine slower than the whole budget still runs once per sample.
        #expect(runner.iterationCounts(mode: .flat, meanPerIteration: 1e12, sampleSize: 3) == [1, 1, 1])
    }

    @Test func theTimeLimitStopsSamplingWithWhatItHas() throws {
        // Each call spends at least 20 ms of wall-clock time (untimed work, as a benchmark's
        // setup between samples) and reports 1 µs. Ten samples cannot fit in 100 ms: the run
        // stops early, keeps at least two samples and records how many were planned.
        let benchmark = Benchmark(BenchmarkID(group: "g", name: "slow-setup"), mode: .flat) { _ in
            { iterations in
                let start = Clock.nanoseconds()
                while Clock.nanoseconds() &- start < 20_000_000 {}
                return UInt64(iterations) * 1000
            }
        }
        var limited = settings(samples: 10)
        limited.timeLimitNanoseconds = 100_000_000
        let samples = try Runner(settings: limited).measure(benchmark, threads: nil)
        #expect(samples.plannedSamples == 10)
        #expect(samples.times.count >= 2 && samples.times.count < 10)
        #expect(samples.iterations.count == samples.times.count)
        #expect(samples.totalIterations == Int(samples.iterations.reduce(0, +)))

        // Without a limit, every planned sample is taken.
        let full = try Runner(settings: settings(samples: 3)).measure(benchmark, threads: nil)
        #expect(full.plannedSamples == nil)
        #expect(full.times.count == 3)
    }

    @Test func theSlopeDampsAFixedPerSampleCost() throws {
        // A synthetic routine: exactly 10 ns per iteration plus 5 µs per sample (setup the
        // routine could not keep off the clock). Through the origin, least squares gives
        // slope = Σx(10x + 5000)/Σx² = 10 + 5000·Σx/Σx², which weights the fixed cost far less
        // than the mean of per-iteration times does.
        let benchmark = Benchmark(BenchmarkID(group: "g", name: "synthetic")) { _ in
            { iterations in UInt64(iterations) * 10 + 5_000 }
        }
        let samples = try Runner(settings: settings(samples: 20)).measure(benchmark, threads: nil)
        let analysis = Analysis(samples, settings: settings(samples: 20))
        let slope = try #require(analysis.slope)
        let x = samples.iterations
        let expected = 10 + 5000 * x.reduce(0, +) / x.reduce(0) { $0 + $1 * $1 }
        #expect(abs(slope.point - expected) < 1e-9)
        #expect(abs(slope.point - 10) < abs(analysis.mean.point - 10))
        #expect(samples.iterations.count == 20)
        #expect(analysis.typical == slope)
    }

    @Test func checkFailuresPropagate() {
        let benchmark = Benchmark(BenchmarkID(group: "g", name: "wrong")) { _ in
            { _ in throw BenchmarkCheckFailure("counter = 3, expected 4") }
        }
        #expect(throws: BenchmarkCheckFailure.self) {
            try Runner(settings: settings(samples: 5)).measure(benchmark, threads: nil)
        }
    }

    @Test func theHandoffProbeBracketsEverySample() throws {
        // The probe and the routine log their calls in order: one reading before the first
        // sample, then one after each (the warm-up runs before, unprobed).
        final class Log: @unchecked Sendable { var events: [String] = [] }
        let log = Log()
        let benchmark = Benchmark(BenchmarkID(group: "g", name: "probed"), mode: .flat) { _ in
            { iterations in log.events.append("sample"); return UInt64(iterations) * 10 }
        }
        var reading = 30.0
        let runner = Runner(settings: settings(samples: 4), handoffProbe: {
            log.events.append("probe")
            reading += 1
            return reading
        })
        let samples = try runner.measure(benchmark, threads: nil)
        let measured = Array(log.events.drop { $0 == "sample" })
        #expect(measured == ["probe", "sample", "probe", "sample", "probe", "sample", "probe", "sample", "probe"])
        #expect(samples.handoffs == [31, 32, 33, 34, 35])

        // One missing reading leaves the samples without any.
        var calls = 0
        let failing = Runner(settings: settings(samples: 4), handoffProbe: {
            calls += 1
            return calls == 3 ? nil : 30
        })
        #expect(try failing.measure(benchmark, threads: nil).handoffs == nil)
        #expect(try Runner(settings: settings(samples: 4)).measure(benchmark, threads: nil).handoffs == nil)
    }

    @Test func samplesNextToASlowHandoffAreCountedAndMarked() throws {
        // Readings 30, 31, 200, 32, 33 bracket four samples; the second and third touch 200.
        let readings = HandoffReadings([30, 31, 200, 32, 33])
        #expect(readings.slowSamples(reference: 30) == 2)
        #expect(readings.slowSamples(reference: 100) == 0)
        #expect(readings.fastest == 30)
        #expect(readings.median == 32)

        func result(_ name: String, handoffs: [Double]) -> BenchmarkResult {
            let samples = Samples(id: BenchmarkID(group: "g", name: name), threads: nil, mode: .flat,
                                  iterations: [1, 1, 1, 1], times: [10, 11, 12, 13], usage: ResourceUsage(),
                                  totalIterations: 4, mallocsPerIteration: nil, handoffs: handoffs)
            var quick = settings(samples: 4)
            quick.resamples = 100
            return BenchmarkResult(analysis: Analysis(samples, settings: quick), throughput: nil, note: nil)
        }
        let steady = result("steady", handoffs: [30, 31, 30, 32, 31])
        let moved = result("moved", handoffs: [30, 31, 200, 32, 33])
        #expect(HandoffReadings.reference([steady, moved]) == 30)
        let markdown = MarkdownReport.render([steady, moved])
        let rows = markdown.split(separator: "\n").filter { $0.hasPrefix("| steady") || $0.hasPrefix("| moved") }
        #expect(rows.count == 2)
        #expect(rows.first { $0.hasPrefix("| steady") }?.contains("⚠") == false)
        #expect(rows.first { $0.hasPrefix("| moved") }?.contains("⚠ 2/4") == true)
        #expect(markdown.contains("1 of 2 benchmarks had k of n samples"))
        // Without readings, no column and no footnote.
        let unprobed = Samples(id: BenchmarkID(group: "g", name: "plain"), threads: nil, mode: .flat, iterations: [1, 1],
                               times: [10, 11], usage: ResourceUsage(), totalIterations: 2, mallocsPerIteration: nil)
        let plain = MarkdownReport.render([BenchmarkResult(analysis: Analysis(unprobed, settings: settings(samples: 2)),
                                                           throughput: nil, note: nil)])
        #expect(!plain.contains("CPU hand-off"))
    }

    @Test func idsPrintAsGroupNameParameter() {
        #expect(BenchmarkID(group: "W1", name: "dispatch").description == "W1/dispatch")
        #expect(BenchmarkID(group: "W3", name: "serial", parameter: "16M").description == "W3/serial/16M")
    }

    @Test func baselinesRoundTripAndReportProblemsClearly() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spindle-bench-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = BaselineStore(directory: directory)
        #expect(throws: BaselineError.missing(name: "main", path: "\(directory)/main.json")) { try store.load("main") }
        #expect(throws: BaselineError.invalidName("../x")) { try store.load("../x") }

        let benchmark = Benchmark(BenchmarkID(group: "g", name: "b")) { _ in { iterations in UInt64(iterations) * 7 } }
        let samples = try Runner(settings: settings(samples: 5)).measure(benchmark, threads: 2)
        let result = BenchmarkResult(analysis: Analysis(samples, settings: settings(samples: 5)), throughput: nil, note: nil)
        let fingerprint = Fingerprint(cpuModel: "test", allowedCPUs: 2, kernel: "k", toolchain: "t", configuration: "release")
        try store.save("main", results: [result], fingerprint: fingerprint)
        let loaded = try store.load("main")
        #expect(loaded.fingerprint == fingerprint)
        #expect(loaded.entry(id: benchmark.id, threads: 2)?.perIteration == samples.perIteration)
        #expect(loaded.entry(id: benchmark.id, threads: 1) == nil)

        try Data("{ not json".utf8).write(to: URL(fileURLWithPath: "\(directory)/broken.json"))
        do {
            _ = try store.load("broken")
            Issue.record("a corrupt baseline must not load")
        } catch .corrupt(let path, _) {
            #expect(path == "\(directory)/broken.json")
        } catch {
            Issue.record("expected .corrupt, got \(error)")
        }
    }
}
