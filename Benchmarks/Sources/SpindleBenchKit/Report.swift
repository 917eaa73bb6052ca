import Foundation

/// A measured benchmark, ready to report: its analysis, optional comparison with a baseline, and
/// the context that helps read it.
public struct BenchmarkResult: Sendable, Codable {
    public let analysis: Analysis
    public let throughput: Throughput?
    public var note: String?
    public var comparison: Comparison?
    /// Process CPU use in the second after the benchmark ended, in percent of one CPU
    /// (`--idle-cpu`): how much a job system burns while it has nothing to do.
    public var idleCPUPercent: Double?
    /// The cache-line hand-off time between two CPUs around the samples (spindle-bench's
    /// `--handoff-probe`).
    public var handoff: HandoffReadings? { analysis.samples.handoffs.map(HandoffReadings.init) }
    /// Mallocs per iteration, when counted (an untimed pass; see AllocationCounter).
    public var mallocsPerIteration: Double? { analysis.samples.mallocsPerIteration }
    /// The number of busy competing processes that ran beside the samples (spindle-bench's
    /// `--background-load`); nil: measured quiet.
    public var backgroundLoad: Int?

    public init(analysis: Analysis, throughput: Throughput?, note: String?, comparison: Comparison? = nil) {
        self.analysis = analysis
        self.throughput = throughput
        self.note = note
        self.comparison = comparison
    }

    public var id: BenchmarkID { analysis.samples.id }
    public var threads: Int? { analysis.samples.threads }

    /// The quiet result of the same benchmark at the same worker count, among `results`.
    public func quiet(in results: [BenchmarkResult]) -> BenchmarkResult? {
        results.first { $0.id == id && $0.threads == threads && $0.backgroundLoad == nil }
    }
}

/// Nanoseconds for one cache line to pass from one CPU to another, probed before a benchmark's
/// first sample and after each one.
///
/// A virtual machine's host may move its virtual CPUs between nearby and distant physical cores
/// while a process runs, which multiplies the cost of every hand-off between threads. Every
/// figure that passes work between CPUs moves with it: a sample next to a reading far above the
/// run's fastest was measured on a different machine, in effect, than the others.
public struct HandoffReadings: Sendable, Equatable {
    /// Reading `i` was taken before sample `i`, reading `i + 1` after it.
    public let readings: [Double]

    public init(_ readings: [Double]) {
        self.readings = readings
    }

    public var fastest: Double { readings.min() ?? 0 }
    public var median: Double { readings.isEmpty ? 0 : Statistics.median(readings) }

    /// How many times the run's fastest reading marks a changed placement.
    public static let slowFactor = 3.0

    /// Samples with a reading over `slowFactor` times `reference` right before or after them.
    public func slowSamples(reference: Double) -> Int {
        guard readings.count >= 2 else { return 0 }
        let limit = reference * Self.slowFactor
        return (0..<(readings.count - 1)).count { readings[$0] > limit || readings[$0 + 1] > limit }
    }

    /// The fastest reading of a whole run: the reference the others are judged against.
    public static func reference(_ results: [BenchmarkResult]) -> Double? {
        results.compactMap { $0.handoff?.fastest }.min()
    }
}

/// The result of comparing with a saved baseline.
public struct Comparison: Sendable, Codable {
    public let baseline: String
    public let pValue: Double
    /// Relative change of the mean time per iteration (`new/old − 1`).
    public let meanChange: Statistics.Estimate
    public let medianChange: Statistics.Estimate
    public let verdict: Statistics.Verdict
    public let significanceLevel: Double
    public let noiseThreshold: Double

    public init(baseline: String, old: [Double], new: [Double], settings: MeasurementSettings) {
        self.baseline = baseline
        pValue = Statistics.bootstrapWelchPValue(old, new, resamples: settings.resamples, seed: settings.seed &+ 10)
        meanChange = Statistics.relativeChange(old: old, new: new, resamples: settings.resamples,
                                               confidenceLevel: settings.confidenceLevel, seed: settings.seed &+ 11,
                                               Statistics.mean)
        medianChange = Statistics.relativeChange(old: old, new: new, resamples: settings.resamples,
                                                 confidenceLevel: settings.confidenceLevel, seed: settings.seed &+ 12,
                                                 Statistics.median)
        verdict = Statistics.verdict(pValue: pValue, significanceLevel: settings.significanceLevel,
                                     change: meanChange, noiseThreshold: settings.noiseThreshold)
        significanceLevel = settings.significanceLevel
        noiseThreshold = settings.noiseThreshold
    }
}

