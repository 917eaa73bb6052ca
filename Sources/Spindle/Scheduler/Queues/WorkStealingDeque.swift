import Synchronization

/// The deque's header: `top` and `bottom` on separate 128-byte blocks (adjacent-line prefetching
/// pairs 64-byte lines), the ring pointer on the thieves' block, and the owner's copy of `top` on
/// the second line of the owner's block.
@usableFromInline
enum DequeLayout {
    @inlinable static var top: RawSlot<Atomic<Int>> { RawSlot(line: 0) }
    @inlinable static var ring: RawSlot<Atomic<UnsafeMutableRawPointer>> { RawSlot(line: 1) }
    @inlinable static var bottom: RawSlot<Atomic<Int>> { RawSlot(line: 2) }
    @inlinable static var knownTop: RawSlot<Int> { RawSlot(line: 3) }
    @inlinable static var headerSize: Int { 4 * RawBlock.lineSize }
    /// A ring (`WorkStealingDeque.Ring`): its index mask in the first word of the first line,
    /// then the slots from the second line on.
    @inlinable static var ringSlotsOffset: Int { RawBlock.lineSize }
}

/// A growable Chase–Lev work-stealing deque of word-sized values.
///
/// D. Chase and Y. Lev, "Dynamic Circular Work-Stealing Deque", SPAA 2005, with the C11 memory
/// orderings of N. M. Lê, A. Pop, A. Cohen and F. Zappa Nardelli, "Correct and Efficient
/// Work-Stealing for Weak Memory Models", PPoPP 2013. docs/deque.md walks through the algorithm,
/// each ordering, and the races it tolerates.
///
/// Thread-safety: one *owner* thread calls `push` and `pop` (the bottom end, LIFO); any number of
/// threads call `steal` concurrently (the top end, FIFO). `approximateCount` is safe anywhere.
/// Calling `push` or `pop` from two threads at once is a data race.
///
/// Memory: the ring doubles when full. Superseded rings stay allocated until the deque is
/// destroyed, because a thief may still be reading one; since each ring is twice the size of the
/// previous, the retired rings together never exceed the current one.
///
/// `Element` must be `BitwiseCopyable` and exactly one machine word (pointers, `Int`,
/// `Unmanaged`), so that slots can be read and written atomically.
@_spi(Internals)
public final class WorkStealingDeque<Element: BitwiseCopyable>: @unchecked Sendable {
    // SAFETY: all mutable state lives in `storage` (raw memory, accessed through atomics) or in
    // `retired`, which only the owner touches; nothing is a Swift `var` that exclusivity checks
    // would see.

    /// What a steal found.
    public enum Steal {
        /// The deque looked empty.
        case empty
        /// Another thief or the owner took the top element first; trying again may succeed.
        case retry
        /// The stolen element.
        case success(Element)
    }

    @usableFromInline static var headerSize: Int { DequeLayout.headerSize }

    @usableFromInline let storage: UnsafeMutableRawPointer

    /// Rings replaced by growth; freed in `deinit`. Owner-only.
    private let retired: UnsafeMutablePointer<[UnsafeMutableRawPointer]>

    /// - Parameter capacity: initial number of slots, rounded up to a power of two (at least 2).
    public init(capacity: Int = 256) {
        require(MemoryLayout<Element>.size == MemoryLayout<UInt>.size,
                     "WorkStealingDeque holds word-sized elements; \(Element.self) is \(MemoryLayout<Element>.size) bytes")
        require(capacity > 0, "WorkStealingDeque capacity must be positive (got \(capacity))")
        let header = RawBlock.allocate(byteCount: Self.headerSize)
        storage = header.base
        header.initialize(DequeLayout.top, to: Atomic(0))
        header.initialize(DequeLayout.bottom, to: Atomic(0))
        header.initialize(DequeLayout.knownTop, to: 0)
        let ring = Ring.allocate(capacity: Swift.max(2, 1 << (Int.bitWidth - (capacity - 1).leadingZeroBitCount)))
        header.initialize(DequeLayout.ring, to: Atomic(ring.raw))
        retired = .allocate(capacity: 1)
        retired.initialize(to: [])
    }

