/// How a parallel loop cuts its range into chunks. docs/parallel-for.md has the details.
///
/// - `adaptive` (the default): splits while other workers are hungry (rayon-style splitting
///   budget, plus demand checks between batches), never into chunks smaller than
///   `minimumGrain` elements (unless the whole range is smaller). Few chunks on a busy system,
///   more when workers run out of work.
/// - `fixed(grain:)`: chunks of exactly `grain` elements (the last may be shorter), at multiples
///   of `grain` from the range's start, always split the same way. Use it when a chunk must not
///   exceed a size (scratch buffers) or when a reduction must give the same bits on every run.
public struct Partitioner: Sendable, Hashable, CustomStringConvertible {
    @usableFromInline
    enum Kind: Sendable, Hashable { case adaptive, fixed }

    @usableFromInline let kind: Kind
    /// `adaptive`: the smallest chunk; `fixed`: the chunk size.
    public let grain: Int

    @inlinable
    init(kind: Kind, grain: Int) {
        self.kind = kind
        self.grain = grain
    }

    /// Adaptive splitting down to single elements.
    public static var adaptive: Partitioner { Partitioner(kind: .adaptive, grain: 1) }

    /// Adaptive splitting that never makes a chunk smaller than `minimumGrain` elements (unless
    /// the whole range is smaller). Chunk boundaries are not aligned to multiples of the grain;
    /// use `fixed(grain:)` when a chunk must hold whole units (rows of an image, say).
    /// - Precondition: `minimumGrain >= 1`.
    public static func adaptive(minimumGrain: Int) -> Partitioner {
        require(minimumGrain >= 1,
                "Partitioner.adaptive(minimumGrain: \(minimumGrain)): a chunk holds at least one element; pass a grain of 1 or more")
        return Partitioner(kind: .adaptive, grain: minimumGrain)
    }

    /// Chunks of exactly `grain` elements (the last may be shorter), split the same way on every
    /// run and at every worker count.
    /// - Precondition: `grain >= 1`.
    public static func fixed(grain: Int) -> Partitioner {
        require(grain >= 1,
                "Partitioner.fixed(grain: \(grain)): a chunk holds at least one element; pass a grain of 1 or more")
        return Partitioner(kind: .fixed, grain: grain)
    }

    public var description: String {
        switch kind {
        case .adaptive: grain == 1 ? "adaptive" : "adaptive(minimumGrain: \(grain))"
        case .fixed: "fixed(grain: \(grain))"
        }
    }
}
