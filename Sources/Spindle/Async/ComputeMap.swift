// `computeMap`: an async sequence whose elements are transformed as jobs, in order, with a
// bounded number in flight. docs/async.md, "computeMap".

extension AsyncSequence where Element: Sendable {
    /// The elements of this sequence transformed by `transform`, each as a job on `jobs`, and
    /// delivered in the order of this sequence.
    ///
    /// ```swift
    /// for try await thumbnail in requests.computeMap(on: jobs) { request in render(request) } {
    ///     send(thumbnail)
    /// }
    /// ```
    ///
    /// At most `maxInFlight` elements are taken from this sequence and not yet delivered
    /// (backpressure: a slow consumer stops the reading of this sequence). Iteration pulls an
    /// element whenever the window has room and the oldest result is not ready yet, so the
    /// transforms of up to `maxInFlight` elements run in parallel.
    ///
    /// Errors: the first error, from this sequence or from a transform, is thrown by the
    /// iterator in order (after the results of the elements before it); the iteration then ends.
    /// Transforms already started run to completion and their results are dropped.
    ///
    /// - Parameters:
    ///   - maxInFlight: the window; at least 1. Default: twice the number of workers.
    ///   - priority: the priority of the transform jobs.
    /// - Precondition: `maxInFlight >= 1`.
    /// - Complexity: one job and one small heap allocation per element.
    public func computeMap<Output: Sendable>(
        on jobs: JobSystem, maxInFlight: Int? = nil, priority: Priority = .normal,
        _ transform: @escaping @Sendable (Element) throws -> Output
    ) -> ComputeMapSequence<Self, Output> {
        let window = maxInFlight ?? 2 * jobs.workerCount
        require(window >= 1, "computeMap(on:maxInFlight: \(window)): the window must hold at least one element")
        return ComputeMapSequence(base: self, jobs: jobs, window: window, priority: priority, transform: transform)
    }
}

extension Sequence where Element: Sendable {
    /// `AsyncSequence.computeMap(on:maxInFlight:priority:_:)` over the elements of this
    /// (synchronous) sequence: each element transformed as a job on `jobs`, delivered in order
    /// to the awaiting iteration, at most `maxInFlight` taken and not yet delivered.
    ///
    /// ```swift
    /// for try await thumbnail in files.computeMap(on: jobs) { render($0) } { upload(thumbnail) }
    /// ```
    ///
    /// - Precondition: `maxInFlight >= 1`.
    /// - Complexity: one job and one small heap allocation per element.
    public func computeMap<Output: Sendable>(
        on jobs: JobSystem, maxInFlight: Int? = nil, priority: Priority = .normal,
        _ transform: @escaping @Sendable (Element) throws -> Output
    ) -> ComputeMapSequence<SequenceElements<Self>, Output> {
        SequenceElements(base: self).computeMap(on: jobs, maxInFlight: maxInFlight, priority: priority, transform)
    }
}

/// A synchronous sequence read as an `AsyncSequence` (its iterator never suspends), for
/// `Sequence.computeMap`.
public struct SequenceElements<Base: Sequence>: AsyncSequence {
    public typealias Element = Base.Element
    let base: Base

    public func makeAsyncIterator() -> Iterator { Iterator(base: base.makeIterator()) }

    /// Reads the base sequence's iterator.
    public struct Iterator: AsyncIteratorProtocol {
        var base: Base.Iterator
        public mutating func next() async -> Base.Element? { base.next() }
    }
}

/// The sequence `computeMap(on:maxInFlight:priority:_:)` returns.
///
/// Iterate it from one task at a time (like any async iterator).
public struct ComputeMapSequence<Base: AsyncSequence, Output: Sendable>: AsyncSequence where Base.Element: Sendable {
    public typealias Element = Output

    let base: Base
    let jobs: JobSystem
    let window: Int
    let priority: Priority
    let transform: @Sendable (Base.Element) throws -> Output

    public func makeAsyncIterator() -> Iterator {
        Iterator(base: base.makeAsyncIterator(), sequence: self)
    }

    /// The iterator of a `ComputeMapSequence`.
    public struct Iterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let sequence: ComputeMapSequence
        /// Transforms in flight, oldest first (a ring over `slots` from `head`).
        var slots: [ComputeSlot<Output>] = []
        var head = 0
        var baseEnded = false
        /// An error of the base sequence, thrown once the results before it are delivered.
        var baseError: (any Error)?
        var finished = false

        init(base: Base.AsyncIterator, sequence: ComputeMapSequence) {
            self.base = base
            self.sequence = sequence
        }

        var inFlight: Int { slots.count - head }

        public mutating func next() async throws -> Output? {
            guard !finished else { return nil }
            // Keep the window full while the oldest result is not ready.
            while !baseEnded && inFlight < sequence.window && (inFlight == 0 || !slots[head].isReady) {
                do {
                    guard let element = try await base.next() else {
                        baseEnded = true
                        break
                    }
                    start(element)
                } catch {
                    baseEnded = true
                    baseError = error
                }
            }
            guard inFlight > 0 else {
                finished = true
                if let error = baseError { throw error }
                return nil
            }
            let slot = slots[head]
            head += 1
            if head == slots.count || head >= 64 && head * 2 >= slots.count {
                slots.removeFirst(head)
                head = 0
            }
            switch await slot.result() {
            case .success(let value):
                return value
            case .failure(let error):
                finished = true
                throw error
            }
        }

        private mutating func start(_ element: Base.Element) {
            let slot = ComputeSlot<Output>()
            let transform = sequence.transform
            sequence.jobs.run(priority: sequence.priority) { _ in
                slot.fulfill(Result { try transform(element) })
            }
            slots.append(slot)
        }
    }
}

/// One transform's result: filled by its job, awaited by the iterator.
final class ComputeSlot<Output: Sendable>: @unchecked Sendable {
    // SAFETY: `state` is only touched with `lock` held.
    private enum State {
        case pending
        case waiting(UnsafeContinuation<Result<Output, any Error>, Never>)
        case done(Result<Output, any Error>)
    }
    private let lock = Lock()
    private var state = State.pending

    var isReady: Bool {
        lock.withLock { if case .done = state { true } else { false } }
    }

    func fulfill(_ result: Result<Output, any Error>) {
        lock.lock()
        if case .waiting(let continuation) = state {
            state = .done(result)
            lock.unlock()
            continuation.resume(returning: result)
        } else {
            state = .done(result)
            lock.unlock()
        }
    }

    func result() async -> Result<Output, any Error> {
        await withUnsafeContinuation { continuation in
            lock.lock()
            if case .done(let result) = state {
                lock.unlock()
                continuation.resume(returning: result)
            } else {
                state = .waiting(continuation)
                lock.unlock()
            }
        }
    }
}
extension ComputeMapSequence: Sendable where Base: Sendable {}
