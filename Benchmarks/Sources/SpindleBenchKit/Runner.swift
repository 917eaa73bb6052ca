#if canImport(Glibc)
import Glibc
#endif

/// How long and how often to measure. Defaults are criterion.rs's.
public struct MeasurementSettings: Hashable, Sendable, Codable {
    public var sampleSize = 100
    public var warmUpNanoseconds: UInt64 = 3_000_000_000
    public var measurementNanoseconds: UInt64 = 5_000_000_000
    public var resamples = 100_000
    public var confidenceLevel = 0.95
    public var noiseThreshold = 0.01
    public var significanceLevel = 0.05
    /// Seeds every bootstrap, so a report reproduces from the same samples.
    public var seed: UInt64 = 0x5350_494E_444C_45
    /// The most wall-clock time one benchmark may take, warm-up, samples and untimed work
    /// between them included (nil: no limit). A benchmark that reaches it stops sampling with
    /// what it has (at least two samples) and says so (`Samples.plannedSamples`), as criterion
    /// warns and carries on.
    public var timeLimitNanoseconds: UInt64?

    public init() {}

    /// `--quick`: 10 samples, 0.5 s warm-up, 1 s of measurement, 10,000 resamples, and at most
    /// 5 s per benchmark.
    public static var quick: MeasurementSettings {
        var settings = MeasurementSettings()
        settings.sampleSize = 10
        settings.warmUpNanoseconds = 500_000_000
        settings.measurementNanoseconds = 1_000_000_000
        settings.resamples = 10_000
        settings.timeLimitNanoseconds = 5_000_000_000
        return settings
    }
}

/// Resource use over the measured samples, from getrusage(RUSAGE_SELF): the whole process, so
/// it includes the job system's own worker threads.
public struct ResourceUsage: Hashable, Sendable, Codable {
    public var userNanoseconds: UInt64 = 0
    public var systemNanoseconds: UInt64 = 0
    public var voluntaryContextSwitches: Int = 0
    public var involuntaryContextSwitches: Int = 0
    /// Peak resident set size of the process so far, in bytes.
    public var peakResidentBytes: Int = 0

    public static func now() -> ResourceUsage {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func nanoseconds(_ time: timeval) -> UInt64 {
            UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_usec) * 1000
        }
        return ResourceUsage(
            userNanoseconds: nanoseconds(usage.ru_utime), systemNanoseconds: nanoseconds(usage.ru_stime),
            voluntaryContextSwitches: usage.ru_nvcsw, involuntaryContextSwitches: usage.ru_nivcsw,
            peakResidentBytes: usage.ru_maxrss * 1024)
    }

    /// `self + other`, keeping the higher peak.
    public func adding(_ other: ResourceUsage) -> ResourceUsage {
        ResourceUsage(
            userNanoseconds: userNanoseconds &+ other.userNanoseconds,
            systemNanoseconds: systemNanoseconds &+ other.systemNanoseconds,
            voluntaryContextSwitches: voluntaryContextSwitches + other.voluntaryContextSwitches,
            involuntaryContextSwitches: involuntaryContextSwitches + other.involuntaryContextSwitches,
            peakResidentBytes: Swift.max(peakResidentBytes, other.peakResidentBytes))
    }

    /// `self − earlier`, keeping the later peak.
    public func since(_ earlier: ResourceUsage) -> ResourceUsage {
        ResourceUsage(
            userNanoseconds: userNanoseconds &- earlier.userNanoseconds,
            systemNanoseconds: systemNanoseconds &- earlier.systemNanoseconds,
            voluntaryContextSwitches: voluntaryContextSwitches - earlier.voluntaryContextSwitches,
            involuntaryContextSwitches: involuntaryContextSwitches - earlier.involuntaryContextSwitches,
            peakResidentBytes: peakResidentBytes)
    }
}

/// Counts heap allocations across the process while on (spindle-bench interposes malloc; see
/// Benchmarks/CMallocCounter). The runner switches it on only for an untimed pass.
public struct AllocationCounter {
    public let start: () -> Void
    public let stop: () -> Int

    public init(start: @escaping () -> Void, stop: @escaping () -> Int) {
        self.start = start
        self.stop = stop
    }
}

