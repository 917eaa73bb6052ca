import Synchronization

// The observer slot: how a layer above the core (the job trace, docs/trace.md) sees what the
// workers do without the core knowing it. Each worker has one slot (a word of its shared
// lines); while an observer is installed there, the worker reports its events to it. When none
// is, reporting costs a relaxed load and a branch.

/// What a worker reports to its observer.
enum WorkerEvent: UInt8, Sendable {
    /// A job (or a graph node, a partial task) starts on this fiber.
    case begin
    /// The innermost open job of this fiber ends.
    case end
    /// The fiber parks (a wait); its open jobs pause.
    case park
    /// The fiber resumes on this worker.
    case resume
    /// This worker stole work from worker `detail`.
    case steal
}

/// How a `begin` names its job: by its record's kind, or by a name (a graph node's).
enum JobLabel {
    case kind(JobKind)
    case name(String)
}

/// Receives the events of one worker while installed in its slot (`Scheduler.installObservers`).
/// Subclassed by the layer that observes; `record` runs on the worker's thread, between a
/// raise and a lowering of `busy`, so `Scheduler.removeObservers` knows when the worker let go.
class WorkerObserver: @unchecked Sendable {
    // SAFETY: `busy` is atomic; subclasses state how their own state is handed over.
    let busy = Atomic<Bool>(false)

    /// Records one event. Called on the observed worker's thread only, never concurrently.
    func record(_ event: WorkerEvent, fiber: UInt, label: JobLabel?, priority: Priority, detail: UInt) {}
}

extension UnsafeMutablePointer where Pointee == WorkerState {
    /// Reports an event to the worker's observer, if one is installed. Owner only. When none is,
    /// one relaxed load and a branch.
    @inline(__always)
    func observe(_ event: WorkerEvent, fiber: UnsafeMutablePointer<FiberState>?, label: JobLabel? = nil,
                 priority: Priority = .high, detail: UInt = 0) {
        let slot = pointee.shared.observer.pointee.load(ordering: .relaxed)
        if slot != 0 { report(slot, event, fiber: fiber, label: label, priority: priority, detail: detail) }
    }

    /// Whether an observer is installed (a layer that builds an expensive label checks first).
    @inline(__always)
    var isObserved: Bool { pointee.shared.observer.pointee.load(ordering: .relaxed) != 0 }

    /// Reports the start of the record `record` (its kind, priority and counter).
    @inline(__always)
    func observeBegin(_ record: UnsafeMutableRawPointer, fiber: UnsafeMutablePointer<FiberState>) {
        let slot = pointee.shared.observer.pointee.load(ordering: .relaxed)
        if slot != 0 {
            let header = JobHeader.of(record)
            report(slot, .begin, fiber: fiber, label: .kind(header.kind), priority: header.priority,
                   detail: UInt(bitPattern: header.counter?.toOpaque()))
        }
    }

    @inline(never)
    private func report(_ slot: UInt, _ event: WorkerEvent, fiber: UnsafeMutablePointer<FiberState>?, label: JobLabel?,
                        priority: Priority, detail: UInt) {
        let observer = Unmanaged<WorkerObserver>.fromOpaque(UnsafeRawPointer(bitPattern: slot)!)
        observer._withUnsafeGuaranteedRef { observer in
            // Sequentially consistent: `busy` before the re-check; pairs with the remover's
            // unpublishing store and its read of `busy` (a Dekker pair).
            observer.busy.store(true, ordering: .sequentiallyConsistent)
            if pointee.shared.observer.pointee.load(ordering: .sequentiallyConsistent) == slot {
                observer.record(event, fiber: UInt(bitPattern: fiber), label: label, priority: priority, detail: detail)
            }
            observer.busy.store(false, ordering: .releasing)
        }
    }
}

extension Scheduler {
    /// Installs `observers[i]` in worker i's slot and keeps them until `removeObservers`.
    /// Returns false (installing nothing) when observers are installed already. Thread-safe;
    /// never blocks (a short lock).
    func installObservers(_ observers: [WorkerObserver]) -> Bool {
        precondition(observers.count == workerCount, "one observer per worker")
        return lock.withLock {
            guard installedObservers == nil else { return false }
            installedObservers = observers
            for index in 0..<workerCount {
                workers[index].pointee.shared.observer.pointee.store(
                    UInt(bitPattern: Unmanaged.passUnretained(observers[index]).toOpaque()), ordering: .sequentiallyConsistent)
            }
            return true
        }
    }

    /// Empties every worker's slot and returns the observers that were installed (nil: none),
    /// once no worker is inside an observer's `record` (each worker finishes at most the event
    /// it is recording). Thread-safe; spins briefly.
    func removeObservers() -> [WorkerObserver]? {
        guard let observers = lock.withLock({ () -> [WorkerObserver]? in
            defer { installedObservers = nil }
            return installedObservers
        }) else { return nil }
        for index in 0..<workerCount {
            workers[index].pointee.shared.observer.pointee.store(0, ordering: .sequentiallyConsistent)
            while observers[index].busy.load(ordering: .sequentiallyConsistent) { spinPause() }
        }
        return observers
    }
}
