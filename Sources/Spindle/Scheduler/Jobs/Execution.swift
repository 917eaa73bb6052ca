import CSpindle
import Synchronization

// The records of the core's own job kinds (run, run with an integer argument, run(count:),
// join), how they are filled and how they execute. docs/scheduler.md, "Job records".

/// A record from `JobSystem.run` / `JobContext.run`: the header and the body.
struct RunRecord: JobRecordKind {
    var header: JobHeader
    var body: RunBody
    #if DEBUG
    /// Where the job was submitted (debug builds only; docs/sleep.md, "Stalls").
    var site: SourceSite?
    #endif

    static var kind: JobKind { .run }
    static var execute: ExecuteFunction { Execution.executeRun }
}

/// A job body, wrapped so that it can be moved out of a record through a typed pointer (a bare
/// closure read through a generic pointer has another representation than in a struct field).
/// In memory it is the closure's two words, function then context, which is what
/// `spindle_closure_invoke` calls.
struct RunBody {
    var call: @Sendable (JobContext) -> Void
}

/// A record from `run(counter:argument:_:)`: the header, the body, and the integer it is called
/// with. The body comes right after the header, as in `RunRecord`, so both kinds retire their
/// closure the same way.
struct ArgumentRecord: JobRecordKind {
    var header: JobHeader
    var body: ArgumentBody
    var argument: Int
    #if DEBUG
    var site: SourceSite?
    #endif

    static var kind: JobKind { .runArgument }
    static var execute: ExecuteFunction { Execution.executeArgument }
}

/// The body of an `ArgumentRecord`: one closure, stored as its two words like `RunBody`.
struct ArgumentBody {
    var call: @Sendable (Int, JobContext) -> Void
}

/// A record from `run(count:)`: one body for `count` indices, executed by up to `maxTickets`
/// tickets (the same record pushed several times) that claim indices with a shared atomic.
struct CountRecord: ~Copyable {
    var header: JobHeader
    let body: @Sendable (Int, JobContext) -> Void
    let count: Int
    let maxTickets: Int
    /// The next index to claim.
    let nextIndex: Atomic<Int>
    /// Tickets pushed so far (including the first).
    let ticketsSpawned: Atomic<Int>
    /// Tickets not yet finished; the last one releases the record.
    let ticketsLive: Atomic<Int>
    #if DEBUG
    let site: SourceSite?
    #endif
}

extension CountRecord: JobRecordKind {
    static var kind: JobKind { .runCount }
    static var execute: ExecuteFunction { Execution.executeCount }
}

/// Filling and executing the core's four kinds of record (docs/scheduler.md, "Job records").
@usableFromInline
enum Execution {
    /// The executors call a record's body in place through its two words, right after the
    /// header (closure.c); a layout change must fail loudly, not call garbage.
    static func checkRecordLayouts() {
        require(MemoryLayout<RunRecord>.offset(of: \RunRecord.body) == MemoryLayout<JobHeader>.stride
                    && MemoryLayout<RunBody>.size == 2 * MemoryLayout<Int>.size
                    && MemoryLayout<ArgumentRecord>.offset(of: \ArgumentRecord.body) == MemoryLayout<JobHeader>.stride
                    && MemoryLayout<ArgumentBody>.size == 2 * MemoryLayout<Int>.size
                    && JoinRecord.size >= JoinRecord.thunk.offset + 2 * MemoryLayout<Int>.size,
                "Spindle internal error: job record layout changed")
    }

    // MARK: run

    static func initializeRun(
        _ memory: UnsafeMutableRawPointer, body: __owned @escaping @Sendable (JobContext) -> Void,
        counter: JobCounter?, priority: Priority, affinity: JobAffinity, site: SubmissionSite
    ) {
        let header = JobHeader(for: RunRecord.self, counter: counter.map { Unmanaged.passUnretained($0) },
                               priority: priority, pinned: affinity == .pinned)
        #if DEBUG
        memory.bindMemory(to: RunRecord.self, capacity: 1).initialize(to: RunRecord(header: header, body: RunBody(call: body), site: site))
        #else
        memory.bindMemory(to: RunRecord.self, capacity: 1).initialize(to: RunRecord(header: header, body: RunBody(call: body)))
        #endif
    }

    static let executeRun: ExecuteFunction = { memory, rawState in
        runInPlace(memory, rawState, RunBody.self, origin: origin(of: memory.assumingMemoryBound(to: RunRecord.self))) { words in
            spindle_closure_invoke(words, rawState)
        }
    }

