import Synchronization

// What a deque slot or a queue link points to: a job record, whose header names its kind.
// docs/scheduler.md, "Job records", describes the layouts and the reclamation rule.

/// Runs the job a record describes on the fiber whose `FiberState` is the second argument,
/// then retires the record.
@usableFromInline
typealias ExecuteFunction = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void

/// The kinds of job record: the one table of what each kind is called in a trace and how a job
/// finishing a `join` treats it when it pops it. Each record type states its kind and its
/// execute function by conforming to `JobRecordKind`; the header stores both. A new kind is a
/// case here (the compiler then asks for its properties) and one conforming record type.
@usableFromInline
enum JobKind: UInt8, CaseIterable, Sendable {
    /// `run` with a closure (`RunRecord`).
    case run
    /// `run(counter:argument:)`: a closure and an integer (`ArgumentRecord`).
    case runArgument
    /// `run(count:)`: one record, many indices (`CountRecord`).
    case runCount
    /// The stealable half of a `join` (a record on the joining fiber's stack).
    case join
    /// A node of a running task graph (`GraphRecord`).
    case graphNode
    /// A partial task of Swift Concurrency on the task executor (`AsyncRecord`).
    case asyncTask
    /// `spawnUnique`: a closure, a latch and the job's outcome (`UniqueRecord`).
    case spawn

    /// The slice name of this kind in a job trace (graph nodes are named by their node).
    var traceName: String {
        switch self {
        case .run: "run"
        case .runArgument: "run(argument:)"
        case .runCount: "run(count:)"
        case .join: "join"
        case .graphNode: "graph"
        case .asyncTask: "async task"
        case .spawn: "spawn"
        }
    }

    /// Whether a job waiting to take back its `join` half may run a record of this kind that it
    /// pops from its deque, nested on its own fiber, as the worker loop would. Partial tasks run
    /// only from the loop, never on top of a job (docs/async.md).
    var runsNested: Bool {
        switch self {
        case .run, .runArgument, .runCount, .join, .graphNode, .spawn: true
        case .asyncTask: false
        }
    }
}

/// A record type: its kind and the function that executes it.
protocol JobRecordKind: ~Copyable {
    static var kind: JobKind { get }
    static var execute: ExecuteFunction { get }
}

/// The header every record starts with: two words, so that a `run` record (header and body) is
/// 32 bytes, half a cache line (docs/scheduler.md, "Job records"). Records are 8-byte aligned, so
/// deque slots can tag the low bit (`Token`).
///
/// The second word packs the counter's address (a Swift object: 16-byte aligned, below 2^56),
/// the priority (bits 0–1), the pinned flag (bit 2) and the kind (bits 56–63).
///
/// A record that goes through a linked queue (an injection queue or a node queue) has one more
/// word *before* its header, the queue's link (`RecordLink`); records pushed on a worker's deque,
/// the common case, do not pay for it.
@usableFromInline
struct JobHeader {
    @usableFromInline var execute: ExecuteFunction
    @usableFromInline var word: UInt

    @usableFromInline static let priorityMask: UInt = 0b11
    @usableFromInline static let pinnedBit: UInt = 0b100
    /// Set by the worker that takes a record off an injection or node queue: tells an outside
    /// submitter that raced termination whether its job was taken (docs/sleep.md,
    /// "Submissions and shutdown").
    @usableFromInline static let takenBit: UInt = 0b1000
    @usableFromInline static let kindShift: UInt = 56
    /// The bits of `word` that hold the counter's address.
    @usableFromInline static let addressMask: UInt = ((1 << kindShift) - 1) & ~(priorityMask | pinnedBit | takenBit)

    /// The header of a record of `kind` executed by `execute`.
    @inlinable
    init(kind: JobKind, execute: ExecuteFunction, counter: Unmanaged<JobCounter>?, priority: Priority, pinned: Bool) {
        self.execute = execute
        let address = counter.map { UInt(bitPattern: $0.toOpaque()) } ?? 0
        assert(address & ~JobHeader.addressMask == 0, "Spindle internal error: a counter's address does not fit the header")
        self.word = address | UInt(priority.rawValue) | (pinned ? JobHeader.pinnedBit : 0)
            | (UInt(kind.rawValue) << JobHeader.kindShift)
    }

    /// The header of a record of type `Record`.
    init<Record: JobRecordKind & ~Copyable>(for record: Record.Type, counter: Unmanaged<JobCounter>?, priority: Priority, pinned: Bool) {
        self.init(kind: Record.kind, execute: Record.execute, counter: counter, priority: priority, pinned: pinned)
    }

    /// The counter the job decrements when it completes (unretained: a counter with pending work
    /// keeps itself alive, see `JobCounter`).
    @inlinable
    var counter: Unmanaged<JobCounter>? {
        guard let address = UnsafeRawPointer(bitPattern: word & JobHeader.addressMask) else { return nil }
        return Unmanaged.fromOpaque(address)
    }

    // SAFETY (both bitcasts): `init` wrote these bits from a `Priority` and a `JobKind`, so they
    // hold one of their raw values; the unchecked conversion keeps a branch off every job.
    @inlinable var priority: Priority {
        unsafeBitCast(UInt8(truncatingIfNeeded: word & JobHeader.priorityMask), to: Priority.self)
    }
    @inlinable var pinned: Bool { word & JobHeader.pinnedBit != 0 }
    @inlinable var kind: JobKind {
        unsafeBitCast(UInt8(truncatingIfNeeded: word >> JobHeader.kindShift), to: JobKind.self)
    }

    /// Marks the record at `record` as taken off a linked queue by a worker (`takenBit`). The
    /// taking worker only; the word is plain memory, published to the submitter by the sleep
    /// protocol's sequentially consistent operations that follow.
    @inline(__always)
    static func markTaken(_ record: UnsafeMutableRawPointer) {
        record.assumingMemoryBound(to: JobHeader.self).pointee.word |= takenBit
    }

    /// The header of the record at `record`.
    @inlinable
    static func of(_ record: UnsafeMutableRawPointer) -> JobHeader {
        record.assumingMemoryBound(to: JobHeader.self).pointee
    }
}

/// The link word of records queued on a linked queue: it sits in the 8 bytes before the record,
/// which the allocating side reserves (`prefix`). docs/scheduler.md, "Job records".
enum RecordLink {
    /// Bytes reserved in front of a record bound for a linked queue.
    static let prefix = MemoryLayout<UInt>.stride

    /// The link of `record` (an `Atomic<UInt>` in the prefix).
    @inline(__always)
    static func of(_ record: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt>> {
        (record - prefix).assumingMemoryBound(to: Atomic<UInt>.self)
    }
}

/// What a deque slot holds: a record pointer, or a ready fiber's state with the low bit set.
@usableFromInline
enum Token {
    @usableFromInline static let fiberTag: UInt = 1

    @inlinable static func record(_ pointer: UnsafeMutableRawPointer) -> UInt { UInt(bitPattern: pointer) }

    @inlinable static func fiber(_ state: UnsafeMutablePointer<FiberState>) -> UInt {
        UInt(bitPattern: state) | fiberTag
    }

    /// Whether `token` is a ready fiber (else a record).
    @inlinable static func isFiber(_ token: UInt) -> Bool { token & fiberTag != 0 }

    /// The fiber of a fiber token.
    @inlinable static func fiberState(_ token: UInt) -> UnsafeMutablePointer<FiberState> {
        UnsafeMutablePointer<FiberState>(bitPattern: token & ~fiberTag)!
    }

    /// The record of a record token.
    @inlinable static func recordPointer(_ token: UInt) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: token)!
    }
}
