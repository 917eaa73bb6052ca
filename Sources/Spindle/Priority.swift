/// The priority a job is scheduled at.
///
/// A worker takes high before normal before low: from its own deques first, then from the
/// system's injection queues, and only then steals, high before normal before low. A job that
/// keeps being outrun by higher-priority work waits; priorities are strict, not weighted.
/// docs/scheduler.md, "Priorities and fairness", states the bound this gives.
public enum Priority: UInt8, CaseIterable, Comparable, Sendable {
    case high = 0
    case normal = 1
    case low = 2

    public static func < (lhs: Priority, rhs: Priority) -> Bool { lhs.rawValue > rhs.rawValue }

    /// The position of this priority in per-priority arrays and deque sets: high 0, normal 1,
    /// low 2, so that lower indices are taken first.
    @inlinable var index: Int { Int(rawValue) }

    /// The priority at position `index` of a per-priority array.
    @inlinable init(index: Int) { self = Priority(rawValue: UInt8(truncatingIfNeeded: index))! }
}

/// Where a job's fiber may continue after it waits.
public enum JobAffinity: Sendable, Hashable {
    /// Resumed on the worker it waited on when that worker is free first; an idle worker may
    /// steal it from there (better balance). The default.
    case migratable
    /// Always resumed on the worker it started on (locality; never stolen while it waits).
    case pinned
}
