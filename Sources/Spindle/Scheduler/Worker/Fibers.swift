import Synchronization

// The fibers of the workers: their scheduling state, the spare lists, the hand-over after a
// switch, parking and making ready. docs/scheduler.md, "Fibers" and "Waiting"; the publication
// rule is in docs/fibers.md.

/// Scheduler state of one fiber, in its own allocation, reached from the fiber control block's
/// `context`. Written only by the thread running the fiber, or by whoever resumes it (before the
/// switch; the switch orders it).
@usableFromInline
struct FiberState {
    /// The node this fiber waits with on a counter (first, so a node pointer is the state pointer).
    @usableFromInline var waitNode: WaitNode
    var fiber: Fiber
    /// The worker running this fiber now, or the one it parked on while it waits. Re-read after
    /// every switch: a resumed fiber may run on another worker.
    @usableFromInline var worker: UnsafeMutablePointer<WorkerState>
    /// Identity of the counter of the job running on this fiber (to catch a job waiting for itself).
    @usableFromInline var currentCounter: UnsafeMutableRawPointer?
    @usableFromInline var priority: Priority
    @usableFromInline var pinned: Bool
    /// Set by a worker's thread context to make a spare fiber leave its loop (shutdown).
    @usableFromInline var exitRequested: Bool
    /// Link in a spare list, an inbox or a pinned-ready list.
    @usableFromInline var link: UnsafeMutablePointer<FiberState>?
    /// The fiber pool (NUMA node index) the stack came from and returns to.
    var pool: Int
    /// Where the fiber is in its life (checked on every transition with SPINDLE_INTERNAL_CHECKS).
    var phase: FiberPhase = .running
    /// Words that the layers above the core keep per fiber (`FiberLocal`): they follow the job
    /// running on the fiber across waits and workers.
    var locals: (UInt, UInt) = (0, 0)
    /// What the fiber last parked on, for the stall report (docs/sleep.md, "Stalls"): the
    /// counter's identity (nil: a join whose other half was stolen) and where the wait was called.
    var waitedCounter: UnsafeMutableRawPointer?
    var waitSite: SourceSite?
    #if DEBUG
    /// Debug builds: where the running job came from, for the stall report (docs/sleep.md,
    /// "Stalls", submission sites). Set and restored with `currentCounter`.
    var origin: JobOrigin?
    #endif
    /// Links in the scheduler's list of every fiber it made (`Scheduler.allFibers`, under `lock`).
    var allNext: UnsafeMutablePointer<FiberState>?
    var allPrevious: UnsafeMutablePointer<FiberState>?
}

/// A place in the source: where a job called `JobContext.wait(for:)`, or (debug builds) where it
/// was submitted. For stall reports.
@usableFromInline
struct SourceSite: Sendable {
    var file: StaticString
    var line: UInt

    @usableFromInline
    init(file: StaticString, line: UInt) {
        self.file = file
        self.line = line
    }
}

/// What a submitting call hands the core about where it was called: the site in debug builds,
/// nothing in release builds (a `Void` parameter takes no register, and the public submitting
/// calls are inlinable forwarders, so the caller's `#fileID` and `#line` vanish there).
/// docs/sleep.md, "Stalls", submission sites.
#if DEBUG
@usableFromInline typealias SubmissionSite = SourceSite?
#else
@usableFromInline typealias SubmissionSite = Void
#endif

/// The `SubmissionSite` of a call at `file`:`line`.
@inlinable @inline(__always)
func submissionSite(_ file: StaticString, _ line: UInt) -> SubmissionSite {
    #if DEBUG
    return SourceSite(file: file, line: line)
    #endif
}

/// The `SubmissionSite` of a job the library makes itself (no site).
@inline(__always)
var madeByLibrary: SubmissionSite {
    #if DEBUG
    return nil
    #endif
}

