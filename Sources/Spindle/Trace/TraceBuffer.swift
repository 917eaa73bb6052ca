import Synchronization

// The job timeline recorder's hot side: per-worker ring buffers of fixed-size events, written by
// their worker only. docs/trace.md describes the events and the stop protocol.

/// One recorded event (32 bytes).
struct TraceEvent {
    var time: UInt64
    /// The fiber the event belongs to (its `FiberState` address).
    var fiber: UInt
    /// begin: the counter's address (0: none); steal: the victim's index; else 0.
    var detail: UInt
    var label: UInt32
    var kind: TraceEventKind
    var priority: UInt8
}

enum TraceEventKind: UInt8 {
    /// A job (or a graph node, a partial task) starts on this fiber.
    case begin
    /// The innermost open slice of this fiber ends.
    case end
    /// The fiber parks (a wait); its open slices pause.
    case park
    /// The fiber resumes on this worker.
    case resume
    /// This worker stole work from worker `detail`.
    case steal
}

/// The labels of the record kinds; graph node names are interned after them.
enum TraceLabel {
    static let run: UInt32 = 0
    static let runCount: UInt32 = 1
    static let join: UInt32 = 2
    static let task: UInt32 = 3
    static let graph: UInt32 = 4
    static let fixed = ["run", "run(count:)", "join", "async task", "graph"]
}

/// A worker's ring of events. The owner writes; `TraceSession.stop` reads after the owner let go.
final class TraceBuffer: @unchecked Sendable {
    // SAFETY: `events` and `written` are written by the owning worker only, between raising and
    // lowering `busy`; the reader reads them after it unpublished the buffer and saw `busy` low
    // (docs/trace.md, "Stopping").
    let capacity: Int
    let events: UnsafeMutablePointer<TraceEvent>
    var written = 0
    let busy = Atomic<Bool>(false)

    init(capacity: Int) {
        self.capacity = capacity
        events = .allocate(capacity: capacity)
    }

    deinit { events.deallocate() }

    /// The events in the order written (the newest `capacity` of them).
    var recorded: [TraceEvent] {
        let count = Swift.min(written, capacity)
        let first = written - count
        return (0..<count).map { events[(first + $0) % capacity] }
    }

    var dropped: Int { Swift.max(0, written - capacity) }
}

extension UnsafeMutablePointer where Pointee == WorkerState {
    /// The worker's published trace buffer (nil while no trace is recorded).
    @inline(__always)
    var traceSlot: UnsafeMutablePointer<Atomic<UInt>> {
        (pointee.shared + 64).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    /// Records an event if a trace is on. Owner only. When no trace is recorded this is one
    /// relaxed load and a branch.
    @inline(__always)
    func trace(_ kind: TraceEventKind, fiber: UnsafeMutablePointer<FiberState>?, label: UInt32 = 0,
               priority: UInt8 = 0, detail: UInt = 0) {
        let slot = traceSlot.pointee.load(ordering: .relaxed)
        if slot != 0 { traceSlow(slot, kind, fiber: fiber, label: label, priority: priority, detail: detail) }
    }

    @inline(never)
    func traceSlow(_ slot: UInt, _ kind: TraceEventKind, fiber: UnsafeMutablePointer<FiberState>?, label: UInt32,
                   priority: UInt8, detail: UInt) {
        let buffer = Unmanaged<TraceBuffer>.fromOpaque(UnsafeRawPointer(bitPattern: slot)!)
        buffer._withUnsafeGuaranteedRef { buffer in
            // Sequentially consistent: `busy` before the re-check; pairs with the reader's
            // unpublishing store and its read of `busy` (a Dekker pair).
            buffer.busy.store(true, ordering: .sequentiallyConsistent)
            if traceSlot.pointee.load(ordering: .sequentiallyConsistent) == slot {
                buffer.events[buffer.written % buffer.capacity] = TraceEvent(
                    time: MonotonicTime.now(), fiber: UInt(bitPattern: fiber), detail: detail,
                    label: label, kind: kind, priority: priority)
                buffer.written += 1
            }
            buffer.busy.store(false, ordering: .releasing)
        }
    }

    /// Records the start of the record `record` (its kind's label, its priority and counter).
    @inline(__always)
    func traceBegin(_ record: UnsafeMutableRawPointer, fiber: UnsafeMutablePointer<FiberState>) {
        let slot = traceSlot.pointee.load(ordering: .relaxed)
        if slot != 0 {
            let header = record.assumingMemoryBound(to: JobHeader.self).pointee
            traceSlow(slot, .begin, fiber: fiber, label: Execution.traceLabel(record), priority: header.priority,
                      detail: UInt(bitPattern: header.counter?.toOpaque()))
        }
    }
}

extension Execution {
    /// The label of a record's kind, from its execute function.
    static func traceLabel(_ record: UnsafeMutableRawPointer) -> UInt32 {
        if Execution.record(record, runs: executeRun) { return TraceLabel.run }
        if Execution.record(record, runs: executeCount) { return TraceLabel.runCount }
        if Execution.record(record, runs: executeJoin) { return TraceLabel.join }
        if isAsync(record) { return TraceLabel.task }
        return TraceLabel.graph
    }
}