// MARK: Formatting

public enum Format {
    /// criterion-style time: 3 significant-ish digits with ps/ns/µs/ms/s.
    public static func time(_ nanoseconds: Double) -> String {
        let magnitude = Swift.abs(nanoseconds)
        let (value, unit): (Double, String)
        switch magnitude {
        case ..<1: (value, unit) = (nanoseconds * 1000, "ps")
        case ..<1_000: (value, unit) = (nanoseconds, "ns")
        case ..<1_000_000: (value, unit) = (nanoseconds / 1_000, "µs")
        case ..<1_000_000_000: (value, unit) = (nanoseconds / 1_000_000, "ms")
        default: (value, unit) = (nanoseconds / 1_000_000_000, "s")
        }
        return "\(fixed(value)) \(unit)"
    }

    /// Four significant digits, as criterion prints.
    static func fixed(_ value: Double) -> String {
        let magnitude = Swift.abs(value)
        let decimals = magnitude >= 100 ? 2 : magnitude >= 10 ? 3 : 4
        return String(format: "%.\(decimals)f", value)
    }

    public static func throughput(_ throughput: Throughput, nanosecondsPerIteration: Double) -> String {
        let (count, unit): (Int, String)
        switch throughput {
        case .elements(let n): (count, unit) = (n, "elem/s")
        case .bytes(let n): (count, unit) = (n, "B/s")
        }
        let perSecond = Double(count) / (nanosecondsPerIteration / 1e9)
        let prefixes: [(Double, String)] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1, "")]
        let (scale, prefix) = prefixes.first { perSecond >= $0.0 } ?? (1, "")
        let binaryUnit = unit == "B/s" && !prefix.isEmpty ? "\(prefix)B/s" : "\(prefix)\(unit)"
        return "\(fixed(perSecond / scale)) \(binaryUnit)"
    }

    /// A speed ratio: two decimals from 0.1× up, three significant digits below, so a peer a
    /// thousand times slower reads 0.00107×, not 0.00×.
    public static func ratio(_ value: Double) -> String {
        value >= 0.1 ? String(format: "%.2f×", value) : String(format: "%.3g×", value)
    }

    /// A benchmark's name in messages and titles: its id, and the worker count of a sweep.
    public static func label(_ id: BenchmarkID, threads: Int?) -> String {
        "\(id)\(threads.map { " (threads: \($0))" } ?? "")"
    }

    public static func percent(_ fraction: Double) -> String {
        String(format: "%+.4f%%", fraction * 100)
    }
}

