import CSpindle
import Synchronization

// A worker's operations on jobs: record memory, its deques, deferred completions and retiring
// finished closures. Owner only unless a member says otherwise. docs/scheduler.md, "Job
// records", "Deferred decrements" and "Contended lines, batched".

extension UnsafeMutablePointer where Pointee == WorkerState {
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
        counter._withUnsafeGuaranteedRef { $0.jobsFinished(count, onWorker: pointee.index) }
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
    func submit(priority: Priority, size: Int, _ initialize: (UnsafeMutableRawPointer) -> Void) {
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

    // MARK: Deques

    @inline(__always)
    func deque(_ priority: Priority) -> Unmanaged<WorkStealingDeque<UInt>> {
        switch priority {
        case .high: pointee.high
        case .normal: pointee.normal
        case .low: pointee.low
        }
    }

    @inline(__always)
    func storage(_ priority: Priority) -> UnsafeMutableRawPointer {
        switch priority {
        case .high: pointee.storage.0
        case .normal: pointee.storage.1
        case .low: pointee.storage.2
        }
    }

    /// Pushes on the deque of `priority`, without the wake check (the caller runs it or knows
    /// that nobody needs waking). Owner only.
    @inline(__always)
    func push(_ token: UInt, priority: Priority) {
        WorkStealingDeque<UInt>.push(token, storage: storage(priority), owner: deque(priority))
    }

    /// Pops from the deque of `priority`. Owner only.
    @inline(__always)
    func pop(_ priority: Priority) -> UInt? {
        WorkStealingDeque<UInt>.pop(storage: storage(priority))
    }

    /// Marks the job this worker pushes next on its deque of `priority` as one to share at once
    /// (a released successor): a thief takes it even when it is the deque's only job, without
    /// the lone-job patience (docs/scheduler.md, "Stealing"). Owner only, right before the push
    /// (so a thief woken by the push already sees the mark).
    @inline(__always)
    func markNextPushShared(_ priority: Priority) {
        let bottom = WorkStealingDeque<UInt>.bottom(storage(priority)).pointee.load(ordering: .relaxed)
        pointee.shared.sharedIndex(priority).pointee.store(bottom, ordering: .relaxed)
    }

    /// Steals from the deque of `priority`. Any thread.
    @inline(__always)
    func steal(_ priority: Priority) -> WorkStealingDeque<UInt>.Steal {
        WorkStealingDeque<UInt>.steal(storage: storage(priority))
    }

    /// Elements in the deque of `priority` at some recent instant. Any thread.
    @inline(__always)
    func approximateCount(_ priority: Priority) -> Int {
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
    func post(_ token: UInt, priority: Priority) {
        let storage = storage(priority)
        let bound = WorkStealingDeque<UInt>.ownerBound(storage: storage)
        push(token, priority: priority)
        // A lone worker finds its own work; there is nobody to wake.
        guard pointee.workerCount > 1 else { return }
        if SleepState.postNeedsNoWake(heldWork: bound > 0, storage: storage, activity: pointee.activity,
                                      workerCount: pointee.workerCount) {
            return
        }
        // Steps 1–3 with the worker's own copy of the activity word's address.
        if SleepState.mustWake(afterPostOn: pointee.activity) {
            pointee.schedulerReference._withUnsafeGuaranteedRef { scheduler in _ = scheduler.sleep.wakeOne(scheduler) }
        }
    }
}
