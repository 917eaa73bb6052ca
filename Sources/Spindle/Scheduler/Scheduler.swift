import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The engine behind `JobSystem`: it owns the workers, their queues, pools and threads, and
/// starts and stops them. docs/scheduler.md describes the design; docs/sleep.md the idle protocol.
///
/// The core is split by concern: this file is ownership and lifecycle; the worker's loop,
/// stealing and fibers are in Worker/; the idle protocol in Sleep/Sleep.swift; job records in
/// Jobs/; and what the layers above (loops, graphs, pipelines, async, the trace) may use is the
/// surface of Scheduler+Surface.swift and Observer.swift (ARCHITECTURE.md, "The core's surface").
///
/// Thread-safety: the members say who may call them. Mutable state lives in atomics, in
/// `WorkerState` (owner-only unless atomic), or behind `lock`.
@usableFromInline
final class Scheduler: @unchecked Sendable {
    // SAFETY: `threads`, `sharedSpares`, `submitters`, `joined` and `installedObservers` are only
    // touched with `lock` held; everything else is immutable after init or atomic.
    let configuration: JobSystem.Configuration
    @usableFromInline let workerCount: Int
    /// The CPU each worker is pinned to (nil: not pinned).
    let workerCPUs: [Int?]
    @usableFromInline let workers: UnsafeMutablePointer<UnsafeMutablePointer<WorkerState>>
    /// One injection queue per priority (`Priority.index`).
    let injection: [InjectionQueue]
    /// `injection` and `nodeQueues` unmanaged, for every path a job or a search goes through:
    /// reading an element of an array of class references retains and releases it, once per job
    /// in the work loop (the arrays above own the queues).
    let injectionRefs: [Unmanaged<InjectionQueue>]
    let nodeQueueRefs: [Unmanaged<InjectionQueue>]
    /// Every worker's deques (high, normal, low per worker): they own the deques the workers
    /// reference unmanaged.
    let deques: [WorkStealingDeque<UInt>]
    let frames = FrameState()
    /// NUMA (docs/numa.md): the topology, each worker's node (an index into
    /// `topology.nodes`), the workers of each node, and per node a record-chunk pool and a fiber
    /// pool. With more than one node, also a queue per node for node-bound work.
    let topology: NumaTopology
    let workerNodes: [Int]
    let nodeWorkers: [[Int]]
    let chunkPools: [ChunkPool]
    let fiberPools: [FiberPool]
    let nodeQueues: [InjectionQueue]
    let placement: MemoryPlacement
    /// `mbind` calls the kernel refused (placement is a hint; the memory still works).
    let bindFailures = Atomic<Int>(0)
    let multiNode: Bool
    let sleep: SleepState
    /// How many workers can run at once: the workers, or the distinct CPUs of their plan if
    /// fewer (docs/parallel-for.md, "More workers than CPUs").
    var parallelism: Int { sleep.parallelism }
    /// Set by `shutdown`: workers terminate once every job has finished.
    let shutdownRequested = Atomic<Bool>(false)
    /// Set by the last worker to fall asleep after shutdown was requested with no work left.
    let terminated = Atomic<Bool>(false)
    /// Raised while that worker decides to terminate, and left raised once it did: an outside
    /// submission that sees it waits for the verdict (docs/sleep.md, "Submissions and shutdown").
    let closing = Atomic<Bool>(false)
    /// Spare fibers beyond what a worker keeps (any worker may take them).
    var sharedSpares: UnsafeMutablePointer<FiberState>?
    /// Every fiber this system made and has not recycled, linked through `allNext` (under
    /// `lock`): read only for stall reports (docs/sleep.md, "Stalls") and, through
    /// `spindle_debug_info`, by a debugger (docs/debugging.md).
    var allFibers: UnsafeMutablePointer<FiberState>? {
        didSet { DebugTable.publish(allFibers, slot: debugSlot) }
    }
    /// This scheduler's slot in `spindle_debug_info` (-1: none left).
    let debugSlot = DebugTable.claimSlot()
    /// The stall watch (docs/sleep.md, "Stalls"): how long the system may sit idle with parked
    /// fibers before it reports (nil: never), the handler (under `lock`; nil: the default), and
    /// the progress stamp of the last report, so that one stall is reported once.
    let stallNanoseconds: UInt64?
    var stallHandler: (@Sendable (JobSystem.StallReport) -> Void)?
    var lastStallStamp: UInt64?
    private var threads: [pthread_t] = []
    private var joined = false
    private var submitters: [UnsafeMutablePointer<Submitter>] = []
    let lock = Lock()
    /// The observers in the workers' slots (Observer.swift), kept alive while installed.
    var installedObservers: [WorkerObserver]?
    /// Per-thread `Submitter` of threads outside the system.
    let submitterKey = ThreadLocalKey("a job system's outside submitters")
    /// The spin budget before sleeping, in nanoseconds.
    let spinNanoseconds: UInt64
    static let sparesPerWorker = 32
    /// The most jobs a thief takes in one burst besides the one it runs (`stealMore`).
    static let stealBurst = 16
    static let injectionBatch = 32