public enum TextReport {
    /// criterion's console shape for one benchmark.
    public static func render(_ result: BenchmarkResult) -> String {
        let analysis = result.analysis
        let indent = String(repeating: " ", count: 24)
        var lines: [String] = []
        lines.append(Format.label(result.id, threads: result.threads))
        let typical = analysis.typical
        lines.append("\(indent)time:   [\(Format.time(typical.lower)) \(Format.time(typical.point)) \(Format.time(typical.upper))]")
        if let throughput = result.throughput {
            // Faster time is higher throughput: the interval's ends swap.
            lines.append("\(indent)thrpt:  [\(Format.throughput(throughput, nanosecondsPerIteration: typical.upper)) "
                + "\(Format.throughput(throughput, nanosecondsPerIteration: typical.point)) "
                + "\(Format.throughput(throughput, nanosecondsPerIteration: typical.lower))]")
        }
        if let comparison = result.comparison {
            let change = comparison.meanChange
            let relation = comparison.pValue < comparison.significanceLevel ? "<" : ">"
            lines.append("\(indent)change: [\(Format.percent(change.lower)) \(Format.percent(change.point)) \(Format.percent(change.upper))] "
                + "(p = \(String(format: "%.2f", comparison.pValue)) \(relation) \(String(format: "%.2f", comparison.significanceLevel)))")
            switch comparison.verdict {
            case .improved: lines.append("\(indent)Performance has improved.")
            case .regressed: lines.append("\(indent)Performance has regressed.")
            case .noChange: lines.append("\(indent)No change in performance detected.")
            case .withinNoise: lines.append("\(indent)Change within noise threshold.")
            }
        }
        let usage = analysis.samples.usage
        let iterations = Double(Swift.max(analysis.samples.totalIterations, 1))
        var resources = "\(indent)cpu/iter: user \(Format.time(Double(usage.userNanoseconds) / iterations)), "
            + "sys \(Format.time(Double(usage.systemNanoseconds) / iterations)); "
            + "ctx switches: \(usage.voluntaryContextSwitches) vol, \(usage.involuntaryContextSwitches) invol; "
            + "peak RSS \(usage.peakResidentBytes / (1 << 20)) MiB"
        if let mallocs = result.mallocsPerIteration {
            resources += "; mallocs/iter \(String(format: "%.2f", mallocs))"
        }
        if let idle = result.idleCPUPercent {
            resources += "; idle CPU after: \(String(format: "%.2f", idle)) %"
        }
        if let handoff = result.handoff {
            resources += "; CPU hand-off: median \(Format.time(handoff.median)), fastest \(Format.time(handoff.fastest))"
        }
        lines.append(resources)
        if let r2 = analysis.rSquared {
            lines.append("\(indent)slope R²: \(String(format: "%.7f", r2)); mean \(Format.time(analysis.mean.point)), median \(Format.time(analysis.median.point)), MAD \(Format.time(analysis.medianAbsoluteDeviation.point))")
        }
        let outliers = analysis.outliers
        let n = analysis.samples.times.count
        if outliers.total > 0 {
            func share(_ count: Int) -> String { String(format: "%.2f%%", Double(count) * 100 / Double(n)) }
            lines.append("Found \(outliers.total) outliers among \(n) measurements (\(share(outliers.total)))")
            for (count, label) in [(outliers.lowSevere, "low severe"), (outliers.lowMild, "low mild"),
                                   (outliers.highMild, "high mild"), (outliers.highSevere, "high severe")] where count > 0 {
                lines.append("  \(count) (\(share(count))) \(label)")
            }
        }
        return lines.joined(separator: "\n")
    }
}