/// Debug builds: what the job running on a fiber is and where it was submitted, for the stall
/// report (docs/sleep.md, "Stalls", submission sites).
struct JobOrigin {
    var kind: JobKind
    /// Where a submitting call made the job; nil for jobs the library made.
    var site: SourceSite?
    /// For a graph node: its plan (unretained; the running graph holds it) and node index.
    var graph: UnsafeMutableRawPointer?
    var node: Int = 0
}

/// The life of a fiber: `running` on a worker; `spare` in a spare list (suspended in the loop,
/// ready to continue it); `parking` while its worker completes the park after switching away;
/// `parked` on a counter or latch; `ready` in an inbox or deque; `finished` when recycled.
enum FiberPhase: UInt8 {
    case running, spare, parking, parked, ready, finished
}

extension UnsafeMutablePointer where Pointee == FiberState {
    /// Moves the fiber from `old` to `new`, checking `old` with SPINDLE_INTERNAL_CHECKS.
    @inline(__always)
    func transition(from old: FiberPhase, to new: FiberPhase) {
        internalCheck(pointee.phase == old, "fiber \(self) is \(pointee.phase), expected \(old) before \(new)")
        pointee.phase = new
    }
}

/// Words that the layers above the core keep per fiber, for the job running on it: like
/// thread-local storage, but following the job when it waits and continues on another worker.
/// A layer takes a slot once (`FiberLocal.loopsEntered`); the core only stores the words.
enum FiberLocal {
    /// Parallel loops entered on the fiber (wrapping; docs/parallel-for.md, "Partitioners").
    static let loopsEntered = 0

    @inline(__always)
    static func word(_ slot: Int, of state: UnsafeMutablePointer<FiberState>) -> UnsafeMutablePointer<UInt> {
        // SAFETY: `locals` is a homogeneous tuple of two words inside the state's allocation.
        precondition(slot >= 0 && slot < 2, "FiberLocal: slot \(slot) out of range")
        return UnsafeMutableRawPointer(state).advanced(by: MemoryLayout<FiberState>.offset(of: \FiberState.locals)!)
            .assumingMemoryBound(to: UInt.self) + slot
    }
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

extension Scheduler {
    /// A new fiber that runs the worker loop, for `worker`.
    func makeFiber(for worker: UnsafeMutablePointer<WorkerState>) -> UnsafeMutablePointer<FiberState> {
        let fiber: Fiber
        let node = workerNodes[worker.pointee.index]
        do {
            fiber = try fiberPools[node].get { fresh in
                // Bind the untouched stack to the worker's node before its first use.
                let control = fresh.control.pointee
                if let bottom = control.stack_bottom,
                   !placement.bind(bottom, Int(control.stack_size), .preferred(node: topology.nodes[node].id)) {
                    bindFailures.wrappingAdd(1, ordering: .relaxed)
                }
            }
        } catch {
            misuse(Self.cannotMapStack(error, fibers: fiberPools.reduce(0) { $0 + $1.allocatedCount }))
        }
        let state = UnsafeMutablePointer<FiberState>.allocate(capacity: 1)
        state.initialize(to: FiberState(
            waitNode: WaitNode(resume: Scheduler.resumeParkedFiber),
            fiber: fiber, worker: worker, currentCounter: nil, priority: .normal,
            pinned: false, exitRequested: false, link: nil, pool: node, phase: .spare))
        fiber.prepare(entry: Scheduler.fiberEntry, context: UnsafeMutableRawPointer(state))
        worker.count(.fibersCreated)
        lock.withLock {
            state.pointee.allNext = allFibers
            allFibers?.pointee.allPrevious = state
            allFibers = state
        }
        return state
    }

