#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The job timeline recorder's public side: starting and stopping a trace, and writing it in the
// Chrome/Perfetto JSON trace format. docs/trace.md.

/// What the buffers of one trace share: when it started and the interned labels.
final class TraceSession: @unchecked Sendable {
    // SAFETY: `labels`/`labelIDs` are only touched with `lock` held.
    let started: UInt64
    let lock = Lock()
    var labels: [String] = TraceLabel.fixed
    var labelIDs: [String: UInt32] = [:]

    init() {
        started = MonotonicTime.now()
    }

    func label(for name: String) -> UInt32 {
        lock.lock()
        defer { lock.unlock() }
        if let id = labelIDs[name] { return id }
        let id = UInt32(labels.count)
        labels.append(name)
        labelIDs[name] = id
        return id
    }
}

extension Scheduler {
    func startTrace(eventsPerWorker: Int) {
        let session = TraceSession()
        let buffers = (0..<workerCount).map { _ in TraceBuffer(capacity: eventsPerWorker, session: session) }
        require(installObservers(buffers), "JobSystem.startTrace: a trace is already being recorded; call stopTrace() first")
    }

    func stopTrace() -> JobTrace {
        // A worker may be in the middle of an event: this returns once every one let go.
        guard let buffers = removeObservers() as? [TraceBuffer], let session = buffers.first?.session else {
            misuse("JobSystem.stopTrace: no trace is being recorded; call startTrace() first")
        }
        let labels = session.lock.withLock { session.labels }
        return JobTrace(started: session.started, ended: MonotonicTime.now(), labels: labels,
                        workers: buffers.map { $0.recorded },
                        dropped: buffers.reduce(0) { $0 + $1.dropped })
    }
}

extension JobSystem {
    /// Starts recording a timeline of the jobs: per worker, each job, graph node and async task
    /// as a slice (name, priority, counter), fiber parks and resumes, and steals.
    ///
    /// Each worker keeps its newest `eventsPerWorker` events in a ring of its own (32 bytes an
    /// event); older ones are overwritten and counted in `JobTrace.droppedEvents`. While no trace
    /// is recorded, the recorder costs a load and a branch per job; while one is, a clock read
    /// and a few stores per event (the `trace` group of spindle-bench measures both).
    ///
    /// Thread-safety: callable from any thread. Never blocks (a short lock).
    /// - Precondition: no trace is being recorded; `eventsPerWorker >= 16`.
    public func startTrace(eventsPerWorker: Int = 1 << 16) {
        require(eventsPerWorker >= 16, "JobSystem.startTrace(eventsPerWorker: \(eventsPerWorker)): give each worker room for at least 16 events")
        scheduler.startTrace(eventsPerWorker: eventsPerWorker)
    }

    /// Stops recording and returns the trace. Jobs running meanwhile are cut at this instant.
    ///
    /// Thread-safety: callable from any thread. May spin briefly while a worker finishes writing
    /// one event.
    /// - Precondition: a trace is being recorded (`startTrace` was called).
    public func stopTrace() -> JobTrace {
        scheduler.stopTrace()
    }
}

/// A recorded job timeline (`JobSystem.startTrace` / `stopTrace`), convertible to the
/// Chrome/Perfetto JSON trace format: open the file at https://ui.perfetto.dev.
///
/// One track per worker ("worker N"); a slice per job segment, named by what ran ("run",
/// "run(count:)", "join", "async task", "graph", or a graph node's name) with its priority and
/// counter as arguments. A job that waits is cut into segments: its slice ends where its fiber
/// parks (an instant "park" event) and continues on the worker that resumes it ("resume"). A
/// steal is a flow arrow from the victim's track to the thief's.
public struct JobTrace: Sendable {
    let started: UInt64
    let ended: UInt64
    let labels: [String]
    let workers: [[TraceEvent]]

    /// Events overwritten because a worker's ring was full.
    public let droppedEvents: Int

    init(started: UInt64, ended: UInt64, labels: [String], workers: [[TraceEvent]], dropped: Int) {
        self.started = started
        self.ended = ended
        self.labels = labels
        self.workers = workers
        droppedEvents = dropped
    }

    /// The number of events recorded (after drops).
    public var eventCount: Int { workers.reduce(0) { $0 + $1.count } }

