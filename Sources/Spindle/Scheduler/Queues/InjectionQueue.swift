import Synchronization

/// The queue through which threads outside a job system submit jobs: one per priority.
///
/// An intrusive multi-producer queue (D. Vyukov's non-intrusive MPSC queue, made intrusive
/// through the link word in front of each queued record, `RecordLink`) with a try-lock on the
/// consumer side, so that any worker may consume but only one at a time. Producers never wait:
/// one `exchange` on `tail` and one store. A consumer that finds the queue in the middle of a
/// push (a producer swapped `tail` but has not linked its record yet) treats it as empty for
/// now; the producer's wake-up check that follows every push makes sure a worker looks again.
///
/// Thread-safety: `push` from any thread; `take` from workers (serialized by the try-lock);
/// `mayHaveWork` and `hasLinkedRecord` anywhere.
final class InjectionQueue: @unchecked Sendable {
    // SAFETY: `head` is only touched by the consumer holding `consumerLock`; the rest is atomic.
    // Layout: `tail` alone on its line (producers), then the consumer's line, then the stub (its
    // link word opens the third line).
    private let block: RawBlock
    private static var tailSlot: RawSlot<Atomic<UInt>> { RawSlot(line: 0) }
    private static var lockSlot: RawSlot<Atomic<Bool>> { RawSlot(line: 2) }
    private static var headSlot: RawSlot<Atomic<UInt>> { RawSlot(line: 2, word: 1) }
    /// The stub record: its link word (`RecordLink`) opens line 4, its header follows.
    private static var stubLinkSlot: RawSlot<Atomic<UInt>> { RawSlot(line: 4) }
    private static var stubOffset: Int { stubLinkSlot.offset + RecordLink.prefix }
    private static var size: Int { stubOffset + MemoryLayout<JobHeader>.stride }

