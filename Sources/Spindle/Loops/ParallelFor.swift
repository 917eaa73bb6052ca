// Parallel loops over ranges and collections. docs/parallel-for.md explains partitioning,
// nesting and errors; the engine is Scheduler.loop (LoopEngine.swift).
//
// Every loop here blocks until it is done. Called from outside the system it blocks the thread
// (a futex); called from one of this system's jobs (or from a chunk of an outer loop) it parks
// the job's fiber, so nested loops cost no threads and their chunks are stealable work of the
// outer loop. Bodies are non-escaping: they are not copied to the heap, and the chunking adds no
// heap allocation per chunk. They run on several threads at once, hence `@Sendable`.

extension JobSystem {
    // MARK: Ranges

    /// Runs `body(index)` for every index of `range`, in parallel, and returns when all are done.
    ///
    /// If `body` throws, chunks that have not started are skipped, chunks already running
    /// finish, and the first error is rethrown.
    ///
    /// Thread-safety: callable from any thread and from this system's jobs; `body` runs
    /// concurrently on the workers (and, for a range that fits one chunk or a one-worker system,
    /// on the caller).
    /// - Blocks: the calling thread (outside the system) or parks the calling job's fiber, until
    ///   every index is done.
    /// - Precondition: not called from a job of another `JobSystem`.
    /// - Complexity: O(range.count) calls of `body`; about 2·workerCount chunks on a busy system,
    ///   more when workers are idle (see `Partitioner`).
    @inlinable
    public func parallelFor<E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (Int) throws(E) -> Void
    ) throws(E) {
        try parallelForChunks(range, partitioner: partitioner) { (chunk: Range<Int>) throws(E) in
            for index in chunk { try body(index) }
        }
    }

    /// Runs `body(chunk)` over chunks of at least `grain` indices (unless `range` is smaller)
    /// covering `range`, split adaptively. Same as
    /// `parallelForChunks(range, partitioner: .adaptive(minimumGrain: grain), body)`.
    ///
    /// - Precondition: `grain >= 1`.
    @inlinable
    public func parallelFor<E: Error>(
        _ range: Range<Int>, grain: Int,
        _ body: @Sendable (Range<Int>) throws(E) -> Void
    ) throws(E) {
        try parallelForChunks(range, partitioner: .adaptive(minimumGrain: grain), body)
    }

    /// Runs `body(chunk)` over disjoint chunks covering `range`, cut by `partitioner`, in
    /// parallel; returns when all are done. Errors, blocking and thread-safety as for
    /// `parallelFor(_:partitioner:_:)`.
    @inlinable
    public func parallelForChunks<E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (Range<Int>) throws(E) -> Void
    ) throws(E) {
        guard !range.isEmpty else { return }
        try LoopFailure<E>.run { failure in
            LoopEngine(scheduler).forEachChunk(range, partitioner) { chunk in
                guard !failure.isCancelled else { return }
                do throws(E) { try body(chunk) } catch { failure.record(error) }
            }
        }.get()
    }

    /// Returns `[transform(index) for index in range]`, computed in parallel.
    ///
    /// If `transform` throws, the elements made so far are destroyed and the first error is
    /// rethrown. Blocking, thread-safety and complexity as for `parallelFor(_:partitioner:_:)`;
    /// one allocation (the result).
    @inlinable
    public func parallelMap<T: Sendable, E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive,
        _ transform: @Sendable (Int) throws(E) -> T
    ) throws(E) -> [T] {
        let count = range.count
        let start = range.lowerBound
        return try LoopFailure<E>.run { failure in
            [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                guard count > 0 else { initialized = 0; return }
                let base = LoopBuffer(buffer.baseAddress!)
                // Each chunk reports the slots it initialised; `combine` merges neighbours and,
                // when either side is incomplete, destroys the complete one, so after a failure
                // the root reports no initialised slot and no element is left alive.
                let done = LoopEngine(scheduler).mapChunks(0..<count, partitioner, leaf: { (chunk: Range<Int>) -> LoopSlots in
                    LoopSlots.fill(chunk, base, failure) { (slot: Int) throws(E) -> T in try transform(start + slot) }
                }, combine: { left, right in
                    LoopSlots.merge(left, right, base)
                })
                initialized = done.complete ? count : 0
            }
        }.get()
    }

    /// Folds `transform(index)` for every index of `range` with `combine`, in parallel.
    ///
    /// Each chunk folds its indices in order starting from `identity`; the results of the two
    /// halves of every split are combined as `combine(left, right)`. `combine` must be
    /// associative and `identity` its neutral element. With `.fixed(grain:)` the result is the
    /// same on every run and at every worker count (bit for bit, for floating point); with the
    /// adaptive partitioner it depends on where the range was split.
    ///
    /// Errors, blocking, thread-safety and complexity as for `parallelFor(_:partitioner:_:)`.
    @inlinable
    public func parallelReduce<T: Sendable, E: Error>(
        _ range: Range<Int>, identity: T, partitioner: Partitioner = .adaptive,
        combine: @Sendable (T, T) -> T,
        _ transform: @Sendable (Int) throws(E) -> T
    ) throws(E) -> T {
        guard !range.isEmpty else { return identity }
        return try LoopFailure<E>.run { failure in
            LoopEngine(scheduler).loop(range, partitioner, leaf: { chunk in
                var accumulated = identity
                guard !failure.isCancelled else { return accumulated }
                do throws(E) {
                    for index in chunk { accumulated = combine(accumulated, try transform(index)) }
                } catch {
                    failure.record(error)
                }
                return accumulated
            }, combine: combine)
        }.get()
    }
}

