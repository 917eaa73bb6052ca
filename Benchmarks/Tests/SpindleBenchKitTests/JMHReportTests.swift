import Foundation
import Testing
@testable import SpindleBenchKit

@Suite("JMH report")
struct JMHReportTests {
    var settings: MeasurementSettings {
        var settings = MeasurementSettings()
        settings.sampleSize = 10
        settings.warmUpNanoseconds = 500_000_000
        settings.measurementNanoseconds = 55_000_000
        settings.resamples = 500
        return settings
    }

    /// Percentile keys in ascending order of the percentile.
    let percentileKeys = ["0.0", "50.0", "90.0", "95.0", "99.0", "99.9", "99.99", "99.999", "99.9999", "100.0"]

    func result(
        _ id: BenchmarkID, threads: Int? = nil, mode: SamplingMode, iterations: [Double], times: [Double],
        usage: ResourceUsage = ResourceUsage(), mallocs: Double? = nil, throughput: Throughput? = nil
    ) -> BenchmarkResult {
        let samples = Samples(id: id, threads: threads, mode: mode, iterations: iterations, times: times, usage: usage,
                              totalIterations: Int(iterations.reduce(0, +)), mallocsPerIteration: mallocs)
        return BenchmarkResult(analysis: Analysis(samples, settings: settings), throughput: throughput, note: nil)
    }

    /// A linear plan of 10 samples (d = 1000), about 12 ns per iteration plus noise, measured
    /// with 4 workers, with throughput, mallocs and resource use.
    var linear: BenchmarkResult {
        let iterations = (1...10).map { Double($0 * 1000) }
        let noise: [Double] = [300, -120, 800, 40, -500, 1500, 0, 260, -90, 3000]
        let times = zip(iterations, noise).map { $0 * 12 + $1 }
        let usage = ResourceUsage(userNanoseconds: 1_100_000, systemNanoseconds: 550_000, voluntaryContextSwitches: 44,
                                  involuntaryContextSwitches: 11, peakResidentBytes: 1 << 20)
        return result(BenchmarkID(group: "W1", name: "dispatch", parameter: "16M"), threads: 4, mode: .linear,
                      iterations: iterations, times: times, usage: usage, mallocs: 2.5, throughput: .elements(1000))
    }

    /// A flat plan without throughput, mallocs or a worker count.
    var flat: BenchmarkResult {
        result(BenchmarkID(group: "deque", name: "push-pop"), mode: .flat, iterations: Array(repeating: 100, count: 6),
               times: [1000, 1200, 900, 1100, 4000, 1000])
    }

    func decode(_ json: String) throws -> [JMHReport.Element] {
        try JSONDecoder().decode([JMHReport.Element].self, from: Data(json.utf8))
    }

