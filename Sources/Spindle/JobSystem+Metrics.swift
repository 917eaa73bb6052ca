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
            /// Steal attempts on a deque that looked non-empty, and the successful ones.
            public var stealAttempts: UInt64 = 0
            public var steals: UInt64 = 0
            /// Fibers mapped and prepared, parked on a counter or join, and resumed.
            public var fibersCreated: UInt64 = 0
            public var fibersParked: UInt64 = 0
            public var fibersResumed: UInt64 = 0
            /// Times the worker went to sleep on its futex, and woke up.
            public var sleeps: UInt64 = 0
            public var wakeups: UInt64 = 0
            /// Bytes of frame memory the worker's frame allocator holds.
            public var frameBytes: UInt64 = 0

            static func + (lhs: Counters, rhs: Counters) -> Counters {
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

        /// The sum over all workers.
        public var total: Counters { workers.reduce(Counters(), +) }
    }

    /// Reads every worker's counters. Thread-safe; never blocks.
    /// - Complexity: O(workers).
    public func metrics() -> Metrics {
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
            return counters
        }
        var metrics = Metrics(workers: workers, recordBytes: scheduler.chunkPools.reduce(0) { $0 + $1.bytes.load(ordering: .relaxed) },
                              fiberStacks: scheduler.fiberPools.reduce(0) { $0 + $1.allocatedCount })
        if case .fallback(let reason) = scheduler.topology.source { metrics.numaFallback = reason }
        metrics.numaBindFailures = scheduler.bindFailures.load(ordering: .relaxed)
            + scheduler.chunkPools.reduce(0) { $0 + $1.bindFailures.load(ordering: .relaxed) }
        return metrics
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
