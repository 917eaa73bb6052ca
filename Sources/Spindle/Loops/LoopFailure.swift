import Synchronization

/// The first error of a parallel loop and the flag that cancels its remaining chunks
/// (docs/parallel-for.md, "Errors"). Both live on the loop caller's stack; no lock: the first
/// failing chunk claims the slot with a compare-and-exchange.
@usableFromInline
struct LoopFailure<E: Error>: @unchecked Sendable {
    // SAFETY: `slot` is written once, by the chunk that moved `state` from `clear` to `claimed`,
    // and read by the loop's caller after every chunk has finished.
    @usableFromInline let state: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline let slot: UnsafeMutablePointer<E>
    @usableFromInline static var clear: Int { 0 }
    @usableFromInline static var claimed: Int { 1 }
    @usableFromInline static var stored: Int { 2 }

    @inlinable
    init(state: UnsafeMutablePointer<Atomic<Int>>, slot: UnsafeMutablePointer<E>) {
        self.state = state
        self.slot = slot
    }

    /// Runs `body` (the whole loop) with a fresh failure state; the first error recorded wins.
    @inlinable
    static func run<R>(_ body: (LoopFailure<E>) -> R) -> Result<R, E> {
        withUnsafeTemporaryAllocation(byteCount: MemoryLayout<Atomic<Int>>.size,
                                      alignment: MemoryLayout<Atomic<Int>>.alignment) { bytes in
            withUnsafeTemporaryAllocation(of: E.self, capacity: 1) { slot in
                let state = bytes.baseAddress!.bindMemory(to: Atomic<Int>.self, capacity: 1)
                state.initialize(to: Atomic(clear))
                let value = body(LoopFailure(state: state, slot: slot.baseAddress!))
                // Acquiring: pairs with `record`'s release (the loop's own joins order it too).
                if state.pointee.load(ordering: .acquiring) == stored {
                    return .failure(slot.baseAddress!.move())
                }
                return .success(value)
            }
        }
    }

    /// Whether a chunk failed: chunks that have not started skip their work.
    @inlinable
    var isCancelled: Bool { state.pointee.load(ordering: .relaxed) != Self.clear }

    /// Keeps `error` if it is the first, and cancels the rest of the loop.
    @inlinable
    func record(_ error: E) {
        guard state.pointee.compareExchange(expected: Self.clear, desired: Self.claimed, ordering: .relaxed).exchanged else {
            return
        }
        slot.initialize(to: error)
        state.pointee.store(Self.stored, ordering: .releasing)
    }
}
