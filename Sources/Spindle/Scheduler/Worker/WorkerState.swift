import CSpindle
import Synchronization

// A worker's memory: what only its thread touches (`WorkerLocal`), what every thread reads
// (`WorkerState`), and the words other threads write (`WorkerSharedWords`). Its operations are
// in Worker+Jobs.swift (records, deques, completions), WorkerLoop.swift (the loop) and
// Stealing.swift; the fibers it runs in Fibers.swift. docs/scheduler.md, "Workers".

/// Per-worker counters, in `WorkerState.metrics`. Written by the owner only (load + store),
/// read by anyone.
enum MetricSlot: Int, CaseIterable {
    case jobsRun, stealAttempts, steals, fibersCreated, fibersParked, fibersResumed, sleeps, wakeups
    case frameBytes
}

/// A worker's mutable state, touched only by the thread running that worker (and, for frame
/// memory, by `endFrame` after the frame's jobs have finished). Separate from `WorkerState`, which
/// is immutable after init and read by every thread: Swift's accesses through `pointee` are
/// instrumented at the base address of the whole struct, so owner writes in the shared struct
/// would look like races to ThreadSanitizer against other threads' reads of its constants.
struct WorkerLocal {
    var arena = RecordArena()
    var pendingAction = PendingAction.none
    /// The fiber running on this worker now.
    var running: UnsafeMutablePointer<FiberState>?
    var spares: UnsafeMutablePointer<FiberState>?
    var spareCount = 0
    var pinnedReady: UnsafeMutablePointer<FiberState>?
    var threadContext: Fiber?
    var random: UInt64
    /// The lone job this worker saw in a victim's deque (`patienceExpired`): victim and
    /// priority, the deque's `top` index, and when it was first seen (ns).
    var patienceVictim = -1
    var patiencePriority = Priority.high
    var patienceTop = 0
    var patienceSince: UInt64 = 0
    /// The last stolen burst and the victim this worker backs off from (docs/scheduler.md,
    /// "Stealing").
    var stealBackoff = StealBackoff()
    /// The spin budget before sleeping (docs/sleep.md, "Spinning on a shared machine").
    var idlePolicy: IdlePolicy
    var frame = FrameArena()
    /// The closure context last found shared (`retireBody`): its next jobs skip the uniqueness
    /// check, which would read a reference count other threads keep changing.
    var sharedContext: UnsafeMutableRawPointer?
    /// References to `sharedContext` that finished jobs handed over and this worker has not
    /// released yet (released together, `retireBody`).
    var sharedReleases: UInt32 = 0
    /// Completions of jobs of one counter not yet subtracted from it (`deferDecrement`).
    var deferredCounter: Unmanaged<JobCounter>?
    var deferredCount = 0

    /// The thread that owns this worker (SPINDLE_INTERNAL_CHECKS: owner-only access).
    var ownerThread: UInt = 0
    /// The order in which this worker visits victims when it steals.
    let victims: VictimOrder

    init(random: UInt64, victims: VictimOrder, spinNanoseconds: UInt64) {
        self.random = random
        self.victims = victims
        idlePolicy = IdlePolicy(maximum: spinNanoseconds)
    }

    /// How many references to one shared closure context a worker releases at once.
    static let releaseBatch: UInt32 = 64

    /// Releases the references to `sharedContext` that finished jobs left (`retireBody`), if
    /// any. Owner only.
    mutating func releaseFinishedBodies() {
        guard sharedReleases > 0 else { return }
        spindle_closure_context_release(sharedContext!, sharedReleases)
        sharedReleases = 0
    }
}

/// The words of a worker that other threads write, each on a cache line of its own, away from
/// the owner's hot fields (`WorkerState.shared`).
struct WorkerSharedWords {
    private let block: RawBlock