    func object(_ json: String) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
    }

    /// Checks the invariants every metric keeps: keys, ordered percentiles spanning the raw data.
    func checkShape(_ metric: JMHReport.Metric, values: [Double]) {
        #expect(Set(metric.scorePercentiles.keys) == Set(percentileKeys))
        let ordered = percentileKeys.map { metric.scorePercentiles[$0] ?? .nan }
        #expect(zip(ordered, ordered.dropFirst()).allSatisfy { $0 <= $1 }, "percentiles must not decrease: \(ordered)")
        #expect(metric.scorePercentiles["0.0"] == values.min())
        #expect(metric.scorePercentiles["100.0"] == values.max())
        #expect(metric.scorePercentiles["50.0"] == Statistics.quantile(sorted: values.sorted(), 0.5))
        #expect(metric.rawData == [values])
        #expect(metric.scoreConfidence.count == 2)
    }

    @Test func fieldNamesAreJMHs() throws {
        let json = try JMHReport.render([linear, flat], settings: settings)
        let elements = try object(json)
        #expect(elements.count == 2)
        let top: Set = ["benchmark", "mode", "threads", "forks", "warmupIterations", "warmupTime", "warmupBatchSize",
                        "measurementIterations", "measurementTime", "measurementBatchSize", "primaryMetric",
                        "secondaryMetrics"]
        #expect(Set(elements[0].keys) == top.union(["params"]))
        #expect(Set(elements[1].keys) == top)
        let primary = try #require(elements[0]["primaryMetric"] as? [String: Any])
        #expect(Set(primary.keys) == ["score", "scoreError", "scoreConfidence", "scorePercentiles", "scoreUnit", "rawData"])
        let percentiles = try #require(primary["scorePercentiles"] as? [String: Any])
        #expect(Set(percentiles.keys) == Set(percentileKeys))
        #expect(elements[0]["params"] as? [String: String] == ["threads": "4"])
    }

    @Test func primaryMetricIsTheTypicalTimePerIteration() throws {
        let linear = self.linear, flat = self.flat
        let elements = try decode(try JMHReport.render([linear, flat], settings: settings))
        #expect(elements.count == 2)

        let first = elements[0]
        #expect(first.benchmark == "spindle.W1.dispatch.16M")
        #expect(first.mode == "avgt")
        #expect(first.threads == 4)
        #expect(first.forks == 1)
        #expect(first.warmupIterations == 1 && first.warmupBatchSize == 1 && first.measurementBatchSize == 1)
        #expect(first.warmupTime == "500 ms")
        #expect(first.measurementIterations == 10)
        #expect(first.measurementTime == "5500 us")   // 55 ms over 10 samples
        let slope = try #require(linear.analysis.slope)
        let primary = first.primaryMetric
        #expect(primary.scoreUnit == "ns/op")
        #expect(primary.score == linear.analysis.typical.point)
        #expect(primary.score == slope.point)
        #expect(primary.scoreConfidence == [slope.lower, slope.upper])
        #expect(primary.scoreError == (slope.upper - slope.lower) / 2)
        checkShape(primary, values: linear.analysis.samples.perIteration)

        // Flat plan: the mean, no worker count, no params.
        let second = elements[1]
        #expect(second.benchmark == "spindle.deque.push-pop")
        #expect(second.threads == 1)
        #expect(second.params == nil)
        #expect(second.measurementIterations == 6)
        #expect(second.measurementTime == "9166666 ns")   // 55 ms / 6, rounded down
        let mean = flat.analysis.mean
        #expect(flat.analysis.slope == nil)
        #expect(second.primaryMetric.score == mean.point)
        #expect(second.primaryMetric.scoreConfidence == [mean.lower, mean.upper])
        #expect(second.primaryMetric.scoreError == (mean.upper - mean.lower) / 2)
        #expect(second.primaryMetric.rawData == [[10, 12, 9, 11, 40, 10]])
        checkShape(second.primaryMetric, values: [10, 12, 9, 11, 40, 10])
        #expect(second.primaryMetric.scorePercentiles["0.0"] == 9)
        #expect(second.primaryMetric.scorePercentiles["100.0"] == 40)
    }

    @Test func secondaryMetricsArePresentWhenMeasured() throws {
        let linear = self.linear, flat = self.flat
        let elements = try decode(try JMHReport.render([linear, flat], settings: settings))
        let full = elements[0].secondaryMetrics
        #expect(Set(full.keys) == ["throughput", "mallocs", "cpu", "contextSwitches"])

        // Elements per second from the per-iteration times; the interval's ends swap.
        let throughput = try #require(full["throughput"])
        let typical = linear.analysis.typical
        #expect(throughput.scoreUnit == "elem/s")
        #expect(throughput.score == 1000 / (typical.point / 1e9))
        #expect(throughput.scoreConfidence == [1000 / (typical.upper / 1e9), 1000 / (typical.lower / 1e9)])
        #expect(throughput.scoreConfidence[0] <= throughput.score && throughput.score <= throughput.scoreConfidence[1])
        checkShape(throughput, values: linear.analysis.samples.perIteration.map { 1000 / ($0 / 1e9) })

        // One value each: an untimed pass, and totals over the 55,000 iterations of the samples.
        let mallocs = try #require(full["mallocs"])
        #expect(mallocs.scoreUnit == "#/op" && mallocs.score == 2.5 && mallocs.scoreError == 0)
        #expect(mallocs.scoreConfidence == [2.5, 2.5] && mallocs.rawData == [[2.5]])
        let cpu = try #require(full["cpu"])
        #expect(cpu.scoreUnit == "ns/op" && cpu.score == 1_650_000.0 / 55_000)
        checkShape(cpu, values: [1_650_000.0 / 55_000])
        let switches = try #require(full["contextSwitches"])
        #expect(switches.scoreUnit == "#/op" && switches.score == 55.0 / 55_000)

        // Without a Throughput: operations per second; without a malloc count: no mallocs.
        let plain = elements[1].secondaryMetrics
        #expect(Set(plain.keys) == ["throughput", "cpu", "contextSwitches"])
        let ops = try #require(plain["throughput"])
        #expect(ops.scoreUnit == "ops/s")
        #expect(ops.score == 1 / (flat.analysis.mean.point / 1e9))
        #expect(ops.rawData == [[10, 12, 9, 11, 40, 10].map { 1 / ($0 / 1e9) }])
        #expect(plain["cpu"]?.score == 0 && plain["contextSwitches"]?.score == 0)

        let bytes = result(BenchmarkID(group: "io", name: "copy"), mode: .flat, iterations: [1, 1], times: [10, 20],
                           throughput: .bytes(4096))
        let copy = try decode(try JMHReport.render([bytes], settings: settings))[0]
        #expect(copy.secondaryMetrics["throughput"]?.scoreUnit == "B/s")
        #expect(copy.secondaryMetrics["throughput"]?.rawData == [[10, 20].map { 4096 / ($0 / 1e9) }])
    }

    @Test func namesKeepOnlyLettersDigitsDashesAndUnderscores() {
        #expect(JMHReport.benchmarkName(BenchmarkID(group: "W3", name: "serial")) == "spindle.W3.serial")
        #expect(JMHReport.benchmarkName(BenchmarkID(group: "W3", name: "serial", parameter: "16M")) == "spindle.W3.serial.16M")
        #expect(JMHReport.benchmarkName(BenchmarkID(group: "W 1", name: "a.b", parameter: "1,000 µs")) == "spindle.W_1.a_b.1_000__s")
        #expect(JMHReport.benchmarkName(BenchmarkID(group: "g", name: "n", parameter: "")) == "spindle.g.n._")
    }

    @Test func durationsPrintAsJMHTimeValues() {
        #expect(JMHReport.time(3_000_000_000) == "3 s")
        #expect(JMHReport.time(500_000_000) == "500 ms")
        #expect(JMHReport.time(5_500_000) == "5500 us")
        #expect(JMHReport.time(166_666_667) == "166666667 ns")
        #expect(JMHReport.time(0) == "0 s")
        // The defaults: 3 s of warm-up, 5 s over 100 samples.
        let defaults = MeasurementSettings()
        let element = JMHReport.element(flat, settings: defaults)
        #expect(element.warmupTime == "3 s")
        #expect(element.measurementTime == "833333333 ns")   // 5 s over the 6 samples of `flat`
    }

    @Test func nonFiniteNumbersBecomeZero() throws {
        // Samples of zero iterations: 0/0 is NaN, 5/0 infinite; a zero time gives an infinite
        // throughput.
        let broken = result(BenchmarkID(group: "g", name: "broken"), mode: .flat, iterations: [0, 0, 1, 1, 1],
                            times: [0, 5, 0, 10, 20])
        let perIteration = broken.analysis.samples.perIteration
        #expect(perIteration[0].isNaN && perIteration[1].isInfinite)
        let json = try JMHReport.render([broken], settings: settings)
        for token in ["nan", "NaN", "inf", "Infinity"] { #expect(!json.contains(token)) }
        let element = try decode(json)[0]
        let primary = element.primaryMetric
        #expect(primary.score == 0)   // the mean is NaN
        #expect(primary.rawData == [[0, 0, 0, 10, 20]])
        checkShape(primary, values: [0, 0, 0, 10, 20])
        for metric in [primary] + element.secondaryMetrics.values {
            var numbers = [metric.score, metric.scoreError]
            numbers += metric.scoreConfidence
            numbers += metric.scorePercentiles.values
            numbers += metric.rawData.joined()
            #expect(numbers.allSatisfy { $0.isFinite })
        }
        // 1/NaN is NaN, 1/∞ is 0, 1/0 is ∞: all written as 0.
        let throughput = try #require(element.secondaryMetrics["throughput"])
        let expected = [0, 0, 0] + [10.0, 20].map { 1 / ($0 / 1e9) }
        #expect(throughput.rawData == [expected])
        checkShape(throughput, values: expected)
        #expect(JMHReport.finite(.nan) == 0 && JMHReport.finite(-.infinity) == 0 && JMHReport.finite(-2.5) == -2.5)
    }

    @Test func outputIsDeterministicSortedAndPretty() throws {
        let results = [linear, flat]
        let once = try JMHReport.render(results, settings: settings)
        #expect(try JMHReport.render(results, settings: settings) == once)
        #expect(once.hasPrefix("[\n"))
        #expect(once.contains("\"scoreUnit\" : \"ns/op\""), "pretty-printed, slashes unescaped")
        // Keys sorted: within an element, "benchmark" < "forks" < "measurementBatchSize" < "mode" < "primaryMetric".
        let order = ["\"benchmark\"", "\"forks\"", "\"measurementBatchSize\"", "\"mode\"", "\"primaryMetric\""]
        let positions = try order.map { try #require(once.range(of: $0)).lowerBound }
        #expect(positions == positions.sorted())
        #expect(try decode(JMHReport.render([], settings: settings)).isEmpty)
    }
}
