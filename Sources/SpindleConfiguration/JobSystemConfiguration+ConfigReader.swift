// Spindle's options from apple/swift-configuration, following that library's guide for
// configuring libraries: the application chooses the providers (environment, JSON file, command
// line, in-memory), Spindle reads its keys through the `ConfigReader` it is given.

// Compiled with the `SpindleConfiguration` package trait only (Package.swift).
#if SpindleConfiguration
import Configuration
import Spindle

extension JobSystem.Configuration {
    /// Creates a configuration from the values `config` holds under `scope`, on top of `base`.
    ///
    /// ## Configuration keys
    ///
    /// Relative to `scope` (default `spindle`), every one optional; each is applied with the same
    /// rules and messages as the other text forms (`JobSystem.Configuration.Key`):
    ///
    /// | Key | Environment | Command line | Accepts |
    /// |---|---|---|---|
    /// | `preset` | `SPINDLE_PRESET` | `--spindle-preset` | standard, latency, throughput, background (applied first) |
    /// | `workers` | `SPINDLE_WORKERS` | `--spindle-workers` | 1 to 4096 |
    /// | `cpuset` | `SPINDLE_CPUSET` | `--spindle-cpuset` | a CPU list such as `0-3,8` |
    /// | `pinning` | `SPINDLE_PINNING` | `--spindle-pinning` | none, compact, avoid-smt |
    /// | `thread-prefix` | `SPINDLE_THREAD_PREFIX` | `--spindle-thread-prefix` | at most 11 bytes |
    /// | `spin-us` | `SPINDLE_SPIN_US` | `--spindle-spin-us` | microseconds, 0 or more |
    ///
    /// In a JSON file the keys nest: `{"spindle": {"workers": 4, "pinning": "none"}}`. Numbers
    /// may be JSON numbers or strings.
    ///
    /// ```swift
    /// let config = ConfigReader(providers: [
    ///     CommandLineArgumentsProvider(),
    ///     EnvironmentVariablesProvider(),
    ///     try await FileProvider<JSONSnapshot>(filePath: "/etc/myapp/config.json"),
    /// ])
    /// let jobs = try JobSystem(configuration: .init(config: config))
    /// ```
    ///
    /// - Parameters:
    ///   - config: the reader; its providers decide where values come from.
    ///   - scope: the dot-separated key prefix of Spindle's keys; "" for none.
    ///   - base: the values of keys that are not set (and of everything a preset does not set).
    /// - Throws: `JobSystem.OptionError` naming the key (as the environment and the command line
    ///   spell it), the value and what is accepted.
    /// - Complexity: one lookup per key, through every provider of `config`.
    public init(config: ConfigReader, scope: String = "spindle", base: JobSystem.Configuration = .init()) throws(JobSystem.OptionError) {
        let prefix = scope.split(separator: ".", omittingEmptySubsequences: true).map(String.init)
        let reader = prefix.isEmpty ? config : config.scoped(to: ConfigKey(prefix))
        self = base
        // `Key.allCases` starts with the preset, which replaces every option.
        for key in Key.allCases {
            guard let text = Self.text(of: key, in: reader) else { continue }
            try set(key, from: text, source: Self.describe(key, prefix: prefix))
        }
    }

    /// The value of `key` as text: numbers are accepted as JSON numbers too.
    private static func text(of key: Key, in reader: ConfigReader) -> String? {
        let configKey = ConfigKey([key.rawValue])
        switch key {
        case .workers, .spinMicroseconds:
            if let number = reader.int(forKey: configKey) { return String(number) }
            if let text = reader.string(forKey: configKey) { return text }
            // A fractional JSON number: passed on as text so that it is refused by name.
            if let number = reader.double(forKey: configKey) { return String(number) }
            return nil
        case .preset, .cpuset, .pinning, .threadPrefix:
            return reader.string(forKey: configKey)
        }
    }

    /// How errors name a key: the configuration key with its environment and command-line forms.
    private static func describe(_ key: Key, prefix: [String]) -> String {
        let components = prefix + [key.rawValue]
        let environment = components.map { $0.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined() }
            .joined(separator: "_")
        let flag = "--" + components.joined(separator: "-").lowercased()
        return "configuration key \(components.joined(separator: ".")) (\(environment), \(flag))"
    }
}
#endif  // SpindleConfiguration
