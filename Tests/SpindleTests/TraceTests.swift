import Foundation
@testable import Spindle
import Testing

/// A parsed Chrome/Perfetto trace: the events of `traceEvents`.
struct ParsedTrace {
    let events: [[String: Any]]

    init(file path: String) throws {
        try self.init(data: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    init(data: Data) throws {
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "the trace is not a JSON object")
        events = try #require(root["traceEvents"] as? [[String: Any]], "no traceEvents array")
    }

    func phase(_ ph: String) -> [[String: Any]] { events.filter { $0["ph"] as? String == ph } }
    func slices(named name: String) -> [[String: Any]] { phase("X").filter { $0["name"] as? String == name } }

    /// Nanoseconds from a microsecond field written with three decimals.
    static func nanoseconds(_ value: Any?) -> Int64 { Int64(((value as? Double) ?? -1) * 1000 + 0.5) }
}

@Suite(.serialized)
struct TraceTests {
    /// A frame-like graph: animate → physics → cull; cull waits for a job it spawned.
    func frameGraph() -> TaskGraph {
        let graph = TaskGraph("frame")
        let animate = graph.node("animate") { ctx in ctx.wait(for: ctx.run(count: 16) { _, _ in }) }
        let physics = graph.node("physics", priority: .high) { _ in }
        let cull = graph.node("cull") { ctx in
            let gate = JobCounter(1)
            ctx.run { _ in gate.decrement() }
            ctx.wait(for: gate)
        }
        try! animate.precedes(physics)
        try! physics.precedes(cull)
        return graph
    }

    @Test(arguments: [1, 2, 4])
    func aTraceOfAKnownWorkloadIsValidPerfettoJSON(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-trace-w")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("spindle-trace-\(getpid())-\(workers).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let trace = ResultBox<JobTrace>()
        withTimeLimit(seconds: 60, "trace workers=\(workers)") {
            let graph = frameGraph()
            jobs.startTrace(eventsPerWorker: 1 << 14)
            for _ in 0..<3 { try! jobs.runAndWait(graph) }
            jobs.wait(for: jobs.run(count: 100) { _, _ in })
            trace.value = jobs.stopTrace()
        }
        jobs.shutdown()
        let recorded = try #require(trace.value)
        #expect(recorded.droppedEvents == 0)
        try recorded.write(toFile: path)
        let parsed = try ParsedTrace(file: path)

        // One named track per worker.
        let names = parsed.phase("M").compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        #expect(Set(names) == Set((0..<workers).map { "worker \($0)" }))
        // Every node ran three times: at least one slice each (a waiting node is cut at its park).
        for node in ["animate", "physics", "cull"] {
            let whole = parsed.slices(named: node).filter { ($0["args"] as? [String: Any])?["continues"] == nil }
            #expect(whole.count == 3, "\(node): \(whole.count) final segments, expected 3")
        }
        let physics = parsed.slices(named: "physics")
        #expect(physics.allSatisfy { ($0["args"] as? [String: Any])?["priority"] as? String == "high" })
        #expect(physics.allSatisfy { ($0["args"] as? [String: Any])?["counter"] is String })
        #expect(!parsed.slices(named: "run(count:)").isEmpty)
        #expect(!parsed.slices(named: "graph").isEmpty)
        if workers == 1 {
            // With one worker, cull's wait must park (its gate is decremented by a job queued on
            // the same worker), and the fiber resumes.
            #expect(!parsed.phase("i").filter { $0["name"] as? String == "park" }.isEmpty)
            #expect(!parsed.phase("i").filter { $0["name"] as? String == "resume" }.isEmpty)
            #expect(parsed.slices(named: "cull").count >= 6, "each cull parks once: two segments per run")
        }
        // Slices on one track nest or are disjoint, and fit in the workers' track ids.
        for track in 0..<workers {
            var spans: [(start: Int64, end: Int64)] = []
            for event in parsed.phase("X") where event["tid"] as? Int == track {
                let start = ParsedTrace.nanoseconds(event["ts"])
                spans.append((start, start + ParsedTrace.nanoseconds(event["dur"])))
            }
            spans.sort { $0.start < $1.start || ($0.start == $1.start && $0.end > $1.end) }
            var stack: [Int64] = []
            for span in spans {
                #expect(span.start >= 0 && span.end >= span.start)
                while let top = stack.last, top <= span.start { stack.removeLast() }
                if let top = stack.last {
                    #expect(span.end <= top, "track \(track): a slice overlaps its enclosing slice without nesting")
                }
                stack.append(span.end)
            }
        }
        #expect(parsed.phase("X").allSatisfy { ($0["tid"] as? Int).map { $0 < workers } ?? false })
    }

