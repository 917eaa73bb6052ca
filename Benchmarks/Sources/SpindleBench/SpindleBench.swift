// spindle-bench: measures Spindle and the Swift alternatives side by side, with criterion-style
// statistics. docs/benchmarking.md documents the options, the output and the baselines.

import ArgumentParser
import CMallocCounter
import Foundation
import Spindle
import SpindleBenchKit

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, markdown, json, jmh
}

@main
struct SpindleBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spindle-bench",
        abstract: "Benchmarks Spindle against Dispatch, Swift Concurrency and OperationQueue.",
        discussion: """
            Exit codes: 0 success; 1 an error (unknown benchmark, bad baseline or report \
            directory); 2 a significant regression against --baseline; 3 a benchmark's check \
            value was wrong; 5 the --baseline does not exist; 64 invalid options.
            """)

    @Argument(help: "A regular expression; only benchmarks whose id (group/name/parameter) matches run (default: a representative selection; see --all).")
    var filter: String?

    @Flag(help: "Run every benchmark (about half an hour) instead of the default selection (a few minutes).")
    var all = false

    @Flag(help: "Treat the filter as an exact id instead of a regular expression.")
    var exact = false

    @Option(help: "A regular expression; benchmarks whose id matches are skipped. Repeatable.")
    var skip: [String] = []

    @Flag(help: "List the benchmarks (after filtering) and exit.")
    var list = false

    @Flag(help: "A fast, rough run: 10 samples, 0.5 s warm-up, 1 s measurement, 10,000 resamples, at most 5 s per benchmark.")
    var quick = false

    @Option(help: "Seconds one benchmark may take in all (warm-up and samples; 5 with --quick, 10 for the default selection, else no limit): a benchmark that reaches it reports the samples it has and says so.")
    var timeLimit: Double?

    @Option(help: "Samples per benchmark (default 100, 10 with --quick).")
    var sampleSize: Int?

    @Option(help: "Seconds of measurement per benchmark (default 5).")
    var measurementTime: Double?

    @Option(help: "Seconds of warm-up per benchmark (default 3).")
    var warmUpTime: Double?

    @Option(help: "Bootstrap resamples (default 100000).")
    var resamples: Int?

    @Option(help: "Confidence level of the intervals (default 0.95).")
    var confidenceLevel: Double?

    @Option(help: "Relative change below which a significant change counts as noise (default 0.01).")
    var noiseThreshold: Double?

    @Option(help: "p-value below which a change is significant (default 0.05).")
    var significanceLevel: Double?

    @Option(help: "Seed of the bootstrap generator, so reports reproduce.")
    var seed: UInt64?

    @Option(help: "Save the results as a baseline with this name.")
    var saveBaseline: String?

    @Option(help: "Compare with the baseline of this name (exit 2 on a significant regression, 5 if it is missing).")
    var baseline: String?

    @Option(help: "Directory of baselines.")
    var baselineDir: String = BaselineStore.defaultDirectory

    @Option(help: "Output format: text (criterion's console shape), markdown (tables per group), json (JSON Lines), jmh (JMH JSON, as package-benchmark exports).")
    var format: OutputFormat = .text

    @Option(help: "Comma-separated worker counts (e.g. 1,2,4): runs every thread-sensitive benchmark at each.")
    var threads: String?

    @Flag(help: "After each benchmark, measure the process's CPU use over the next second (idle burn).")
    var idleCPU = false

    @Flag(help: "Add what the kernel's scheduler did to the benchmark's threads to each note: run delay (time ready but waiting for a CPU) over CPU time, CPUs used, timeslices per second (/proc/self/task/*/schedstat).")
    var schedStats = false

    @Option(help: "Comma-separated numbers of busy competing processes (e.g. 1,2): each benchmark is measured quiet, then beside each number of busy processes, and reports its slowdown.")
    var backgroundLoad: String?

    /// The mode of the busy processes `--background-load` starts.
    @Flag(help: .hidden)
    var burn = false

    @Flag(inversion: .prefixedNo,
          help: "Before the first sample and after each, time a cache-line hand-off between the first and last CPU, and flag samples taken while it was slow (needs two CPUs).")
    var handoffProbe = true

    @Option(help: "Write a self-contained HTML report with SVG plots to this directory (index.html).")
    var html: String?

    func validate() throws {
        if let sampleSize, sampleSize < 2 { throw ValidationError("--sample-size must be at least 2 (got \(sampleSize))") }
        if let measurementTime, !(measurementTime > 0) { throw ValidationError("--measurement-time must be a positive number of seconds (got \(measurementTime))") }
        if let timeLimit, !(timeLimit > 0) { throw ValidationError("--time-limit must be a positive number of seconds (got \(timeLimit))") }
        if all && filter != nil { throw ValidationError("--all runs every benchmark; give either --all or a filter, not both") }
        if let warmUpTime, !(warmUpTime > 0) { throw ValidationError("--warm-up-time must be a positive number of seconds (got \(warmUpTime))") }
        if let resamples, resamples < 100 { throw ValidationError("--resamples must be at least 100 (got \(resamples))") }
        if let confidenceLevel, !(confidenceLevel > 0 && confidenceLevel < 1) { throw ValidationError("--confidence-level must be strictly between 0 and 1 (got \(confidenceLevel))") }
        if let noiseThreshold, !(noiseThreshold >= 0) { throw ValidationError("--noise-threshold must be zero or more (got \(noiseThreshold))") }
        if let significanceLevel, !(significanceLevel > 0 && significanceLevel < 1) { throw ValidationError("--significance-level must be strictly between 0 and 1 (got \(significanceLevel))") }
        _ = try threadCounts()
        _ = try loadLevels()
    }

    func loadLevels() throws -> [Int] {
        guard let backgroundLoad else { return [] }
        let parts = backgroundLoad.split(separator: ",", omittingEmptySubsequences: false)
        let levels = parts.map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, levels.allSatisfy({ ($0 ?? 0) > 0 && ($0 ?? 0) <= BackgroundLoad.maximum }) else {
            throw ValidationError("--background-load takes comma-separated numbers of busy processes from 1 to \(BackgroundLoad.maximum), such as 1,2 (got '\(backgroundLoad)')")
        }
        return levels.map { $0! }
    }

    func threadCounts() throws -> [Int]? {
        guard let threads else { return nil }
        let parts = threads.split(separator: ",", omittingEmptySubsequences: false)
        let counts = parts.map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, counts.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("--threads takes comma-separated positive worker counts such as 1,2,4 (got '\(threads)')")
        }
        return counts.map { $0! }
    }

    func settings() -> MeasurementSettings {
        var settings = quick ? MeasurementSettings.quick : MeasurementSettings()
        if let sampleSize { settings.sampleSize = sampleSize }
        if let measurementTime { settings.measurementNanoseconds = UInt64(measurementTime * 1e9) }
        if let warmUpTime { settings.warmUpNanoseconds = UInt64(warmUpTime * 1e9) }
        if let resamples { settings.resamples = resamples }
        if let confidenceLevel { settings.confidenceLevel = confidenceLevel }
        if let noiseThreshold { settings.noiseThreshold = noiseThreshold }
        if let significanceLevel { settings.significanceLevel = significanceLevel }
        if let seed { settings.seed = seed }
        if let timeLimit {
            settings.timeLimitNanoseconds = UInt64(timeLimit * 1e9)
        } else if filter == nil && !all && !quick {
            // The default selection finishes in a few minutes: entries whose samples are slow
            // (a W3 pass takes a tenth of a second) report what they gathered in this time.
            settings.timeLimitNanoseconds = DefaultSelection.timeLimitNanoseconds
        }
        return settings
    }

    func selected(from registry: BenchmarkRegistry) throws -> [Benchmark] {
        let skipPatterns = try skip.map { pattern in
            do { return try Regex(pattern) } catch { throw CLIError("--skip '\(pattern)' is not a valid regular expression: \(error)") }
        }
        var chosen = registry.benchmarks
        if let filter {
            if exact {
                chosen = chosen.filter { $0.id.description == filter }
            } else {
                let regex: Regex<AnyRegexOutput>
                do { regex = try Regex(filter) } catch { throw CLIError("'\(filter)' is not a valid regular expression: \(error)") }
                chosen = chosen.filter { $0.id.description.contains(regex) }
            }
            if chosen.isEmpty {
                throw CLIError("no benchmark matches '\(filter)'\(exact ? " exactly" : ""); `spindle-bench --list` shows them all")
            }
        } else if !all && !list {
            chosen = chosen.filter(DefaultSelection.contains)
        }
        chosen = chosen.filter { benchmark in !skipPatterns.contains { benchmark.id.description.contains($0) } }
        return chosen
    }

    mutating func run() throws {
        if burn { BackgroundLoad.burn() }
        _ = try? ProcessCPUs.all()  // before any benchmark pins the main thread
        var registry = BenchmarkRegistry()
        Suites.registerAll(&registry)
        let benchmarks: [Benchmark]
        do {
            benchmarks = try selected(from: registry)
        } catch let error as CLIError {
            Console.error(error.message)
            throw ExitCode(1)
        }
        if list {
            for benchmark in benchmarks {
                let marks = (benchmark.sweepsThreads ? " [threads]" : "") + (DefaultSelection.contains(benchmark) ? " [default]" : "")
                print("\(benchmark.id)\(marks)\(benchmark.note.map { "  — \($0)" } ?? "")")
            }
            return
        }

        let settings = settings()
        let allowed = (try? CPUSet.allowed().count) ?? 1
        let fingerprint = Fingerprint.current(allowedCPUs: allowed)
        Console.warnIfNoisy(allowedCPUs: allowed)

        // Load the baseline first: a missing or corrupt one is reported before hours of work.
        let store = BaselineStore(directory: baselineDir)
        var baselineFile: BaselineFile?
        if let baseline {
            do {
                baselineFile = try store.load(baseline)
            } catch .missing {
                Console.error(BaselineError.missing(name: baseline, path: store.path(for: baseline)).description)
                throw ExitCode(5)
            } catch {
                Console.error(error.description)
                throw ExitCode(1)
            }
            if let file = baselineFile, file.fingerprint != fingerprint {
                Console.warning("baseline '\(baseline)' was recorded on another machine or build (\(file.fingerprint)); this run: \(fingerprint)")
            }
        }

        if let html {
            // Fail before measuring, not after: the directory must be creatable and writable.
            let probe = "\(html)/.spindle-bench-write-test"
            do {
                try FileManager.default.createDirectory(atPath: html, withIntermediateDirectories: true)
                try Data().write(to: URL(fileURLWithPath: probe))
                try FileManager.default.removeItem(atPath: probe)
            } catch {
                Console.error("cannot write the HTML report to \(html): \(error.localizedDescription)")
                throw ExitCode(1)
            }
        }
        let sweep = try threadCounts()
        let levels = try loadLevels()
        let probe: (() -> Double?)? = handoffProbe && allowed > 1 ? { HandoffProbe.measure() } : nil
        let runs = benchmarks.reduce(0) { $0 + ($1.sweepsThreads ? (sweep?.count ?? 1) : 1) }
        if !levels.isEmpty {
            Console.note("background load: each benchmark quiet, then beside " + levels.map(String.init).joined(separator: " and ")
                + " busy processes (stopped after each measurement, and on exit)")
        }
        if filter == nil && !all {
            Console.note("running the default selection (\(runs) benchmarks); --all runs all \(registry.benchmarks.count), --list shows them")
        }
        var completed = 0
        let runner = Runner(settings: settings, progress: { event in Console.progress(event, position: completed + 1, of: runs) },
                            allocationCounter: AllocationCounting.counter(), handoffProbe: probe)
        var results: [BenchmarkResult] = []
        var failures: [String] = []
        var handoffFastest: Double?
        for benchmark in benchmarks {
            let counts: [Int?] = benchmark.sweepsThreads ? (sweep ?? [allowed]).map { $0 } : [nil]
            for threads in counts {
              defer { completed += 1 }
              for load in [nil] + levels.map(Optional.some) {
                if let load { try BackgroundLoad.start(load) }
                defer { BackgroundLoad.stop() }
                let samples: Samples
                let schedBefore = schedStats ? SchedStats.snapshot() : nil
                let startTime = SpindleBenchKit.Clock.nanoseconds()
                do {
                    samples = try runner.measure(benchmark, threads: threads)
                } catch let failure as BenchmarkCheckFailure {
                    Console.clearProgress()
                    let message = "FAILED \(Format.label(benchmark.id, threads: threads))\(load.map { " beside \($0) busy processes" } ?? ""): \(failure.message)"
                    Console.error(message)
                    failures.append(message)
                    continue
                }
                Console.clearProgress()
                if let planned = samples.plannedSamples, let limit = settings.timeLimitNanoseconds {
                    Console.warning("\(Format.label(benchmark.id, threads: threads)): \(samples.times.count) of \(planned) samples "
                        + "fitted in the \(String(format: "%g", Double(limit) / 1e9)) s time limit; its figures rest on those")
                }
                var result = BenchmarkResult(analysis: Analysis(samples, settings: settings), throughput: benchmark.throughput,
                                             note: benchmark.note)
                result.backgroundLoad = load
                if let schedBefore {
                    let text = SchedStats.snapshot().summary(since: schedBefore, elapsed: SpindleBenchKit.Clock.nanoseconds() &- startTime)
                    result.note = (result.note.map { $0 + "; " } ?? "") + text
                }
                if idleCPU { result.idleCPUPercent = measureIdleCPU() }
                if let handoff = result.handoff {
                    let fastest = Swift.min(handoffFastest ?? handoff.fastest, handoff.fastest)
                    handoffFastest = fastest
                    let slow = handoff.slowSamples(reference: fastest)
                    if slow > 0 {
                        Console.warning("\(Format.label(benchmark.id, threads: threads)): \(slow) of "
                            + "\(handoff.readings.count - 1) samples were next to a cache-line hand-off between CPUs over "
                            + "\(String(format: "%.0f", HandoffReadings.slowFactor))× the fastest so far "
                            + "(\(Format.time(fastest))); where this benchmark passes work between CPUs, those samples are not comparable with the others")
                    }
                }
                if load == nil, let file = baselineFile, let entry = file.entry(id: benchmark.id, threads: threads) {
                    result.comparison = Comparison(baseline: file.name, old: entry.perIteration, new: samples.perIteration,
                                                   settings: settings)
                }
                results.append(result)
                switch format {
                case .text: print(TextReport.render(result) + "\n")
                case .json: print(try JSONLinesReport.line(result))
                case .markdown, .jmh: break
                }
                fflush(nil)  // all streams: stdout is not concurrency-safe to name in Swift 6
              }
            }
        }
        WorkloadSuite.annotateW5(&results, cores: allowed)
        PipelineSuite.annotate(&results)
        OffloadSuite.annotate(&results)
        let loadNote = levels.isEmpty ? "" : " Background load: each benchmark measured quiet, then beside "
            + levels.map(String.init).joined(separator: " and ") + " busy competing processes (--background-load)."
        if format == .markdown {
            print("Machine: \(fingerprint). Samples per benchmark: \(settings.sampleSize).\(loadNote)\n")
            print(MarkdownReport.render(results))
        }
        if format == .jmh {
            print(try JMHReport.render(results, settings: settings))
        }
        if let html {
            do {
                try HTMLReport.write(results, title: "Machine: \(fingerprint). Samples per benchmark: \(settings.sampleSize).\(loadNote)", to: html)
                Console.note("wrote \(html)/index.html")
            } catch {
                Console.error(error.description)
                throw ExitCode(1)
            }
        }
        if let saveBaseline {
            do {
                try store.save(saveBaseline, results: results, fingerprint: fingerprint)
                Console.note("saved baseline '\(saveBaseline)' to \(store.path(for: saveBaseline))")
            } catch {
                Console.error(error.description)
                throw ExitCode(1)
            }
        }
        if !failures.isEmpty { throw ExitCode(3) }
        if results.contains(where: { $0.comparison?.verdict == .regressed }) { throw ExitCode(2) }
    }
}

