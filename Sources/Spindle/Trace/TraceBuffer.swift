import Synchronization

// The job timeline recorder's hot side: per-worker ring buffers of fixed-size events, written by
// their worker only. The trace is an observer of the core (Scheduler/Observer.swift): each
// worker's buffer is installed in its observer slot while a trace is recorded. docs/trace.md
// describes the events and the stop protocol.

/// One recorded event (32 bytes).
struct TraceEvent {
    var time: UInt64
    /// The fiber the event belongs to (its `FiberState` address).
    var fiber: UInt
    /// begin: the counter's address (0: none); steal: the victim's index; else 0.
    var detail: UInt
    var label: UInt32
    var kind: WorkerEvent
    var priority: UInt8
}

/// The labels of the job kinds (`JobKind.traceName`, in `JobKind` order); graph node names are
/// interned after them.
enum TraceLabel {
    static func of(_ kind: JobKind) -> UInt32 { UInt32(kind.rawValue) }
    static let fixed = JobKind.allCases.map(\.traceName)
}

/// A worker's ring of events: its observer while a trace is recorded. The owner writes;
/// `Scheduler.stopTrace` reads after the owner let go.
final class TraceBuffer: WorkerObserver, @unchecked Sendable {
    // SAFETY: `events` and `written` are written by the owning worker only, inside `record`
    // (between the raise and the lowering of `busy`); the reader reads them after it emptied the
    // slot and saw `busy` low (docs/trace.md, "Stopping"). `session` is immutable and shared by
    // the trace's buffers, which own it.
    let capacity: Int
    let events: UnsafeMutablePointer<TraceEvent>
    var written = 0
    let session: TraceSession

    init(capacity: Int, session: TraceSession) {
        self.capacity = capacity
        self.session = session
        events = .allocate(capacity: capacity)
    }

    deinit { events.deallocate() }

    override func record(_ event: WorkerEvent, fiber: UInt, label: JobLabel?, priority: Priority, detail: UInt) {
        let id: UInt32 = switch label {
        case nil: 0
        case .kind(let kind)?: TraceLabel.of(kind)
        case .name(let name)?: session.label(for: name)
        }
        events[written % capacity] = TraceEvent(time: MonotonicTime.now(), fiber: fiber, detail: detail,
                                                label: id, kind: event, priority: priority.rawValue)
        written += 1
    }

    /// The events in the order written (the newest `capacity` of them).
    var recorded: [TraceEvent] {
        let count = Swift.min(written, capacity)
        let first = written - count
        return (0..<count).map { events[(first + $0) % capacity] }
    }

    var dropped: Int { Swift.max(0, written - capacity) }
}
