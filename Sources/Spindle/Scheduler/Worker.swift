import CSpindle
import Synchronization

/// Scheduler state of one fiber, in its own allocation, reached from the fiber control block's
/// `context`. Written only by the thread running the fiber, or by whoever resumes it (before the
/// switch; the switch orders it).
@usableFromInline
struct FiberState {
    /// The node this fiber waits with (first, so a node pointer is the state pointer).
    @usableFromInline var waitNode: WaitNode
    var fiber: Fiber
    /// The worker running this fiber now, or the one it parked on while it waits. Re-read after
    /// every switch: a resumed fiber may run on another worker.
    @usableFromInline var worker: UnsafeMutablePointer<WorkerState>
    /// Identity of the counter of the job running on this fiber (to catch a job waiting for itself).
    @usableFromInline var currentCounter: UnsafeMutableRawPointer?
    @usableFromInline var priority: UInt8
    @usableFromInline var pinned: Bool
    /// Set by a worker's thread context to make a spare fiber leave its loop (shutdown).
    @usableFromInline var exitRequested: Bool
    /// Link in a spare list, an inbox or a pinned-ready list.
    @usableFromInline var link: UnsafeMutablePointer<FiberState>?
    /// The fiber pool (NUMA node index) the stack came from and returns to.
    var pool: Int
    /// Parallel loops entered on this fiber (wrapping): a loop's leaf compares it around a batch
    /// to see whether its elements ran nested loops (docs/parallel-for.md, "Partitioners").
    var loopsEntered: UInt = 0
}

