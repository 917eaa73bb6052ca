#if canImport(Glibc)
import Glibc
#endif

/// Identifies a benchmark as `group/name` or `group/name/parameter`, criterion's ids.
public struct BenchmarkID: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let group: String
    public let name: String
    public let parameter: String?

    public init(group: String, name: String, parameter: String? = nil) {
        precondition(!group.isEmpty && !name.isEmpty, "a benchmark needs a group and a name")
        precondition(!group.contains("/") && !name.contains("/") && !(parameter?.contains("/") ?? false),
                     "benchmark id parts may not contain '/': \(group)/\(name)/\(parameter ?? "")")
        self.group = group
        self.name = name
        self.parameter = parameter
    }

    public var description: String {
        parameter.map { "\(group)/\(name)/\($0)" } ?? "\(group)/\(name)"
    }

    public static func < (a: BenchmarkID, b: BenchmarkID) -> Bool { a.description < b.description }
}

/// Work done per iteration, for throughput (`thrpt:`) lines.
public enum Throughput: Hashable, Sendable, Codable {
    case elements(Int)
    case bytes(Int)
}

/// How iterations are spread over samples.
public enum SamplingMode: String, Hashable, Sendable, Codable {
    /// Sample i runs i·d iterations (criterion's default): the slope of time against iterations
    /// then estimates the time per iteration free of fixed per-sample costs.
    case linear
    /// Every sample runs the same number of iterations: for slow routines, where the linear
    /// plan's last samples would take too long.
    case flat
    /// One iteration per sample: for latency benchmarks, where each iteration is one event
    /// (wake-up, round trip) and its own distribution matters.
    case single
}

/// A timed routine. Given an iteration count, it runs that many iterations and returns the
/// nanoseconds they took, timing only the part that is measured: setup and teardown stay outside
/// the clock (`Timer` helps). Throws `BenchmarkCheckFailure` when a check value is wrong.
public typealias Routine = (_ iterations: Int) throws -> UInt64

/// The monotonic clock used for every sample.
public enum Clock {
    @inline(__always)
    public static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// Times `body`, the measured part of a routine.
    @inline(__always)
    public static func measure(_ body: () throws -> Void) rethrows -> UInt64 {
        let start = nanoseconds()
        try body()
        return nanoseconds() &- start
    }
}

/// A benchmark's check value was wrong: the run is reported as failed, never as a timing.
public struct BenchmarkCheckFailure: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One registered benchmark.
public struct Benchmark {
    public let id: BenchmarkID
    public var throughput: Throughput?
    public var mode: SamplingMode
    /// Worker-count sensitive: run once per `--threads` value, with that value passed to `make`.
    public var sweepsThreads: Bool
    /// At most this many samples, whatever `--sample-size` says: for routines whose one
    /// iteration takes seconds (criterion's per-group sample size).
    public var maxSamples: Int?
    /// How the benchmark expresses its workload (shown in reports: "concurrentPerform", …).
    public var note: String?
    /// Builds the routine for a worker count (untimed: allocation, graph construction, …).
    public let make: (_ threads: Int) throws -> Routine

    public init(
        _ id: BenchmarkID, throughput: Throughput? = nil, mode: SamplingMode = .linear,
        sweepsThreads: Bool = false, maxSamples: Int? = nil, note: String? = nil,
        make: @escaping (_ threads: Int) throws -> Routine
    ) {
        precondition(maxSamples.map { $0 >= 2 } ?? true, "a benchmark needs at least 2 samples")
        self.id = id
        self.throughput = throughput
        self.mode = mode
        self.sweepsThreads = sweepsThreads
        self.maxSamples = maxSamples
        self.note = note
        self.make = make
    }
}

/// Collects benchmarks by group, in registration order.
public struct BenchmarkRegistry {
    public private(set) var benchmarks: [Benchmark] = []
    public init() {}

    public mutating func register(_ benchmark: Benchmark) {
        precondition(!benchmarks.contains { $0.id == benchmark.id }, "benchmark \(benchmark.id) is registered twice")
        benchmarks.append(benchmark)
    }

    /// Registers a routine whose every iteration is `body`, timed as one batch.
    public mutating func register(
        _ id: BenchmarkID, throughput: Throughput? = nil, mode: SamplingMode = .linear, note: String? = nil,
        _ body: @escaping () throws -> Void
    ) {
        register(Benchmark(id, throughput: throughput, mode: mode, note: note) { _ in
            { iterations in try Clock.measure { for _ in 0..<iterations { try body() } } }
        })
    }
}
