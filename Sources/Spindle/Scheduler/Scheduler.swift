import CSpindle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The engine behind `JobSystem`: workers, their loop, fibers, and the sleep protocol.
/// docs/scheduler.md describes the design; docs/sleep.md the idle protocol.
///
/// Thread-safety: the members say who may call them. Mutable state lives in atomics, in
/// `WorkerState` (owner-only unless atomic), or behind `lock`.
@usableFromInline
final class Scheduler: @unchecked Sendable {
    // SAFETY: `threads`, `sharedSpares`, `submitters` and `joined` are only touched with `lock`
    // held; everything else is immutable after init or atomic.
    let configuration: JobSystem.Configuration
    @usableFromInline let workerCount: Int
    /// The CPU each worker is pinned to (nil: not pinned).
    let workerCPUs: [Int?]
    @usableFromInline let workers: UnsafeMutablePointer<UnsafeMutablePointer<WorkerState>>
    let injection: [InjectionQueue]
    /// `injection` and `nodeQueues` unmanaged, for every path a job or a search goes through:
    /// reading an element of an array of class references retains and releases it, once per job
    /// in the work loop (the arrays above own the queues).
    let injectionRefs: [Unmanaged<InjectionQueue>]
    private let nodeQueueRefs: [Unmanaged<InjectionQueue>]
    /// Every worker's deques (high, normal, low per worker): they own the deques the workers
    /// reference unmanaged.
    let deques: [WorkStealingDeque<UInt>]
    let frames = FrameState()
    /// NUMA (docs/numa.md): the topology, each worker's node (an index into
    /// `topology.nodes`), the workers of each node, and per node a record-chunk pool and a fiber
    /// pool. With more than one node, also a queue per node for node-bound work and each
    /// worker's steal order (victim groups, nearest first).
    let topology: NumaTopology
    let workerNodes: [Int]
    let nodeWorkers: [[Int]]
    let chunkPools: [ChunkPool]
    let fiberPools: [FiberPool]
    let nodeQueues: [InjectionQueue]
    let stealGroups: [[[Int]]]
    let placement: MemoryPlacement
    /// `mbind` calls the kernel refused (placement is a hint; the memory still works).
    let bindFailures = Atomic<Int>(0)
    let multiNode: Bool
    let sleep: SleepState
    /// Set by `shutdown`: workers terminate once every job has finished.
    let shutdownRequested = Atomic<Bool>(false)
    /// Set by the last worker to fall asleep after shutdown was requested with no work left.
    let terminated = Atomic<Bool>(false)
    /// Spare fibers beyond what a worker keeps (any worker may take them).
    private var sharedSpares: UnsafeMutablePointer<FiberState>?
    private var threads: [pthread_t] = []
    private var joined = false
    private var submitters: [UnsafeMutablePointer<Submitter>] = []
    let lock = Lock()
    /// The trace being recorded (guarded by `lock`); its buffers are published in the workers'
    /// trace slots (docs/trace.md).
    var traceSession: TraceSession?
    /// Per-thread `Submitter` of threads outside the system.
    let submitterKey: pthread_key_t
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
    static let workerKey: pthread_key_t = {
        var key = pthread_key_t()
        let result = pthread_key_create(&key, nil)
        require(result == 0, "Spindle: pthread_key_create failed (\(result)): too many thread-specific keys in this process")
        return key
    }()

