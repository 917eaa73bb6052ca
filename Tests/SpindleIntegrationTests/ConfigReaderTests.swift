// Compiled with the `SpindleConfiguration` package trait only (`swift test --enable-all-traits`).
#if SpindleConfiguration
import Configuration
import Spindle
import SpindleConfiguration
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite
struct ConfigReaderTests {
    @Test
    func environmentVariablesSetEveryOption() throws {
        let environment = EnvironmentVariablesProvider(environmentVariables: [
            "SPINDLE_PRESET": "latency",
            "SPINDLE_WORKERS": "3",
            "SPINDLE_CPUSET": "0",
            "SPINDLE_PINNING": "none",
            "SPINDLE_THREAD_PREFIX": "env-w",
            "SPINDLE_SPIN_US": "7",
            "UNRELATED": "x",
        ])
        let configuration = try JobSystem.Configuration(config: ConfigReader(provider: environment))
        #expect(configuration.workers == 3)
        #expect(configuration.cpus == CPUSet([0]))
        #expect(configuration.pinning == .none)
        #expect(configuration.threadNamePrefix == "env-w")
        #expect(configuration.spinBeforeSleeping == .microseconds(7))
        #expect(configuration.stack == JobSystem.Configuration(preset: .latency).stack)
    }

    @Test
    func aPresetAloneKeepsItsValuesAndUnsetKeysKeepTheBase() throws {
        let environment = EnvironmentVariablesProvider(environmentVariables: ["SPINDLE_PRESET": "background"])
        let configuration = try JobSystem.Configuration(config: ConfigReader(provider: environment))
        #expect(configuration == JobSystem.Configuration(preset: .background))

        let empty = EnvironmentVariablesProvider(environmentVariables: [:])
        let base = JobSystem.Configuration().workers(5).threadNamePrefix("base-w")
        #expect(try JobSystem.Configuration(config: ConfigReader(provider: empty), base: base) == base)
    }

    @Test
    func commandLineArgumentsComeBeforeTheEnvironment() throws {
        let arguments = CommandLineArgumentsProvider(arguments: ["app", "--spindle-workers", "2", "--spindle-pinning", "avoid-smt"])
        let environment = EnvironmentVariablesProvider(environmentVariables: ["SPINDLE_WORKERS": "6", "SPINDLE_SPIN_US": "9"])
        let configuration = try JobSystem.Configuration(config: ConfigReader(providers: [arguments, environment]))
        #expect(configuration.workers == 2, "the first provider that has a key wins")
        #expect(configuration.pinning == .avoidSMTSiblings)
        #expect(configuration.spinBeforeSleeping == .microseconds(9))
    }

    @Test
    func aJSONFileNestsTheKeysAndTakesNumbers() async throws {
        let path = "/tmp/spindle-config-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json"
        let json = #"{"app": {"spindle": {"workers": 4, "pinning": "compact", "spin-us": "12", "cpuset": "0"}}}"#
        let file = try #require(fopen(path, "w"))
        fputs(json, file)
        fclose(file)
        defer { unlink(path) }
        let provider = try await FileProvider<JSONSnapshot>(config: ConfigReader(provider: InMemoryProvider(values: ["filePath": .init(.string(path), isSecret: false)])))
        let configuration = try JobSystem.Configuration(config: ConfigReader(provider: provider), scope: "app.spindle")
        #expect(configuration.workers == 4)
        #expect(configuration.pinning == .compact)
        #expect(configuration.spinBeforeSleeping == .microseconds(12))
        #expect(configuration.cpus == CPUSet([0]))
    }

    @Test(arguments: [
        ("SPINDLE_WORKERS", "0", "configuration key spindle.workers (SPINDLE_WORKERS, --spindle-workers)", "a whole number from 1 to 4096"),
        ("SPINDLE_PRESET", "fast", "configuration key spindle.preset (SPINDLE_PRESET, --spindle-preset)", "standard, latency, throughput, background"),
        ("SPINDLE_CPUSET", "2-1", "configuration key spindle.cpuset (SPINDLE_CPUSET, --spindle-cpuset)", "CPU list"),
        ("SPINDLE_PINNING", "tight", "configuration key spindle.pinning (SPINDLE_PINNING, --spindle-pinning)", "none, compact, avoid-smt"),
        ("SPINDLE_THREAD_PREFIX", "much-too-long-prefix", "configuration key spindle.thread-prefix (SPINDLE_THREAD_PREFIX, --spindle-thread-prefix)", "at most 11 bytes"),
        ("SPINDLE_SPIN_US", "soon", "configuration key spindle.spin-us (SPINDLE_SPIN_US, --spindle-spin-us)", "microseconds"),
    ])
    func invalidValuesNameTheKeyTheValueAndWhatIsAccepted(variable: String, value: String, source: String, accepted: String) {
        let environment = EnvironmentVariablesProvider(environmentVariables: [variable: value])
        #expect {
            _ = try JobSystem.Configuration(config: ConfigReader(provider: environment))
        } throws: { error in
            guard let error = error as? JobSystem.OptionError else { return false }
            return error.source == source && error.value == value && error.description.contains(accepted)
                && error.description.contains(value)
        }
    }

    @Test
    func aFractionalJSONNumberIsRefusedByName() {
        let provider = InMemoryProvider(values: ["spindle.workers": .init(.double(2.5), isSecret: false)])
        #expect {
            _ = try JobSystem.Configuration(config: ConfigReader(provider: provider))
        } throws: { error in
            (error as? JobSystem.OptionError)?.value == "2.5"
        }
    }

    @Test
    func aConfiguredSystemStartsWithTheConfiguredWorkers() throws {
        let environment = EnvironmentVariablesProvider(environmentVariables: ["SPINDLE_WORKERS": "3", "SPINDLE_PINNING": "none",
                                                                              "SPINDLE_THREAD_PREFIX": "cfg-w"])
        let jobs = try JobSystem(configuration: JobSystem.Configuration(config: ConfigReader(provider: environment)))
        defer { jobs.shutdown() }
        #expect(jobs.workerCount == 3)
        #expect((0..<3).allSatisfy { jobs.cpu(ofWorker: $0) == nil })
        let done = jobs.run(count: 30) { _, _ in }
        jobs.wait(for: done)
        #expect(jobs.metrics().total.jobsRun == 30)
    }
}
#endif  // SpindleConfiguration
