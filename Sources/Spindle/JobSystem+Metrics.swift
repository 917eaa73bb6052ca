#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

extension JobSystem {
    /// A snapshot of the scheduler's counters (`metrics()`).
    ///
    /// Each worker counts its own events in cache-line-separated counters; a snapshot reads
    /// them one after another while the system runs, so totals are consistent only when the
    /// system is quiet.
    public struct Metrics: Hashable, Sendable {
        /// The counters of one worker, or their sum.
        public struct Counters: Hashable, Sendable {
            /// Jobs finished (`run(count:)` counts each index; a `join` half that was stolen counts).
            public var jobsRun: UInt64 = 0
            /// Steal attempts on a deque that looked non-empty.
            public var stealAttempts: UInt64 = 0
            /// Jobs taken from another worker's deque (successful steals).
            public var steals: UInt64 = 0
            /// Fibers mapped and prepared for jobs.
            public var fibersCreated: UInt64 = 0
            /// Times a job's fiber parked on a counter or a join.
            public var fibersParked: UInt64 = 0
            /// Times a parked fiber was resumed.
            public var fibersResumed: UInt64 = 0
            /// Times the worker went to sleep on its futex.
            public var sleeps: UInt64 = 0
            /// Times the worker woke from its futex.
            public var wakeups: UInt64 = 0
            /// Bytes of frame memory the worker's frame allocator holds.
            public var frameBytes: UInt64 = 0
            /// Jobs waiting in the worker's deques (every priority) when the snapshot was taken: an
            /// estimate, since thieves and the owner change them while they are read.
            public var queued: UInt64 = 0

            /// All zero.
            public init() {}

            /// The field-by-field sum (wrapping), as `Metrics.total` adds up the workers.
            public static func + (lhs: Counters, rhs: Counters) -> Counters {
                var sum = lhs
                sum.jobsRun &+= rhs.jobsRun
                sum.stealAttempts &+= rhs.stealAttempts
                sum.steals &+= rhs.steals
                sum.fibersCreated &+= rhs.fibersCreated
                sum.fibersParked &+= rhs.fibersParked
                sum.fibersResumed &+= rhs.fibersResumed
                sum.sleeps &+= rhs.sleeps
                sum.wakeups &+= rhs.wakeups
                sum.frameBytes &+= rhs.frameBytes
                sum.queued &+= rhs.queued
                return sum
            }
        }

        /// Per worker, by worker index.
        public var workers: [Counters]
        /// Bytes of job-record chunks allocated (they are recycled, so this plateaus).
        public var recordBytes: Int
        /// Fiber stacks mapped now (pooled or in use).
        public var fiberStacks: Int
        /// Why NUMA placement is off (libnuma missing or unusable), or nil when the topology came
        /// from libnuma or the configuration. docs/numa.md.
        public var numaFallback: String? = nil
        /// Memory-placement requests (`mbind`) the kernel refused; the memory works, unplaced.
        public var numaBindFailures: Int = 0
        /// The error number of the latest placement request the kernel refused in this process
        /// (any system's), or nil if none was: for example `ENOMEM` when the process ran out of
        /// memory-map entries or the node of memory, `EPERM`/`ENOSYS` where a container forbids
        /// `mbind`.
        public var numaLastBindErrno: Int32? = nil
        /// Workers asleep on their futex when the snapshot was taken.
        public var sleepingWorkers: Int = 0
        /// Whether jobs submitted from outside the system were waiting in an injection queue
        /// (the queues are linked lists without a count).
        public var injectionPending: Bool = false

        /// The sum over all workers.
        public var total: Counters { workers.reduce(Counters(), +) }
    }

    /// Reads every worker's counters. Thread-safe; never blocks.
    /// - Complexity: O(workers).
    public func metrics() -> Metrics { Self.metrics(of: scheduler) }

