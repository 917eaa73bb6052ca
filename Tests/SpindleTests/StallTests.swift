import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Stall reports (docs/sleep.md, "Stalls"): a system whose workers all sleep while jobs wait in
/// parked fibers says what they wait for, through the handler or, by default in a debug build,
/// a trap. Every test has a time limit; none waits for a duration to pass without an event.
@Suite(.serialized)
struct StallTests {
    /// The case: a child job waits for its parent's counter while the parent waits for
    /// the child's. Every worker goes idle; the report names both waits and the cycle. A debug
    /// build traps with it by default. A release build writes it to standard error and goes on
    /// waiting (the process would never end), so there the test's handler writes it and exits.
    @Test func aChildWaitingForItsParentTrapsWithTheCycle() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 2, stallReportAfter: .milliseconds(200)))
            #if !DEBUG
            jobs.onStall { report in
                FileHandle.standardError.write(Data((report.description + "\n").utf8))
                exit(1)
            }
            #endif
            let parent = JobCounter()
            jobs.run(counter: parent) { context in
                let child = JobCounter()
                context.run(counter: child) { childContext in childContext.wait(for: parent) }
                context.wait(for: child)
            }
            jobs.wait(for: parent)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSystem stalled"), "\(stderr)")
        #expect(stderr.contains("2 job(s) wait in parked fibers"), "\(stderr)")
        #expect(stderr.contains("StallTests.swift"), "the wait sites: \(stderr)")
        #if DEBUG
        #expect(stderr.components(separatedBy: "(submitted at SpindleTests/StallTests.swift:").count == 3,
                "both jobs' submission sites: \(stderr)")
        #endif
        #expect(stderr.contains("wait for each other in a cycle"), "\(stderr)")
    }

    /// A job waits for a counter the test holds: the handler gets one report naming that
    /// counter, its value and the wait site; the test then ends the wait and the system shuts
    /// down. At several worker counts.
    @Test(arguments: [1, 2, 4, 8])
    func theHandlerGetsTheParkedWait(workers: Int) {
        withTimeLimit(seconds: 60, "stall handler, \(workers) workers") {
            let jobs = try! JobSystem(configuration: .init(workers: workers, stallReportAfter: .milliseconds(100)))
            let reported = DispatchSemaphore(value: 0)
            let reports = Mutex<[JobSystem.StallReport]>([])
            jobs.onStall { report in
                reports.withLock { $0.append(report) }
                reported.signal()
            }
            let held = JobCounter(1)
            let done = JobCounter()
            let submittedLine = #line + 1
            jobs.run(counter: done) { context in context.wait(for: held) }
            reported.wait()
            let report = reports.withLock { $0[0] }
            #expect(report.waits.count == 1)
            let wait = report.waits.first
            #expect(wait?.counter == ObjectIdentifier(held))
            #expect(wait?.counterValue == 1)
            #expect(wait?.job == ObjectIdentifier(done))
            #expect(wait?.file?.hasSuffix("StallTests.swift") == true, "\(String(describing: wait?.file))")
            #if DEBUG
            #expect(wait?.submittedFile?.hasSuffix("StallTests.swift") == true, "\(String(describing: wait?.submittedFile))")
            #expect(wait?.submittedLine == submittedLine)
            #expect(wait?.origin == "run")
            #expect(report.description.contains("submitted at SpindleTests/StallTests.swift:\(submittedLine)"), "\(report)")
            #else
            #expect(wait?.submittedFile == nil && wait?.submittedLine == nil && wait?.origin == nil, "release builds keep no sites")
            _ = submittedLine
            #endif
            #expect(report.cycles.isEmpty)
            held.decrement()
            jobs.wait(for: done)
            jobs.shutdown()
            #expect(reports.withLock { $0.count } == 1, "one stall, one report")
        }
    }

    /// Debug builds: every parked job in the report says where it was submitted, whichever
    /// submitting call made it (outside and inside a job, with an argument, with a count), and a
    /// graph node says which node it is. Release builds keep no sites. At several worker counts.
    @Test(arguments: [1, 2, 4, 8])
    func eachWaitSaysWhereItsJobWasSubmitted(workers: Int) {
        withTimeLimit(seconds: 60, "submission sites, \(workers) workers") {
            let jobs = try! JobSystem(configuration: .init(workers: workers, stallReportAfter: .milliseconds(100)))
            let reported = DispatchSemaphore(value: 0)
            let reports = Mutex<[JobSystem.StallReport]>([])
            jobs.onStall { report in
                reports.withLock { $0.append(report) }
                reported.signal()
            }
            let held = JobCounter(1)
            let done = JobCounter()
            var expected: [String: Int] = [:]
            expected["run(count:)"] = #line + 1
            jobs.run(count: 1, counter: done) { _, context in context.wait(for: held) }
            expected["run(argument:)"] = #line + 1
            jobs.run(counter: done, argument: 7) { _, context in context.wait(for: held) }
            let inner = #line + 3
            expected["run"] = #line + 1
            jobs.run(counter: done) { context in
                let child = context.run { childContext in childContext.wait(for: held) }
                context.wait(for: child)
            }
            let graph = TaskGraph("stalled")
            graph.node("waiter") { context in context.wait(for: held) }
            let graphRun = jobs.run(graph)
            reported.wait()
            let report = reports.withLock { $0[0] }
            #expect(report.waits.count == 5, "\(report)")
            #if DEBUG
            let sited = report.waits.filter { $0.submittedFile != nil }
            #expect(sited.allSatisfy { $0.submittedFile!.hasSuffix("StallTests.swift") }, "\(report)")
            let lines = Dictionary(grouping: sited, by: { $0.origin ?? "?" }).mapValues { $0.map { $0.submittedLine ?? 0 }.sorted() }
            #expect(lines["run(count:)"] == [expected["run(count:)"]!], "\(report)")
            #expect(lines["run(argument:)"] == [expected["run(argument:)"]!], "\(report)")
            #expect(lines["run"] == [expected["run"]!, inner].sorted(), "\(report)")
            let node = report.waits.filter { $0.submittedFile == nil }
            #expect(node.map(\.origin) == ["graph node \"waiter\""], "\(report)")
            #expect(report.description.contains("graph node \"waiter\", made by the library"), "\(report)")
            #else
            #expect(report.waits.allSatisfy { $0.submittedFile == nil && $0.origin == nil }, "\(report)")
            _ = (expected, inner)
            #endif
            held.decrement()
            jobs.wait(for: done)
            jobs.wait(for: graphRun)
            jobs.shutdown()
        }
    }

    /// Two stalls one after the other are two reports; the second names the second counter.
    @Test func eachStallIsReportedOnce() {
        withTimeLimit(seconds: 60, "two stalls") {
            let jobs = try! JobSystem(configuration: .init(workers: 2, stallReportAfter: .milliseconds(100)))
            let reported = DispatchSemaphore(value: 0)
            let reports = Mutex<[JobSystem.StallReport]>([])
            jobs.onStall { report in
                reports.withLock { $0.append(report) }
                reported.signal()
            }
            for round in 0..<2 {
                let held = JobCounter(1)
                let done = JobCounter()
                jobs.run(counter: done) { context in context.wait(for: held) }
                reported.wait()
                #expect(reports.withLock { $0.count } == round + 1)
                #expect(reports.withLock { $0[round].waits.map(\.counter) } == [ObjectIdentifier(held)])
                held.decrement()
                jobs.wait(for: done)
            }
            jobs.shutdown()
        }
    }

    @Test func aNonPositiveStallTimeIsAConfigurationError() {
        #expect(throws: JobSystem.ConfigurationError.nonPositiveStallTime(.zero)) {
            _ = try JobSystem(configuration: .init(workers: 1, stallReportAfter: .zero))
        }
    }

    /// The report's cycles, from waits made by hand: 0 → 1 → 2 → 0 is one cycle; 3 waits for 0
    /// (on the cycle, not in it); 4 waits for a counter nobody's job owns.
    @Test func cyclesAreFoundOnce() {
        final class Token {}
        let counters = (0..<6).map { _ in Token() }
        let ids = counters.map(ObjectIdentifier.init)
        func wait(_ job: Int, _ counter: Int) -> JobSystem.StallReport.Wait {
            .init(job: ids[job], counter: ids[counter], counterValue: 1, file: "F.swift", line: job, worker: 0)
        }
        let report = JobSystem.StallReport(
            waits: [wait(0, 1), wait(1, 2), wait(2, 0), wait(3, 0), wait(4, 5)], idle: .seconds(1))
        #expect(report.cycles == [[0, 1, 2]])
        #expect(report.description.contains("Waits 1 → 2 → 3 → 1 wait for each other in a cycle"), "\(report.description)")
        #expect(report.description.contains("5 job(s) wait in parked fibers"))
        withExtendedLifetime(counters) {}
    }
}