    /// Migratable fibers made ready after parking here (a lock-free stack of `FiberState`).
    private static var inboxSlot: RawSlot<Atomic<UInt>> { RawSlot(line: 0) }
    /// The observer the worker reports its events to (0: none; `WorkerState.observe`).
    private static var observerSlot: RawSlot<Atomic<UInt>> { RawSlot(line: 1) }
    /// The futex word of the sleep protocol (docs/sleep.md).
    private static var sleepWordSlot: RawSlot<Atomic<UInt32>> { RawSlot(line: 2) }
    /// Pinned fibers made ready after parking here; only the owner takes them.
    private static var pinnedInboxSlot: RawSlot<Atomic<UInt>> { RawSlot(line: 3) }
    /// When `inbox` last went from empty to not empty (monotonic nanoseconds).
    private static var inboxSinceSlot: RawSlot<Atomic<UInt64>> { RawSlot(line: 3, word: 1) }
    /// Per priority: the deque index of the last job pushed for sharing at once (a released
    /// successor; docs/scheduler.md, "Stealing"), -1 for none. Written by the owner, read by
    /// thieves.
    private static func sharedIndexSlot(_ priority: Priority) -> RawSlot<Atomic<Int>> { RawSlot(line: 4, word: priority.index) }
    private static let byteCount = 5 * RawBlock.lineSize

    init() {
        block = .allocate(byteCount: Self.byteCount)
        block.initialize(Self.inboxSlot, to: Atomic(0))
        block.initialize(Self.observerSlot, to: Atomic(0))
        block.initialize(Self.sleepWordSlot, to: Atomic(0))
        block.initialize(Self.pinnedInboxSlot, to: Atomic(0))
        block.initialize(Self.inboxSinceSlot, to: Atomic(0))
        for priority in Priority.allCases { block.initialize(Self.sharedIndexSlot(priority), to: Atomic(-1)) }
    }

    func deallocate() { block.deallocate() }

    /// Migratable fibers made ready after parking here: drained by the owner, or taken whole by
    /// an idle worker once it has waited longer than the inbox patience (docs/scheduler.md,
    /// "Waiting").
    var inbox: UnsafeMutablePointer<Atomic<UInt>> { block[Self.inboxSlot] }
    /// The observer slot (`WorkerState.observe`; docs/trace.md).
    var observer: UnsafeMutablePointer<Atomic<UInt>> { block[Self.observerSlot] }
    /// 1 while the worker sleeps or is about to (docs/sleep.md); a waker stores 0.
    var sleepWord: UnsafeMutablePointer<Atomic<UInt32>> { block[Self.sleepWordSlot] }
    var pinnedInbox: UnsafeMutablePointer<Atomic<UInt>> { block[Self.pinnedInboxSlot] }
    var inboxSince: UnsafeMutablePointer<Atomic<UInt64>> { block[Self.inboxSinceSlot] }
    func sharedIndex(_ priority: Priority) -> UnsafeMutablePointer<Atomic<Int>> { block[Self.sharedIndexSlot(priority)] }
}

/// One worker: its deques, its allocators, its fibers, and the words other threads touch.
/// Lives in 128-byte-aligned memory of its own and is only used through a pointer (never
/// copied). The fields other threads write live in `shared`, each on a cache line of its own.
@usableFromInline
struct WorkerState: ~Copyable {
    @usableFromInline let index: Int
    /// Unmanaged on purpose, like the deques: the scheduler owns the workers and outlives them,
    /// and a strong or unowned(unsafe) reference costs a retain and release per use on the hot
    /// paths (measured in W1 and W2).
    let schedulerReference: Unmanaged<Scheduler>
    let high: Unmanaged<WorkStealingDeque<UInt>>
    let normal: Unmanaged<WorkStealingDeque<UInt>>
    let low: Unmanaged<WorkStealingDeque<UInt>>
    /// The deques' storage, for the static deque operations (no reference counting).
    let storage: (UnsafeMutableRawPointer, UnsafeMutableRawPointer, UnsafeMutableRawPointer)
    /// The sleep state's `activity` word and the record chunk pool, for the hot paths (a post
    /// reads the word directly, touching no line of the `SleepState` object).
    let activity: UnsafeMutablePointer<Atomic<UInt64>>
    let chunks: Unmanaged<ChunkPool>
    let workerCount: Int
    /// The owner's mutable state, in an allocation of its own (see `WorkerLocal`).
    let local: UnsafeMutablePointer<WorkerLocal>
    let metrics: UnsafeMutablePointer<Atomic<UInt64>>
    let shared: WorkerSharedWords