    /// A thread outside the system that submits jobs: its record arena.
    struct Submitter {
        var arena = RecordArena()
    }

    /// Process-wide: the `WorkerState` of the calling thread, if it is a worker of any system.
    static let workerKey = ThreadLocalKey("the current worker")

    init(configuration: JobSystem.Configuration, plan: WorkerPlan, placement: MemoryPlacement = .kernel) throws {
        Execution.checkRecordLayouts()
        self.configuration = configuration
        workerCount = plan.cpus.count
        workerCPUs = plan.cpus
        let topology = configuration.topology ?? .system()
        var workerNodes: [Int] = []
        for cpu in plan.homes {
            guard let node = topology.nodeIndex(ofCPU: cpu) else {
                throw JobSystem.ConfigurationError.cpuNotInTopology(cpu: cpu, topology: topology)
            }
            workerNodes.append(node)
        }
        self.topology = topology
        self.workerNodes = workerNodes
        multiNode = topology.nodes.count > 1
        self.placement = placement
        let nodeCount = topology.nodes.count
        nodeWorkers = (0..<nodeCount).map { node in workerNodes.indices.filter { workerNodes[$0] == node } }
        chunkPools = (0..<nodeCount).map { ChunkPool(node: topology.nodes[$0].id, placement: placement) }
        fiberPools = try (0..<nodeCount).map { _ in try FiberPool(configuration: configuration.stack) }
        nodeQueues = nodeCount > 1 ? (0..<nodeCount).map { _ in InjectionQueue() } : []
        injection = Priority.allCases.map { _ in InjectionQueue() }
        injectionRefs = injection.map { Unmanaged.passUnretained($0) }
        nodeQueueRefs = nodeQueues.map { Unmanaged.passUnretained($0) }
        sleep = SleepState(workers: workerCount, cpus: Set(plan.homes).count)
        spinNanoseconds = UInt64(configuration.spinBeforeSleeping.nanosecondsSaturated)
        stallNanoseconds = configuration.stallReportAfter.map { UInt64($0.nanosecondsSaturated) }
        deques = (0..<workerCount * 3).map { index in
            WorkStealingDeque(capacity: index % 3 == Priority.normal.index ? 1024 : 256)
        }
        workers = .allocate(capacity: workerCount)
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for index in 0..<workerCount {
            let stride = (MemoryLayout<WorkerState>.stride + 127) & ~127
            let worker = UnsafeMutableRawPointer.allocate(byteCount: stride, alignment: 128)
                .bindMemory(to: WorkerState.self, capacity: 1)
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let groups = nodeCount > 1
                ? NumaPolicy.victimGroups(of: index, workerNodes: workerNodes, distances: topology.distances) : nil
            worker.initialize(to: WorkerState(index: index, scheduler: self,
                                              deques: Array(deques[index * 3..<index * 3 + 3]), seed: seed,
                                              victims: VictimOrder(worker: index, workers: workerCount, groups: groups)))
            workers[index] = worker
        }
    }

    deinit {
        DebugTable.releaseSlot(debugSlot)
        // Records an outside submission left after the system terminated never run: release
        // what they hold (docs/sleep.md, "Submissions and shutdown").
        for queue in injection + nodeQueues {
            while queue.take(limit: .max, { Execution.discardUnrun($0) }) > 0 {}
        }
        for index in 0..<workerCount {
            let worker = workers[index]
            worker.pointee.local.pointee.ownerThread = 0
            worker.local.pointee.frame.releaseAll()
            worker.pointee.releaseMemory()
            worker.deinitialize(count: 1)
            UnsafeMutableRawPointer(worker).deallocate()
        }
        workers.deallocate()
        for submitter in submitters {
            submitter.deinitialize(count: 1)
            submitter.deallocate()
        }
        submitterKey.delete()
    }

    /// Keeps an outside thread's submitter state for release at `deinit` (its thread may exit
    /// before; the arena's unfinished chunk then waits for the system's end).
    func registerSubmitter(_ submitter: UnsafeMutablePointer<Submitter>) {
        lock.withLock { submitters.append(submitter) }
    }

    // MARK: Starting and stopping