    deinit {
        // No thief can hold a reference any more: every ring can go.
        Ring(raw: ringPointer.pointee.load(ordering: .relaxed)).deallocate()
        for raw in retired.pointee { Ring(raw: raw).deallocate() }
        retired.deinitialize(count: 1)
        retired.deallocate()
        topPointer.deinitialize(count: 1)
        bottomPointer.deinitialize(count: 1)
        ringPointer.deinitialize(count: 1)
        storage.deallocate()
    }

    @usableFromInline var topPointer: UnsafeMutablePointer<Atomic<Int>> { Self.top(storage) }
    @usableFromInline var bottomPointer: UnsafeMutablePointer<Atomic<Int>> { Self.bottom(storage) }
    @usableFromInline var ringPointer: UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer>> { Self.ring(storage) }

    /// Pushes `element` at the bottom. Owner only.
    ///
    /// - Complexity: amortized O(1); O(n) when the ring doubles.
    @inlinable
    public func push(_ element: Element) {
        Self.push(element, storage: storage, owner: Unmanaged.passUnretained(self))
    }

    /// Takes the most recently pushed element from the bottom, or nil if the deque is empty (or a
    /// thief took the last element first). Owner only.
    ///
    /// - Complexity: O(1); one sequentially consistent fence when more than one element is left,
    ///   one CAS (and no fence) for the last element.
    @inlinable
    public func pop() -> Element? {
        Self.pop(storage: storage)
    }

    /// Takes the oldest element from the top. Any thread.
    ///
    /// - Returns: `.success` with the element, `.empty`, or `.retry` when another thread won
    ///   the race for the same element.
    /// - Complexity: O(1); one sequentially consistent fence and one CAS.
    @inlinable
    public func steal() -> Steal {
        Self.steal(storage: storage)
    }

    // The operations on the raw storage, for callers that keep the storage pointer rather than
    // a reference (the scheduler's workers: no retain or release per operation).

