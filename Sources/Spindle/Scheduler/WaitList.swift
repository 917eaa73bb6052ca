import Synchronization

// The waiter list of a counter (docs/scheduler.md, "Waiting"). It knows nothing of what waits:
// each node carries the function that resumes its waiter, so the list depends only on the
// futex, and the scheduler (which parks fibers on counters) depends on the list, not the other
// way round.

/// A waiter on a counter: a parked fiber (the node is the first field of its `FiberState`) or a
/// blocked thread (the node lives on the thread's stack, followed by its futex word).
@usableFromInline
struct WaitNode {
    /// Resumes the waiter of a node taken off its list. Called once per registration; the node
    /// belongs to the waiter again as soon as it is called.
    @usableFromInline typealias Resume = @convention(c) (UnsafeMutableRawPointer) -> Void

    @usableFromInline var next: UnsafeMutablePointer<WaitNode>?
    @usableFromInline var resume: Resume

    @inlinable
    init(resume: Resume) {
        next = nil
        self.resume = resume
    }
}

/// Lock-free wait-list operations on an `Atomic<UInt>` head next to a pending count.
///
/// Protocol (docs/scheduler.md, "Waiting"): a waiter pushes its node, then reads the count; if
/// it reads zero, it takes the whole list and wakes it (itself included). The thread that takes
/// the count to zero takes the whole list and wakes it. All four operations are sequentially
/// consistent, so either the waiter sees zero or the zeroing thread sees the node: no lost
/// wake-up. Each node is taken by exactly one `exchange`, so nobody is woken twice.
@usableFromInline
enum WaitList {
    /// Pushes `node`; if `isZero()` holds afterwards, wakes the list. Returns whether `node` was
    /// among the nodes woken here (the caller then knows it is already runnable).
    static func register(
        _ node: UnsafeMutablePointer<WaitNode>, on head: borrowing Atomic<UInt>,
        isZero: () -> Bool
    ) {
        var current = head.load(ordering: .relaxed)
        while true {
            node.pointee.next = UnsafeMutablePointer(bitPattern: current)
            let (exchanged, original) = head.compareExchange(
                expected: current, desired: UInt(bitPattern: node),
                successOrdering: .sequentiallyConsistent, failureOrdering: .relaxed)
            if exchanged { break }
            current = original
        }
        if isZero() { wakeAll(head) }
    }

    /// Takes every node and resumes it. A node must not be touched after it is resumed (its
    /// memory belongs to the waiter again), so `next` is read first.
    @usableFromInline
    static func wakeAll(_ head: borrowing Atomic<UInt>) {
        var node = UnsafeMutablePointer<WaitNode>(bitPattern: head.exchange(0, ordering: .sequentiallyConsistent))
        while let current = node {
            node = current.pointee.next
            current.pointee.resume(UnsafeMutableRawPointer(current))
        }
    }

    /// The futex word that follows a blocked thread's node.
    private static func threadWord(of node: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt32>> {
        (node + MemoryLayout<WaitNode>.stride).assumingMemoryBound(to: Atomic<UInt32>.self)
    }

    /// `WaitNode.Resume` of a blocked thread: raises its futex word and wakes it.
    private static let resumeThread: WaitNode.Resume = { node in
        let word = threadWord(of: node)
        // Releasing: the waiter's acquiring load sees the counted work. After this store the
        // waiter may return and its stack node is gone; the futex address stays mapped (a
        // stack), and waking an address nobody waits on is harmless.
        word.pointee.store(1, ordering: .releasing)
        Futex.wake(word, count: 1)
    }

    /// Blocks the calling OS thread until `isOver()` holds, registering on `head`'s list and
    /// sleeping on a futex each time it does not: a wake-up meant for an earlier round of a
    /// reused counter sends the thread back to sleep.
    static func blockThread(on head: borrowing Atomic<UInt>, isOver: () -> Bool) {
        withUnsafeTemporaryAllocation(byteCount: MemoryLayout<WaitNode>.stride + 8, alignment: 16) { raw in
            let node = raw.baseAddress!.bindMemory(to: WaitNode.self, capacity: 1)
            let word = (raw.baseAddress! + MemoryLayout<WaitNode>.stride).bindMemory(to: Atomic<UInt32>.self, capacity: 1)
            word.initialize(to: Atomic(0))
            node.initialize(to: WaitNode(resume: resumeThread))
            repeat {
                // The node was taken off the list by the exchange that woke it: reusable.
                word.pointee.store(0, ordering: .relaxed)
                register(node, on: head, isZero: isOver)
                // Acquiring: pairs with the releasing store in `wakeAll`.
                while word.pointee.load(ordering: .acquiring) == 0 {
                    _ = Futex.wait(on: word, expected: 0)
                }
            } while !isOver()
        }
    }

    /// Blocks the calling OS thread until the one-waiter latch `latch` leaves `pending`: installs
    /// a stack node with a compare-and-exchange from `pending` (failing: the latch is done) and
    /// sleeps on the futex word after it until the latch's owner resumes the node
    /// (docs/scheduler.md, "Unique handles").
    static func blockThread(onLatch latch: UnsafeMutablePointer<Atomic<UInt>>, pending: UInt) {
        withUnsafeTemporaryAllocation(byteCount: MemoryLayout<WaitNode>.stride + 8, alignment: 16) { raw in
            let node = raw.baseAddress!.bindMemory(to: WaitNode.self, capacity: 1)
            let word = (raw.baseAddress! + MemoryLayout<WaitNode>.stride).bindMemory(to: Atomic<UInt32>.self, capacity: 1)
            word.initialize(to: Atomic(0))
            node.initialize(to: WaitNode(resume: resumeThread))
            // Sequentially consistent on success, acquiring on failure: the latch's completing
            // exchange then happens before whatever the caller reads next.
            let (installed, _) = latch.pointee.compareExchange(
                expected: pending, desired: UInt(bitPattern: node),
                successOrdering: .sequentiallyConsistent, failureOrdering: .acquiring)
            guard installed else { return }
            // Acquiring: pairs with the releasing store in `resumeThread`.
            while word.pointee.load(ordering: .acquiring) == 0 {
                _ = Futex.wait(on: word, expected: 0)
            }
        }
    }
}
