#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension JobSystem {
    /// How a job system is set up. A plain value; every property has a documented default.
    public struct Configuration: Hashable, Sendable {
        /// Worker threads. Default (`nil`): one per CPU in `cpus`. More workers than CPUs is
        /// allowed (they share CPUs round-robin); it costs context switches, not correctness.
        public var workers: Int?
        /// The CPUs workers may use. Default (`nil`): every CPU this process may run on
        /// (`sched_getaffinity`, so `taskset`, cpusets and containers are honoured). Must be a
        /// subset of that set.
        public var cpus: CPUSet?
        /// How workers are pinned to `cpus`. Default: `.compact`.
        public var pinning: Pinning
        /// Thread names are this prefix followed by the worker index ("spindle-w0", …); Linux
        /// keeps at most 15 bytes. Default: "spindle-w".
        public var threadNamePrefix: String
        /// How long an idle worker keeps looking for work before it sleeps on a futex. Longer
        /// spins make new work start sooner after a lull and cost CPU time while idle.
        /// Default: 50 µs (waking a sleeping thread costs tens of microseconds on a VM).
        public var spinBeforeSleeping: Duration
        /// Stack and guard sizes of the fibers jobs run on. Default: 256 KiB stacks, 1 MiB guards.
        public var stack: FiberStackConfiguration
        /// The NUMA topology that placement and stealing follow. Default (`nil`):
        /// `NumaTopology.system()` (libnuma, or one node when it is missing). A custom topology
        /// must place every worker's CPU in a node. docs/numa.md.
        public var topology: NumaTopology?
        /// How long the system may sit with every worker asleep, nothing queued and jobs parked
        /// in waits before it reports a stall: such waits can only end through something outside
        /// the system, and usually never do (a job waiting for a counter that only its own
        /// completion, or its waiter's, would bring to zero). The report goes to the handler set
        /// with `JobSystem.onStall(_:)`; without one, a debug build traps with the report and a
        /// release build writes it to standard error. `nil`: never report. Default: 10 s.
        /// docs/sleep.md, "Stalls".
        public var stallReportAfter: Duration?

        /// A configuration; every parameter defaults to the documented default of its property.
        public init(
            workers: Int? = nil,
            cpus: CPUSet? = nil,
            pinning: Pinning = .compact,
            threadNamePrefix: String = "spindle-w",
            spinBeforeSleeping: Duration = .microseconds(50),
            stack: FiberStackConfiguration = .default,
            topology: NumaTopology? = nil,
            stallReportAfter: Duration? = .seconds(10)
        ) {
            self.workers = workers
            self.cpus = cpus
            self.pinning = pinning
            self.threadNamePrefix = threadNamePrefix
            self.spinBeforeSleeping = spinBeforeSleeping
            self.stack = stack
            self.topology = topology
            self.stallReportAfter = stallReportAfter
        }

        /// The most workers a system may have.
        public static let maximumWorkers = 4096
    }

    /// How worker threads are placed on CPUs.
    public enum Pinning: Hashable, Sendable {
        /// No pinning: the kernel places and migrates workers freely within the process's CPUs.
        case none
        /// Worker *i* on the *i*-th CPU of the set, in ascending order (wrapping around when there
        /// are more workers than CPUs).
        case compact
        /// Like `.compact`, but one CPU per physical core first and SMT siblings (hyperthreads)
        /// only after every core has a worker. Topology from /sys/devices/system/cpu.
        case avoidSMTSiblings
    }

    /// A configuration that cannot work. `description` says what to change.
    public enum ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
        /// `workers` was zero or negative.
        case notEnoughWorkers(Int)
        /// `workers` was above `Configuration.maximumWorkers`.
        case tooManyWorkers(Int)
        /// `cpus` was empty.
        case noCPUs
        /// `cpus` named CPUs this process may not run on.
        case cpusNotAllowed(requested: CPUSet, notAllowed: CPUSet, allowed: CPUSet)
        /// The thread name of the last worker would be longer than Linux allows.
        case threadNameTooLong(prefix: String, longestName: String)
        /// `spinBeforeSleeping` was negative.
        case negativeSpin(Duration)
        /// A worker's CPU is in no node of the configured `topology`.
        case cpuNotInTopology(cpu: Int, topology: NumaTopology)
        /// `stallReportAfter` was zero or negative.
        case nonPositiveStallTime(Duration)

        public var description: String {
            switch self {
            case .notEnoughWorkers(let count):
                return "JobSystem.Configuration.workers is \(count): use at least 1, or nil for one worker per allowed CPU"
            case .tooManyWorkers(let count):
                return "JobSystem.Configuration.workers is \(count): use at most \(Configuration.maximumWorkers)"
            case .noCPUs:
                return "JobSystem.Configuration.cpus is empty: name at least one CPU, or use nil for every allowed CPU"
            case .cpusNotAllowed(let requested, let notAllowed, let allowed):
                return "JobSystem.Configuration.cpus \(requested) includes CPUs \(notAllowed) that this process may not run on: choose CPUs from \(allowed) (the process's affinity, see taskset/cgroups), or use nil"
            case .threadNameTooLong(let prefix, let longestName):
                return "JobSystem.Configuration.threadNamePrefix \"\(prefix)\" makes thread names such as \"\(longestName)\" longer than Linux's 15 bytes: use a shorter prefix"
            case .negativeSpin(let duration):
                return "JobSystem.Configuration.spinBeforeSleeping is \(duration): use zero or a positive duration"
            case .nonPositiveStallTime(let duration):
                return "JobSystem.Configuration.stallReportAfter is \(duration): use a positive duration, or nil to never report stalls"
            case .cpuNotInTopology(let cpu, let topology):
                return "JobSystem.Configuration.topology has no node with CPU \(cpu), which a worker uses: add it to a node (topology: \(topology)), or use nil for the system's topology"
            }
        }
    }
}

