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
