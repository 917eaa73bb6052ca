import Foundation
@testable @_spi(Internals) import Spindle
import Synchronization
import Testing

/// The largest difference `produced - consumed` seen: the items between two stages.
final class InFlight: Sendable {
    let produced = Atomic<Int>(0)
    let consumed = Atomic<Int>(0)
    let maximum = Atomic<Int>(0)

    func produce() {
        let now = produced.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue - consumed.load(ordering: .sequentiallyConsistent)
        var seen = maximum.load(ordering: .relaxed)
        while now > seen {
            let (exchanged, original) = maximum.compareExchange(expected: seen, desired: now, ordering: .relaxed)
            if exchanged { break }
            seen = original
        }
    }

    func consume() { consumed.wrappingAdd(1, ordering: .sequentiallyConsistent) }
}

/// Spins for about `rounds` multiply-xor steps (a slow stage that does not sleep).
@inline(never)
func busyWork(_ seed: Int, rounds: Int) -> Int {
    var h = UInt64(truncatingIfNeeded: seed) | 1
    for i in 0..<rounds { h = (h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9 &+ UInt64(i) }
    return Int(truncatingIfNeeded: h & 1)
}

struct Tagged: Sendable, Equatable {
    let branch: Int
    let sequence: Int
    let value: Int
}

@Suite(.serialized)
struct PipelineTests {
    /// 10^6 items (release builds) through serial, stateful, parallel and filtering stages into a sink: the sum,
    /// the count and the order come out right, and a slow stage behind a small channel keeps the
    /// items between it and its producer within the channel's capacity (backpressure).
    @Test(arguments: workerCounts)
    func aMillionItemsKeepOrderAndChecksum(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pipe-w")
        withTimeLimit(seconds: 240, "aMillionItemsKeepOrderAndChecksum workers=\(workers)") {
            // 10^6 items in optimized builds (CI runs `swift test -c release`); fewer in debug
            // and sanitizer builds, where each item costs far more.
            #if DEBUG
            let count = stressCount(100_000)
            #else
            let count = 1_000_000
            #endif
            let capacity = 16
            let pipeline = Pipeline<Int>("numbers", channelCapacity: capacity)
            let between = InFlight()
            let numbered = pipeline.source.map("number", state: 0) { (next: inout Int, value: Int) -> (Int, Int) in
                defer { next += 1 }
                return (next, value)
            }
            let squared = numbered.parallelMap("square", batch: 32) { pair in (pair.0, pair.1 &* pair.1) }
            let produced = squared.map("produce") { pair -> (Int, Int) in
                between.produce()
                return pair
            }
            let slow = produced.map("slow") { pair -> (Int, Int) in
                between.consume()
                if pair.0 % 1000 == 0 { _ = busyWork(pair.0, rounds: 20_000) }
                return pair
            }
            let odd = slow.compactMap("odd-only") { pair in pair.1 % 2 == 1 ? pair : nil }
            let order = Locked((expectedNext: 1, outOfOrder: 0, sum: 0, seen: 0))
            odd.sink("sum") { pair in
                order.withLock { state in
                    if pair.0 != state.expectedNext { state.outOfOrder += 1 }
                    state.expectedNext = pair.0 + 2
                    state.sum &+= pair.1
                    state.seen += 1
                }
            }
            let run = try! pipeline.start(on: jobs)
            for value in 0..<count { run.send(value) }
            let report = try! run.finish()
            let expectedSum = stride(from: 1, to: count, by: 2).reduce(0) { $0 &+ $1 &* $1 }
            order.withLock { state in
                #expect(state.seen == count / 2)
                #expect(state.outOfOrder == 0)
                #expect(state.sum == expectedSum)
            }
            #expect(report.accepted == count && report.discarded == 0 && !report.stopped)
            #expect(report.stages.map(\.name) == ["number", "square", "produce", "slow", "odd-only", "sum"])
            #expect(report.stages.allSatisfy { $0.itemsIn == count || $0.name == "sum" })
            #expect(report.stages.first { $0.name == "odd-only" }?.itemsOut == count / 2)
            #expect(report.stages.allSatisfy { $0.queued == 0 })
            // Between "produce" and "slow": one channel, plus the item each stage holds.
            #expect(between.maximum.load(ordering: .relaxed) <= capacity + 2,
                    "backpressure: \(between.maximum.load(ordering: .relaxed)) items in flight through a channel of \(capacity)")
        }
    }

    /// Fan-out to two branches and fan-in through a merge: every item reaches the merge once per
    /// branch, and each branch's items keep their order.
    @Test(arguments: workerCounts)
    func fanOutAndMerge(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pipe-w")
        withTimeLimit(seconds: 120, "fanOutAndMerge workers=\(workers)") {
            let count = stressCount(100_000)
            let pipeline = Pipeline<Int>("fan", channelCapacity: 64)
            let doubled = pipeline.source.map("double") { Tagged(branch: 0, sequence: $0, value: $0 * 2) }
            let tripled = pipeline.source.parallelMap("triple") { Tagged(branch: 1, sequence: $0, value: $0 * 3) }
            let merged = Pipeline<Int>.merge("merge", [doubled, tripled])
            let state = Locked((next: [0, 0], outOfOrder: 0, sum: 0, seen: 0))
            merged.sink("check") { item in
                state.withLock { state in
                    if item.sequence != state.next[item.branch] { state.outOfOrder += 1 }
                    state.next[item.branch] = item.sequence + 1
                    state.sum &+= item.value
                    state.seen += 1
                }
            }
            let run = try! pipeline.start(on: jobs)
            #expect(run.send(contentsOf: 0..<count) == count)
            let report = try! run.finish()
            state.withLock { state in
                #expect(state.seen == 2 * count && state.outOfOrder == 0)
                #expect(state.sum == 5 * (count * (count - 1) / 2))
            }
            #expect(report.stages.first { $0.name == "merge" }?.itemsIn == 2 * count)
        }
    }

    /// Sending from inside a job parks the sender's fiber when the channel is full; the run
    /// still completes with every item.
    @Test(arguments: workerCounts)
    func sendingFromAJob(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pipe-w")
        withTimeLimit(seconds: 120, "sendingFromAJob workers=\(workers)") {
            let pipeline = Pipeline<Int>("inside", channelCapacity: 4)
            let total = Tally()
            pipeline.source.map("id") { $0 }.sink("add") { total.add($0) }
            let run = try! pipeline.start(on: jobs)
            let count = stressCount(10_000)
            jobs.wait(for: jobs.run { _ in
                for value in 1...count { run.send(value) }
                run.close()
            })
            _ = try! run.wait()
            #expect(total.current == count * (count + 1) / 2)
        }
    }

    /// Channels of one item: nearly every item parks and resumes both sides, round after round
    /// of the wakers (a stale wake-up of an earlier round must not lose a later one).
    @Test(arguments: workerCounts)
    func oneItemChannelsManyRounds(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pipe-w")
        withTimeLimit(seconds: 120, "oneItemChannelsManyRounds workers=\(workers)") {
            let count = stressCount(10_000)
            for _ in 0..<2 {
                let pipeline = Pipeline<Int>("tight", channelCapacity: 1)
                let total = Tally()
                pipeline.source.map("a") { $0 }.map("b") { $0 }.sink("sum") { total.add($0) }
                let run = try! pipeline.start(on: jobs)
                for value in 1...count { run.send(value) }
                _ = try! run.finish()
                #expect(total.current == count * (count + 1) / 2)
            }
        }
    }

    /// Cancelling while items are queued: every accepted item is either consumed by the sink or
    /// counted as discarded, and later sends are refused.
    @Test(arguments: workerCounts)
    func cancelAccountsForEveryItem(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pipe-w")
        withTimeLimit(seconds: 60, "cancelAccountsForEveryItem workers=\(workers)") {
            let gate = JobCounter(1)
            let pipeline = Pipeline<Int>("cancel", channelCapacity: 1024)
            let consumed = Tally()
            pipeline.source
                .map("gate") { value -> Int in
                    if value == 0 { jobs.wait(for: gate) }
                    return value
                }
                .map("pass") { $0 }
                .sink("count") { _ in consumed.add() }
            let run = try! pipeline.start(on: jobs)
            #expect(run.send(contentsOf: 0..<500) == 500)
            run.cancel()
            #expect(run.send(500) == false)
            gate.decrement()
            let report = try! run.wait()
            #expect(report.stopped)
            #expect(report.accepted == 500)
            #expect(consumed.current + report.discarded == 500,
                    "consumed \(consumed.current) + discarded \(report.discarded) != 500")
            #expect(run.isFinished)
        }
    }

    /// A throwing stage stops the run and is reported with its name; every accepted item is
    /// consumed, discarded, or was the one that failed.
    @Test(arguments: workerCounts)
    func aFailingStageStopsTheRun(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pipe-w")
        withTimeLimit(seconds: 60, "aFailingStageStopsTheRun workers=\(workers)") {
            let pipeline = Pipeline<Int>("failing", channelCapacity: 64)
            let consumed = Tally()
            pipeline.source
                .map("check") { value throws -> Int in
                    if value == 700 { throw NodeError(node: value) }
                    return value
                }
                .parallelMap("work") { $0 + 1 }
                .sink("count") { _ in consumed.add() }
            let run = try! pipeline.start(on: jobs)
            var accepted = 0
            for value in 0..<5000 where run.send(value) { accepted += 1 }
            run.close()
            do throws(PipelineFailure) {
                _ = try run.wait()
                Issue.record("the run should have failed")
            } catch {
                #expect(error.stage == "check")
                #expect(error.error as? NodeError == NodeError(node: 700))
                #expect(error.report.stopped && error.report.accepted == accepted)
                #expect(consumed.current + error.report.discarded + 1 == accepted,
                        "consumed \(consumed.current) + discarded \(error.report.discarded) + 1 failed != accepted \(accepted)")
                #expect(error.report.failed == 1)
                #expect(error.report.delivered == consumed.current)
            }
        }
    }

    /// A parallel stage whose transform throws for one item loses that item's whole batch: the
    /// report counts it as failed, so that accepted = delivered + filtered + discarded + failed.
    @Test(arguments: workerCounts)
    func aFailingParallelBatchIsCountedAsFailed(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-pipe-w")
        withTimeLimit(seconds: 60, "aFailingParallelBatchIsCountedAsFailed workers=\(workers)") {
            let pipeline = Pipeline<Int>("batch-failing", channelCapacity: 64)
            let consumed = Tally()
            pipeline.source
                .compactMap("odd-out") { $0 % 7 != 3 ? $0 : nil }
                .parallelMap("work", batch: 32) { value throws -> Int in
                    if value == 1000 { throw NodeError(node: value) }
                    return value + 1
                }
                .sink("count") { _ in consumed.add() }
            let run = try! pipeline.start(on: jobs)
            var accepted = 0
            for value in 0..<5000 where run.send(value) { accepted += 1 }
            run.close()
            do throws(PipelineFailure) {
                _ = try run.wait()
                Issue.record("the run should have failed")
            } catch {
                let report = error.report
                #expect(error.stage == "work")
                #expect(report.accepted == accepted)
                #expect(report.failed >= 1 && report.failed <= 32, "failed \(report.failed): one batch of at most 32")
                #expect(report.delivered == consumed.current)
                #expect(report.filtered > 0)
                #expect(report.delivered + report.filtered + report.discarded + report.failed == report.accepted,
                        "delivered \(report.delivered) + filtered \(report.filtered) + discarded \(report.discarded) + failed \(report.failed) != accepted \(report.accepted)")
            }
        }
    }

    /// A producer that fails before finishing drops its run: the run is cancelled, and
    /// `shutdown()` returns instead of waiting for input that never comes.
    @Test(arguments: workerCounts)
    func aDroppedRunDoesNotBlockShutdown(workers: Int) throws {
        struct ProducerFailed: Error {}
        withTimeLimit(seconds: 60, "aDroppedRunDoesNotBlockShutdown workers=\(workers)") {
            let jobs = try! makeSystem(workers: workers, "sp-pipe-w")
            let consumed = Tally()
            func produce() throws {
                let pipeline = Pipeline<Int>("dropped", channelCapacity: 16)
                pipeline.source.map("pass") { $0 }.sink("count") { _ in consumed.add() }
                let run = try pipeline.start(on: jobs)
                run.send(contentsOf: 0..<100)
                throw ProducerFailed()
            }
            #expect(throws: ProducerFailed.self) { try produce() }
            jobs.shutdown()
            #expect(consumed.current <= 100)
        }
    }

    /// `shutdown()` with a run still open (kept by its producer) cancels it: shutdown returns,
    /// the report says stopped and accounts for every item, later sends are refused.
    @Test(arguments: workerCounts)
    func shutdownCancelsAnOpenRun(workers: Int) throws {
        withTimeLimit(seconds: 60, "shutdownCancelsAnOpenRun workers=\(workers)") {
            let jobs = try! makeSystem(workers: workers, "sp-pipe-w")
            let consumed = Tally()
            let pipeline = Pipeline<Int>("open", channelCapacity: 16)
            pipeline.source.map("pass") { $0 }.sink("count") { _ in consumed.add() }
            let run = try! pipeline.start(on: jobs)
            #expect(run.send(contentsOf: 0..<200) == 200)
            jobs.shutdown()
            #expect(run.isFinished)
            #expect(run.send(200) == false)
            let report = try! run.wait()
            #expect(report.stopped)
            #expect(report.accepted == 200)
            #expect(report.delivered == consumed.current)
            #expect(report.delivered + report.discarded == 200)
        }
    }

    /// A run closed before `shutdown()` is not cancelled: every item reaches the sink.
    @Test(arguments: workerCounts)
    func shutdownLetsAClosedRunFinish(workers: Int) throws {
        withTimeLimit(seconds: 60, "shutdownLetsAClosedRunFinish workers=\(workers)") {
            let jobs = try! makeSystem(workers: workers, "sp-pipe-w")
            let consumed = Tally()
            let pipeline = Pipeline<Int>("closed-then-shutdown", channelCapacity: 16)
            pipeline.source.map("slow") { busyWork($0, rounds: 2000) }.sink("count") { _ in consumed.add() }
            let run = try! pipeline.start(on: jobs)
            run.send(contentsOf: 0..<300)
            run.close()
            jobs.shutdown()
            let report = try! run.wait()
            #expect(!report.stopped)
            #expect(report.delivered == 300 && consumed.current == 300)
        }
    }

    /// A dedicated stage runs on its own named thread (not a worker) and takes part in the flow.
    @Test
    func dedicatedStageRunsOnItsOwnNamedThread() throws {
        let jobs = try makeSystem(workers: 2, "sp-pipe-w")
        withTimeLimit(seconds: 60, "dedicatedStageRunsOnItsOwnNamedThread") {
            let pipeline = Pipeline<Int>("dedicated", channelCapacity: 8)
            let names = Locked(Set<String>())
            let total = Tally()
            pipeline.source
                .map("hot", execution: .dedicatedThread(cpu: 0, namePrefix: "sp-")) { value -> Int in
                    if value % 1000 == 0 {
                        let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?"
                        names.withLock { _ = $0.insert(name.trimmingCharacters(in: .whitespacesAndNewlines)) }
                    }
                    return value
                }
                .sink("add") { total.add($0) }
            let run = try! pipeline.start(on: jobs)
            run.send(contentsOf: 0..<10_000)
            _ = try! run.finish()
            #expect(total.current == 10_000 * 9_999 / 2)
            #expect(names.withLock { $0 } == ["sp-hot"])
        }
    }

    /// The metrics reporter calls its handler while the run is in progress (a stage waits until
    /// it has), and stops when the run finishes.
    @Test
    func metricsAreReportedPeriodically() throws {
        let jobs = try makeSystem(workers: 2, "sp-pipe-w")
        withTimeLimit(seconds: 60, "metricsAreReportedPeriodically") {
            let reported = JobCounter(1)
            let reports = Tally()
            let pipeline = Pipeline<Int>("metrics")
            pipeline.source
                .map("wait-for-report") { value -> Int in
                    if value == 0 { jobs.wait(for: reported) }
                    return value
                }
                .sink("drop") { _ in }
            let run = try! pipeline.start(on: jobs)
            run.reportMetrics(every: .milliseconds(2)) { snapshot in
                if reports.value.wrappingAdd(1, ordering: .relaxed).oldValue == 0 {
                    #expect(snapshot.map(\.name) == ["wait-for-report", "drop"])
                    reported.decrement()
                }
            }
            run.send(contentsOf: 0..<100)
            let report = try! run.finish()
            #expect(reports.current >= 1)
            #expect(report.stages.map(\.itemsIn) == [100, 100])
        }
    }

    @Test
    func configurationErrorsAreThrown() throws {
        let jobs = try makeSystem(workers: 1, "sp-pipe-w")
        let empty = Pipeline<Int>("empty")
        #expect(throws: PipelineError.emptyPipeline(pipeline: "empty")) { _ = try empty.start(on: jobs) }
        let dangling = Pipeline<Int>("dangling")
        _ = dangling.source.map("lost") { $0 }
        #expect(throws: PipelineError.unconnectedOutput(stage: "lost")) { _ = try dangling.start(on: jobs) }
        let farAway = Pipeline<Int>("far")
        farAway.source.sink("pinned", execution: .dedicatedThread(cpu: 100_000)) { _ in }
        #expect(throws: PipelineError.cpuNotAllowed(stage: "pinned", cpu: 100_000)) { _ = try farAway.start(on: jobs) }
        #expect(String(describing: PipelineError.unconnectedOutput(stage: "lost")).contains("attach a stage or a sink"))
    }
}

struct PipelineMisuseTests {
    @Test
    func sendAfterCloseTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            let pipeline = Pipeline<Int>("closed")
            pipeline.source.sink("drop") { _ in }
            let run = try! pipeline.start(on: jobs)
            run.close()
            run.send(1)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("send after close()"))
    }
}
