// Spindle's own entries: W1, W2 and W6 beside the peers (same groups, same checks), and the
// scheduler's costs that have no peer workload: wait/resume, waking a parked worker against a
// bare futex wake, and CPU burned by idle workers after work ends.

import CSpindle
import Foundation
@_spi(Internals) import Spindle
import SpindleBenchKit
import Synchronization

/// The job system every Spindle benchmark uses: created on first use with the defaults (one
/// worker per allowed CPU, pinned) and kept for the whole run, so `--idle-cpu` after a Spindle
/// benchmark observes its idle workers.
enum SharedJobSystem {
    nonisolated(unsafe) private static var system: JobSystem?

    nonisolated(unsafe) private static var sized: [Int: JobSystem] = [:]

    static func get() throws -> JobSystem {
        // The runner calls `make` on its own thread, one benchmark at a time.
        if let system { return system }
        let created = try JobSystem()
        system = created
        return created
    }

    /// A system of `workers` workers for thread sweeps (`--threads`): the shared one when the
    /// count matches, else one per count, kept for the run (its workers sleep when idle).
    static func get(workers: Int) throws -> JobSystem {
        let shared = try get()
        if workers == shared.workerCount { return shared }
        if let existing = sized[workers] { return existing }
        let created = try JobSystem(configuration: .init(workers: workers))
        sized[workers] = created
        return created
    }
}

enum SchedulerSuite {
    /// W1 spawned inside a job: one job runs `ctx.run(counter:)` ×1M, then waits (also the trace
    /// group's workload).
    static func w1InsideRoutine(_ jobs: JobSystem) -> Routine {
        let count = Workloads.w1Jobs
        return WorkloadSuite.w1Routine { hits in
            let body: @Sendable (JobContext) -> Void = { _ in hits.value.add(1, ordering: .relaxed) }
            jobs.wait(for: jobs.run { ctx in
                let counter = JobCounter()
                for _ in 0..<count { ctx.run(counter: counter, body) }
                ctx.wait(for: counter)
            })
        }
    }

    static func register(_ registry: inout BenchmarkRegistry) {
        registerW1(&registry)
        registerW2(&registry)
        registerW6(&registry)
        registerScheduler(&registry)
    }

    // MARK: W1

    static func registerW1(_ registry: inout BenchmarkRegistry) {
        let count = Workloads.w1Jobs
        let throughput = Throughput.elements(count)
        registry.register(Benchmark(BenchmarkID(group: "W1-spawn", name: "spindle-outside"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "jobs.run(counter:) ×1M from the main thread (injection queue), jobs.wait(for:)") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return WorkloadSuite.w1Routine { hits in
                let counter = JobCounter()
                let body: @Sendable (JobContext) -> Void = { _ in hits.value.add(1, ordering: .relaxed) }
                for _ in 0..<count { jobs.run(counter: counter, body) }
                jobs.wait(for: counter)
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W1-spawn", name: "spindle-inside"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "one job spawns ctx.run(counter:) ×1M onto its worker's deque, then ctx.wait(for:)") { threads in
            w1InsideRoutine(try SharedJobSystem.get(workers: threads))
        })
        registry.register(Benchmark(BenchmarkID(group: "W1-spawn", name: "spindle-run-count"), throughput: throughput, mode: .flat,
                                    sweepsThreads: true,
                                    note: "one jobs.run(count: 1M) from the main thread: 1M jobs sharing one record and body") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return WorkloadSuite.w1Routine { hits in
                jobs.wait(for: jobs.run(count: count) { _, _ in hits.value.add(1, ordering: .relaxed) })
            }
        })
    }

    // MARK: W2

    static func fib(_ n: Int, _ ctx: JobContext) -> Int {
        if n < 2 { return n }
        // W2 as defined (docs/workloads.md): fib(n−1) is the spawned half (join's right closure,
        // offered to thieves), fib(n−2) runs inline on the caller first.
        let (inline, child) = ctx.join({ ctx in fib(n - 2, ctx) }, { ctx in fib(n - 1, ctx) })
        return inline + child
    }