/// Where each worker runs and what it is called, derived from a configuration.
struct WorkerPlan: Hashable {
    var cpus: [Int?]
    /// The CPU each worker is meant for, pinned or not (its NUMA node is that CPU's node).
    var homes: [Int]
    var names: [String]

    /// Validates `configuration` against `allowed` and places the workers.
    init(_ configuration: JobSystem.Configuration, allowed: CPUSet,
         siblings: (Int) -> CPUSet = WorkerPlan.smtSiblings) throws(JobSystem.ConfigurationError) {
        guard configuration.spinBeforeSleeping >= .zero else {
            throw .negativeSpin(configuration.spinBeforeSleeping)
        }
        if let stall = configuration.stallReportAfter, stall <= .zero {
            throw .nonPositiveStallTime(stall)
        }
        let cpus = configuration.cpus ?? allowed
        guard !cpus.isEmpty else { throw .noCPUs }
        let notAllowed = CPUSet(cpus.filter { !allowed.contains($0) })
        guard notAllowed.isEmpty else {
            throw .cpusNotAllowed(requested: cpus, notAllowed: notAllowed, allowed: allowed)
        }
        let count = configuration.workers ?? cpus.count
        guard count >= 1 else { throw .notEnoughWorkers(count) }
        guard count <= JobSystem.Configuration.maximumWorkers else { throw .tooManyWorkers(count) }
        let longest = "\(configuration.threadNamePrefix)\(count - 1)"
        guard longest.utf8.count <= CurrentThread.maximumNameLength else {
            throw .threadNameTooLong(prefix: configuration.threadNamePrefix, longestName: longest)
        }
        names = (0..<count).map { "\(configuration.threadNamePrefix)\($0)" }

        let ordered: [Int]
        switch configuration.pinning {
        case .none:
            self.cpus = Array(repeating: nil, count: count)
            let all = Array(cpus)
            homes = (0..<count).map { all[$0 % all.count] }
            return
        case .compact:
            ordered = Array(cpus)
        case .avoidSMTSiblings:
            // Rank each CPU by its position among its siblings (0 for the first thread of a core),
            // then take rank 0 of every core before any rank 1.
            let ranked = cpus.map { cpu -> (rank: Int, cpu: Int) in
                let group = siblings(cpu).intersection(cpus)
                return (Array(group).firstIndex(of: cpu) ?? 0, cpu)
            }
            ordered = ranked.sorted { ($0.rank, $0.cpu) < ($1.rank, $1.cpu) }.map(\.cpu)
        }
        homes = (0..<count).map { ordered[$0 % ordered.count] }
        self.cpus = homes
    }

    /// The SMT siblings of `cpu` (itself included) from sysfs; just `cpu` when unknown.
    static func smtSiblings(of cpu: Int) -> CPUSet {
        let path = "/sys/devices/system/cpu/cpu\(cpu)/topology/thread_siblings_list"
        guard let file = fopen(path, "r") else { return [cpu] }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 256)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return [cpu] }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .filter { !$0.isWhitespace }
        return (try? CPUSet(parsing: text)) ?? [cpu]
    }
}