    /// The trace as Chrome/Perfetto JSON ("traceEvents" array of complete, instant, flow and
    /// metadata events; times in microseconds from the start of the trace).
    ///
    /// - Complexity: O(n log n) in the number of events.
    public func chromeTraceJSON() -> String {
        var writer = ChromeTraceWriter(started: started, labels: labels)
        for index in workers.indices { writer.threadName(index) }
        // Every event in time order: a fiber's segments may cross workers.
        var all: [(worker: Int, event: TraceEvent)] = []
        all.reserveCapacity(eventCount)
        for (index, events) in workers.enumerated() { for event in events { all.append((index, event)) } }
        all.sort { $0.event.time < $1.event.time }
        var open: [UInt: [OpenSlice]] = [:]
        var flow = 0
        for (worker, event) in all {
            switch event.kind {
            case .begin:
                open[event.fiber, default: []].append(OpenSlice(
                    label: event.label, priority: event.priority, counter: event.detail, start: event.time, worker: worker))
            case .end:
                // An end whose begin was overwritten in the ring has nothing to close.
                guard let slice = open[event.fiber]?.popLast() else { continue }
                writer.slice(slice, end: event.time, parked: false)
            case .park:
                writer.instant("park", worker: worker, time: event.time)
                guard var slices = open[event.fiber] else { continue }
                for index in slices.indices {
                    writer.slice(slices[index], end: event.time, parked: true)
                    slices[index].start = 0
                }
                open[event.fiber] = slices
            case .resume:
                writer.instant("resume", worker: worker, time: event.time)
                guard var slices = open[event.fiber] else { continue }
                for index in slices.indices {
                    slices[index].start = event.time
                    slices[index].worker = worker
                }
                open[event.fiber] = slices
            case .steal:
                flow += 1
                writer.flow(id: flow, from: Int(event.detail), to: worker, time: event.time)
            }
        }
        // Slices still open when the trace stopped end there.
        for slices in open.values {
            for slice in slices where slice.start != 0 { writer.slice(slice, end: ended, parked: false) }
        }
        return writer.finish()
    }

    /// Writes `chromeTraceJSON()` to `path`.
    ///
    /// - Throws: `SystemError` when the file cannot be created or written.
    public func write(toFile path: String) throws(SystemError) {
        let bytes = Array(chromeTraceJSON().utf8)
        let descriptor: CInt
        do {
            descriptor = try retryingSyscall("open") { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        } catch {
            throw SystemError(call: "open(\(path))", errno: error.errno)
        }
        defer { close(descriptor) }
        var offset = 0
        while offset < bytes.count {
            let chunk = Swift.min(bytes.count - offset, 1 << 30)
            do {
                offset += Int(try retryingSyscall("write") {
                    bytes.withUnsafeBytes { CInt(Glibc.write(descriptor, $0.baseAddress! + offset, chunk)) }
                })
            } catch {
                throw SystemError(call: "write(\(path))", errno: error.errno)
            }
        }
    }
}

struct OpenSlice {
    var label: UInt32
    var priority: UInt8
    var counter: UInt
    /// Start of the current segment (0 while the fiber is parked).
    var start: UInt64
    var worker: Int
}

/// Builds the JSON text by hand: the format is small and fixed, and the core library depends on
/// the toolchain only.
struct ChromeTraceWriter {
    let started: UInt64
    let labels: [String]
    var text = "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"
    var first = true

    init(started: UInt64, labels: [String]) {
        self.started = started
        self.labels = labels
    }

    static let priorityNames = ["high", "normal", "low"]

    /// `time` in microseconds since the start of the trace, with three decimals.
    func microseconds(_ time: UInt64) -> String {
        Self.decimalMicroseconds(time >= started ? time - started : 0)
    }

    static func decimalMicroseconds(_ nanoseconds: UInt64) -> String {
        let fraction = String(nanoseconds % 1000)
        return "\(nanoseconds / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
    }

    mutating func append(_ event: String) {
        if !first { text += ",\n" }
        first = false
        text += event
    }

    mutating func threadName(_ worker: Int) {
        append("{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":\(worker),\"args\":{\"name\":\"worker \(worker)\"}}")
    }

    mutating func slice(_ slice: OpenSlice, end: UInt64, parked: Bool) {
        guard slice.start != 0 else { return }
        let name = Int(slice.label) < labels.count ? labels[Int(slice.label)] : "job"
        let priority = Int(slice.priority) < 3 ? Self.priorityNames[Int(slice.priority)] : "\(slice.priority)"
        var args = "\"priority\":\"\(priority)\""
        if slice.counter != 0 { args += ",\"counter\":\"0x\(String(slice.counter, radix: 16))\"" }
        if parked { args += ",\"continues\":\"after a wait\"" }
        let durationText = Self.decimalMicroseconds(end >= slice.start ? end - slice.start : 0)
        append("{\"ph\":\"X\",\"name\":\(Self.quoted(name)),\"cat\":\"job\",\"pid\":1,\"tid\":\(slice.worker),\"ts\":\(microseconds(slice.start)),\"dur\":\(durationText),\"args\":{\(args)}}")
    }

    mutating func instant(_ name: String, worker: Int, time: UInt64) {
        append("{\"ph\":\"i\",\"name\":\"\(name)\",\"cat\":\"fiber\",\"s\":\"t\",\"pid\":1,\"tid\":\(worker),\"ts\":\(microseconds(time))}")
    }

    mutating func flow(id: Int, from victim: Int, to thief: Int, time: UInt64) {
        let ts = microseconds(time)
        append("{\"ph\":\"s\",\"name\":\"steal\",\"cat\":\"steal\",\"id\":\(id),\"pid\":1,\"tid\":\(victim),\"ts\":\(ts)}")
        append("{\"ph\":\"f\",\"name\":\"steal\",\"cat\":\"steal\",\"id\":\(id),\"pid\":1,\"tid\":\(thief),\"ts\":\(ts)}")
    }

    mutating func finish() -> String {
        text += "\n]}\n"
        return text
    }

    /// A JSON string literal.
    static func quoted(_ string: String) -> String {
        var result = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