    /// Starts one thread per worker and waits until each has pinned and named itself.
    func start(plan: WorkerPlan) throws {
        let startup = Startup(count: workerCount)
        for index in 0..<workerCount {
            let context = Unmanaged.passRetained(ThreadStart(scheduler: self, index: index, cpu: plan.cpus[index],
                                                             name: plan.names[index], startup: startup))
            let started = JoinableThread.start(context.toOpaque()) { argument in
                let start = Unmanaged<ThreadStart>.fromOpaque(argument!).takeRetainedValue()
                start.scheduler.workerThreadMain(start)
                return nil
            }
            switch started {
            case .success(let thread):
                lock.withLock { threads.append(thread) }
            case .failure(let error):
                context.release()
                startup.fail(error)
            }
        }
        if let error = startup.waitForAll() {
            shutdownAndJoin()
            throw error
        }
    }

    /// Requests shutdown and, unless `join` is false, waits for every worker thread to exit.
    /// Idempotent. Not from a worker of this system when joining.
    func shutdownAndJoin(join: Bool = true) {
        shutdownRequested.store(true, ordering: .sequentiallyConsistent)
        // Sleeping workers must look again: the last to fall asleep with nothing left to do
        // ends the system (docs/sleep.md, "Shutdown").
        sleep.wakeAll(self)
        let toJoin: [pthread_t] = lock.withLock {
            guard !joined else { return [] }
            joined = true
            return threads
        }
        for thread in toJoin {
            if join {
                JoinableThread.join(thread)
            } else {
                JoinableThread.detach(thread)
            }
        }
        // Every fiber has finished and gone back to its pool: give the stacks back now rather
        // than when the system is freed (docs/fibers.md, "Stacks").
        if join && !toJoin.isEmpty {
            for pool in fiberPools { pool.trim() }
        }
    }

    final class ThreadStart {
        let scheduler: Scheduler
        let index: Int
        let cpu: Int?
        let name: String
        let startup: Startup
        init(scheduler: Scheduler, index: Int, cpu: Int?, name: String, startup: Startup) {
            (self.scheduler, self.index, self.cpu, self.name, self.startup) = (scheduler, index, cpu, name, startup)
        }
    }

    /// Collects start-up results from the worker threads.
    final class Startup: @unchecked Sendable {
        // SAFETY: `remaining` and `error` are only touched with `lock` held.
        private let lock = Lock()
        private let done: UnsafeMutablePointer<Atomic<UInt32>>
        private var remaining: Int
        private var error: (any Error)?
        init(count: Int) {
            remaining = count
            done = .allocate(capacity: 1)
            done.initialize(to: Atomic(0))
        }
        deinit {
            done.deinitialize(count: 1)
            done.deallocate()
        }

        func succeed() { finishOne(nil) }
        func fail(_ error: any Error) { finishOne(error) }

        private func finishOne(_ failure: (any Error)?) {
            let last = lock.withLock { () -> Bool in
                if let failure, error == nil { error = failure }
                remaining -= 1
                return remaining == 0
            }
            if last {
                done.pointee.store(1, ordering: .releasing)
                Futex.wake(done, count: Int32.max)
            }
        }

        func waitForAll() -> (any Error)? {
            while done.pointee.load(ordering: .acquiring) == 0 {
                _ = Futex.wait(on: done, expected: 0)
            }
            return lock.withLock { error }
        }
    }

    private func workerThreadMain(_ start: ThreadStart) {
        let worker = workers[start.index]
        Scheduler.workerKey.set(UnsafeRawPointer(worker))
        worker.pointee.local.pointee.ownerThread = CurrentThread.identifier
        let threadContext = Fiber.makeThreadContext()
        worker.local.pointee.threadContext = threadContext
        do {
            if let cpu = start.cpu { try CurrentThread.pin(to: [cpu]) }
            try CurrentThread.setName(start.name)
            start.startup.succeed()
        } catch {
            // Still run: a failed start shuts the system down, and termination needs every
            // worker to take part.
            start.startup.fail(error)
        }

        let first = makeFiber(for: worker)
        first.transition(from: .spare, to: .running)
        threadContext.switchTo(first.pointee.fiber)
        // The loop ended (termination): the fiber that returned here has finished.
        completePendingAction(on: worker, running: nil)
        // Finish every spare fiber (they sit in `resume` inside the loop) and the shared ones.
        while let spare = takeSpare(worker, allowNew: false) {
            spare.pointee.exitRequested = true
            spare.pointee.worker = worker
            spare.transition(from: .spare, to: .running)
            threadContext.switchTo(spare.pointee.fiber)
            completePendingAction(on: worker, running: nil)
        }
        Scheduler.workerKey.set(nil)
        worker.local.pointee.threadContext = nil
        threadContext.releaseThreadContext()
    }
}

/// The word a stolen `join` half and its waiting owner meet on: `pending`, `done`, or the
/// owner's `FiberState` while it is parked.
@usableFromInline
enum JoinLatch {
    @usableFromInline static let pending: UInt = 0
    @usableFromInline static let done: UInt = 1
}