/// What the context switched to must do for the context that switched away, once the switch
/// has completed (the publication rule of docs/fibers.md).
@usableFromInline
enum PendingAction {
    case none
    /// The fiber that switched away goes to the worker's spare list.
    case spare(UnsafeMutablePointer<FiberState>)
    /// The fiber that switched away waits on a counter, having seen the counter's word
    /// `observed` (non-zero count; its epoch names the round waited for).
    case parkOnCounter(UnsafeMutablePointer<FiberState>, Unmanaged<JobCounter>, UInt64)
    /// The fiber that switched away waits for a stolen `join` half (`latch`: see JoinLatch).
    case parkOnLatch(UnsafeMutablePointer<FiberState>, UnsafeMutablePointer<Atomic<UInt>>)
    /// The fiber that switched away has finished: return its stack and state.
    case finished(UnsafeMutablePointer<FiberState>)
}

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
    var patiencePriority: UInt8 = 0
    var patienceTop = 0
    var patienceSince: UInt64 = 0
    /// The last stolen burst and the victim this worker backs off from (docs/scheduler.md,
    /// "Stealing").
    var stealBackoff = StealBackoff()
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

    init(random: UInt64) {
        self.random = random
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

/// One worker: its deques, its allocators, its fibers, and the words other threads touch.
/// Lives in 128-byte-aligned memory of its own and is only used through a pointer (never
/// copied). The fields other threads write (`inbox`, `sleepWord`) live in a separate allocation,
/// each on its own cache line, away from the owner's hot fields.
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
    /// The scheduler's `SleepState.activity` word and record chunk pool, for the hot paths.
    let activity: UnsafeMutablePointer<Atomic<UInt64>>
    let chunks: Unmanaged<ChunkPool>
    let workerCount: Int
    /// How long a victim's only job must wait before a thief takes it.
    static let stealPatienceNanoseconds: UInt64 = 2_000
    /// The owner's mutable state, in an allocation of its own (see `WorkerLocal`).
    let local: UnsafeMutablePointer<WorkerLocal>
    let metrics: UnsafeMutablePointer<Atomic<UInt64>>
    /// `inbox` at offset 0, the trace slot at 64, `sleepWord` at 128, `pinnedInbox` at 192 and
    /// `inboxSince` at 200.
    let shared: UnsafeMutableRawPointer

    init(index: Int, scheduler: Scheduler, deques: [WorkStealingDeque<UInt>], seed: UInt64) {
        self.index = index
        schedulerReference = Unmanaged.passUnretained(scheduler)
        high = Unmanaged.passUnretained(deques[0])
        normal = Unmanaged.passUnretained(deques[1])
        low = Unmanaged.passUnretained(deques[2])
        storage = (deques[0].storage, deques[1].storage, deques[2].storage)
        activity = scheduler.sleep.activity
        chunks = Unmanaged.passUnretained(scheduler.chunkPools[scheduler.workerNodes[index]])
        workerCount = scheduler.workerCount
        local = .allocate(capacity: 1)
        local.initialize(to: WorkerLocal(random: seed | 1))
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
        shared = .allocate(byteCount: 256, alignment: 128)
        shared.bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
        (shared + 64).bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
        (shared + 128).bindMemory(to: Atomic<UInt32>.self, capacity: 1).initialize(to: Atomic(0))
        (shared + 192).bindMemory(to: Atomic<UInt>.self, capacity: 1).initialize(to: Atomic(0))
        (shared + 200).bindMemory(to: Atomic<UInt64>.self, capacity: 1).initialize(to: Atomic(0))
    }

    /// Frees the memory `init` allocated. Called once, when the scheduler is destroyed.
    func releaseMemory() {
        local.pointee.releaseFinishedBodies()
        local.deinitialize(count: 1)
        local.deallocate()
        metrics.deinitialize(count: MetricSlot.allCases.count)
        metrics.deallocate()
        shared.deallocate()
    }

    /// Migratable fibers made ready after parking here (a lock-free stack of `FiberState`):
    /// drained by the owner, or taken whole by an idle worker once it has waited longer than the
    /// inbox patience (docs/scheduler.md, "Waiting").
    var inbox: UnsafeMutablePointer<Atomic<UInt>> { shared.assumingMemoryBound(to: Atomic<UInt>.self) }

    /// Pinned fibers made ready after parking here; only the owner takes them.
    var pinnedInbox: UnsafeMutablePointer<Atomic<UInt>> { (shared + 192).assumingMemoryBound(to: Atomic<UInt>.self) }

    /// When `inbox` last went from empty to not empty (monotonic nanoseconds).
    var inboxSince: UnsafeMutablePointer<Atomic<UInt64>> { (shared + 200).assumingMemoryBound(to: Atomic<UInt64>.self) }

    /// How long a ready fiber waits for its busy worker before an idle one takes it.
    static let inboxPatienceNanoseconds: UInt64 = 20_000

    /// 1 while the worker sleeps or is about to (docs/sleep.md); a waker stores 0.
    var sleepWord: UnsafeMutablePointer<Atomic<UInt32>> {
        (shared + 128).assumingMemoryBound(to: Atomic<UInt32>.self)
    }

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
    var local: UnsafeMutablePointer<WorkerLocal> { pointee.local }

    /// Subtracts a finished job from `counter` later, batched with the next completions of the
    /// same counter on this worker (docs/scheduler.md, "Deferred decrements"): the counter's
    /// cache line then moves between producer and consumers once per batch, not once per job.
    /// Owner only.
    @inline(__always)
    func deferDecrement(_ counter: Unmanaged<JobCounter>, by count: Int = 1) {
        let local = self.local
        if local.pointee.deferredCounter?.toOpaque() == counter.toOpaque() {
            local.pointee.deferredCount &+= count
            if local.pointee.deferredCount >= 64 { flushDecrements() }
            return
        }
        flushDecrements()
        local.pointee.deferredCounter = counter
        local.pointee.deferredCount = count
    }

    /// Takes back one deferred completion of `counter`, if this worker holds one, in place of
    /// adding one for a new job of the same counter: the counter's word stays as it is instead
    /// of going up now and down at the next flush. Safe because the word only ever counts more
    /// than is outstanding, never less, and the retained completion's job published its writes
    /// to whoever runs the new job (docs/scheduler.md, "Deferred decrements"). Owner only.
    @inline(__always)
    func cancelDeferredDecrement(of counter: JobCounter) -> Bool {
        let local = self.local
        guard local.pointee.deferredCount > 0,
              local.pointee.deferredCounter?.toOpaque() == Unmanaged.passUnretained(counter).toOpaque()
        else { return false }
        local.pointee.deferredCount &-= 1
        if local.pointee.deferredCount == 0 { local.pointee.deferredCounter = nil }
        return true
    }

    /// Applies deferred completions. Called before anything that could wait on them or delay
    /// them: running a job of another counter or a join half, switching fibers, parking, idling.
    /// Owner only.
    @inline(__always)
    func flushDecrements() {
        let local = self.local
        guard let counter = local.pointee.deferredCounter else { return }
        let count = local.pointee.deferredCount
        local.pointee.deferredCounter = nil
        local.pointee.deferredCount = 0
        // Unretained is safe: the deferred completions keep the count above zero, so the
        // counter still holds its self-reference.
        counter._withUnsafeGuaranteedRef { $0.decrement(by: count) }
    }

    /// Flushes deferred completions unless they belong to `counter` (the next job's).
    @inline(__always)
    func flushDecrements(unlessFor counter: Unmanaged<JobCounter>?) {
        let deferred = local.pointee.deferredCounter
        if deferred != nil && deferred?.toOpaque() != counter?.toOpaque() { flushDecrements() }
    }

    /// Releases a finished job's closure: at once if the record held the only reference to its
    /// context, otherwise together with the next ones of the same context (up to 64 with one
    /// atomic operation; all of them before this worker idles). A closure submitted many times
    /// is retained by the submitting thread once per job and released here: releasing in one
    /// operation per batch moves its reference-count cache line between the two threads once
    /// per batch instead of once per job. Values captured by a shared closure are therefore
    /// released a little later than the job ends (docs/scheduler.md, "Contended lines,
    /// batched"). `Body` is `RunBody` or `ArgumentBody`: one closure, stored as its two words.
    @inline(__always)
    func retireBody<Body>(movingFrom body: UnsafeMutablePointer<Body>) {
        let local = self.local
        let words = UnsafeRawPointer(body).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        // A closure that captures nothing has no context and nothing to release.
        guard let context = words[1] else { return }
        if context != local.pointee.sharedContext {
            // A context only this record holds (a closure formed per job, as in W6) is freed at
            // once: nobody else touches its count, and the allocator reuses the block while it
            // is hot.
            if spindle_closure_context_is_unique(context) {
                body.deinitialize(count: 1)
                return
            }
            local.pointee.releaseFinishedBodies()
            local.pointee.sharedContext = context
        }
        // The record's reference becomes one of the worker's pending releases (the body's
        // memory is not deinitialized: the record is simply forgotten).
        local.pointee.sharedReleases &+= 1
        if local.pointee.sharedReleases == WorkerLocal.releaseBatch { local.pointee.releaseFinishedBodies() }
    }

    /// Allocates a record of `size` bytes from this worker's arena, lets `initialize` fill it,
    /// and posts it on the deque of `priority`. Owner only; no heap allocation.
    @inline(__always)
    func submit(priority: UInt8, size: Int, _ initialize: (UnsafeMutableRawPointer) -> Void) {
        let record = allocateRecord(size: size)
        initialize(record)
        post(Token.record(record), priority: priority)
    }

    /// Memory for a job record from this worker's arena. Owner only.
    @inline(__always)
    func allocateRecord(size: Int) -> UnsafeMutableRawPointer {
        local.pointee.arena.allocate(size: size, pool: pointee.chunks)
    }

    /// `allocateRecord` for a record bound for a linked queue (a node queue): with the link
    /// word in front of it (`RecordLink`). Owner only.
    @inline(__always)
    func allocateLinkedRecord(size: Int) -> UnsafeMutableRawPointer {
        local.pointee.arena.allocateLinked(size: size, pool: pointee.chunks)
    }

    @inline(__always)
    func deque(_ priority: UInt8) -> Unmanaged<WorkStealingDeque<UInt>> {
        switch priority {
        case 0: pointee.high
        case 1: pointee.normal
        default: pointee.low
        }
    }

    /// A record finished (or was moved out). Records of this worker's own current chunk are
    /// counted without an atomic (`RecordArena.locallyReleased`); others go through the chunk.
    @inline(__always)
    func releaseRecord(_ record: UnsafeMutableRawPointer) {
        if RecordChunk.of(record) == local.pointee.arena.chunk {
            local.pointee.arena.locallyReleased &+= 1
        } else {
            RecordChunk.release(record: record)
        }
    }

    @inline(__always)
    func storage(_ priority: UInt8) -> UnsafeMutableRawPointer {
        switch priority {
        case 0: pointee.storage.0
        case 1: pointee.storage.1
        default: pointee.storage.2
        }
    }

    /// Pushes on the deque of `priority`. Owner only.
    @inline(__always)
    func push(_ token: UInt, priority: UInt8) {
        WorkStealingDeque<UInt>.push(token, storage: storage(priority), owner: deque(priority))
    }

    /// Pops from the deque of `priority`. Owner only.
    @inline(__always)
    func pop(_ priority: UInt8) -> UInt? {
        WorkStealingDeque<UInt>.pop(storage: storage(priority))
    }

    /// Steals from the deque of `priority`. Any thread.
    @inline(__always)
    func steal(_ priority: UInt8) -> WorkStealingDeque<UInt>.Steal {
        WorkStealingDeque<UInt>.steal(storage: storage(priority))
    }

    /// Elements in the deque of `priority` at some recent instant. Any thread.
    @inline(__always)
    func approximateCount(_ priority: UInt8) -> Int {
        WorkStealingDeque<UInt>.approximateCount(storage: storage(priority))
    }

    /// Pushes work others may take and runs the wake check ("Posting work", docs/sleep.md).
    /// Owner only.
    ///
    /// The check is skipped when the deque already held work: the post that made it non-empty
    /// ran the check, a worker that steals from it wakes the next one if more work is queued,
    /// and the owner drains its own deque in any case (step 0 of "Posting work"). Whether it
    /// held work is first judged from the owner's copy of `top`, without reading the line
    /// thieves write at every steal; the copy may be stale, so the exact reading is taken
    /// when some worker is not awake, the only case in which the check could wake anyone.
    func post(_ token: UInt, priority: UInt8) {
        let storage = storage(priority)
        let bound = WorkStealingDeque<UInt>.ownerBound(storage: storage)
        push(token, priority: priority)
        // A lone worker finds its own work; there is nobody to wake.
        guard pointee.workerCount > 1 else { return }
        // Step 0: by the owner's copy of `top` the deque held work, and either every worker is
        // awake (nobody could be woken) or `top` itself confirms it: two elements or more now.
        if bound > 0,
           SleepState.awake(pointee.activity.pointee.load(ordering: .relaxed)) == UInt64(pointee.workerCount)
            || WorkStealingDeque<UInt>.refreshOwnerCount(storage: storage) >= 2 {
            return
        }
        // Step 1: the push must be visible before we read the counts (store-load order).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        // Step 2: a searching worker will find it.
        if SleepState.searching(pointee.activity.pointee.load(ordering: .relaxed)) == 0 {
            // Step 3.
            _ = pointee.schedulerReference._withUnsafeGuaranteedRef { $0.sleep.wakeOne($0) }
        }
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

    /// Whether the only job in `victim`'s deque of `priority` has waited long enough to steal.
    ///
    /// Stealing a deque's only job right after it was pushed usually races its owner, who is
    /// about to pop it (a job that spawns its successor and returns): the job then moves to
    /// another core and its data with it. A thief therefore takes a lone job only once it has
    /// seen the same job (same `top` index) for `stealPatienceNanoseconds`; two or more jobs are
    /// stolen at once. docs/scheduler.md, "Stealing". `now` is the time if the caller's search
    /// has read it already (0 otherwise); it is read here and kept for the rest of the search.
    func patienceExpired(victim: Int, priority: UInt8, deque: UnsafeMutableRawPointer, now: inout UInt64) -> Bool {
        let top = WorkStealingDeque<UInt>.top(deque).pointee.load(ordering: .relaxed)
        if now == 0 { now = MonotonicTime.now() }
        if local.pointee.patienceVictim == victim && local.pointee.patiencePriority == priority && local.pointee.patienceTop == top {
            return now &- local.pointee.patienceSince >= WorkerState.stealPatienceNanoseconds
        }
        local.pointee.patienceVictim = victim
        local.pointee.patiencePriority = priority
        local.pointee.patienceTop = top
        local.pointee.patienceSince = now
        return false
    }

    func nextRandom() -> UInt64 {
        local.pointee.random ^= local.pointee.random << 13
        local.pointee.random ^= local.pointee.random >> 7
        local.pointee.random ^= local.pointee.random << 17
        return local.pointee.random
    }
}