    /// Runs the closure that follows the header of a `run` or `run(counter:argument:)` record
    /// (`Body`: `RunBody` or `ArgumentBody`) through `call`, which gets its two words, on the
    /// fiber whose state is `rawState`; then retires the closure, the record and the job's
    /// completion on the worker the job finished on.
    @inline(__always)
    static func runInPlace<Body>(_ memory: UnsafeMutableRawPointer, _ rawState: UnsafeMutableRawPointer,
                                 _ bodyType: Body.Type, origin: Origin,
                                 _ call: (UnsafeMutablePointer<UnsafeMutableRawPointer>) -> Void) {
        let state = rawState.assumingMemoryBound(to: FiberState.self)
        let header = memory.assumingMemoryBound(to: JobHeader.self).pointee
        let body = (memory + MemoryLayout<JobHeader>.stride).assumingMemoryBound(to: Body.self)
        state.pointee.worker.flushDecrements(unlessFor: header.counter)
        let saved = enter(state, counter: header.counter, header: header, origin: origin)
        // SAFETY: the body is one closure, stored as its two words (function, context); the
        // trampolines call it with Swift's convention without copying it, so the body's
        // reference count is not touched here. The record stays allocated until the call returns.
        call(UnsafeMutableRawPointer(body).assumingMemoryBound(to: UnsafeMutableRawPointer.self))
        leave(state, saved)
        // The job may have continued on another worker after a wait.
        let finishedOn = state.pointee.worker
        finishedOn.retireBody(movingFrom: body)
        markRetired(memory)
        finishedOn.releaseRecord(memory)
        finishedOn.count(.jobsRun)
        if let counter = header.counter {
            finishedOn.deferDecrement(counter)
        }
    }

    // MARK: run(counter:argument:)

    static func initializeArgument(
        _ memory: UnsafeMutableRawPointer, argument: Int, body: __owned @escaping @Sendable (Int, JobContext) -> Void,
        counter: JobCounter?, priority: Priority, affinity: JobAffinity, site: SubmissionSite
    ) {
        let header = JobHeader(for: ArgumentRecord.self, counter: counter.map { Unmanaged.passUnretained($0) },
                               priority: priority, pinned: affinity == .pinned)
        #if DEBUG
        memory.bindMemory(to: ArgumentRecord.self, capacity: 1).initialize(to: ArgumentRecord(
            header: header, body: ArgumentBody(call: body), argument: argument, site: site))
        #else
        memory.bindMemory(to: ArgumentRecord.self, capacity: 1).initialize(to: ArgumentRecord(
            header: header, body: ArgumentBody(call: body), argument: argument))
        #endif
    }

    /// `executeRun` for a body that takes the record's integer as well (its second parameter,
    /// `JobContext`, is one pointer, which the trampoline passes).
    static let executeArgument: ExecuteFunction = { memory, rawState in
        let record = memory.assumingMemoryBound(to: ArgumentRecord.self)
        let argument = record.pointee.argument
        runInPlace(memory, rawState, ArgumentBody.self, origin: origin(of: record)) { words in
            spindle_closure_invoke_with_integer(words, argument, rawState)
        }
    }

    // MARK: run(count:)

    static func initializeCount(
        _ memory: UnsafeMutableRawPointer, count: Int, tickets: Int,
        body: @escaping @Sendable (Int, JobContext) -> Void,
        counter: JobCounter, priority: Priority, affinity: JobAffinity, site: SubmissionSite
    ) {
        let header = JobHeader(for: CountRecord.self, counter: Unmanaged.passUnretained(counter),
                               priority: priority, pinned: affinity == .pinned)
        #if DEBUG
        memory.bindMemory(to: CountRecord.self, capacity: 1).initialize(to: CountRecord(
            header: header, body: body, count: count, maxTickets: tickets,
            nextIndex: Atomic(0), ticketsSpawned: Atomic(1), ticketsLive: Atomic(1), site: site))
        #else
        memory.bindMemory(to: CountRecord.self, capacity: 1).initialize(to: CountRecord(
            header: header, body: body, count: count, maxTickets: tickets,
            nextIndex: Atomic(0), ticketsSpawned: Atomic(1), ticketsLive: Atomic(1)))
        #endif
    }