    static func registerW2(_ registry: inout BenchmarkRegistry) {
        registry.register(Benchmark(BenchmarkID(group: "W2-fib", name: "spindle-join"), throughput: .elements(Workloads.w2Spawns),
                                    mode: .flat, sweepsThreads: true,
                                    note: "ctx.join: fib(n−1) offered to thieves (the join's stealable half is the spawn), fib(n−2) run inline by the caller") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let result = Atomic<Int>(0)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    total &+= Clock.measure {
                        jobs.wait(for: jobs.run { ctx in result.store(fib(Workloads.w2N, ctx), ordering: .relaxed) })
                    }
                    let value = result.load(ordering: .relaxed)
                    guard value == Workloads.w2Expected else {
                        throw BenchmarkCheckFailure("W2: fib(27) = \(value), expected \(Workloads.w2Expected)")
                    }
                }
                return total
            }
        })
    }

    // MARK: W6

    static func registerW6(_ registry: inout BenchmarkRegistry) {
        let hops = Workloads.w6Hops
        registry.register(Benchmark(BenchmarkID(group: "W6-chain", name: "spindle"), throughput: .elements(hops), mode: .flat,
                                    sweepsThreads: true,
                                    note: "each job does ctx.run(counter:) for the next and returns; the main thread waits on the counter") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            let ran = Counter()
            @Sendable func hop(_ index: Int, _ done: JobCounter, _ ctx: JobContext) {
                ran.value.add(1, ordering: .relaxed)
                if index + 1 < hops {
                    ctx.run(counter: done) { ctx in hop(index + 1, done, ctx) }
                }
            }
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    ran.value.store(0, ordering: .relaxed)
                    let done = JobCounter()
                    total &+= Clock.measure {
                        jobs.run(counter: done) { ctx in hop(0, done, ctx) }
                        jobs.wait(for: done)
                    }
                    let count = ran.value.load(ordering: .relaxed)
                    guard count == hops else { throw BenchmarkCheckFailure("W6: \(count) hops ran, expected \(hops)") }
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "W6-chain", name: "spindle-argument"), throughput: .elements(hops), mode: .flat,
                                    sweepsThreads: true,
                                    note: "each job does ctx.run(counter:argument:) for the next, passing the hop number to one body formed once; the main thread waits on the counter") { threads in
            let jobs = try SharedJobSystem.get(workers: threads)
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    W6Argument.ran.value.store(0, ordering: .relaxed)
                    total &+= Clock.measure {
                        jobs.run(counter: W6Argument.done, argument: 0, W6Argument.hop)
                        jobs.wait(for: W6Argument.done)
                    }
                    let count = W6Argument.ran.value.load(ordering: .relaxed)
                    guard count == hops else { throw BenchmarkCheckFailure("W6: \(count) hops ran, expected \(hops)") }
                }
                return total
            }
        })
    }

    /// W6 with the hop number as the job's argument: one body, formed once (a static closure that
    /// captures nothing: it names itself and its counters as statics), so no hop forms a closure.
    enum W6Argument {
        static let ran = Counter()
        static let done = JobCounter()
        static let hop: @Sendable (Int, JobContext) -> Void = { index, ctx in
            ran.value.add(1, ordering: .relaxed)
            if index + 1 < Workloads.w6Hops {
                ctx.run(counter: done, argument: index + 1, hop)
            }
        }
    }

    // MARK: Scheduler costs

    static func registerScheduler(_ registry: inout BenchmarkRegistry) {
        for affinity in [JobAffinity.migratable, .pinned] {
            let name = affinity == .pinned ? "pinned" : "migratable"
            registry.register(Benchmark(BenchmarkID(group: "scheduler", name: "wait-resume", parameter: name),
                                        throughput: .elements(10_000), mode: .flat,
                                        note: "inside a \(name) job: spawn an empty child, wait for it (park + resume) ×10,000") { _ in
                let jobs = try SharedJobSystem.get()
                let empty: @Sendable (JobContext) -> Void = { _ in }
                return { iterations in
                    var total: UInt64 = 0
                    for _ in 0..<iterations {
                        total &+= Clock.measure {
                            jobs.wait(for: jobs.run(affinity: affinity) { ctx in
                                let child = JobCounter()
                                for _ in 0..<10_000 {
                                    ctx.run(counter: child, empty)
                                    ctx.wait(for: child)
                                }
                            })
                        }
                    }
                    return total
                }
            })
        }

        registry.register(Benchmark(BenchmarkID(group: "wake", name: "spindle-parked-worker"), mode: .flat, maxSamples: 30,
                                    note: "every worker asleep on its futex; time from jobs.run on a thread pinned to the first CPU until the job starts (on a worker of another CPU)") { _ in
            let jobs = try SharedJobSystem.get()
            let started = Atomic<UInt64>(0)
            return { iterations in
                try WakeBench.pinCallerToFirstCPU()
                defer { WakeBench.unpinCaller() }
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    waitUntil { jobs.sleepingWorkers == jobs.workerCount }
                    started.store(0, ordering: .relaxed)
                    let begin = Clock.nanoseconds()
                    jobs.run { _ in started.store(Clock.nanoseconds(), ordering: .releasing) }
                    var end: UInt64 = 0
                    while end == 0 { end = started.load(ordering: .acquiring) }
                    total &+= end &- begin
                }
                return total
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "wake", name: "bare-futex"), mode: .flat, maxSamples: 30,
                                    note: "a thread pinned to the last CPU asleep in futex_wait; time from store + futex_wake on a thread pinned to the first CPU until it runs") { _ in
            let waker = try FutexWaker()
            return { iterations in
                try WakeBench.pinCallerToFirstCPU()
                defer { WakeBench.unpinCaller() }
                var total: UInt64 = 0
                for _ in 0..<iterations { total &+= waker.wakeOnce() }
                return total
            }
        })

        registry.register(Benchmark(BenchmarkID(group: "idle", name: "spindle-cpu-after-work"), mode: .single, maxSamples: 5,
                                    note: "CPU time (ns) the whole process uses in the 1 s after a burst of 100k jobs ends: 10 ms = 1 % of one CPU") { _ in
            let jobs = try SharedJobSystem.get()
            return { iterations in
                var total: UInt64 = 0
                for _ in 0..<iterations {
                    jobs.wait(for: jobs.run(count: 100_000) { _, _ in })
                    let before = ResourceUsage.now()
                    var pause = timespec(tv_sec: 1, tv_nsec: 0)
                    var left = timespec()
                    while nanosleep(&pause, &left) != 0 && errno == EINTR { pause = left }
                    let used = ResourceUsage.now().since(before)
                    total &+= used.userNanoseconds + used.systemNanoseconds
                }
                return total
            }
        })
    }

    /// Polls `condition` (sleeping 50 µs between looks) until it holds: untimed setup only.
    static func waitUntil(_ condition: () -> Bool) {
        while !condition() {
            var pause = timespec(tv_sec: 0, tv_nsec: 50_000)
            nanosleep(&pause, nil)
        }
        // Asleep means the bit is set; give the thread time to be inside futex_wait for real.
        var settle = timespec(tv_sec: 0, tv_nsec: 200_000)
        nanosleep(&settle, nil)
    }
}