    /// The message when a fiber stack cannot be mapped: the error, the fibers this system holds,
    /// and the process's mappings against the kernel's `vm.max_map_count` (each stack is two).
    static func cannotMapStack(_ error: SystemError, fibers: Int) -> String {
        let limit = PageMemory.mappingLimit().map(String.init) ?? "unknown"
        let held = PageMemory.mappingCount().map(String.init) ?? "unknown"
        return "Spindle: cannot map a fiber stack (\(error)) with \(fibers) fibers in this system; the process holds \(held) memory mappings and the kernel allows \(limit) (vm.max_map_count; each fiber stack takes two). Too many jobs are waiting at once: wait for fewer at a time, or raise the limit (sysctl -w vm.max_map_count=…); if the mappings are far from the limit, the address space is exhausted: use smaller stacks (Configuration.stack)"
    }

    /// Returns a finished fiber's stack to the pool and frees its state.
    func recycle(_ state: UnsafeMutablePointer<FiberState>) {
        state.transition(from: .running, to: .finished)
        lock.withLock {
            if let previous = state.pointee.allPrevious {
                previous.pointee.allNext = state.pointee.allNext
            } else {
                allFibers = state.pointee.allNext
            }
            state.pointee.allNext?.pointee.allPrevious = state.pointee.allPrevious
        }
        fiberPools[state.pointee.pool].put(state.pointee.fiber)
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// A spare fiber (suspended in `resume`, ready to continue the loop) or a new one.
    func takeSpare(_ worker: UnsafeMutablePointer<WorkerState>, allowNew: Bool = true) -> UnsafeMutablePointer<FiberState>? {
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
        state.transition(from: .running, to: .spare)
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
            state.transition(from: .parking, to: .parked)
            let counter = counter.takeUnretainedValue()
            // SAFETY: the wait node is the first field of FiberState.
            let node = UnsafeMutableRawPointer(state).assumingMemoryBound(to: WaitNode.self)
            WaitList.register(node, on: counter.waiters) {
                counter.waitIsOver(observed: observed)
            }
        case .parkOnLatch(let state, let latch):
            worker.count(.fibersParked)
            state.pointee.waitedCounter = nil
            state.pointee.waitSite = nil
            state.transition(from: .parking, to: .parked)
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
    /// May switch fibers; never blocks the thread.
    @usableFromInline
    func park(_ state: UnsafeMutablePointer<FiberState>, _ action: PendingAction) {
        let worker = state.pointee.worker
        internalCheck(worker.local.pointee.running == state, "park of fiber \(state), which is not the running fiber of worker \(worker.pointee.index)")
        let next = takeSpare(worker)!
        next.pointee.worker = worker
        state.transition(from: .running, to: .parking)
        next.transition(from: .spare, to: .running)
        worker.local.pointee.pendingAction = action
        // What this fiber waits for may be among the deferred completions.
        worker.flushDecrements()
        worker.observe(.park, fiber: state)
        state.pointee.fiber.switchTo(next.pointee.fiber)
        completePendingAction(on: state.pointee.worker, running: state)
    }

    /// `WaitNode.Resume` of a fiber parked on a counter: the node is its `FiberState`.
    static let resumeParkedFiber: WaitNode.Resume = { node in
        makeReady(node.assumingMemoryBound(to: FiberState.self))
    }

    /// Makes a parked fiber runnable: it goes to the inbox of the worker it parked on (the
    /// pinned inbox for a pinned job), and that worker is woken if it sleeps. If it is busy, an
    /// idle worker is told about the fiber, which it may take once the inbox patience ran out
    /// (docs/scheduler.md, "Waiting"). Any thread.
    @usableFromInline
    static func makeReady(_ state: UnsafeMutablePointer<FiberState>) {
        state.transition(from: .parked, to: .ready)
        let home = state.pointee.worker
        let pinned = state.pointee.pinned
        let inbox = pinned ? home.pointee.shared.pinnedInbox : home.pointee.shared.inbox
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
        if !pinned && head == 0 { home.pointee.shared.inboxSince.pointee.store(MonotonicTime.now(), ordering: .relaxed) }
        let scheduler = home.pointee.scheduler
        scheduler.sleep.fiberMadeReady(on: home.pointee.index, pinned: pinned, scheduler)
    }
}