/// The malloc interposer of Benchmarks/CMallocCounter, verified with a real Swift allocation
/// (the Swift runtime calls malloc through its own PLT, which must resolve to ours).
enum AllocationCounting {
    final class Probe {}

    static func counter() -> AllocationCounter? {
        guard spindle_malloc_counter_available() == 1 else {
            Console.note("heap allocations are not counted in this build (sanitizer runtimes own malloc)")
            return nil
        }
        spindle_malloc_counter_start()
        let probe = Unmanaged.passRetained(Probe())
        probe.release()
        guard spindle_malloc_counter_stop() >= 1 else {
            Console.warning("the malloc interposer saw no allocation from the Swift runtime; heap allocations are not counted")
            return nil
        }
        return AllocationCounter(start: spindle_malloc_counter_start, stop: { Int(spindle_malloc_counter_stop()) })
    }
}

struct CLIError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// stderr output: errors, warnings, and the progress line.
enum Console {
    static let isTerminal = isatty(STDERR_FILENO) == 1
    nonisolated(unsafe) static var progressShown = false

    static func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    static func error(_ message: String) { write("spindle-bench: error: \(message)\n") }
    static func warning(_ message: String) { write("spindle-bench: warning: \(message)\n") }
    static func note(_ message: String) { write("spindle-bench: \(message)\n") }

