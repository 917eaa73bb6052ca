// Compiled with the `SpindleArgumentParser` package trait only (`swift test --enable-all-traits`).
#if SpindleArgumentParser
import ArgumentParser
import Spindle
import SpindleArgumentParser
import Testing

@Suite
struct ConfigurationPresetTests {
    @Test
    func presetsAndTheBuilderChangeWhatTheySay() {
        let standard = JobSystem.Configuration(preset: .standard)
        #expect(standard == JobSystem.Configuration())
        #expect(JobSystem.Configuration(preset: .latency).spinBeforeSleeping == .microseconds(500))
        #expect(JobSystem.Configuration(preset: .throughput).pinning == .avoidSMTSiblings)
        let background = JobSystem.Configuration(preset: .background)
        #expect(background.pinning == .none && background.spinBeforeSleeping == .zero)
        let built = JobSystem.Configuration(preset: .latency).workers(3).pinning(.none).threadNamePrefix("app-w")
        #expect(built.workers == 3 && built.pinning == .none && built.threadNamePrefix == "app-w")
        #expect(built.spinBeforeSleeping == .microseconds(500), "the builder keeps what it does not change")
    }

    @Test
    func aBackgroundSystemStartsAndRuns() throws {
        let jobs = try JobSystem(configuration: JobSystem.Configuration(preset: .background).workers(2))
        let counter = jobs.run(count: 100) { _, _ in }
        jobs.wait(for: counter)
        #expect(jobs.metrics().total.jobsRun == 100)
        jobs.shutdown()
    }

    @Test(arguments: [
        (JobSystem.Configuration.Key.workers, "0", "a whole number from 1 to 4096"),
        (.workers, "many", "a whole number"),
        (.preset, "fast", "standard, latency, throughput, background"),
        (.pinning, "tight", "none, compact, avoid-smt"),
        (.cpuset, "3-1", "CPU list"),
        (.spinMicroseconds, "-5", "microseconds"),
        (.threadPrefix, "a-very-long-prefix", "at most 11 bytes"),
    ])
    func badTextNamesTheSourceTheValueAndWhatIsAccepted(key: JobSystem.Configuration.Key, value: String, accepted: String) {
        var configuration = JobSystem.Configuration()
        #expect {
            try configuration.set(key, from: value, source: "SPINDLE_TEST")
        } throws: { error in
            let text = "\(error)"
            return text.contains("SPINDLE_TEST") && text.contains("\"\(value)\"") && text.contains(accepted)
        }
    }

    @Test
    func goodTextSetsEveryOption() throws {
        var configuration = JobSystem.Configuration()
        try configuration.set(.preset, from: "latency", source: "test")
        try configuration.set(.workers, from: " 6 ", source: "test")
        try configuration.set(.cpuset, from: "0-1", source: "test")
        try configuration.set(.pinning, from: "avoid-smt", source: "test")
        try configuration.set(.threadPrefix, from: "io-w", source: "test")
        try configuration.set(.spinMicroseconds, from: "20", source: "test")
        #expect(configuration == JobSystem.Configuration(
            workers: 6, cpus: try CPUSet(parsing: "0-1"), pinning: .avoidSMTSiblings, threadNamePrefix: "io-w",
            spinBeforeSleeping: .microseconds(20)))
    }
}

struct Tool: ParsableCommand {
    @OptionGroup(title: "Job system") var spindle: SpindleOptions
    @Option var frames = 1
}

@Suite
struct ArgumentParserOptionTests {
    @Test
    func theOptionGroupBuildsAConfiguration() throws {
        let tool = try Tool.parse(["--spindle-preset", "throughput", "--spindle-workers", "2",
                                   "--spindle-spin-us", "0", "--frames", "3"])
        let configuration = try tool.spindle.configuration()
        #expect(configuration.pinning == .avoidSMTSiblings)
        #expect(configuration.workers == 2)
        #expect(configuration.spinBeforeSleeping == .zero)
        #expect(tool.frames == 3)
        // Nothing given: the base is kept.
        let plain = try Tool.parse([])
        #expect(try plain.spindle.configuration(base: .init(preset: .latency)) == .init(preset: .latency))
    }

    @Test
    func aBadValueStopsParsingWithTheFlagTheValueAndWhatIsAccepted() {
        #expect {
            _ = try Tool.parse(["--spindle-pinning", "tight"])
        } throws: { error in
            let message = Tool.message(for: error)
            return message.contains("--spindle-pinning") && message.contains("\"tight\"")
                && message.contains("none, compact, avoid-smt")
        }
    }

    @Test
    func theHelpListsTheOptions() {
        let help = Tool.helpMessage()
        for flag in ["--spindle-preset", "--spindle-workers", "--spindle-cpuset", "--spindle-pinning",
                     "--spindle-thread-prefix", "--spindle-spin-us"] {
            #expect(help.contains(flag), "\(flag) is missing from the help")
        }
    }
}
#endif  // SpindleArgumentParser
