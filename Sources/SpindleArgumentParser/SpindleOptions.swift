// Spindle's options for command-line tools built with swift-argument-parser: embed
// `@OptionGroup var spindle: SpindleOptions` and call `spindle.configuration()`.

// Compiled with the `SpindleArgumentParser` package trait only (Package.swift).
#if SpindleArgumentParser
import ArgumentParser
import Spindle

/// The job system's options as command-line flags, for any `ParsableCommand`:
///
/// ```swift
/// struct Render: ParsableCommand {
///     @OptionGroup(title: "Job system") var spindle: SpindleOptions
///     func run() throws {
///         let jobs = try JobSystem(configuration: spindle.configuration())
///         …
///     }
/// }
/// ```
///
/// `--spindle-preset` is applied first, then each other option given; options not given keep the
/// preset's (or `base`'s) value. Invalid values stop parsing with a message that names the flag,
/// the value and what is accepted.
public struct SpindleOptions: ParsableArguments, Sendable {
    /// `--spindle-preset`: the starting configuration.
    @Option(name: .customLong("spindle-preset"),
            help: ArgumentHelp("Starting configuration.", discussion: JobSystem.Configuration.Key.preset.accepted,
                               valueName: "preset"))
    public var preset: String?

    /// `--spindle-workers`: the number of worker threads.
    @Option(name: .customLong("spindle-workers"),
            help: ArgumentHelp("Worker threads (default: one per allowed CPU).", valueName: "count"))
    public var workers: String?

    /// `--spindle-cpuset`: the CPUs workers may use.
    @Option(name: .customLong("spindle-cpuset"),
            help: ArgumentHelp("CPUs the workers may use, in taskset -c form (default: all allowed).", valueName: "list"))
    public var cpuset: String?

    /// `--spindle-pinning`: how workers are pinned.
    @Option(name: .customLong("spindle-pinning"),
            help: ArgumentHelp("How workers are pinned: \(JobSystem.Pinning.names.joined(separator: ", ")).", valueName: "strategy"))
    public var pinning: String?

    /// `--spindle-thread-prefix`: the worker thread name prefix.
    @Option(name: .customLong("spindle-thread-prefix"),
            help: ArgumentHelp("Worker thread name prefix (default: spindle-w).", valueName: "prefix"))
    public var threadPrefix: String?

    /// `--spindle-spin-us`: the idle spin before sleeping, in microseconds.
    @Option(name: .customLong("spindle-spin-us"),
            help: ArgumentHelp("Microseconds an idle worker spins before sleeping (default: 50).", valueName: "µs"))
    public var spinMicroseconds: String?

    /// No options given (what the parser starts from).
    public init() {}

    /// The options given, in the order they are applied (the preset first), with their flags.
    var given: [(JobSystem.Configuration.Key, String, String)] {
        var result: [(JobSystem.Configuration.Key, String, String)] = []
        if let preset { result.append((.preset, preset, "--spindle-preset")) }
        if let workers { result.append((.workers, workers, "--spindle-workers")) }
        if let cpuset { result.append((.cpuset, cpuset, "--spindle-cpuset")) }
        if let pinning { result.append((.pinning, pinning, "--spindle-pinning")) }
        if let threadPrefix { result.append((.threadPrefix, threadPrefix, "--spindle-thread-prefix")) }
        if let spinMicroseconds { result.append((.spinMicroseconds, spinMicroseconds, "--spindle-spin-us")) }
        return result
    }

    /// `base` with the options given on the command line applied.
    ///
    /// - Throws: `JobSystem.OptionError` for a value that cannot be used (`validate()` reports
    ///   the same while parsing).
    public func configuration(base: JobSystem.Configuration = .init()) throws(JobSystem.OptionError) -> JobSystem.Configuration {
        var configuration = base
        for (key, value, flag) in given {
            try configuration.set(key, from: value, source: flag)
        }
        return configuration
    }

    /// Checks every given value while parsing, so a bad one is reported as a usage error.
    public func validate() throws {
        do {
            _ = try configuration()
        } catch {
            throw ValidationError(error.description)
        }
    }
}
#endif  // SpindleArgumentParser