    init(configuration: JobSystem.Configuration, plan: WorkerPlan, placement: MemoryPlacement = .kernel) throws {
        // The executors call a record's body in place through its two words, right after the
        // header (closure.c); a layout change must fail loudly, not call garbage.
        require(MemoryLayout<RunRecord>.size == MemoryLayout<JobHeader>.stride + 2 * MemoryLayout<Int>.size
                    && MemoryLayout<ArgumentRecord>.offset(of: \ArgumentRecord.body) == MemoryLayout<JobHeader>.stride
                    && MemoryLayout<ArgumentBody>.size == 2 * MemoryLayout<Int>.size,
                     "Spindle internal error: job record layout changed")
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
        stealGroups = nodeCount > 1
            ? workerNodes.indices.map { NumaPolicy.victimGroups(of: $0, workerNodes: workerNodes, distances: topology.distances) }
            : []
        injection = Priority.allCases.map { _ in InjectionQueue() }
        injectionRefs = injection.map { Unmanaged.passUnretained($0) }
        nodeQueueRefs = nodeQueues.map { Unmanaged.passUnretained($0) }
        sleep = SleepState(workers: workerCount)
        spinNanoseconds = UInt64(configuration.spinBeforeSleeping.nanosecondsSaturated)
        var key = pthread_key_t()
        let result = pthread_key_create(&key, nil)
        guard result == 0 else { throw SystemError(call: "pthread_key_create", errno: result) }
        submitterKey = key
        deques = (0..<workerCount * 3).map { index in
            WorkStealingDeque(capacity: index % 3 == 1 ? 1024 : 256)
        }
        workers = .allocate(capacity: workerCount)
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for index in 0..<workerCount {
            let stride = (MemoryLayout<WorkerState>.stride + 127) & ~127
            let worker = UnsafeMutableRawPointer.allocate(byteCount: stride, alignment: 128)
                .bindMemory(to: WorkerState.self, capacity: 1)
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            worker.initialize(to: WorkerState(index: index, scheduler: self,
                                              deques: Array(deques[index * 3..<index * 3 + 3]), seed: seed))
            workers[index] = worker
        }
    }

    deinit {
        for index in 0..<workerCount {
            let worker = workers[index]
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
        pthread_key_delete(submitterKey)
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
            var thread = pthread_t()
            let result = pthread_create(&thread, nil, { argument in
                let start = Unmanaged<ThreadStart>.fromOpaque(argument!).takeRetainedValue()
                start.scheduler.workerThreadMain(start)
                return nil
            }, context.toOpaque())
            if result != 0 {
                context.release()
                startup.fail(SystemError(call: "pthread_create", errno: result))
                continue
            }
            lock.withLock { threads.append(thread) }
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
                pthread_join(thread, nil)
            } else {
                pthread_detach(thread)
            }
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
        pthread_setspecific(Scheduler.workerKey, UnsafeRawPointer(worker))
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
        threadContext.switchTo(first.pointee.fiber)
        // The loop ended (termination): the fiber that returned here has finished.
        completePendingAction(on: worker, running: nil)
        // Finish every spare fiber (they sit in `resume` inside the loop) and the shared ones.
        while let spare = takeSpare(worker, allowNew: false) {
            spare.pointee.exitRequested = true
            spare.pointee.worker = worker
            threadContext.switchTo(spare.pointee.fiber)
            completePendingAction(on: worker, running: nil)
        }
        pthread_setspecific(Scheduler.workerKey, nil)
        worker.local.pointee.threadContext = nil
        threadContext.releaseThreadContext()
    }

    // MARK: Fibers

    /// A new fiber that runs the worker loop, for `worker`.
    private func makeFiber(for worker: UnsafeMutablePointer<WorkerState>) -> UnsafeMutablePointer<FiberState> {
        let fiber: Fiber
        do {
            let node = workerNodes[worker.pointee.index]
            fiber = try fiberPools[node].get { fresh in
                // Bind the untouched stack to the worker's node before its first use.
                let control = fresh.control.pointee
                if let bottom = control.stack_bottom,
                   !placement.bind(bottom, Int(control.stack_size), .preferred(node: topology.nodes[node].id)) {
                    bindFailures.wrappingAdd(1, ordering: .relaxed)
                }
            }
        } catch {
            misuse("Spindle: cannot map a fiber stack (\(error)); too many fibers are waiting at once, or the stack size is too large for the address space")
        }
        let state = UnsafeMutablePointer<FiberState>.allocate(capacity: 1)
        state.initialize(to: FiberState(
            waitNode: WaitNode(next: nil, kind: WaitNode.fiberKind, target: nil),
            fiber: fiber, worker: worker, currentCounter: nil, priority: Priority.normal.rawValue,
            pinned: false, exitRequested: false, link: nil, pool: workerNodes[worker.pointee.index]))
        state.pointee.waitNode.target = UnsafeMutableRawPointer(state)
        fiber.prepare(entry: Scheduler.fiberEntry, context: UnsafeMutableRawPointer(state))
        worker.count(.fibersCreated)
        return state
    }

