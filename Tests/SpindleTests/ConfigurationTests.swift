import Foundation
@testable @_spi(Internals) import Spindle
import Testing

/// Configuration errors, pinning plans, and what a configured system reports (metrics, thread
/// names).
extension JobSystemTests {
    @Suite(.serialized)
    struct ConfigurationTests {
        @Test
        func metricsCountWorkAndThreadsAreNamed() throws {
            let jobs = try JobSystem(configuration: .init(workers: 3, threadNamePrefix: "metric-w"))
            jobs.wait(for: jobs.run(count: 1000) { _, _ in })
            let metrics = jobs.metrics()
            #expect(metrics.workers.count == 3)
            #expect(metrics.total.jobsRun == 1000)
            #expect(metrics.recordBytes > 0)
            let names = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").compactMap {
                try? readProcFile("/proc/self/task/\($0)/comm").trimmingCharacters(in: .whitespacesAndNewlines)
            }
            for index in 0..<3 { #expect(names.contains("metric-w\(index)")) }
            jobs.shutdown()
        }

        @Test
        func configurationErrorsSayWhatToChange() throws {
            let allowed = try CPUSet.allowed()
            #expect(throws: JobSystem.ConfigurationError.notEnoughWorkers(0)) {
                try JobSystem(configuration: .init(workers: 0))
            }
            let outside = CPUSet([CPUSet.maximumCPU])
            #expect(throws: JobSystem.ConfigurationError.cpusNotAllowed(requested: outside, notAllowed: outside, allowed: allowed)) {
                try JobSystem(configuration: .init(cpus: outside))
            }
            #expect(throws: JobSystem.ConfigurationError.threadNameTooLong(prefix: "a-very-long-name", longestName: "a-very-long-name0")) {
                try JobSystem(configuration: .init(workers: 1, threadNamePrefix: "a-very-long-name"))
            }
            #expect(throws: JobSystem.ConfigurationError.negativeSpin(.microseconds(-1))) {
                try JobSystem(configuration: .init(spinBeforeSleeping: .microseconds(-1)))
            }
            #expect(throws: JobSystem.ConfigurationError.noCPUs) {
                try JobSystem(configuration: .init(cpus: CPUSet()))
            }
            let message = JobSystem.ConfigurationError.notEnoughWorkers(0).description
            #expect(message.contains("at least 1"))
        }

        @Test
        func pinningPlansPlaceWorkers() throws {
            let cpus: CPUSet = [0, 1, 2, 3]
            // CPUs 0/2 and 1/3 are SMT siblings in this fake topology.
            let siblings: (Int) -> CPUSet = { cpu in [cpu % 2, cpu % 2 + 2] }
            let compact = try WorkerPlan(.init(workers: 6, pinning: .compact), allowed: cpus, siblings: siblings)
            #expect(compact.cpus == [0, 1, 2, 3, 0, 1])
            let spread = try WorkerPlan(.init(workers: 4, pinning: .avoidSMTSiblings), allowed: cpus, siblings: siblings)
            #expect(spread.cpus == [0, 1, 2, 3])
            let pairs: (Int) -> CPUSet = { cpu in [cpu / 2 * 2, cpu / 2 * 2 + 1] }  // 0/1 and 2/3
            let spreadPairs = try WorkerPlan(.init(workers: 4, pinning: .avoidSMTSiblings), allowed: cpus, siblings: pairs)
            #expect(spreadPairs.cpus == [0, 2, 1, 3])
            let none = try WorkerPlan(.init(workers: 3, pinning: .none), allowed: cpus)
            #expect(none.cpus == [nil, nil, nil])
            #expect(none.names == ["spindle-w0", "spindle-w1", "spindle-w2"])
        }
    }
}
