// Presets, a builder-style API, and the text form of every option, shared by the configuration
// integrations (SpindleArgumentParser; SpindleConfiguration for the environment, files and the
// command line through swift-configuration) so that each reports a bad value the same way.
// README.md, "Configuration".

extension JobSystem.Configuration {
    /// Starting points for common uses. Each is a plain configuration: change any option after.
    public enum Preset: String, CaseIterable, Hashable, Sendable {
        /// The defaults: one pinned worker per allowed CPU, 50 µs of spinning before sleeping.
        case standard
        /// Frame loops and request handling where the time to start new work matters: workers
        /// spin 500 µs before sleeping, so work submitted in the next frame finds them awake
        /// (waking a sleeping thread costs tens of µs on a VM), at the price of CPU time when idle.
        case latency
        /// Batch work: one worker per physical core first (`.avoidSMTSiblings`), the default spin.
        case throughput
        /// Work that must not disturb the rest of the machine: no pinning (the kernel places the
        /// workers), no spinning (a worker sleeps as soon as it finds no work), threads named
        /// "spindle-bg<N>".
        case background
    }

    /// The configuration of `preset`.
    public init(preset: Preset) {
        self.init()
        switch preset {
        case .standard:
            break
        case .latency:
            spinBeforeSleeping = .microseconds(500)
        case .throughput:
            pinning = .avoidSMTSiblings
        case .background:
            pinning = .none
            spinBeforeSleeping = .zero
            threadNamePrefix = "spindle-bg"
        }
    }

    // MARK: Builder

    /// This configuration with `workers` workers (nil: one per CPU).
    public func workers(_ count: Int?) -> Self { with { $0.workers = count } }
    /// This configuration restricted to `cpus` (nil: every allowed CPU).
    public func cpus(_ set: CPUSet?) -> Self { with { $0.cpus = set } }
    /// This configuration with `pinning`.
    public func pinning(_ strategy: JobSystem.Pinning) -> Self { with { $0.pinning = strategy } }
    /// This configuration with thread names "`prefix`<N>".
    public func threadNamePrefix(_ prefix: String) -> Self { with { $0.threadNamePrefix = prefix } }
    /// This configuration with idle workers spinning `duration` before they sleep.
    public func spinBeforeSleeping(_ duration: Duration) -> Self { with { $0.spinBeforeSleeping = duration } }
    /// This configuration with fiber stacks of `stack`.
    public func stack(_ stack: FiberStackConfiguration) -> Self { with { $0.stack = stack } }
    /// This configuration reporting stalls after `duration` (nil: never).
    public func stallReportAfter(_ duration: Duration?) -> Self { with { $0.stallReportAfter = duration } }

    private func with(_ change: (inout Self) -> Void) -> Self {
        var copy = self
        change(&copy)
        return copy
    }

    // MARK: Text form

    /// The options as text settings name them (`SPINDLE_<KEY>` in the environment, `spindle.<key>`
    /// in files, `--spindle-<key>` on command lines).
    ///
    /// `allCases` lists `preset` first: applying options in that order lets the others refine it.
    public enum Key: String, CaseIterable, Hashable, Sendable {
        case preset
        case workers
        case cpuset
        case pinning
        case threadPrefix = "thread-prefix"
        case spinMicroseconds = "spin-us"

        /// What the option accepts, for error messages and help.
        public var accepted: String {
            switch self {
            case .preset: Preset.allCases.map(\.rawValue).joined(separator: ", ")
            case .workers: "a whole number from 1 to \(JobSystem.Configuration.maximumWorkers)"
            case .cpuset: "a CPU list such as 0-3,8 (the form of taskset -c)"
            case .pinning: JobSystem.Pinning.names.joined(separator: ", ")
            case .threadPrefix: "a name of at most 11 bytes (Linux keeps 15, the worker number follows)"
            case .spinMicroseconds: "a whole number of microseconds, 0 or more"
            }
        }
    }

    /// Sets the option `key` from its text form. A preset replaces every option, so apply it
    /// first.
    ///
    /// - Parameter source: where the value came from, named in the error (for example
    ///   "SPINDLE_WORKERS" or "--spindle-workers").
    /// - Throws: `JobSystem.OptionError`, naming the source, the value and what is accepted.
    public mutating func set(_ key: Key, from text: String, source: String) throws(JobSystem.OptionError) {
        let value = String(text.trimmingWhitespace())
        func invalid() -> JobSystem.OptionError { JobSystem.OptionError(source: source, value: text, accepted: key.accepted) }
        switch key {
        case .preset:
            guard let preset = Preset(rawValue: value) else { throw invalid() }
            self = JobSystem.Configuration(preset: preset)
        case .workers:
            guard let count = Int(value), count >= 1, count <= JobSystem.Configuration.maximumWorkers else { throw invalid() }
            workers = count
        case .cpuset:
            do {
                cpus = try CPUSet(parsing: value)
            } catch {
                throw JobSystem.OptionError(source: source, value: text, accepted: "\(key.accepted); \(error)")
            }
        case .pinning:
            guard let strategy = JobSystem.Pinning(name: value) else { throw invalid() }
            pinning = strategy
        case .threadPrefix:
            guard !value.isEmpty, value.utf8.count <= 11 else { throw invalid() }
            threadNamePrefix = value
        case .spinMicroseconds:
            guard let microseconds = Int(value), microseconds >= 0 else { throw invalid() }
            spinBeforeSleeping = .microseconds(microseconds)
        }
    }
}

extension JobSystem.Pinning {
    /// The text names of the strategies: "none", "compact", "avoid-smt".
    public static let names = ["none", "compact", "avoid-smt"]

    /// The strategy named `name` (see `names`), or nil.
    public init?(name: String) {
        switch name {
        case "none": self = .none
        case "compact": self = .compact
        case "avoid-smt": self = .avoidSMTSiblings
        default: return nil
        }
    }

    /// The strategy's text name (one of `names`).
    public var name: String {
        switch self {
        case .none: "none"
        case .compact: "compact"
        case .avoidSMTSiblings: "avoid-smt"
        }
    }
}

extension JobSystem {
    /// An option's text could not be used. `description` names where it came from, the value,
    /// and what is accepted.
    public struct OptionError: Error, Hashable, Sendable, CustomStringConvertible {
        /// Where the value came from ("SPINDLE_WORKERS", "--spindle-workers", a file key, …).
        public let source: String
        /// The value as given.
        public let value: String
        /// What the option accepts.
        public let accepted: String

        /// An error for `value` from `source`; `accepted` says what would have been accepted.
        public init(source: String, value: String, accepted: String) {
            self.source = source
            self.value = value
            self.accepted = accepted
        }

        public var description: String {
            "\(source): \"\(value)\" is not accepted; expected \(accepted)"
        }
    }
}
