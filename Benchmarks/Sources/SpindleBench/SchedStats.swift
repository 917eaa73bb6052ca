// `--sched-stats`: what the kernel's scheduler did to the benchmark's threads while a benchmark
// ran, from /proc/self/task/*/schedstat (time on a CPU, time runnable but waiting for one — the
// run delay — and timeslices) and /proc/self/status (context switches). A thread whose run delay
// grows was ready to work while something else had its CPU: another process, or another of the
// benchmark's own threads on a machine with more threads than CPUs. docs/benchmarking.md,
// "Measuring beside other work".

import Foundation

struct SchedStats {
    struct Thread {
        var name: String
        var onCPU: UInt64
        var runDelay: UInt64
        var slices: UInt64
    }

    /// Per thread id.
    var threads: [Int: Thread] = [:]

    static func snapshot() -> SchedStats {
        var stats = SchedStats()
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        for task in tasks {
            guard let tid = Int(task),
                  let line = try? String(contentsOfFile: "/proc/self/task/\(task)/schedstat", encoding: .utf8) else { continue }
            let fields = line.split(separator: " ").compactMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            guard fields.count >= 3 else { continue }
            let name = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            stats.threads[tid] = Thread(name: name, onCPU: fields[0], runDelay: fields[1], slices: fields[2])
        }
        return stats
    }

    /// What happened between `earlier` and this snapshot, summed over the threads alive at both
    /// (threads that exist in one only started or ended in between) and over `elapsed`
    /// nanoseconds of wall-clock time: "run delay 12% of CPU time; on CPU 1.93 CPUs; 420 slices/s".
    func summary(since earlier: SchedStats, elapsed: UInt64) -> String {
        var onCPU: UInt64 = 0, delay: UInt64 = 0, slices: UInt64 = 0
        for (tid, now) in threads {
            guard let before = earlier.threads[tid] else { continue }
            onCPU &+= now.onCPU &- before.onCPU
            delay &+= now.runDelay &- before.runDelay
            slices &+= now.slices &- before.slices
        }
        let seconds = Double(elapsed) / 1e9
        guard seconds > 0, onCPU > 0 else { return "sched: no CPU time" }
        return String(format: "sched: run delay %.0f%% of CPU time, on CPU %.2f CPUs, %.0f timeslices/s",
                      Double(delay) / Double(onCPU) * 100, Double(onCPU) / 1e9 / seconds, Double(slices) / seconds)
    }
}