    /// Each job is labelled by its kind (`JobKind.traceName`): `run(counter:argument:)` jobs,
    /// from outside and from inside a job, as "run(argument:)", `run(count:)` tickets as
    /// "run(count:)", closures as "run".
    @Test(arguments: [1, 2])
    func jobsAreLabelledByTheirKind(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-trace-w")
        let outside = 40
        let inside = 10
        let trace = ResultBox<JobTrace>()
        withTimeLimit(seconds: 60, "trace labels workers=\(workers)") {
            jobs.startTrace(eventsPerWorker: 1 << 14)
            let counter = JobCounter()
            for index in 0..<outside { jobs.run(counter: counter, argument: index) { _, _ in } }
            // One closure job, which submits argument jobs from inside; no job waits, so each
            // is one slice.
            jobs.run(counter: counter) { ctx in
                for index in 0..<inside { ctx.run(counter: counter, argument: index) { _, _ in } }
            }
            jobs.wait(for: counter)
            trace.value = jobs.stopTrace()
        }
        let countTrace = ResultBox<JobTrace>()
        withTimeLimit(seconds: 60, "trace labels of run(count:) workers=\(workers)") {
            jobs.startTrace(eventsPerWorker: 1 << 14)
            jobs.wait(for: jobs.run(count: 100) { _, _ in })
            countTrace.value = jobs.stopTrace()
        }
        jobs.shutdown()

        let recorded = try #require(trace.value)
        #expect(recorded.droppedEvents == 0)
        let parsed = try ParsedTrace(data: Data(recorded.chromeTraceJSON().utf8))
        #expect(parsed.slices(named: "run(argument:)").count == outside + inside)
        #expect(parsed.slices(named: "run").count == 1)
        #expect(parsed.slices(named: "run(count:)").isEmpty)

        let recordedCount = try #require(countTrace.value)
        #expect(recordedCount.droppedEvents == 0)
        let parsedCount = try ParsedTrace(data: Data(recordedCount.chromeTraceJSON().utf8))
        let tickets = parsedCount.slices(named: "run(count:)").count
        #expect(tickets >= 1 && tickets <= workers, "\(tickets) run(count:) slices for \(workers) workers")
        #expect(parsedCount.slices(named: "run").isEmpty)
        #expect(parsedCount.slices(named: "run(argument:)").isEmpty)
    }

    @Test
    func aFullRingDropsTheOldestEventsAndSaysSo() throws {
        let jobs = try makeSystem(workers: 1)
        withTimeLimit(seconds: 30, "trace ring") {
            jobs.startTrace(eventsPerWorker: 16)
            jobs.wait(for: jobs.run(count: 1_000) { _, _ in })
            for _ in 0..<100 { jobs.wait(for: jobs.run { _ in }) }
            let trace = jobs.stopTrace()
            #expect(trace.droppedEvents > 0)
            #expect(trace.eventCount == 16)
            let json = trace.chromeTraceJSON()
            #expect((try? JSONSerialization.jsonObject(with: Data(json.utf8))) != nil, "not valid JSON")
            // Recording again after a stop starts afresh.
            jobs.startTrace()
            jobs.wait(for: jobs.run { _ in })
            #expect(jobs.stopTrace().droppedEvents == 0)
        }
        jobs.shutdown()
    }

    @Test
    func namesAreEscaped() throws {
        #expect(ChromeTraceWriter.quoted("a\"b\\c\nd\u{1}") == "\"a\\\"b\\\\c\\nd\\u0001\"")
    }

    @Test
    func stoppingWithoutATraceTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            _ = jobs.stopTrace()
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("no trace is being recorded"))
    }
}