    /// Returns a finished fiber's stack to the pool and frees its state.
    private func recycle(_ state: UnsafeMutablePointer<FiberState>) {
        fiberPools[state.pointee.pool].put(state.pointee.fiber)
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// A spare fiber (suspended in `resume`, ready to continue the loop) or a new one.
    private func takeSpare(_ worker: UnsafeMutablePointer<WorkerState>, allowNew: Bool = true) -> UnsafeMutablePointer<FiberState>? {
        if let spare = worker.local.pointee.spares {
            worker.local.pointee.spares = spare.pointee.link
            worker.local.pointee.spareCount -= 1
            return spare
        }
        if let shared = lock.withLock({ () -> UnsafeMutablePointer<FiberState>? in
            guard let first = sharedSpares else { return nil }
            sharedSpares = first.pointee.link
            return first
        }) {
            return shared
        }
        return allowNew ? makeFiber(for: worker) : nil
    }

    private func addSpare(_ state: UnsafeMutablePointer<FiberState>, to worker: UnsafeMutablePointer<WorkerState>) {
        if worker.local.pointee.spareCount < Scheduler.sparesPerWorker {
            state.pointee.link = worker.local.pointee.spares
            worker.local.pointee.spares = state
            worker.local.pointee.spareCount += 1
        } else {
            lock.withLock {
                state.pointee.link = sharedSpares
                sharedSpares = state
            }
        }
    }

    // MARK: The worker loop

    /// Entry of every scheduler fiber: completes the pending action of the context that switched
    /// here, runs the loop, and names the context to switch to when the loop ends.
    static let fiberEntry: Fiber.Entry = { control, _ in
        let state = control.pointee.context!.assumingMemoryBound(to: FiberState.self)
        let scheduler = state.pointee.worker.pointee.scheduler
        scheduler.completePendingAction(on: state.pointee.worker, running: state)
        return scheduler.workLoop(state).control
    }

    /// Runs jobs on `state`'s fiber until the system terminates (returns the worker's thread
    /// context) or until this fiber hands its worker to a ready fiber while the spare lists are
    /// full (returns that fiber; the switch to it finishes this one).
    private func workLoop(_ state: UnsafeMutablePointer<FiberState>) -> Fiber {
        while !state.pointee.exitRequested {
            let worker = state.pointee.worker
            guard let token = findWork(worker) ?? {
                worker.flushDecrements()
                worker.local.pointee.releaseFinishedBodies()
                return idle(worker)
            }() else { break }
            if token & Token.fiberTag == 0 {
                let record = UnsafeMutableRawPointer(bitPattern: token)!
                worker.traceBegin(record, fiber: state)
                record.load(as: ExecuteFunction.self)(record, UnsafeMutableRawPointer(state))
                // The job may have finished on another worker.
                state.pointee.worker.trace(.end, fiber: state)
                continue
            }
            let target = UnsafeMutablePointer<FiberState>(bitPattern: token & ~Token.fiberTag)!
            target.pointee.worker = worker
            worker.count(.fibersResumed)
            worker.trace(.resume, fiber: target)
            // Completions deferred on this worker must not wait behind the resumed fiber.
            worker.flushDecrements()
            if worker.local.pointee.spareCount >= Scheduler.sparesPerWorker {
                // Enough spares: finish this fiber; the target recycles it.
                worker.local.pointee.pendingAction = .finished(state)
                return target.pointee.fiber
            }
            worker.local.pointee.pendingAction = .spare(state)
            state.pointee.fiber.switchTo(target.pointee.fiber)
            // Resumed as a spare by some worker (perhaps another one).
            completePendingAction(on: state.pointee.worker, running: state)
        }
        let worker = state.pointee.worker
        worker.local.pointee.releaseFinishedBodies()
        worker.local.pointee.pendingAction = .finished(state)
        return worker.local.pointee.threadContext!
    }

    /// Runs the action left by the context that switched away, now that the switch completed.
    /// Called by every context right after it starts or resumes; `running` is that context's
    /// fiber (nil: the thread context), recorded as the worker's running fiber.
    @usableFromInline
    func completePendingAction(on worker: UnsafeMutablePointer<WorkerState>, running: UnsafeMutablePointer<FiberState>?) {
        worker.local.pointee.running = running
        let action = worker.local.pointee.pendingAction
        worker.local.pointee.pendingAction = .none
        switch action {
        case .none:
            break
        case .spare(let state):
            addSpare(state, to: worker)
        case .finished(let state):
            recycle(state)
        case .parkOnCounter(let state, let counter, let observed):
            worker.count(.fibersParked)
            let counter = counter.takeUnretainedValue()
            // SAFETY: the wait node is the first field of FiberState.
            let node = UnsafeMutableRawPointer(state).assumingMemoryBound(to: WaitNode.self)
            WaitList.register(node, on: counter.waiters) {
                counter.waitIsOver(observed: observed)
            }
        case .parkOnLatch(let state, let latch):
            worker.count(.fibersParked)
            // Sequentially consistent on success: pairs with the thief's exchange.
            let (parked, _) = latch.pointee.compareExchange(
                expected: JoinLatch.pending, desired: UInt(bitPattern: state),
                successOrdering: .sequentiallyConsistent, failureOrdering: .acquiring)
            if !parked {
                // The stolen half finished while we were switching: runnable at once.
                Scheduler.makeReady(state)
            }
        }
    }

    /// Parks the fiber `state` (running on its worker now) with `action`, which registers it with
    /// whatever will make it ready; returns when it has been resumed (perhaps on another worker).
    @usableFromInline
    func park(_ state: UnsafeMutablePointer<FiberState>, _ action: PendingAction) {
        let worker = state.pointee.worker
        let next = takeSpare(worker)!
        next.pointee.worker = worker
        worker.local.pointee.pendingAction = action
        // What this fiber waits for may be among the deferred completions.
        worker.flushDecrements()
        worker.trace(.park, fiber: state)
        state.pointee.fiber.switchTo(next.pointee.fiber)
        completePendingAction(on: state.pointee.worker, running: state)
    }

    /// Makes a parked fiber runnable: it goes to the inbox of the worker it parked on (the
    /// pinned inbox for a pinned job), and that worker is woken if it sleeps. If it is busy, an
    /// idle worker is told about the fiber, which it may take once the inbox patience ran out
    /// (docs/scheduler.md, "Waiting"). Any thread.
    @usableFromInline
    static func makeReady(_ state: UnsafeMutablePointer<FiberState>) {
        let home = state.pointee.worker
        let pinned = state.pointee.pinned
        let inbox = pinned ? home.pointee.pinnedInbox : home.pointee.inbox
        var head = inbox.pointee.load(ordering: .relaxed)
        while true {
            state.pointee.link = UnsafeMutablePointer(bitPattern: head)
            // Sequentially consistent: the push must be ordered before the read of the sleeping
            // mask below, against the owner's announcement and re-check (docs/sleep.md, "Resuming
            // a fiber").
            let (exchanged, original) = inbox.pointee.compareExchange(
                expected: head, desired: UInt(bitPattern: state),
                successOrdering: .sequentiallyConsistent, failureOrdering: .relaxed)
            if exchanged { break }
            head = original
        }
        if !pinned && head == 0 { home.pointee.inboxSince.pointee.store(MonotonicTime.now(), ordering: .relaxed) }
        let scheduler = home.pointee.scheduler
        if !scheduler.sleep.wake(worker: home.pointee.index, scheduler) && !pinned {
            // The owner is awake, perhaps inside a long job: make sure some worker searches.
            scheduler.sleep.workPosted(scheduler)
        }
    }

    /// The next token for `worker`: inbox, pinned fibers, own deques and injection queues by
    /// priority, then stealing by priority. Owner only.
    @inline(__always)
    private func findWork(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        if worker.pointee.inbox.pointee.load(ordering: .relaxed) != 0 { drainInbox(worker) }
        if worker.pointee.pinnedInbox.pointee.load(ordering: .relaxed) != 0 { drainPinnedInbox(worker) }
        if let pinned = worker.local.pointee.pinnedReady {
            worker.local.pointee.pinnedReady = pinned.pointee.link
            return Token.fiber(pinned)
        }
        if let token = worker.pop(0) { return token }
        if let token = takeInjected(worker, priority: 0) { return token }
        if multiNode, let token = takeNodeWork(worker) { return token }
        if let token = worker.pop(1) { return token }
        if let token = takeInjected(worker, priority: 1) { return token }
        if let token = worker.pop(2) { return token }
        if let token = takeInjected(worker, priority: 2) { return token }
        return steal(worker) ?? takeStalledFibers(worker)
    }

    /// Takes the ready fibers of a worker that has not drained its inbox for longer than the
    /// inbox patience (it is inside a long job): they would wait for it while this worker idles.
    /// Victims of this worker's NUMA node come first, then the other nodes nearest first (the
    /// steal order), so a fiber's stack stays on its node when a worker there can run it.
    /// Pinned fibers are never in that inbox. Owner only.
    private func takeStalledFibers(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        guard workerCount > 1 else { return nil }
        var now: UInt64 = 0
        if multiNode {
            for group in stealGroups[worker.pointee.index] {
                for victim in group {
                    if let token = takeStalledInbox(of: victim, into: worker, now: &now) { return token }
                }
            }
            return nil
        }
        for victim in 0..<workerCount where victim != worker.pointee.index {
            if let token = takeStalledInbox(of: victim, into: worker, now: &now) { return token }
        }
        return nil
    }

    /// `takeStalledFibers` for one victim: its whole inbox if it has waited out the patience.
    /// `now` is read once per search, on first need.
    private func takeStalledInbox(of victim: Int, into worker: UnsafeMutablePointer<WorkerState>,
                                  now: inout UInt64) -> UInt? {
        let other = workers[victim]
        guard other.pointee.inbox.pointee.load(ordering: .relaxed) != 0 else { return nil }
        if now == 0 { now = MonotonicTime.now() }
        guard now &- other.pointee.inboxSince.pointee.load(ordering: .relaxed) >= WorkerState.inboxPatienceNanoseconds else { return nil }
        // Acquiring: pairs with the pushes' CAS. Take-all, so the owner and thieves cannot
        // take a node twice.
        var next = UnsafeMutablePointer<FiberState>(bitPattern: other.pointee.inbox.pointee.exchange(0, ordering: .acquiring))
        guard next != nil else { return nil }
        worker.count(.steals)
        worker.trace(.steal, fiber: nil, detail: UInt(victim))
        var first: UInt?
        var pushed = false
        while let state = next {
            next = state.pointee.link
            if first == nil {
                first = Token.fiber(state)
            } else {
                worker.push(Token.fiber(state), priority: state.pointee.priority)
                pushed = true
            }
        }
        // Others may steal the rest from this worker.
        if pushed { sleep.workPosted(self) }
        return first
    }

    private func drainInbox(_ worker: UnsafeMutablePointer<WorkerState>) {
        // Acquiring: pairs with the pushes' CAS, making each state's fields visible.
        var next = UnsafeMutablePointer<FiberState>(bitPattern: worker.pointee.inbox.pointee.exchange(0, ordering: .acquiring))
        guard next != nil else { return }
        while let state = next {
            next = state.pointee.link
            worker.push(Token.fiber(state), priority: state.pointee.priority)
        }
        // Others may now steal the pushed fibers.
        sleep.workPosted(self)
    }

    /// Moves the pinned inbox to the private pinned-ready list. Owner only.
    private func drainPinnedInbox(_ worker: UnsafeMutablePointer<WorkerState>) {
        var next = UnsafeMutablePointer<FiberState>(bitPattern: worker.pointee.pinnedInbox.pointee.exchange(0, ordering: .acquiring))
        while let state = next {
            next = state.pointee.link
            state.pointee.link = worker.local.pointee.pinnedReady
            worker.local.pointee.pinnedReady = state
        }
    }

    @inline(__always)
    private func takeInjected(_ worker: UnsafeMutablePointer<WorkerState>, priority: Int) -> UInt? {
        guard injectionRefs[priority]._withUnsafeGuaranteedRef({ $0.hasLinkedRecord }) else { return nil }
        return takeInjectedBatch(worker, priority: priority)
    }

    private func takeInjectedBatch(_ worker: UnsafeMutablePointer<WorkerState>, priority: Int) -> UInt? {
        var first: UInt?
        let taken = injectionRefs[priority]._withUnsafeGuaranteedRef { queue in
            queue.take(limit: Scheduler.injectionBatch) { record in
                if first == nil {
                    first = Token.record(record)
                } else {
                    worker.push(Token.record(record), priority: UInt8(priority))
                }
            }
        }
        if taken > 1 { sleep.workPosted(self) }
        return first
    }

    /// One job from the queue of `worker`'s node (node-bound work: only that node's workers
    /// take it, one at a time, so it starts on the node). docs/numa.md, "Node queues".
    private func takeNodeWork(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        nodeQueueRefs[workerNodes[worker.pointee.index]]._withUnsafeGuaranteedRef { queue in
            var taken: UInt?
            _ = queue.take(limit: 1) { record in taken = Token.record(record) }
            return taken
        }
    }

    /// Submits a job that only workers of node `node` (an index into `topology.nodes`) start,
    /// and wakes one of them if they all sleep. With one node: an ordinary submission.
    func submit(toNode node: Int, priority: UInt8, size: Int = MemoryLayout<RunRecord>.stride,
                _ initialize: (UnsafeMutableRawPointer) -> Void) {
        // One node, or a node without workers (fewer workers than nodes): anyone may take it.
        guard multiNode, !nodeWorkers[node].isEmpty else { return submit(priority: priority, size: size, initialize) }
        let record: UnsafeMutableRawPointer
        if let worker = currentWorker() {
            record = worker.allocateLinkedRecord(size: size)
        } else {
            record = allocateOutsideRecord(size: size)
        }
        initialize(record)
        // The push's sequentially consistent exchange orders it before the read of the sleeping
        // mask; no fence (docs/sleep.md, "Posting work").
        nodeQueueRefs[node]._withUnsafeGuaranteedRef { $0.push(record) }
        sleep.wakeOne(among: nodeWorkers[node], self)
    }

    /// Whether some node queue holds work (termination).
    func anyNodeQueuedWork() -> Bool {
        nodeQueues.contains { $0.mayHaveWork }
    }

    private func steal(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        guard workerCount > 1 else { return nil }
        // The clock is read only while a burst waits to be judged or a back-off may run.
        var now: UInt64 = 0
        if worker.local.pointee.stealBackoff.hasBurst {
            now = MonotonicTime.now()
            worker.local.pointee.stealBackoff.settle(at: now)
        }
        if multiNode { return stealByNode(worker, now: &now) }
        let start = Int(worker.nextRandom() % UInt64(workerCount))
        for priority in 0..<UInt8(3) {
            var deferred = false
            var retry = true
            while retry {
                retry = false
                for offset in 0..<workerCount {
                    var victim = start + offset
                    if victim >= workerCount { victim -= workerCount }
                    if victim == worker.pointee.index { continue }
                    switch tryToSteal(from: victim, priority: priority, into: worker, deferred: &deferred, now: &now) {
                    case .success(let token): return token
                    case .retry: retry = true
                    case .empty: break
                    }
                }
            }
            // A job of this priority is left for later (a lone job waiting out its patience, or
            // a victim backed off from): taking lower-priority work now would let it wait behind
            // a whole burst (the fairness bound of docs/scheduler.md). Come back for it instead.
            if deferred { return nil }
        }
        return nil
    }

    /// `steal` on a machine with several nodes: for each priority, the victims of this node
    /// first, then the other nodes' nearest first (docs/numa.md, "Stealing").
    private func stealByNode(_ worker: UnsafeMutablePointer<WorkerState>, now: inout UInt64) -> UInt? {
        let groups = stealGroups[worker.pointee.index]
        for priority in 0..<UInt8(3) {
            var deferred = false
            for group in groups {
                let start = Int(worker.nextRandom() % UInt64(group.count))
                var retry = true
                while retry {
                    retry = false
                    for offset in 0..<group.count {
                        var position = start + offset
                        if position >= group.count { position -= group.count }
                        switch tryToSteal(from: group[position], priority: priority, into: worker,
                                          deferred: &deferred, now: &now) {
                        case .success(let token): return token
                        case .retry: retry = true
                        case .empty: break
                        }
                    }
                }
            }
            // As in `steal`: no lower-priority work while a job of this priority is left for later.
            if deferred { return nil }
        }
        return nil
    }

    /// One steal attempt on `victim`'s deque of `priority`, with the patience rule for a lone
    /// job and the back-off from fine-grained work (docs/scheduler.md, "Stealing"). Sets
    /// `deferred` when a rule leaves the victim's work of `priority` for later: a lone job in
    /// its patience, or any work of a victim backed off from (whose deque is then not read).
    /// `now` is the time if already read (0 otherwise).
    @inline(__always)
    private func tryToSteal(from victim: Int, priority: UInt8, into worker: UnsafeMutablePointer<WorkerState>,
                            deferred: inout Bool, now: inout UInt64) -> WorkStealingDeque<UInt>.Steal {
        if priority > 0 && worker.local.pointee.stealBackoff.mayBackOff {
            if now == 0 { now = MonotonicTime.now() }
            if worker.local.pointee.stealBackoff.isBackingOff(from: victim, at: now) {
                deferred = true
                return .empty
            }
        }
        let available = workers[victim].approximateCount(priority)
        guard available > 0 else { return .empty }
        if available == 1 && !worker.patienceExpired(victim: victim, priority: priority,
                                                     deque: workers[victim].storage(priority), now: &now) {
            deferred = true
            return .empty
        }
        worker.count(.stealAttempts)
        let result = workers[victim].steal(priority)
        if case .success = result {
            worker.count(.steals)
            worker.trace(.steal, fiber: nil, detail: UInt(victim))
            let taken = stealMore(from: workers[victim], priority: priority, into: worker)
            if priority > 0 {
                worker.local.pointee.stealBackoff.stole(1 + taken, from: victim, at: MonotonicTime.now())
            }
        }
        return result
    }

    /// After a successful steal from a deque that still holds several jobs, takes up to half of
    /// them (at most 16) in the same burst and queues them on the thief's own deque: the victim's
    /// `top` line then changes hands once per burst rather than once per job, and the thief has
    /// local work for a while. Each take is an ordinary steal, so the deque's guarantees hold.
    /// Returns how many it took.
    private func stealMore(from victim: UnsafeMutablePointer<WorkerState>, priority: UInt8,
                           into worker: UnsafeMutablePointer<WorkerState>) -> Int {
        let available = victim.approximateCount(priority)
        guard available >= 4 else { return 0 }
        var taken = 0
        for _ in 0..<Swift.min(available / 2, Scheduler.stealBurst) {
            guard case .success(let token) = victim.steal(priority) else { break }
            worker.push(token, priority: priority)
            taken += 1
        }
        if taken > 0 {
            worker.count(.steals, UInt64(taken))
            // Others may take from the thief now.
            sleep.workPosted(self)
        }
        return taken
    }

    /// Whether any work is visible to `worker` (its inbox and pinned list, any deque, any
    /// injection queue). Used by the sleep protocol's re-check.
    func anyWorkVisible(for worker: UnsafeMutablePointer<WorkerState>) -> Bool {
        if worker.pointee.inbox.pointee.load(ordering: .sequentiallyConsistent) != 0 || worker.local.pointee.pinnedReady != nil
            || worker.pointee.pinnedInbox.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            return true
        }
        if multiNode && nodeQueueRefs[workerNodes[worker.pointee.index]]._withUnsafeGuaranteedRef({ $0.mayHaveWork }) {
            return true
        }
        return anyQueuedWork()
    }