/// The raw result of measuring one benchmark at one worker count.
public struct Samples: Hashable, Sendable, Codable {
    public let id: BenchmarkID
    public let threads: Int?
    public let mode: SamplingMode
    /// Iterations of each sample.
    public let iterations: [Double]
    /// Nanoseconds of each sample.
    public let times: [Double]
    public let usage: ResourceUsage
    public let totalIterations: Int
    /// Heap allocations per iteration in an untimed pass after the samples (nil: not counted).
    public var mallocsPerIteration: Double?
    /// Nanoseconds per cache-line hand-off between two CPUs, probed before the first sample and
    /// after each one (`Runner.handoffProbe`; nil: not probed, or a probe gave no reading).
    public var handoffs: [Double]?
    /// The samples the plan asked for, when the time limit stopped the run before it had them
    /// all (nil: every planned sample was taken).
    public var plannedSamples: Int?

    /// Nanoseconds per iteration of each sample.
    public var perIteration: [Double] { zip(times, iterations).map { $0 / $1 } }
}

/// Progress of a long measurement, for the console's progress line.
public enum RunProgress {
    case warmingUp(BenchmarkID, threads: Int?, seconds: Double)
    case collecting(BenchmarkID, threads: Int?, samples: Int, estimatedSeconds: Double)
}

/// Warm-up, then sampling, per criterion.rs:
/// - Warm-up runs the routine with doubling iteration counts (1, 2, 4, …) until the warm-up time
///   is spent, and yields the mean time per iteration.
/// - The linear plan picks d so that samples of d, 2d, …, n·d iterations take about the
///   measurement time in total; the flat plan gives every sample the same count; the single
///   plan one iteration per sample.
public struct Runner {
    public var settings: MeasurementSettings
    public var progress: ((RunProgress) -> Void)?
    public var allocationCounter: AllocationCounter?
    /// Reads the machine's cache-line hand-off time between two CPUs (nil: no reading). Run
    /// untimed before the first sample and after each, so every sample lies between two
    /// readings; resource use is counted over the samples only.
    public var handoffProbe: (() -> Double?)?

    public init(settings: MeasurementSettings, progress: ((RunProgress) -> Void)? = nil,
                allocationCounter: AllocationCounter? = nil, handoffProbe: (() -> Double?)? = nil) {
        self.settings = settings
        self.progress = progress
        self.allocationCounter = allocationCounter
        self.handoffProbe = handoffProbe
    }

    public func measure(_ benchmark: Benchmark, threads: Int?) throws -> Samples {
        let start = Clock.nanoseconds()
        let routine = try benchmark.make(threads ?? 0)
        progress?(.warmingUp(benchmark.id, threads: threads, seconds: Double(settings.warmUpNanoseconds) / 1e9))
        let meanPerIteration = try warmUp(routine)
        /// Whether the time limit has passed (checked between samples, never inside one).
        func outOfTime() -> Bool {
            guard let limit = settings.timeLimitNanoseconds else { return false }
            return Clock.nanoseconds() &- start >= limit
        }
        let sampleSize = Swift.min(settings.sampleSize, benchmark.maxSamples ?? .max)
        let plan = iterationCounts(mode: benchmark.mode, meanPerIteration: meanPerIteration, sampleSize: sampleSize)
        let estimate = plan.reduce(0, +) * meanPerIteration / 1e9
        progress?(.collecting(benchmark.id, threads: threads, samples: plan.count, estimatedSeconds: estimate))
        var times: [Double] = []
        times.reserveCapacity(plan.count)
        // Every sample between two readings; one missing reading drops them all.
        var handoffs: [Double]? = handoffProbe == nil ? nil : []
        func probe() {
            guard let handoffProbe, handoffs != nil else { return }
            if let reading = handoffProbe() { handoffs?.append(reading) } else { handoffs = nil }
        }
        probe()
        var usage = ResourceUsage()
        for count in plan {
            let before = ResourceUsage.now()
            times.append(Double(try routine(Int(count))))
            usage = usage.adding(ResourceUsage.now().since(before))
            probe()
            if times.count >= 2 && times.count < plan.count && outOfTime() { break }
        }
        let taken = Array(plan.prefix(times.count))
        var samples = Samples(id: benchmark.id, threads: threads, mode: benchmark.mode, iterations: taken, times: times,
                              usage: usage, totalIterations: Int(taken.reduce(0, +)), mallocsPerIteration: nil,
                              handoffs: handoffs)
        if taken.count < plan.count { samples.plannedSamples = plan.count }
        // The untimed allocation pass costs one more sample: left out once the time is up.
        if let counter = allocationCounter, !outOfTime() {
            // Untimed: as many iterations as the smallest sample.
            let iterations = Int(taken.min() ?? 1)
            counter.start()
            let outcome = Result { try routine(iterations) }
            let count = counter.stop()
            _ = try outcome.get()
            samples.mallocsPerIteration = Double(count) / Double(iterations)
        }
        return samples
    }