    @inlinable
    static func top(_ storage: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<Int>> {
        RawBlock(storage, byteCount: headerSize)[DequeLayout.top]
    }

    @inlinable
    static func bottom(_ storage: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<Int>> {
        RawBlock(storage, byteCount: headerSize)[DequeLayout.bottom]
    }

    /// The owner's last acquired reading of `top` (plain memory: only the owner reads or
    /// writes it), on the owner's block away from the line thieves read `bottom` from.
    @inlinable
    static func knownTop(_ storage: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Int> {
        RawBlock(storage, byteCount: headerSize)[DequeLayout.knownTop]
    }

    @inlinable
    static func ring(_ storage: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UnsafeMutableRawPointer>> {
        RawBlock(storage, byteCount: headerSize)[DequeLayout.ring]
    }

    /// `push` on `storage`; `owner` is the deque itself, used only to grow.
    @inlinable @inline(__always)
    static func push(_ element: Element, storage: UnsafeMutableRawPointer, owner: Unmanaged<WorkStealingDeque>) {
        // Relaxed: only the owner writes `bottom`.
        let bottom = bottom(storage).pointee.load(ordering: .relaxed)
        // Relaxed: only the owner replaces the ring.
        var ring = Ring(raw: ring(storage).pointee.load(ordering: .relaxed))
        // The capacity check uses the owner's copy of `top`, a lower bound of the real one
        // (`top` never decreases), so a slot it shows free is free. Only when the ring looks
        // full is `top` itself read: thieves write its line at every steal, and reading it per
        // push would move that line to the owner and back per stolen job. docs/deque.md, "Push".
        if bottom &- knownTop(storage).pointee > ring.mask {
            let top = refreshKnownTop(storage)
            if bottom &- top > ring.mask {
                ring = owner._withUnsafeGuaranteedRef { $0.grow(top: top, bottom: bottom) }
            }
        }
        // Relaxed: published by the releasing store of `bottom` below.
        ring.slot(bottom).pointee.store(unsafeBitCast(element, to: UInt.self), ordering: .relaxed)
        // Releasing: publishes the slot write; pairs with the acquiring load of `bottom` in
        // `steal()` (Lê et al. use a release fence and a relaxed store; same effect).
        Self.bottom(storage).pointee.store(bottom &+ 1, ordering: .releasing)
    }

    /// `pop` on `storage`.
    @inlinable @inline(__always)
    static func pop(storage: UnsafeMutableRawPointer) -> Element? {
        let bottomPointer = bottom(storage)
        let topPointer = top(storage)
        let current = bottomPointer.pointee.load(ordering: .relaxed)
        // Empty for sure, without the fence: only the owner raises `bottom`, and `top` only
        // grows, so a stale (smaller) `top` that already reaches `bottom` proves emptiness.
        // docs/deque.md, "Pop".
        let staleTop = topPointer.pointee.load(ordering: .relaxed)
        if current <= staleTop { return nil }
        let bottom = current &- 1
        let ring = Ring(raw: ring(storage).pointee.load(ordering: .relaxed))
        if current &- staleTop == 1 {
            // At most one element (the real `top` is at least the stale one): race the thieves
            // for slot `staleTop` with the CAS alone, no reservation and no fence. Winning proves
            // `top` was still `staleTop`, so the slot held the one element; losing means a thief
            // took it and the deque is empty. Either way `top` ends equal to `bottom`, which is
            // untouched. docs/deque.md, "Pop", step 1.
            let word = ring.slot(bottom).pointee.load(ordering: .relaxed)
            let won = topPointer.pointee.compareExchange(
                expected: staleTop, desired: current,
                successOrdering: .sequentiallyConsistent, failureOrdering: .relaxed
            ).exchanged
            guard won else { return nil }
            // The CAS read `top` with acquire semantics: the owner's copy may take its value.
            knownTop(storage).pointee = current
            return unsafeBitCast(word, to: Element.self)
        }
        // Relaxed store followed by a seq_cst fence: the reservation of slot `bottom` must be
        // visible before we read `top`, or a thief and the owner could both take the last
        // element (the store-load ordering only a full fence gives). Pairs with the fence in
        // `steal()`.
        bottomPointer.pointee.store(bottom, ordering: .relaxed)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        var top = topPointer.pointee.load(ordering: .relaxed)
        guard top <= bottom else {
            // Empty: undo the reservation.
            bottomPointer.pointee.store(bottom &+ 1, ordering: .relaxed)
            return nil
        }
        let word = ring.slot(bottom).pointee.load(ordering: .relaxed)
        if top != bottom {
            return unsafeBitCast(word, to: Element.self)  // more than one left: no race possible
        }
        // The last element: race the thieves for it through `top`. Sequentially consistent on
        // success, as in Lê et al.: it orders with the thieves' CAS on the same location.
        let won = topPointer.pointee.compareExchange(
            expected: top, desired: top &+ 1,
            successOrdering: .sequentiallyConsistent, failureOrdering: .relaxed
        ).exchanged
        top &+= 1
        bottomPointer.pointee.store(top, ordering: .relaxed)
        return won ? unsafeBitCast(word, to: Element.self) : nil
    }

    /// `steal` on `storage`.
    @inlinable @inline(__always)
    static func steal(storage: UnsafeMutableRawPointer) -> Steal {
        let topPointer = top(storage)
        // Acquiring: pairs with the CAS of other thieves and of the owner's last-element pop.
        let top = topPointer.pointee.load(ordering: .acquiring)
        // seq_cst fence: read `top` before `bottom`; pairs with the fence in `pop()`.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        // Acquiring: pairs with the releasing store in `push()`, making the slot visible.
        let bottom = bottom(storage).pointee.load(ordering: .acquiring)
        guard top < bottom else { return .empty }
        // Acquiring: pairs with the releasing ring publication in `grow`, so the copied slots
        // are visible (Lê et al. use consume).
        let ring = Ring(raw: ring(storage).pointee.load(ordering: .acquiring))
        // Relaxed: the slot may be overwritten by the owner after a wrap-around, but then `top`
        // has moved and the CAS below fails, discarding the value read.
        let word = ring.slot(top).pointee.load(ordering: .relaxed)
        guard topPointer.pointee.compareExchange(
            expected: top, desired: top &+ 1,
            successOrdering: .sequentiallyConsistent, failureOrdering: .relaxed
        ).exchanged else {
            return .retry
        }
        return .success(unsafeBitCast(word, to: Element.self))
    }

    /// `approximateCount` on `storage`.
    @inlinable @inline(__always)
    static func approximateCount(storage: UnsafeMutableRawPointer) -> Int {
        let top = top(storage).pointee.load(ordering: .relaxed)
        let bottom = bottom(storage).pointee.load(ordering: .relaxed)
        return Swift.max(0, bottom &- top)
    }

    /// `bottom` minus the owner's copy of `top`: an upper bound of the elements held, read
    /// without touching the line thieves write. Zero proves the deque empty. Owner only.
    @inlinable @inline(__always)
    static func ownerBound(storage: UnsafeMutableRawPointer) -> Int {
        bottom(storage).pointee.load(ordering: .relaxed) &- knownTop(storage).pointee
    }

    /// Reads `top` and makes it the owner's copy; returns it. Owner only.
    @inlinable @inline(__always)
    static func refreshKnownTop(_ storage: UnsafeMutableRawPointer) -> Int {
        // Acquiring: pairs with thieves' CAS on `top`, so a slot they vacated may be reused by
        // a push that trusts the copy.
        let top = top(storage).pointee.load(ordering: .acquiring)
        knownTop(storage).pointee = top
        return top
    }

    /// The elements held at this instant, `bottom - top`, refreshing the owner's copy of `top`
    /// on the way. Owner only.
    @inlinable @inline(__always)
    static func refreshOwnerCount(storage: UnsafeMutableRawPointer) -> Int {
        let top = refreshKnownTop(storage)
        return bottom(storage).pointee.load(ordering: .relaxed) &- top
    }

    /// `bottom - top` at some recent instant: exact for the owner when no thief is active,
    /// a hint otherwise. Any thread.
    @inlinable
    public var approximateCount: Int {
        let top = topPointer.pointee.load(ordering: .relaxed)
        let bottom = bottomPointer.pointee.load(ordering: .relaxed)
        return Swift.max(0, bottom &- top)
    }

    /// The current number of slots. Owner only (a hint elsewhere).
    public var capacity: Int {
        Ring(raw: ringPointer.pointee.load(ordering: .relaxed)).mask + 1
    }

    /// Doubles the ring, copying the live elements `top..<bottom`. Owner only.
    @usableFromInline
    func grow(top: Int, bottom: Int) -> Ring {
        let old = Ring(raw: ringPointer.pointee.load(ordering: .relaxed))
        let new = Ring.allocate(capacity: (old.mask + 1) * 2)
        var index = top
        while index != bottom {
            new.slot(index).pointee.store(old.slot(index).pointee.load(ordering: .relaxed), ordering: .relaxed)
            index &+= 1
        }
        // Releasing: publishes the copied slots to thieves' acquiring load of the ring.
        ringPointer.pointee.store(new.raw, ordering: .releasing)
        retired.pointee.append(old.raw)
        return new
    }

    /// A power-of-two array of atomic words: `[mask: Int][padding][slots...]` (`DequeLayout`).
    /// The one handle type of a ring's memory.
    @usableFromInline
    struct Ring {
        @inlinable static var slotsOffset: Int { DequeLayout.ringSlotsOffset }

        @usableFromInline let raw: UnsafeMutableRawPointer

        @inlinable init(raw: UnsafeMutableRawPointer) { self.raw = raw }

        static func allocate(capacity: Int) -> Ring {
            require(capacity > 0 && capacity & (capacity - 1) == 0, "ring capacity must be a power of two")
            let raw = UnsafeMutableRawPointer.allocate(
                byteCount: slotsOffset + capacity * MemoryLayout<Atomic<UInt>>.stride, alignment: 64)
            raw.storeBytes(of: capacity - 1, as: Int.self)
            let slots = (raw + slotsOffset).bindMemory(to: Atomic<UInt>.self, capacity: capacity)
            for index in 0..<capacity { (slots + index).initialize(to: Atomic(0)) }
            return Ring(raw: raw)
        }

        func deallocate() {
            (raw + Self.slotsOffset).assumingMemoryBound(to: Atomic<UInt>.self).deinitialize(count: mask + 1)
            raw.deallocate()
        }

        @inlinable var mask: Int { raw.load(as: Int.self) }

        @inlinable
        func slot(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt>> {
            (raw + Self.slotsOffset).assumingMemoryBound(to: Atomic<UInt>.self) + (index & mask)
        }
    }
}

extension WorkStealingDeque.Steal: Sendable where Element: Sendable {}
