import Foundation
import Testing

/// Runs the spindle-bench executable built next to this test bundle.
func runBench(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("spindle-bench")
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// The size of spindle-bench's default selection (Selection.swift).
enum DefaultSelectionCount { static let value = 27 }

@Suite("spindle-bench command line", .serialized)
struct CLITests {
    @Test func listsBenchmarksAndFilters() throws {
        let all = try runBench(["--list"])
        #expect(all.status == 0)
        #expect(all.stdout.contains("fiber/round-trip"))
        #expect(all.stdout.contains("W5-dag/operationqueue"))
        let deque = try runBench(["--list", "^deque/"])
        #expect(deque.stdout.split(separator: "\n").allSatisfy { $0.hasPrefix("deque/") })
        let exact = try runBench(["--list", "--exact", "deque/push-pop"])
        #expect(exact.stdout.split(separator: "\n").count == 1)
        let skipped = try runBench(["--list", "^deque/", "--skip", "steal"])
        #expect(!skipped.stdout.contains("steal"))
    }

    @Test(arguments: [
        (["no-such-benchmark"], Int32(1), "no benchmark matches 'no-such-benchmark'"),
        (["("], 1, "is not a valid regular expression"),
        (["--sample-size", "0"], 64, "--sample-size must be at least 2"),
        (["--measurement-time=-1"], 64, "--measurement-time must be a positive number"),
        (["--warm-up-time", "0"], 64, "--warm-up-time must be a positive number"),
        (["--significance-level", "1.5"], 64, "--significance-level must be strictly between 0 and 1"),
        (["--threads", "1,0"], 64, "--threads takes comma-separated positive worker counts"),
        (["--time-limit", "0"], 64, "--time-limit must be a positive number of seconds"),
        (["--all", "W1"], 64, "give either --all or a filter, not both"),
        (["--html", "/proc/spindle-report", "deque/push-pop$"], 1, "cannot write the HTML report to /proc/spindle-report"),
    ])
    func badInputIsAOneLineErrorWithAnExitCode(arguments: [String], status: Int32, message: String) throws {
        let result = try runBench(arguments)
        #expect(result.status == status)
        #expect(result.stderr.contains(message), "stderr: \(result.stderr)")
    }

    @Test func baselinesSaveCompareAndFailClearly() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spindle-cli-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let quick = ["--exact", "deque/push-pop", "--sample-size", "5", "--warm-up-time", "0.05",
                     "--measurement-time", "0.1", "--resamples", "1000"]

        let missing = try runBench(quick + ["--baseline", "nope"], in: directory)
        #expect(missing.status == 5)
        #expect(missing.stderr.contains("baseline 'nope' not found"))

        let saved = try runBench(quick + ["--save-baseline", "base"], in: directory)
        #expect(saved.status == 0, "stderr: \(saved.stderr)")
        #expect(FileManager.default.fileExists(atPath: "\(directory)/.spindle-bench/baselines/base.json"))

        let compared = try runBench(quick + ["--baseline", "base"], in: directory)
        #expect([0, 2].contains(compared.status))
        #expect(compared.stdout.contains("change: ["))

        try Data("garbage".utf8).write(to: URL(fileURLWithPath: "\(directory)/.spindle-bench/baselines/bad.json"))
        let corrupt = try runBench(quick + ["--baseline", "bad"], in: directory)
        #expect(corrupt.status == 1)
        #expect(corrupt.stderr.contains("is corrupt"))
        #expect(corrupt.stderr.split(separator: "\n").filter { $0.contains("error:") }.count == 1)
    }

    @Test func htmlReportIsOneSelfContainedFileWithPlots() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spindle-html-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try runBench(["^deque/push-pop", "--sample-size", "5", "--warm-up-time", "0.05",
                                   "--measurement-time", "0.1", "--resamples", "1000", "--html", directory])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let html = try String(contentsOfFile: "\(directory)/index.html", encoding: .utf8)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.contains("<h2>deque</h2>"))
        // A violin for the group, and a distribution and a regression plot per benchmark.
        #expect(html.components(separatedBy: "<svg").count - 1 == 1 + 2 * 2)
        #expect(html.contains("R² = "))
        #expect(!html.contains("<script") && !html.contains("src=\"http"))
    }

    @Test func aWrongCheckValueIsAFailureNotATiming() throws {
        let result = try runBench(["--exact", "selftest/wrong-check", "--quick"], environment: ["SPINDLE_BENCH_SELFTEST": "1"])
        #expect(result.status == 3)
        #expect(result.stderr.contains("FAILED selftest/wrong-check: selftest: counter = 41, expected 42"))
        #expect(!result.stdout.contains("time:"))
    }

    @Test func threadSweepsReportSpeedupAndEfficiency() throws {
        let result = try runBench(["selftest/sweep", "--threads", "1,2,4", "--sample-size", "5", "--warm-up-time", "0.05",
                                   "--measurement-time", "0.1", "--resamples", "1000", "--format", "markdown"],
                                  environment: ["SPINDLE_BENCH_SELFTEST": "1"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("| threads |") && result.stdout.contains("| speedup | efficiency |"))
        let rows = result.stdout.split(separator: "\n").filter { $0.hasPrefix("| sweep |") }
        #expect(rows.count == 3)
        // The synthetic routine scales perfectly: 2.00× at 2 workers, 4.00× at 4, 100 % efficiency.
        #expect(rows.contains { $0.contains("| 2 |") && $0.contains("2.00×") && $0.contains("100%") })
        #expect(rows.contains { $0.contains("| 4 |") && $0.contains("4.00×") && $0.contains("100%") })
    }

    @Test func jsonLinesCarryRawSamplesAndEstimates() throws {
        let result = try runBench(["--exact", "deque/push-pop", "--sample-size", "5", "--warm-up-time", "0.05",
                                   "--measurement-time", "0.1", "--resamples", "1000", "--format", "json"])
        #expect(result.status == 0)
        let line = try #require(result.stdout.split(separator: "\n").first)
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        #expect(object?["type"] as? String == "benchmark")
        #expect(object?["id"] as? String == "deque/push-pop")
        let body = object?["result"] as? [String: Any]
        let analysis = body?["analysis"] as? [String: Any]
        let samples = analysis?["samples"] as? [String: Any]
        #expect((samples?["times"] as? [Double])?.count == 5)
        #expect(analysis?["median"] != nil && analysis?["slope"] != nil)
        // With two CPUs or more, a hand-off reading before the first sample and after each.
        let cpus = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
        let multiCPU = cpus.map { $0.contains(",") || $0.contains("-") } ?? false
        if multiCPU {
            let readings = try #require(samples?["handoffs"] as? [Double])
            #expect(readings.count == 6)
            #expect(readings.allSatisfy { $0 > 0 })
        }
        let unprobed = try runBench(["--exact", "deque/push-pop", "--sample-size", "5", "--warm-up-time", "0.05",
                                     "--measurement-time", "0.1", "--resamples", "1000", "--format", "json",
                                     "--no-handoff-probe"])
        #expect(unprobed.status == 0)
        #expect(!unprobed.stdout.contains("handoffs"))
    }

    @Test func theDefaultSelectionIsMarkedAndExists() throws {
        let all = try runBench(["--list"])
        #expect(all.status == 0)
        let marked = all.stdout.split(separator: "\n").filter { $0.contains("[default]") }
        // Every id of the default selection names a registered benchmark, once.
        #expect(marked.count == DefaultSelectionCount.value, "\(marked)")
        #expect(marked.contains { $0.hasPrefix("W2-fib/spindle-join ") })
        #expect(marked.contains { $0.hasPrefix("pipeline/dispatch-batched ") })
        #expect(all.stdout.split(separator: "\n").count > marked.count)
    }

    @Test func aBenchmarkOverTheTimeLimitReportsWhatItHas() throws {
        let result = try runBench(["--exact", "selftest/slow", "--sample-size", "10", "--warm-up-time", "0.01",
                                   "--measurement-time", "0.1", "--resamples", "1000", "--time-limit", "0.2",
                                   "--no-handoff-probe", "--format", "json"],
                                  environment: ["SPINDLE_BENCH_SELFTEST": "1"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stderr.contains("selftest/slow: "))
        #expect(result.stderr.contains("of 10 samples fitted in the 0.2 s time limit"))
        let line = try #require(result.stdout.split(separator: "\n").first)
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        let samples = ((object?["result"] as? [String: Any])?["analysis"] as? [String: Any])?["samples"] as? [String: Any]
        let times = try #require(samples?["times"] as? [Double])
        #expect(times.count >= 2 && times.count < 10)
        #expect(samples?["plannedSamples"] as? Int == 10)
    }

    @Test func jmhOutputIsAnArrayOfJMHElements() throws {
        let result = try runBench(["--exact", "deque/push-pop", "--sample-size", "5", "--warm-up-time", "0.05",
                                   "--measurement-time", "0.1", "--resamples", "1000", "--format", "jmh"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let array = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]
        let element = try #require(array?.first)
        #expect(array?.count == 1)
        #expect(element["benchmark"] as? String == "spindle.deque.push-pop")
        #expect(element["mode"] as? String == "avgt")
        let primary = element["primaryMetric"] as? [String: Any]
        #expect(primary?["scoreUnit"] as? String == "ns/op")
        #expect(((primary?["rawData"] as? [[Double]])?.first?.count) == 5)
    }
}