    static func progress(_ event: RunProgress, position: Int, of total: Int) {
        let text: String
        switch event {
        case .warmingUp(let id, let threads, let seconds):
            text = "[\(position)/\(total)] \(Format.label(id, threads: threads)): warming up for \(String(format: "%.1f", seconds)) s"
        case .collecting(let id, let threads, let samples, let seconds):
            text = "[\(position)/\(total)] \(Format.label(id, threads: threads)): collecting \(samples) samples in an estimated \(String(format: "%.1f", seconds)) s"
        }
        if isTerminal {
            write("\r\u{1B}[2K" + text)
            progressShown = true
        } else {
            write(text + "\n")
        }
    }

    static func clearProgress() {
        if isTerminal && progressShown {
            write("\r\u{1B}[2K")
            progressShown = false
        }
    }

    /// Benchmarks on a busy or throttled machine, or in a debug build, mislead: say so.
    static func warnIfNoisy(allowedCPUs: Int) {
        #if DEBUG
        warning("this is a debug build; its figures are meaningless. Use `swift run -c release spindle-bench`.")
        #endif
        if let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8),
           let load = Double(text.split(separator: " ").first ?? "") , load > Double(allowedCPUs) * 0.5 {
            warning("the 1-minute load average is \(load) on \(allowedCPUs) CPUs; other work will disturb the figures")
        }
        if let governor = try? String(contentsOfFile: "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines), governor != "performance" {
            warning("the CPU frequency governor is '\(governor)', not 'performance'; clock changes will add noise")
        }
    }
}