    init(index: Int, scheduler: Scheduler, deques: [WorkStealingDeque<UInt>], seed: UInt64, victims: VictimOrder) {
        self.index = index
        schedulerReference = Unmanaged.passUnretained(scheduler)
        high = Unmanaged.passUnretained(deques[0])
        normal = Unmanaged.passUnretained(deques[1])
        low = Unmanaged.passUnretained(deques[2])
        storage = (deques[0].storage, deques[1].storage, deques[2].storage)
        activity = scheduler.sleep.activityWord
        chunks = Unmanaged.passUnretained(scheduler.chunkPools[scheduler.workerNodes[index]])
        workerCount = scheduler.workerCount
        // Whole 128-byte blocks of its own: the owner writes these fields all the time, and a
        // neighbouring allocation on the same lines would make other threads' reads of it miss.
        let localBytes = (MemoryLayout<WorkerLocal>.stride + 127) & ~127
        local = UnsafeMutableRawPointer.allocate(byteCount: localBytes, alignment: 128)
            .bindMemory(to: WorkerLocal.self, capacity: 1)
        local.initialize(to: WorkerLocal(random: seed | 1, victims: victims, spinNanoseconds: scheduler.spinNanoseconds))
        let node = scheduler.topology.nodes[scheduler.workerNodes[index]].id
        local.pointee.frame.bindChunk = { [unowned scheduler] memory, size in
            if !scheduler.placement.bind(memory, size, .preferred(node: node)) {
                scheduler.bindFailures.wrappingAdd(1, ordering: .relaxed)
            }
        }
        let slots = MetricSlot.allCases.count
        metrics = UnsafeMutableRawPointer.allocate(byteCount: slots * 8, alignment: 128)
            .bindMemory(to: Atomic<UInt64>.self, capacity: slots)
        for slot in 0..<slots { (metrics + slot).initialize(to: Atomic(0)) }
        shared = WorkerSharedWords()
    }

    /// Frees the memory `init` allocated. Called once, when the scheduler is destroyed.
    func releaseMemory() {
        local.pointee.releaseFinishedBodies()
        local.pointee.victims.deallocate()
        local.deinitialize(count: 1)
        UnsafeMutableRawPointer(local).deallocate()
        metrics.deinitialize(count: MetricSlot.allCases.count)
        metrics.deallocate()
        shared.deallocate()
    }

    /// How long a victim's only job must wait before a thief takes it.
    static let stealPatienceNanoseconds: UInt64 = 2_000

    /// How long a ready fiber waits for its busy worker before an idle one takes it.
    static let inboxPatienceNanoseconds: UInt64 = 20_000

    /// The scheduler (a +0 reference; the scheduler outlives its workers).
    var scheduler: Scheduler { schedulerReference.takeUnretainedValue() }
}

// The worker's operations, on its pointer: each touches only the fields it names, so a thief
// reading another worker's deques never overlaps the owner's access to its own fields (a
// `mutating` method would be a formal access to the whole struct; ThreadSanitizer reports such
// overlaps as races).
extension UnsafeMutablePointer where Pointee == WorkerState {
    /// The owner's mutable state. Go through this accessor rather than `pointee.local.pointee`
    /// in one expression: Swift 6.3's ThreadSanitizer instrumentation miscompiles a modify
    /// access through such a chain ("Invalid bitcast" in the IR verifier).
    @inline(__always)
    var local: UnsafeMutablePointer<WorkerLocal> {
        #if SPINDLE_INTERNAL_CHECKS
        let owner = pointee.local.pointee.ownerThread
        internalCheck(owner == 0 || owner == CurrentThread.identifier,
                      "worker \(pointee.index)'s owner-only state touched from another thread")
        #endif
        return pointee.local
    }

    /// Adds `amount` to one of the owner's counters (no read-modify-write: only the owner writes).
    @inline(__always)
    func count(_ slot: MetricSlot, _ amount: UInt64 = 1) {
        let counter = pointee.metrics + slot.rawValue
        // Relaxed: a statistic; readers only need some recent value.
        counter.pointee.store(counter.pointee.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    func metric(_ slot: MetricSlot) -> UInt64 {
        pointee.metrics[slot.rawValue].load(ordering: .relaxed)
    }

    /// The calling thread's (fiber's) next pseudo-random number: victim order. Owner only.
    func nextRandom() -> UInt64 {
        local.pointee.random ^= local.pointee.random << 13
        local.pointee.random ^= local.pointee.random >> 7
        local.pointee.random ^= local.pointee.random << 17
        return local.pointee.random
    }
}