    /// Mean nanoseconds per iteration over the warm-up. Stops when the wall-clock warm-up time
    /// is spent or when the routine's measured time alone covers it (a routine may time only
    /// part of what it does, or report time it did not spend, as synthetic tests do).
    func warmUp(_ routine: Routine) throws -> Double {
        let start = Clock.nanoseconds()
        var iterations = 1
        var totalIterations = 0
        var totalTime: UInt64 = 0
        while true {
            totalTime = totalTime.addingReportingOverflow(try routine(iterations)).partialValue
            totalIterations += iterations
            if Clock.nanoseconds() &- start >= settings.warmUpNanoseconds || totalTime >= settings.warmUpNanoseconds {
                break
            }
            iterations = Swift.min(iterations * 2, 1 << 32)
        }
        return Swift.max(Double(totalTime) / Double(totalIterations), 0.001)
    }

    /// Iteration counts of the samples for a routine that takes `meanPerIteration` ns.
    func iterationCounts(mode: SamplingMode, meanPerIteration: Double, sampleSize n: Int) -> [Double] {
        let target = Double(settings.measurementNanoseconds)
        switch mode {
        case .linear:
            // Σ i·d for i in 1...n = d·n(n+1)/2 iterations.
            let total = Double(n * (n + 1) / 2)
            let d = Swift.max(1, (target / (meanPerIteration * total)).rounded(.up))
            return (1...n).map { Double($0) * d }
        case .flat:
            let d = Swift.max(1, (target / (meanPerIteration * Double(n))).rounded(.up))
            return Array(repeating: d, count: n)
        case .single:
            return Array(repeating: 1, count: n)
        }
    }
}

/// Process CPU time over the next `seconds`, in percent of one CPU: run right after a
/// benchmark, it shows how much CPU the system under test burns while idle (spinning workers).
public func measureIdleCPU(seconds: Double = 1) -> Double {
    let before = ResourceUsage.now()
    let start = Clock.nanoseconds()
    var remaining = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var left = timespec()
    while nanosleep(&remaining, &left) != 0 && errno == EINTR { remaining = left }
    let elapsed = Double(Clock.nanoseconds() - start)
    let used = ResourceUsage.now().since(before)
    return Double(used.userNanoseconds + used.systemNanoseconds) / elapsed * 100
}

// MARK: Analysis

/// Estimates of one benchmark's samples, in nanoseconds per iteration.
public struct Analysis: Hashable, Sendable, Codable {
    public let samples: Samples
    public let mean: Statistics.Estimate
    public let median: Statistics.Estimate
    public let standardDeviation: Statistics.Estimate
    public let medianAbsoluteDeviation: Statistics.Estimate
    /// Time per iteration from the regression of sample time on iterations (linear plan only).
    public let slope: Statistics.Estimate?
    public let rSquared: Double?
    public let outliers: Statistics.Outliers

    /// The headline estimate: the slope for the linear plan (it cancels fixed per-sample costs),
    /// else the mean.
    public var typical: Statistics.Estimate { slope ?? mean }

    public init(_ samples: Samples, settings: MeasurementSettings) {
        self.samples = samples
        let values = samples.perIteration
        let resamples = settings.resamples
        let level = settings.confidenceLevel
        let seed = settings.seed
        mean = Statistics.bootstrap(values, resamples: resamples, confidenceLevel: level, seed: seed, Statistics.mean)
        median = Statistics.bootstrap(values, resamples: resamples, confidenceLevel: level, seed: seed &+ 1, Statistics.median)
        if values.count >= 2 {
            standardDeviation = Statistics.bootstrap(values, resamples: resamples, confidenceLevel: level, seed: seed &+ 2,
                                                     Statistics.standardDeviation)
        } else {
            standardDeviation = Statistics.Estimate(point: 0, lower: 0, upper: 0, confidenceLevel: level)
        }
        medianAbsoluteDeviation = Statistics.bootstrap(values, resamples: resamples, confidenceLevel: level, seed: seed &+ 3,
                                                       Statistics.medianAbsoluteDeviation)
        if samples.mode == .linear && samples.iterations.count >= 2 {
            slope = Statistics.bootstrapSlope(x: samples.iterations, y: samples.times, resamples: resamples,
                                              confidenceLevel: level, seed: seed &+ 4)
            rSquared = Statistics.fitThroughOrigin(x: samples.iterations, y: samples.times).rSquared
        } else {
            slope = nil
            rSquared = nil
        }
        outliers = Statistics.classifyOutliers(values)
    }
}