// MARK: - Bodies with a context

extension JobSystem {
    /// `parallelFor(_:partitioner:_:)` whose body also receives the running job's context, for
    /// frame allocation (`frameAllocate`), the worker index, spawning and waiting.
    ///
    /// The loop always runs in jobs of this system, also when it is called from outside and the
    /// range fits one chunk (docs/parallel-for.md, "Bodies with a context"); each chunk reads
    /// its context once. Errors, blocking, thread-safety and complexity as for
    /// `parallelFor(_:partitioner:_:)`; from outside, one job round trip even for a tiny range.
    @inlinable
    public func parallelFor<E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (Int, JobContext) throws(E) -> Void
    ) throws(E) {
        try parallelForChunks(range, partitioner: partitioner) { (chunk: Range<Int>, context: JobContext) throws(E) in
            for index in chunk { try body(index, context) }
        }
    }

    /// `parallelForChunks(_:partitioner:_:)` whose body also receives the running job's
    /// context. See `parallelFor(_:partitioner:_:)` with a context.
    @inlinable
    public func parallelForChunks<E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (Range<Int>, JobContext) throws(E) -> Void
    ) throws(E) {
        guard !range.isEmpty else { return }
        try LoopFailure<E>.run { failure in
            let engine = LoopEngine(scheduler)
            engine.inJob {
                engine.forEachChunk(range, partitioner) { chunk in
                    guard !failure.isCancelled else { return }
                    do throws(E) { try body(chunk, LoopEngine.runningContext()) } catch { failure.record(error) }
                }
            }
        }.get()
    }

    /// `parallelMap(_:partitioner:_:)` whose transform also receives the running job's context.
    /// See `parallelFor(_:partitioner:_:)` with a context.
    @inlinable
    public func parallelMap<T: Sendable, E: Error>(
        _ range: Range<Int>, partitioner: Partitioner = .adaptive,
        _ transform: @Sendable (Int, JobContext) throws(E) -> T
    ) throws(E) -> [T] {
        let count = range.count
        let start = range.lowerBound
        return try LoopFailure<E>.run { failure in
            [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                guard count > 0 else { initialized = 0; return }
                let base = LoopBuffer(buffer.baseAddress!)
                let engine = LoopEngine(scheduler)
                var complete = false
                engine.inJob {
                    // As in `parallelMap(_:partitioner:_:)`: an incomplete run holds no element.
                    complete = engine.mapChunks(0..<count, partitioner, leaf: { (chunk: Range<Int>) -> LoopSlots in
                        let context = LoopEngine.runningContext()
                        return LoopSlots.fill(chunk, base, failure) { (slot: Int) throws(E) -> T in try transform(start + slot, context) }
                    }, combine: { left, right in
                        LoopSlots.merge(left, right, base)
                    }).complete
                }
                initialized = complete ? count : 0
            }
        }.get()
    }

    /// `parallelReduce(_:identity:partitioner:combine:_:)` whose transform also receives the
    /// running job's context. See `parallelFor(_:partitioner:_:)` with a context.
    @inlinable
    public func parallelReduce<T: Sendable, E: Error>(
        _ range: Range<Int>, identity: T, partitioner: Partitioner = .adaptive,
        combine: @Sendable (T, T) -> T,
        _ transform: @Sendable (Int, JobContext) throws(E) -> T
    ) throws(E) -> T {
        guard !range.isEmpty else { return identity }
        return try LoopFailure<E>.run { failure in
            let engine = LoopEngine(scheduler)
            var result = identity
            engine.inJob {
                result = engine.loop(range, partitioner, leaf: { chunk in
                    var accumulated = identity
                    guard !failure.isCancelled else { return accumulated }
                    let context = LoopEngine.runningContext()
                    do throws(E) {
                        for index in chunk { accumulated = combine(accumulated, try transform(index, context)) }
                    } catch {
                        failure.record(error)
                    }
                    return accumulated
                }, combine: combine)
            }
            return result
        }.get()
    }
}

// MARK: - Collections

extension RandomAccessCollection where Self: Sendable {
    /// Runs `body(element)` for every element, in parallel on `jobs`, and returns when all are
    /// done. See `JobSystem.parallelFor(_:partitioner:_:)` for errors, blocking and
    /// thread-safety.
    @inlinable
    public func parallelForEach<E: Error>(
        on jobs: JobSystem, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (Element) throws(E) -> Void
    ) throws(E) {
        try jobs.parallelForChunks(0..<count, partitioner: partitioner) { (chunk: Range<Int>) throws(E) in
            var index = self.index(self.startIndex, offsetBy: chunk.lowerBound)
            for _ in chunk {
                try body(self[index])
                formIndex(after: &index)
            }
        }
    }