    /// Whether any deque or injection queue holds work.
    func anyQueuedWork() -> Bool {
        for queue in injectionRefs where queue._withUnsafeGuaranteedRef({ $0.mayHaveWork }) { return true }
        for index in 0..<workerCount {
            let worker = workers[index]
            if worker.approximateCount(0) > 0 || worker.approximateCount(1) > 0
                || worker.approximateCount(2) > 0
                || worker.pointee.inbox.pointee.load(ordering: .sequentiallyConsistent) != 0 {
                return true
            }
        }
        return false
    }

    /// Fibers parked and not yet resumed, over all workers.
    func parkedFibers() -> Int {
        var parked: UInt64 = 0
        var resumed: UInt64 = 0
        for index in 0..<workerCount {
            parked &+= workers[index].metric(.fibersParked)
            resumed &+= workers[index].metric(.fibersResumed)
        }
        return Int(bitPattern: UInt(parked &- resumed))
    }

    /// No work found: search (keep looking in every queue) for a bounded time, then sleep; a
    /// woken worker searches again. Returns the work it found, or nil when the system has
    /// terminated. docs/sleep.md, "Searching".
    private func idle(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        sleep.startSearching()
        while true {
            let deadline = MonotonicTime.now() &+ spinNanoseconds
            var rounds = 0
            while true {
                if terminated.load(ordering: .acquiring) { return nil }
                if let token = findWork(worker) {
                    sleep.stopSearching(self)
                    return token
                }
                rounds += 1
                if rounds & 15 == 0 {
                    if MonotonicTime.now() >= deadline { break }
                    // Let a thread that shares this CPU (an outside submitter, an oversubscribed
                    // worker) make progress.
                    sched_yield()
                }
                // Back off between rounds (1, 2, 4, … up to 64 pauses, about 1–2 µs): every
                // round reads other workers' deque indices, and polling them constantly takes
                // their cache lines away from owners pushing and popping on them.
                for _ in 0..<(1 << Swift.min(rounds / 4, 6)) { spinPause() }
            }
            if case .terminated = sleep.fallAsleep(worker, self) { return nil }
        }
    }
}

/// A monotonic clock in nanoseconds.
enum MonotonicTime {
    @inline(__always)
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }
}

/// One CPU pause hint: lets a sibling hyperthread run while this one spins.
@inline(__always)
func spinPause() {
    spindle_cpu_relax()
}

/// The word a stolen `join` half and its waiting owner meet on: `pending`, `done`, or the
/// owner's `FiberState` while it is parked.
@usableFromInline
enum JoinLatch {
    @usableFromInline static let pending: UInt = 0
    @usableFromInline static let done: UInt = 1
}