/// Pinning for the wake benchmarks: the waking thread on the first allowed CPU, the sleeper on
/// another one, so both benchmarks measure waking a thread that sleeps on the other CPU (on a VM
/// that means rousing an idle virtual CPU). Spindle's waker prefers a worker on another CPU than
/// its own, as the kernel would place an unpinned thread differently.
enum WakeBench {
    static func pinCallerToFirstCPU() throws {
        let allowed = try ProcessCPUs.all()
        guard allowed.count > 1 else { throw BenchmarkCheckFailure("wake benchmarks need two CPUs") }
        try CurrentThread.pin(to: [allowed.min()!])
    }

    static func unpinCaller() {
        if let all = try? ProcessCPUs.all() { try? CurrentThread.pin(to: all) }
    }
}

/// The CPUs the process started with (before any benchmark pinned the main thread).
enum ProcessCPUs {
    nonisolated(unsafe) static var initial: CPUSet?
    static func all() throws -> CPUSet {
        if let initial { return initial }
        let set = try CPUSet.allowed()
        initial = set
        return set
    }
}

/// A helper thread that sleeps in futex_wait and records when it wakes: the reference cost of
/// waking a sleeping thread on this machine.
final class FutexWaker: @unchecked Sendable {
    // SAFETY: shared state is atomic; the futex word lives in stable raw memory.
    private let word: UnsafeMutablePointer<Atomic<UInt32>>
    private let asleep = Atomic<Bool>(false)
    private let wokeAt = Atomic<UInt64>(0)

    init() throws {
        word = .allocate(capacity: 1)
        word.initialize(to: Atomic(0))
        let cpu = try ProcessCPUs.all().max()!
        let thread = Thread { [self] in
            try? CurrentThread.pin(to: [cpu])
            sleepLoop()
        }
        thread.start()
    }

    private func sleepLoop() {
        while true {
            asleep.store(true, ordering: .releasing)
            while word.pointee.load(ordering: .acquiring) == 0 {
                _ = Futex.wait(on: word, expected: 0)
            }
            wokeAt.store(Clock.nanoseconds(), ordering: .releasing)
            word.pointee.store(0, ordering: .relaxed)
        }
    }

    /// Waits until the helper sleeps, wakes it, and returns the nanoseconds until it ran.
    func wakeOnce() -> UInt64 {
        SchedulerSuite.waitUntil { asleep.load(ordering: .acquiring) }
        asleep.store(false, ordering: .relaxed)
        wokeAt.store(0, ordering: .relaxed)
        let begin = Clock.nanoseconds()
        word.pointee.store(1, ordering: .releasing)
        Futex.wake(word, count: 1)
        var end: UInt64 = 0
        while end == 0 { end = wokeAt.load(ordering: .acquiring) }
        return end &- begin
    }
}