    /// Returns the elements transformed by `transform`, in order, computed in parallel on
    /// `jobs`. See `JobSystem.parallelMap(_:partitioner:_:)`.
    @inlinable
    public func parallelMap<T: Sendable, E: Error>(
        on jobs: JobSystem, partitioner: Partitioner = .adaptive,
        _ transform: @Sendable (Element) throws(E) -> T
    ) throws(E) -> [T] {
        return try jobs.parallelMap(0..<count, partitioner: partitioner) { (offset: Int) throws(E) -> T in
            try transform(self[self.index(self.startIndex, offsetBy: offset)])
        }
    }
}

extension Array where Element: Sendable {
    /// Lets `body` mutate disjoint slices of the array in parallel on `jobs`.
    ///
    /// Each call of `body` receives a buffer over its own slice only (`slice[0]` is element
    /// `range.lowerBound` of the array) and the slice's range of array indices; slices never
    /// overlap, so no two calls can touch the same element. The buffer is valid only during
    /// the call. If `body` throws, slices that have not started are skipped and the first error
    /// is rethrown (elements already written stay written).
    ///
    /// Blocking and thread-safety as for `JobSystem.parallelFor(_:partitioner:_:)`; the array
    /// is accessed exclusively for the whole call.
    @inlinable
    public mutating func withParallelMutableSlices<E: Error>(
        on jobs: JobSystem, partitioner: Partitioner = .adaptive,
        _ body: @Sendable (_ slice: UnsafeMutableBufferPointer<Element>, _ range: Range<Int>) throws(E) -> Void
    ) throws(E) {
        let count = self.count
        try withUnsafeMutableBufferPointer { buffer in
            LoopFailure<E>.run { failure in
                guard count > 0 else { return }
                let base = LoopBuffer(buffer.baseAddress!)
                jobs.parallelForChunks(0..<count, partitioner: partitioner) { chunk in
                    guard !failure.isCancelled else { return }
                    do throws(E) {
                        try body(UnsafeMutableBufferPointer(start: base.pointer + chunk.lowerBound, count: chunk.count), chunk)
                    } catch {
                        failure.record(error)
                    }
                }
            }
        }.get()
    }
}

// MARK: - Support

/// A buffer's base address shared by the chunks of one loop, each of which touches only its own
/// slots.
@usableFromInline
struct LoopBuffer<Element>: @unchecked Sendable {
    // SAFETY: chunks access disjoint index ranges, and the loop ends before the buffer does.
    @usableFromInline let pointer: UnsafeMutablePointer<Element>

    @inlinable
    init(_ pointer: UnsafeMutablePointer<Element>) { self.pointer = pointer }
}

/// A run of result slots of `parallelMap`, and whether all of them hold an element.
@usableFromInline
struct LoopSlots: Sendable {
    @usableFromInline let range: Range<Int>
    @usableFromInline let complete: Bool

    @inlinable
    init(range: Range<Int>, complete: Bool) {
        self.range = range
        self.complete = complete
    }

    /// Initializes the slots of `chunk` with `transform(slot)` (a chunk of `parallelMap`): the
    /// run, complete; or, if the loop was cancelled or `transform` throws, incomplete, with the
    /// error recorded and no element of the run left alive.
    @inlinable
    static func fill<T, E: Error>(
        _ chunk: Range<Int>, _ base: LoopBuffer<T>, _ failure: LoopFailure<E>,
        _ transform: (Int) throws(E) -> T
    ) -> LoopSlots {
        guard !failure.isCancelled else { return LoopSlots(range: chunk, complete: false) }
        var next = chunk.lowerBound
        do throws(E) {
            while next < chunk.upperBound {
                (base.pointer + next).initialize(to: try transform(next))
                next += 1
            }
            return LoopSlots(range: chunk, complete: true)
        } catch {
            (base.pointer + chunk.lowerBound).deinitialize(count: next - chunk.lowerBound)
            failure.record(error)
            return LoopSlots(range: chunk, complete: false)
        }
    }

    /// Neighbouring runs as one; if either is incomplete, the complete one's elements are
    /// destroyed so that an incomplete run holds no live element.
    @inlinable
    static func merge<T>(_ left: LoopSlots, _ right: LoopSlots, _ base: LoopBuffer<T>) -> LoopSlots {
        let range = left.range.lowerBound..<right.range.upperBound
        if left.complete && right.complete { return LoopSlots(range: range, complete: true) }
        if left.complete { (base.pointer + left.range.lowerBound).deinitialize(count: left.range.count) }
        if right.complete { (base.pointer + right.range.lowerBound).deinitialize(count: right.range.count) }
        return LoopSlots(range: range, complete: false)
    }
}