    init() {
        block = .allocate(byteCount: Self.size)
        block.base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.size)
        let stub = UInt(bitPattern: block.base + Self.stubOffset)
        block.initialize(Self.tailSlot, to: Atomic(stub))
        block.initialize(Self.lockSlot, to: Atomic(false))
        block.initialize(Self.headSlot, to: Atomic(stub))
        block.initialize(Self.stubLinkSlot, to: Atomic(0))
    }

    deinit { block.deallocate() }

    private var tail: UnsafeMutablePointer<Atomic<UInt>> { block[Self.tailSlot] }
    private var consumerLock: UnsafeMutablePointer<Atomic<Bool>> { block[Self.lockSlot] }
    /// Written only by the consumer holding the lock (relaxed); read by `mayHaveWork`.
    private var head: UnsafeMutablePointer<Atomic<UInt>> { block[Self.headSlot] }
    private var stub: UInt { UInt(bitPattern: block.base + Self.stubOffset) }

    private static func link(_ record: UInt) -> UnsafeMutablePointer<Atomic<UInt>> {
        RecordLink.of(UnsafeMutableRawPointer(bitPattern: record)!)
    }

    /// Appends a record. Any thread; never blocks. The push is published by a sequentially
    /// consistent exchange that `mayHaveWork` observes, so a sequentially consistent load after
    /// it needs no fence to pair with the sleep protocol's re-check (docs/sleep.md, "Posting
    /// work").
    func push(_ record: UnsafeMutableRawPointer) {
        pushWord(UInt(bitPattern: record))
    }

    private func pushWord(_ record: UInt) {
        linkPush(swapTail(record), record)
    }

    /// A push's first half: the record becomes the tail; returns its predecessor.
    func swapTail(_ record: UInt) -> UInt {
        // Relaxed: published by the releasing store into the predecessor's link.
        Self.link(record).pointee.store(0, ordering: .relaxed)
        // Sequentially consistent: orders this push after earlier ones on `tail`, lets the
        // consumer that follows the links see the record's contents, and is the push's side of
        // the sleep protocol's store-load pair (`SleepState.workPublished`): a locked
        // instruction on x86-64, so no separate fence follows it.
        return tail.pointee.exchange(record, ordering: .sequentiallyConsistent)
    }

    /// A push's second half: links the predecessor to the record.
    func linkPush(_ previous: UInt, _ record: UInt) {
        // Releasing: pairs with the consumer's acquiring loads of links.
        Self.link(previous).pointee.store(record, ordering: .releasing)
    }

    #if DEBUG
    /// Tests only: runs in `take` between the consumer's check that its record is the tail and
    /// its re-append of the stub, to place a producer's half-done push there.
    nonisolated(unsafe) var afterTailCheck: (() -> Void)?
    #endif

    /// Whether a record may be waiting (no false negatives once a push has returned).
    ///
    /// Empty means `tail` and `head` both at the stub. `tail` alone is not enough: when the
    /// consumer re-appends the stub behind its last record while a producer is appending (the
    /// producer swapped `tail` but has not linked yet), `tail` ends at the stub with the
    /// producer's record and the consumer's last one still queued before it; `head` then still
    /// names that last record.
    @inline(__always)
    var mayHaveWork: Bool {
        // Sequentially consistent: the sleep protocol's re-check (docs/sleep.md, step 4 of
        // "Falling asleep") must not read a value older than its own announcement.
        tail.pointee.load(ordering: .sequentiallyConsistent) != stub
            || head.pointee.load(ordering: .sequentiallyConsistent) != stub
    }

    /// Whether a record is linked in (consumers' polling; may miss a push in progress, so the
    /// sleep protocol uses `mayHaveWork`).
    ///
    /// It reads only the consumers' `head` line and, when `head` is the stub, the stub's link: not
    /// `tail`, which every push exchanges. Workers poll this between jobs while they wait for an
    /// outside submitter; polling `tail` took its line away from the producer before each
    /// exchange (docs/scheduler.md, "Contended lines, batched").
    @inline(__always)
    var hasLinkedRecord: Bool {
        // Relaxed: a hint; `take` re-reads under the lock with acquiring loads.
        let first = head.pointee.load(ordering: .relaxed)
        return first != stub || Self.link(first).pointee.load(ordering: .relaxed) != 0
    }

    /// Takes up to `limit` records in FIFO order, handing each to `deliver`; returns how many.
    /// Returns 0 at once if another worker is consuming or no record is linked in yet. Workers
    /// only.
    func take(limit: Int, _ deliver: (UnsafeMutableRawPointer) -> Void) -> Int {
        guard hasLinkedRecord else { return 0 }
        // Acquiring: pairs with the releasing unlock of the previous consumer.
        guard !consumerLock.pointee.exchange(true, ordering: .acquiring) else { return 0 }
        var taken = 0
        while taken < limit, let record = popLocked() {
            deliver(UnsafeMutableRawPointer(bitPattern: record)!)
            taken += 1
        }
        consumerLock.pointee.store(false, ordering: .releasing)
        return taken
    }

    private func popLocked() -> UInt? {
        var first = head.pointee.load(ordering: .relaxed)
        var next = Self.link(first).pointee.load(ordering: .acquiring)
        if first == stub {
            guard next != 0 else { return nil }
            setHead(next)
            first = next
            next = Self.link(next).pointee.load(ordering: .acquiring)
        }
        if next != 0 {
            setHead(next)
            return first
        }
        // `first` is the last linked record. If a producer already swapped `tail` past it, its
        // link is about to appear: come back later.
        guard tail.pointee.load(ordering: .acquiring) == first else { return nil }
        #if DEBUG
        afterTailCheck?()
        #endif
        pushWord(stub)
        next = Self.link(first).pointee.load(ordering: .acquiring)
        if next != 0 {
            setHead(next)
            return first
        }
        return nil
    }

    private func setHead(_ value: UInt) {
        // Releasing is enough: the consumer that leaves `head` on a record with `tail` at the
        // stub reads its own store in its sleep re-check, so it does not sleep while that record
        // waits; other workers may read an older head, which only delays them.
        head.pointee.store(value, ordering: .releasing)
    }
}