public enum MarkdownReport {
    /// One table per group, competitors side by side: median time per iteration with its
    /// confidence interval, throughput, and, when measured at several worker counts, the
    /// speedup against the same benchmark's one-thread run. Benchmarks with samples next to a
    /// hand-off reading over `HandoffReadings.slowFactor` times the run's fastest are marked ⚠
    /// with their count, and a footnote follows the tables.
    public static func render(_ results: [BenchmarkResult]) -> String {
        let handoffReference = HandoffReadings.reference(results)
        var flagged = 0
        var groups: [String: [BenchmarkResult]] = [:]
        var order: [String] = []
        for result in results {
            if groups[result.id.group] == nil { order.append(result.id.group) }
            groups[result.id.group, default: []].append(result)
        }
        var out: [String] = []
        for group in order {
            let members = groups[group]!
            let showThreads = members.contains { $0.threads != nil }
            let showThroughput = members.contains { $0.throughput != nil }
            let showMallocs = members.contains { $0.mallocsPerIteration != nil }
            let showIdle = members.contains { $0.idleCPUPercent != nil }
            let showHandoff = members.contains { $0.handoff != nil }
            let showLoad = members.contains { $0.backgroundLoad != nil }
            let serial = members.first { $0.id.name == "serial" && $0.threads == nil }
            out.append("### \(group)")
            out.append("")
            var header = "| benchmark |"
            var rule = "|---|"
            if showThreads { header += " threads |"; rule += "---:|" }
            if showLoad { header += " load |"; rule += "---:|" }
            header += " median | 95% CI |"
            rule += "---:|---|"
            if showLoad { header += " slowdown |"; rule += "---:|" }
            if showThroughput { header += " throughput | per unit |"; rule += "---:|---:|" }
            if serial != nil { header += " vs serial |"; rule += "---:|" }
            if showThreads { header += " speedup | efficiency |"; rule += "---:|---:|" }
            if showMallocs { header += " mallocs/iter |"; rule += "---:|" }
            if showIdle { header += " idle CPU after |"; rule += "---:|" }
            if showHandoff { header += " CPU hand-off |"; rule += "---:|" }
            header += " how |"
            rule += "---|"
            out.append(header)
            out.append(rule)
            for result in members {
                let median = result.analysis.median
                var row = "| \(result.id.name)\(result.id.parameter.map { "/\($0)" } ?? "") |"
                if showThreads { row += " \(result.threads.map(String.init) ?? "—") |" }
                if showLoad { row += " \(result.backgroundLoad.map(String.init) ?? "quiet") |" }
                row += " \(Format.time(median.point)) | \(Format.time(median.lower)) – \(Format.time(median.upper)) |"
                if showLoad {
                    // The loaded median over the quiet one of the same benchmark in this run.
                    if result.backgroundLoad != nil, let quiet = result.quiet(in: members) {
                        row += " \(String(format: "%.2f×", median.point / quiet.analysis.median.point)) |"
                    } else {
                        row += " |"
                    }
                }
                if showThroughput {
                    row += " \(result.throughput.map { Format.throughput($0, nanosecondsPerIteration: median.point) } ?? "") |"
                    // Median time per unit of work: ns/job, ns/task, ns/node, ns/hop, or per byte.
                    switch result.throughput {
                    case .elements(let n)?: row += " \(Format.time(median.point / Double(n))) |"
                    case .bytes(let n)?: row += " \(Format.time(median.point / Double(n)))/B |"
                    case nil: row += " |"
                    }
                }
                if serial != nil {
                    // Against the serial loop measured under the same load.
                    let sameLoad = members.first { $0.id.name == "serial" && $0.threads == nil && $0.backgroundLoad == result.backgroundLoad }
                    row += " \(sameLoad.map { Format.ratio($0.analysis.median.point / median.point) } ?? "") |"
                }
                if showThreads {
                    // Speedup against the same benchmark at one worker; efficiency = speedup / workers.
                    let single = members.first { $0.id == result.id && $0.threads == 1 && $0.backgroundLoad == result.backgroundLoad }
                    if let single, let threads = result.threads {
                        let speedup = single.analysis.median.point / median.point
                        row += " \(String(format: "%.2f×", speedup)) | \(String(format: "%.0f%%", speedup / Double(threads) * 100)) |"
                    } else {
                        row += " | |"
                    }
                }
                if showMallocs { row += " \(result.mallocsPerIteration.map { String(format: "%.2f", $0) } ?? "") |" }
                if showIdle { row += " \(result.idleCPUPercent.map { String(format: "%.2f %%", $0) } ?? "") |" }
                if showHandoff {
                    if let handoff = result.handoff {
                        let slow = handoffReference.map { handoff.slowSamples(reference: $0) } ?? 0
                        if slow > 0 { flagged += 1 }
                        let samples = handoff.readings.count - 1
                        row += " \(Format.time(handoff.median))\(slow > 0 ? " ⚠ \(slow)/\(samples)" : "") |"
                    } else {
                        row += " |"
                    }
                }
                row += " \(result.note ?? "") |"
                out.append(row)
            }
            out.append("")
        }
        if flagged > 0, let handoffReference {
            out.append("CPU hand-off: the median of the readings taken before the first sample and after each (a cache line "
                + "passed between the first and last CPU). ⚠ k/n: \(flagged) of \(results.count) benchmarks had k of n samples "
                + "next to a reading over \(String(format: "%.0f", HandoffReadings.slowFactor))× the run's fastest "
                + "(\(Format.time(handoffReference))): the CPUs sat farther apart then (on a virtual machine, the host moved "
                + "them): where a benchmark passes work between CPUs, those samples are not comparable with the others.")
            out.append("")
        }
        return out.joined(separator: "\n")
    }
}

public enum JSONLinesReport {
    /// One JSON object per line. Schema (additive: fields may be added, never removed or
    /// renamed): docs/benchmarking.md, "JSON Lines".
    public static func line(_ result: BenchmarkResult) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let record = Record(id: result.id.description, group: result.id.group, name: result.id.name,
                            parameter: result.id.parameter, result: result)
        return String(decoding: try encoder.encode(record), as: UTF8.self)
    }

    struct Record: Encodable {
        let type = "benchmark"
        let id: String
        let group: String
        let name: String
        let parameter: String?
        let result: BenchmarkResult
    }
}