    /// One ticket: first offers another ticket to thieves (so the work spreads one worker at a
    /// time, up to `maxTickets`), then claims indices until none are left.
    static let executeCount: ExecuteFunction = { memory, rawState in
        let state = rawState.assumingMemoryBound(to: FiberState.self)
        let record = memory.assumingMemoryBound(to: CountRecord.self)
        let count = record.pointee.count
        if record.pointee.ticketsSpawned.load(ordering: .relaxed) < record.pointee.maxTickets
            && record.pointee.nextIndex.load(ordering: .relaxed) < count - 1
            && record.pointee.ticketsSpawned.wrappingAdd(1, ordering: .relaxed).oldValue < record.pointee.maxTickets {
            // Relaxed: this ticket is live, so the count cannot reach zero before the new one
            // is counted; the push publishes the record.
            record.pointee.ticketsLive.wrappingAdd(1, ordering: .relaxed)
            state.pointee.worker.post(Token.record(memory), priority: record.pointee.header.priority)
        }
        let counter = record.pointee.header.counter
        state.pointee.worker.flushDecrements(unlessFor: counter)
        let saved = enter(state, counter: counter, header: record.pointee.header, origin: origin(of: record))
        var done = 0
        let tickets = record.pointee.maxTickets
        // One copy of the body per ticket: a call through `record.pointee.body` copies the
        // closure (a retain and a release of its context) on every index, and with several
        // tickets running, those atomic operations move the context's reference count between
        // CPUs once per index.
        let body = record.pointee.body
        while true {
            // Guided claiming: a share of what is left (an eighth per ticket, at most 64), so
            // tickets touch the shared index rarely while the tail still spreads evenly.
            // Relaxed: the claim needs atomicity only; results are published by the counter.
            let seen = record.pointee.nextIndex.load(ordering: .relaxed)
            if seen >= count { break }
            let share = Swift.max(1, Swift.min(64, (count - seen) / (8 * tickets)))
            let first = record.pointee.nextIndex.wrappingAdd(share, ordering: .relaxed).oldValue
            if first >= count { break }
            let end = Swift.min(first + share, count)
            for index in first..<end {
                body(index, JobContext(state: state))
            }
            done += end - first
        }
        leave(state, saved)
        state.pointee.worker.count(.jobsRun, UInt64(done))
        // Acquiring and releasing: the last ticket destroys the record after the others are done.
        if record.pointee.ticketsLive.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            record.deinitialize(count: 1)
            markRetired(memory)
            state.pointee.worker.releaseRecord(memory)
        }
        if done > 0, let counter {
            state.pointee.worker.deferDecrement(counter, by: done)
        }
    }

    // MARK: join

    /// Executed by a thief: runs the right half, then releases the owner.
    static let executeJoin: ExecuteFunction = { memory, rawState in
        let state = rawState.assumingMemoryBound(to: FiberState.self)
        let header = memory.assumingMemoryBound(to: JobHeader.self).pointee
        state.pointee.worker.flushDecrements()
        let saved = enter(state, counter: nil, header: header, origin: joinOrigin())
        spindle_closure_invoke(JoinRecord.block(memory)[JoinRecord.thunk], rawState)
        leave(state, saved)
        state.pointee.worker.count(.jobsRun)
        // Acquiring and releasing: publishes the result to the owner; acquires its parked state.
        // After this exchange the record (on the owner's stack) must not be touched.
        let waiter = JoinRecord.block(memory)[JoinRecord.latch].pointee.exchange(JoinLatch.done, ordering: .acquiringAndReleasing)
        if waiter != JoinLatch.pending {
            Scheduler.makeReady(UnsafeMutablePointer<FiberState>(bitPattern: waiter)!)
        }
    }

    // MARK: Records that never run

    /// Releases what a record of the core's own kinds holds (its closure) without running it: a
    /// record stranded on an injection queue by an outside submission that lost the race with
    /// termination (`Scheduler.trySubmit` returned false; docs/sleep.md, "Submissions and
    /// shutdown"). Other kinds hold nothing to release here (a partial task was handed to
    /// another executor; graph launches trap instead of refusing).
    static func discardUnrun(_ record: UnsafeMutableRawPointer) {
        switch JobHeader.of(record).kind {
        case .run:
            (record + MemoryLayout<JobHeader>.stride).assumingMemoryBound(to: RunBody.self).deinitialize(count: 1)
        case .runArgument:
            (record + MemoryLayout<JobHeader>.stride).assumingMemoryBound(to: ArgumentBody.self).deinitialize(count: 1)
        case .runCount:
            record.assumingMemoryBound(to: CountRecord.self).deinitialize(count: 1)
        case .spawn:
            // The body's two words (any closure: releasing one releases its context); the
            // handle waiting for it is the submitter's, which trapped instead (only `tryRun`
            // refuses).
            UniqueRecord.block(record)[UniqueRecord.body].withMemoryRebound(to: RunBody.self, capacity: 1) {
                _ = $0.deinitialize(count: 1)
            }
            releaseRunnerContext(UnsafeMutableRawPointer(UniqueRecord.block(record)[UniqueRecord.runner])
                .load(fromByteOffset: MemoryLayout<Int>.stride, as: UnsafeMutableRawPointer?.self))
        case .join, .graphNode, .asyncTask:
            break
        }
    }

    // MARK: Record states

    /// With SPINDLE_INTERNAL_CHECKS, marks a record whose job has finished (queued → running →
    /// retired): its execute function becomes one that traps, so a token to it that reaches a
    /// worker again (a record executed twice) stops with a message instead of running garbage.
    /// Call before the record is released; nothing in other builds.
    @inline(__always)
    static func markRetired(_ record: UnsafeMutableRawPointer) {
        #if SPINDLE_INTERNAL_CHECKS
        record.assumingMemoryBound(to: JobHeader.self).pointee.execute = executeRetired
        #endif
    }

    /// The execute function of a retired record (SPINDLE_INTERNAL_CHECKS).
    static let executeRetired: ExecuteFunction = { memory, _ in
        misuse("Spindle internal check failed: the job record at \(memory) ran after it was retired (executed twice)")
    }

    // MARK: Per-job fiber state

    // Debug builds also carry where the job came from (`JobOrigin`) into the fiber's state,
    // for stall reports; release builds carry nothing (docs/sleep.md, "Stalls").
    #if DEBUG
    typealias Origin = JobOrigin?
    typealias Saved = (counter: UnsafeMutableRawPointer?, priority: Priority, pinned: Bool, origin: JobOrigin?)
    #else
    typealias Origin = Void
    typealias Saved = (counter: UnsafeMutableRawPointer?, priority: Priority, pinned: Bool)
    #endif

    /// The origins of the jobs of each record kind that has one.
    @inline(__always)
    static func origin(of record: UnsafeMutablePointer<RunRecord>) -> Origin {
        #if DEBUG
        JobOrigin(kind: .run, site: record.pointee.site)
        #endif
    }

    @inline(__always)
    static func origin(of record: UnsafeMutablePointer<ArgumentRecord>) -> Origin {
        #if DEBUG
        JobOrigin(kind: .runArgument, site: record.pointee.site)
        #endif
    }

    @inline(__always)
    static func origin(of record: UnsafeMutablePointer<CountRecord>) -> Origin {
        #if DEBUG
        JobOrigin(kind: .runCount, site: record.pointee.site)
        #endif
    }

    @inline(__always)
    static func joinOrigin() -> Origin {
        #if DEBUG
        JobOrigin(kind: .join)
        #endif
    }

    @inline(__always)
    static func enter(_ state: UnsafeMutablePointer<FiberState>, counter: Unmanaged<JobCounter>?, header: JobHeader,
                      origin: Origin) -> Saved {
        #if DEBUG
        let saved = (state.pointee.currentCounter, state.pointee.priority, state.pointee.pinned, state.pointee.origin)
        state.pointee.origin = origin
        #else
        let saved = (state.pointee.currentCounter, state.pointee.priority, state.pointee.pinned)
        #endif
        state.pointee.currentCounter = counter?.toOpaque()
        state.pointee.priority = header.priority
        state.pointee.pinned = header.pinned
        return saved
    }

    @inline(__always)
    static func leave(_ state: UnsafeMutablePointer<FiberState>, _ saved: Saved) {
        state.pointee.currentCounter = saved.counter
        state.pointee.priority = saved.priority
        state.pointee.pinned = saved.pinned
        #if DEBUG
        state.pointee.origin = saved.origin
        #endif
    }
}

/// The layout of a join record on the owner's stack: the header, the latch (`JoinLatch`), and
/// the thief's thunk (the two words of the closure that runs the right half and writes its
/// result into the owner's frame). Inlinable, because `join` is inlined into its callers.
@usableFromInline
enum JoinRecord: JobRecordKind {
    @inlinable static var size: Int { 64 }
    @inlinable static var latch: RawSlot<Atomic<UInt>> { RawSlot(byteOffset: 32) }
    /// The first of two words: a closure's function, then its context.
    @inlinable static var thunk: RawSlot<UnsafeMutableRawPointer> { RawSlot(byteOffset: 48) }

    static var kind: JobKind { .join }
    static var execute: ExecuteFunction { Execution.executeJoin }

    /// The record at `record` as a block of `size` bytes.
    @inlinable
    static func block(_ record: UnsafeMutableRawPointer) -> RawBlock {
        RawBlock(record, byteCount: size)
    }
}