    static func metrics(of scheduler: Scheduler) -> Metrics {
        let workers = (0..<scheduler.workerCount).map { index -> Metrics.Counters in
            let worker = scheduler.workers[index]
            var counters = Metrics.Counters()
            counters.jobsRun = worker.metric(.jobsRun)
            counters.stealAttempts = worker.metric(.stealAttempts)
            counters.steals = worker.metric(.steals)
            counters.fibersCreated = worker.metric(.fibersCreated)
            counters.fibersParked = worker.metric(.fibersParked)
            counters.fibersResumed = worker.metric(.fibersResumed)
            counters.sleeps = worker.metric(.sleeps)
            counters.wakeups = worker.metric(.wakeups)
            counters.frameBytes = worker.metric(.frameBytes)
            counters.queued = UInt64(Priority.allCases.reduce(0) { $0 + max(0, worker.approximateCount($1)) })
            return counters
        }
        var metrics = Metrics(workers: workers, recordBytes: scheduler.chunkPools.reduce(0) { $0 + $1.bytes.load(ordering: .relaxed) },
                              fiberStacks: scheduler.fiberPools.reduce(0) { $0 + $1.allocatedCount })
        if case .fallback(let reason) = scheduler.topology.source { metrics.numaFallback = reason }
        metrics.numaBindFailures = scheduler.bindFailures.load(ordering: .relaxed)
            + scheduler.chunkPools.reduce(0) { $0 + $1.bindFailures.load(ordering: .relaxed) }
        let refusal = NumaMemory.lastRefusal.load(ordering: .relaxed)
        metrics.numaLastBindErrno = refusal == 0 ? nil : refusal
        metrics.sleepingWorkers = scheduler.sleep.sleepingCount
        metrics.injectionPending = scheduler.injection.contains { $0.mayHaveWork }
        return metrics
    }
}

extension JobSystem {
    /// Calls `handler` with a `metrics()` snapshot every `interval`, from a thread of its own
    /// (named "sp-report"), until the returned report is stopped or the system shuts down.
    /// Off unless called; the workers do no extra work for it (a snapshot reads their counters).
    ///
    /// Thread-safe. `handler` runs on the reporting thread, one call at a time; it must not
    /// block for long (later snapshots wait for it).
    /// - Precondition: `interval` is positive.
    @discardableResult
    public func reportMetrics(every interval: Duration, _ handler: @escaping @Sendable (Metrics) -> Void) -> MetricsReport {
        require(interval.nanosecondsSaturated > 0, "JobSystem.reportMetrics(every: \(interval)): the interval must be positive")
        let report = MetricsReport()
        let scheduler = self.scheduler
        let refused = OSThread.repeating(name: "sp-report", every: interval, stop: { report.stopWord }) {
            report.thread.store(CurrentThread.identifier, ordering: .relaxed)  // lets stop() tell it is called from the handler
            handler(JobSystem.metrics(of: scheduler))
        } exited: {
            report.exitedWord.pointee.store(1, ordering: .releasing)
            _ = Futex.wake(report.exitedWord, count: Int32.max)
        }
        if refused != nil {
            // No thread (the kernel refused one): the report is stopped from the start.
            report.stopWord.pointee.store(1, ordering: .releasing)
            report.exitedWord.pointee.store(1, ordering: .releasing)
        }
        onShutdown { _ in report.stop() }
        return report
    }

    /// A periodic metrics report started by `reportMetrics(every:_:)`.
    public final class MetricsReport: Sendable {
        // SAFETY: the words are atomics in memory owned by this object.
        nonisolated(unsafe) let stopWord: UnsafeMutablePointer<Atomic<UInt32>>
        nonisolated(unsafe) let exitedWord: UnsafeMutablePointer<Atomic<UInt32>>
        let thread = Atomic<UInt>(0)

        init() {
            stopWord = .allocate(capacity: 1)
            stopWord.initialize(to: Atomic(0))
            exitedWord = .allocate(capacity: 1)
            exitedWord.initialize(to: Atomic(0))
        }

        deinit {
            stopWord.deallocate()
            exitedWord.deallocate()
        }

        /// Stops the report. When it returns, no handler call is running or will start, unless
        /// called from the handler itself (then the current call is the last). Idempotent; may
        /// block for the length of a handler call in progress.
        public func stop() {
            stopWord.pointee.store(1, ordering: .releasing)
            _ = Futex.wake(stopWord, count: Int32.max)
            guard thread.load(ordering: .acquiring) != CurrentThread.identifier else { return }
            while exitedWord.pointee.load(ordering: .acquiring) == 0 {
                _ = Futex.wait(on: exitedWord, expected: 0)
            }
        }

        /// Whether `stop()` was called or the system shut down.
        public var isStopped: Bool { stopWord.pointee.load(ordering: .acquiring) != 0 }
    }
}

extension JobSystem {
    /// The job-record chunks mapped so far, per node (index into `topology.nodes`), for checks of
    /// where their pages are.
    @_spi(Internals)
    public var recordChunkAddresses: [[UnsafeRawPointer]] {
        scheduler.chunkPools.map { $0.mappedChunks.map { UnsafeRawPointer($0) } }
    }

    /// Workers asleep on their futex right now (for benchmarks that start from a quiet system).
    @_spi(Internals)
    public var sleepingWorkers: Int { scheduler.sleep.sleepingCount }
}
