import Foundation
@testable @_spi(Internals) import Spindle
import Testing

/// Shutting down (or releasing) a job system runs the work submitted before.
extension JobSystemTests {
    @Suite(.serialized)
    struct ShutdownTests {
        /// `shutdown()` unmaps the fiber stacks of the jobs that waited: none is left mapped
        /// until the system is freed.
        @Test(arguments: workerCounts)
        func shutdownReleasesTheFiberStacks(workers: Int) throws {
            withTimeLimit(seconds: 60, "shutdownReleasesTheFiberStacks workers=\(workers)") {
                let jobs = try! makeSystem(workers: workers)
                let gate = JobCounter(1)
                let all = JobCounter()
                let started = JobCounter(200)
                // 200 jobs waiting at once: at least 200 stacks.
                for _ in 0..<200 {
                    jobs.run(counter: all) { context in
                        started.decrement()
                        context.wait(for: gate)
                    }
                }
                jobs.wait(for: started)
                let before = jobs.scheduler.fiberPools.reduce(0) { $0 + $1.allocatedCount }
                gate.decrement()
                jobs.wait(for: all)
                jobs.shutdown()
                let after = jobs.scheduler.fiberPools.reduce(0) { $0 + $1.allocatedCount }
                #expect(before > 0)
                #expect(after == 0, "\(after) of \(before) stacks still mapped after shutdown()")
                withExtendedLifetime(jobs) {}
            }
        }

        /// A stack that cannot be mapped (here: the address space limited just above what the
        /// process uses) traps with a message naming vm.max_map_count and the process's mappings.
        @Test(.disabled(if: underSanitizer, "a sanitizer's shadow memory needs address space, so the limit fails elsewhere first"))
        func aStackThatCannotBeMappedNamesTheMappingLimit() async {
            let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                let jobs = try! JobSystem(configuration: .init(workers: 1))
                let status = try! String(contentsOfFile: "/proc/self/status", encoding: .utf8)
                let line = status.split(separator: "\n").first { $0.hasPrefix("VmSize:") }!
                let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])!
                var limit = rlimit(rlim_cur: rlim_t((kib + 64 * 1024) * 1024), rlim_max: rlim_t.max)
                _ = setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit)
                let gate = JobCounter(1)
                let all = JobCounter()
                // About 1.3 MiB of address space per stack: 64 MiB runs out after ~50.
                for _ in 0..<1000 {
                    jobs.run(counter: all) { context in context.wait(for: gate) }
                }
                jobs.wait(for: all)
            }
            let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
            #expect(stderr.contains("Spindle: cannot map a fiber stack"), "\(stderr)")
            #expect(stderr.contains("vm.max_map_count"), "\(stderr)")
            #expect(stderr.contains("memory mappings and the kernel allows"), "\(stderr)")
        }

        /// A submission from another thread racing `shutdown()` either runs or is refused, never
        /// lost (docs/sleep.md, "Submissions and shutdown"). A producer submits until it is
        /// refused while the main thread shuts down: every accepted job must have run. Before
        /// the door was closed, a submission could return normally after the last worker had
        /// looked at the queues, and its job never ran.
        @Test(arguments: workerCounts)
        func submissionsRacingShutdownRunOrAreRefused(workers: Int) throws {
            let rounds = stressCount(200)
            withTimeLimit(seconds: 120, "submissionsRacingShutdownRunOrAreRefused workers=\(workers)") {
                for round in 0..<rounds {
                    let jobs = try! makeSystem(workers: workers)
                    let counter = JobCounter()
                    let ran = Tally()
                    let accepted = ResultBox<Int>()
                    let started = DispatchSemaphore(value: 0)
                    let done = DispatchSemaphore(value: 0)
                    Thread {
                        var count = 0
                        started.signal()
                        while jobs.tryRun(counter: counter, { _ in ran.add() }) { count += 1 }
                        accepted.value = count
                        done.signal()
                    }.start()
                    started.wait()
                    jobs.shutdown()
                    done.wait()
                    let count = accepted.value!
                    let ranAtReturn = ran.current
                    #expect(ranAtReturn == count, "workers \(workers) round \(round): \(count) accepted, \(ranAtReturn) ran, counter \(counter.value), ran now \(ran.current)")
                    #expect(counter.value == 0, "round \(round): the counter holds \(counter.value)")
                    // Refused after the fact, and nothing runs after it returned false.
                    #expect(!jobs.tryRun(counter: counter) { _ in ran.add() })
                    #expect(counter.value == 0 && ran.current == count)
                }
            }
        }

        @Test(arguments: workerCounts)
        func shutdownRunsEverySubmittedJob(workers: Int) throws {
            let ran = Tally()
            withTimeLimit(seconds: 60, "shutdownRunsEverySubmittedJob workers=\(workers)") {
                let jobs = try! makeSystem(workers: workers)
                for _ in 0..<20_000 {
                    jobs.run { ctx in
                        ran.add()
                        // Work submitted by work being drained is part of the drain.
                        ctx.run { _ in ran.add() }
                    }
                }
                jobs.shutdown()
                #expect(ran.current == 40_000)
                #expect(jobs.isShutDown)
                jobs.shutdown()  // idempotent
            }
            // Releasing a system with pending work (deinit) finishes it too.
            let released = Tally()
            withTimeLimit(seconds: 60, "deinit finishes work workers=\(workers)") {
                do {
                    let jobs = try! makeSystem(workers: workers)
                    for _ in 0..<5_000 { jobs.run { _ in released.add() } }
                }
                #expect(released.current == 5_000)
            }
        }
    }
}
