import Foundation

/// JMH's JSON result format, the one ordo-one/package-benchmark exports and JMH viewers
/// (jmh.morethan.io) open: a JSON array with one element per result, in the order given.
/// docs/benchmarking.md, "JMH JSON (--format jmh)", maps every field.
///
/// - Primary metric: average time per iteration (mode `avgt`, unit `ns/op`); the score is the
///   analysis's typical estimate (`Analysis.typical`: the slope for the linear plan, else the
///   mean), with its bootstrap interval; percentiles and raw data are the per-iteration times
///   of the samples.
/// - Secondary metrics: `throughput` (always), `mallocs` (when counted), `cpu` and
///   `contextSwitches` (always).
///
/// JSON has no NaN or infinity: every non-finite number (a sample of zero iterations, a
/// throughput from a zero time) is written as 0. Percentiles are taken after that mapping, so
/// they stay within the written raw data.
public enum JMHReport {
    /// The JMH document for `results`: pretty-printed, keys sorted, no trailing newline. The
    /// same results and settings always give the same text.
    ///
    /// `settings` supplies what the results do not record: the warm-up time and the measurement
    /// time (spread over each result's samples).
    public static func render(_ results: [BenchmarkResult], settings: MeasurementSettings) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let document = results.map { element($0, settings: settings) }
        return String(decoding: try encoder.encode(document), as: UTF8.self)
    }

    /// A benchmark's JMH name: `spindle.<group>.<name>`, plus `.<parameter>` when it has one.
    /// In each part, every character other than an ASCII letter or digit, `-` or `_` becomes
    /// `_` (an empty part becomes `_`), so the dots only ever separate parts.
    public static func benchmarkName(_ id: BenchmarkID) -> String {
        (["spindle", id.group, id.name] + (id.parameter.map { [$0] } ?? [])).map(sanitize).joined(separator: ".")
    }

    // MARK: Document

    /// One element of the document. Field names are JMH's.
    struct Element: Codable, Equatable {
        var benchmark: String
        var mode: String
        var threads: Int
        var forks: Int
        var warmupIterations: Int
        var warmupTime: String
        var warmupBatchSize: Int
        var measurementIterations: Int
        var measurementTime: String
        var measurementBatchSize: Int
        /// JMH's `@Param` values: `threads` for a worker-count sweep, so that a viewer tells the
        /// sweep's entries (which share a name) apart. Absent otherwise.
        var params: [String: String]?
        var primaryMetric: Metric
        var secondaryMetrics: [String: Metric]
    }

    /// A JMH metric: score, error, interval, percentiles and the raw values.
    struct Metric: Codable, Equatable {
        var score: Double
        var scoreError: Double
        var scoreConfidence: [Double]
        var scorePercentiles: [String: Double]
        var scoreUnit: String
        /// One fork, so one row: a value per sample.
        var rawData: [[Double]]

        /// A metric whose score is `point` in `lower...upper`, over per-sample `values`.
        /// Non-finite numbers become 0 (the error is taken before that, from the raw bounds).
        init(point: Double, lower: Double, upper: Double, values: [Double], unit: String) {
            let values = values.map(finite)
            let sorted = values.sorted()
            score = finite(point)
            scoreError = finite((upper - lower) / 2)
            scoreConfidence = [finite(lower), finite(upper)]
            scorePercentiles = Dictionary(uniqueKeysWithValues: percentiles.map { key, fraction in
                (key, sorted.isEmpty ? 0 : finite(Statistics.quantile(sorted: sorted, fraction)))
            })
            scoreUnit = unit
            rawData = [values]
        }

        /// A metric measured once per benchmark (an aggregate over all samples, or an untimed
        /// pass): no spread, so a zero error and a degenerate interval.
        init(single value: Double, unit: String) {
            self.init(point: value, lower: value, upper: value, values: [value], unit: unit)
        }
    }

    /// The percentiles JMH writes, keyed as JMH keys them (percent, one decimal at least).
    static let percentiles: [(key: String, fraction: Double)] = [
        ("0.0", 0), ("50.0", 0.5), ("90.0", 0.9), ("95.0", 0.95), ("99.0", 0.99), ("99.9", 0.999),
        ("99.99", 0.9999), ("99.999", 0.99999), ("99.9999", 0.999999), ("100.0", 1),
    ]

    static func element(_ result: BenchmarkResult, settings: MeasurementSettings) -> Element {
        let analysis = result.analysis
        let samples = analysis.samples
        let perIteration = samples.perIteration
        let typical = analysis.typical
        let sampleCount = samples.times.count
        let iterations = Double(Swift.max(samples.totalIterations, 1))

        let primary = Metric(point: typical.point, lower: typical.lower, upper: typical.upper,
                             values: perIteration, unit: "ns/op")

        // Work per iteration, as Format.throughput counts it: one operation, or the result's
        // elements or bytes. Faster time is higher throughput, so the interval's ends swap.
        let (count, unit): (Int, String)
        switch result.throughput {
        case nil: (count, unit) = (1, "ops/s")
        case .elements(let n)?: (count, unit) = (n, "elem/s")
        case .bytes(let n)?: (count, unit) = (n, "B/s")
        }
        func perSecond(_ nanosecondsPerIteration: Double) -> Double {
            Double(count) / (nanosecondsPerIteration / 1e9)
        }
        var secondary: [String: Metric] = [
            "throughput": Metric(point: perSecond(typical.point), lower: perSecond(typical.upper),
                                 upper: perSecond(typical.lower), values: perIteration.map(perSecond), unit: unit),
        ]
        if let mallocs = result.mallocsPerIteration {
            secondary["mallocs"] = Metric(single: mallocs, unit: "#/op")
        }
        let usage = samples.usage
        secondary["cpu"] = Metric(single: (Double(usage.userNanoseconds) + Double(usage.systemNanoseconds)) / iterations,
                                  unit: "ns/op")
        secondary["contextSwitches"] = Metric(
            single: Double(usage.voluntaryContextSwitches + usage.involuntaryContextSwitches) / iterations, unit: "#/op")

        return Element(
            benchmark: benchmarkName(result.id),
            mode: "avgt",
            threads: result.threads ?? 1,
            forks: 1,
            // The runner warms up once, for the warm-up time, in rounds of doubling iteration
            // counts that it does not record.
            warmupIterations: 1,
            warmupTime: time(settings.warmUpNanoseconds),
            warmupBatchSize: 1,
            measurementIterations: sampleCount,
            // JMH's measurement time is per iteration (sample): the measurement time spread
            // over the samples, so that iterations × time is the run's measurement time.
            measurementTime: time(settings.measurementNanoseconds / UInt64(Swift.max(sampleCount, 1))),
            measurementBatchSize: 1,
            params: result.threads.map { ["threads": String($0)] },
            primaryMetric: primary,
            secondaryMetrics: secondary)
    }

    // MARK: Helpers

    /// JSON cannot hold NaN or infinity: those become 0.
    static func finite(_ value: Double) -> Double {
        value.isFinite ? value : 0
    }

    static func sanitize(_ part: String) -> String {
        let cleaned = String(part.map { $0.isASCII && ($0.isLetter || $0.isNumber) || $0 == "-" || $0 == "_" ? $0 : "_" })
        return cleaned.isEmpty ? "_" : cleaned
    }

    /// A duration as JMH's TimeValue prints it: a whole number in the coarsest of s, ms, us and
    /// ns that holds it exactly ("3 s", "500 ms", "5500 us").
    static func time(_ nanoseconds: UInt64) -> String {
        for (scale, unit) in [(UInt64(1_000_000_000), "s"), (1_000_000, "ms"), (1_000, "us")]
        where nanoseconds % scale == 0 {
            return "\(nanoseconds / scale) \(unit)"
        }
        return "\(nanoseconds) ns"
    }
}
