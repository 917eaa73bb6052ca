import Synchronization

// Bounded single-producer/single-consumer channels between pipeline stages, and the wakers
// stages wait on. docs/pipelines.md, "Channels" and "Waiting", describes the protocol.

/// Where a stage waits when it cannot go on (all inputs empty, or an output full): a flag and a
/// counter. Waiting arms the flag, re-checks, and waits for the counter (parking the fiber in a
/// job, blocking the thread outside); a signaller that finds the flag armed disarms it and
/// releases the counter. One waiter at a time (the stage); any number of signallers.
final class Waker: @unchecked Sendable {
    // SAFETY: all state is atomic.
    private let armed = Atomic<Bool>(false)
    private let event = JobCounter()

    /// Returns once `ready()` holds. `ready` must read the state signallers publish before they
    /// call `signal()`.
    ///
    /// May park the calling fiber or block the calling thread. Each round adds one to the event
    /// and ends with that one subtracted (by a signaller, or by this waiter when it takes its
    /// flag back), so the event is zero between rounds; a counter wait ends only with the zero of
    /// its own round (docs/pipelines.md, "Waiting").
    func wait(on jobs: JobSystem, until ready: () -> Bool) {
        while !ready() {
            event.increment()
            armed.store(true, ordering: .sequentiallyConsistent)
            // Store-load: our flag before the re-check; pairs with the fence in the
            // signallers' publication, so either we see their state or they see our flag.
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if ready() && armed.exchange(false, ordering: .sequentiallyConsistent) {
                // Took the flag back: nobody else will subtract our one.
                event.decrement()
                return
            }
            // A signaller took the flag (or will): it subtracts our one.
            jobs.wait(for: event)
        }
    }

    /// Wakes the waiter if it is armed. Call after publishing the state it waits for, with a
    /// sequentially consistent fence between the publication and this call.
    @inline(__always)
    func signal() {
        if armed.load(ordering: .relaxed) && armed.exchange(false, ordering: .sequentiallyConsistent) {
            event.decrement()
        }
    }
}


/// A channel's control block: line 0 the published tail and the closed flag (the producer
/// writes, the consumer reads), line 1 the published head (the reverse), line 2 the producer's
/// private cursors, line 3 the consumer's. `Channel` reaches them only through these slots.
enum ChannelLayout {
    static var tail: RawSlot<Atomic<Int>> { RawSlot(line: 0) }
    static var closed: RawSlot<Atomic<Bool>> { RawSlot(line: 0, word: 1) }
    static var head: RawSlot<Atomic<Int>> { RawSlot(line: 1) }
    static var producerTail: RawSlot<Int> { RawSlot(line: 2) }
    static var producerCachedHead: RawSlot<Int> { RawSlot(line: 2, word: 1) }
    static var producerPublished: RawSlot<Int> { RawSlot(line: 2, word: 2) }
    static var consumerHead: RawSlot<Int> { RawSlot(line: 3) }
    static var consumerCachedTail: RawSlot<Int> { RawSlot(line: 3, word: 1) }
    static var consumerReleased: RawSlot<Int> { RawSlot(line: 3, word: 2) }
    static var size: Int { 4 * RawBlock.lineSize }
}

/// A bounded SPSC ring of `Element`s. One producer thread-or-fiber at a time, one consumer.
///
/// Layout: the producer's published `tail` and the consumer's published `head` are on separate
/// cache lines, and each side keeps its private cursor and a cached copy of the other side's
/// index on a line of its own, so in steady state a side touches the shared lines once per
/// batch: indices are published every `batch` items, and before the side waits for anything.
final class Channel<Element: Sendable>: @unchecked Sendable {
    // SAFETY: producer-private fields are touched only by the producer, consumer-private ones
    // only by the consumer; the shared indices are atomics; slots are handed over by the
    // releasing stores of the indices.
    let capacity: Int
    private let mask: Int
    let batch: Int
    private let slots: UnsafeMutablePointer<Element>
    /// The shared and private indices (`ChannelLayout`).
    private let control: RawBlock
    /// The consumer's waker (signalled when items or the close are published) and the
    /// producer's (signalled when slots are released).
    let consumerWaker: Waker
    let producerWaker: Waker

    init(capacity requested: Int, consumer: Waker, producer: Waker) {
        var capacity = 1
        while capacity < requested { capacity <<= 1 }
        self.capacity = capacity
        mask = capacity - 1
        batch = Swift.max(1, Swift.min(32, capacity / 4))
        slots = .allocate(capacity: capacity)
        control = .allocate(byteCount: ChannelLayout.size, alignment: RawBlock.lineSize)
        control.base.initializeMemory(as: UInt8.self, repeating: 0, count: ChannelLayout.size)
        control.initialize(ChannelLayout.tail, to: Atomic(0))
        control.initialize(ChannelLayout.closed, to: Atomic(false))
        control.initialize(ChannelLayout.head, to: Atomic(0))
        consumerWaker = consumer
        producerWaker = producer
    }

    deinit {
        // Items still queued (a cancelled run) are destroyed here.
        let head = consumerHead
        let tail = tailIndex.pointee.load(ordering: .acquiring)
        var index = head
        while index != tail {
            (slots + (index & mask)).deinitialize(count: 1)
            index &+= 1
        }
        slots.deallocate()
        control.deallocate()
    }

    private var tailIndex: UnsafeMutablePointer<Atomic<Int>> { control[ChannelLayout.tail] }
    private var closedFlag: UnsafeMutablePointer<Atomic<Bool>> { control[ChannelLayout.closed] }
    private var headIndex: UnsafeMutablePointer<Atomic<Int>> { control[ChannelLayout.head] }

    // Producer-private.
    private var producerTail: Int {
        get { control[ChannelLayout.producerTail].pointee }
        set { control[ChannelLayout.producerTail].pointee = newValue }
    }
    private var producerCachedHead: Int {
        get { control[ChannelLayout.producerCachedHead].pointee }
        set { control[ChannelLayout.producerCachedHead].pointee = newValue }
    }
    private var producerPublished: Int {
        get { control[ChannelLayout.producerPublished].pointee }
        set { control[ChannelLayout.producerPublished].pointee = newValue }
    }

    // Consumer-private.
    private var consumerHead: Int {
        get { control[ChannelLayout.consumerHead].pointee }
        set { control[ChannelLayout.consumerHead].pointee = newValue }
    }
    private var consumerCachedTail: Int {
        get { control[ChannelLayout.consumerCachedTail].pointee }
        set { control[ChannelLayout.consumerCachedTail].pointee = newValue }
    }
    private var consumerReleased: Int {
        get { control[ChannelLayout.consumerReleased].pointee }
        set { control[ChannelLayout.consumerReleased].pointee = newValue }
    }

    // MARK: Producer

    /// Appends `item` unless the channel is full. Producer only.
    @inline(__always)
    func tryPush(_ item: Element) -> Bool {
        let tail = producerTail
        if tail &- producerCachedHead == capacity {
            // Acquiring: the consumer's moves out of the released slots happen before our reuse.
            producerCachedHead = headIndex.pointee.load(ordering: .acquiring)
            if tail &- producerCachedHead == capacity { return false }
        }
        (slots + (tail & mask)).initialize(to: item)
        producerTail = tail &+ 1
        if tail &+ 1 &- producerPublished >= batch { publish() }
        return true
    }

    /// Whether a push would find room now. Producer only (reads the consumer's index afresh).
    func hasRoom() -> Bool {
        producerTail &- headIndex.pointee.load(ordering: .acquiring) < capacity
    }

    /// Makes the pushed items visible to the consumer and wakes it if it waits. Producer only.
    func publish() {
        let tail = producerTail
        guard tail != producerPublished else { return }
        producerPublished = tail
        // Releasing: the items' initialization happens before the consumer reads them.
        tailIndex.pointee.store(tail, ordering: .releasing)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        consumerWaker.signal()
    }

    /// Publishes what is pushed and marks the end of the stream. Producer only; once.
    func close() {
        publish()
        closedFlag.pointee.store(true, ordering: .releasing)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        consumerWaker.signal()
    }

    // MARK: Consumer

    /// Takes the oldest item, or nil if none is published. Consumer only.
    @inline(__always)
    func tryPop() -> Element? {
        let head = consumerHead
        if head == consumerCachedTail {
            // Acquiring: the producer's initialization of the slots.
            consumerCachedTail = tailIndex.pointee.load(ordering: .acquiring)
            if head == consumerCachedTail { return nil }
        }
        let item = (slots + (head & mask)).move()
        consumerHead = head &+ 1
        if head &+ 1 &- consumerReleased >= batch { release() }
        return item
    }

    /// Whether an item is published (or the channel is closed): what a waiting consumer waits
    /// for. Consumer only.
    func hasItemOrIsClosed() -> Bool {
        tailIndex.pointee.load(ordering: .acquiring) != consumerHead || closedFlag.pointee.load(ordering: .acquiring)
    }

    /// Whether the producer closed the channel and every item was taken. Consumer only.
    func isFinished() -> Bool {
        closedFlag.pointee.load(ordering: .acquiring) && tailIndex.pointee.load(ordering: .acquiring) == consumerHead
    }

    /// Gives the taken slots back to the producer and wakes it if it waits. Consumer only.
    func release() {
        let head = consumerHead
        guard head != consumerReleased else { return }
        consumerReleased = head
        // Releasing: our moves out of the slots happen before the producer reuses them.
        headIndex.pointee.store(head, ordering: .releasing)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        producerWaker.signal()
    }

    /// Items published and not yet taken, at some recent instant. Any thread.
    var occupancy: Int {
        Swift.max(0, tailIndex.pointee.load(ordering: .relaxed) &- headIndex.pointee.load(ordering: .relaxed))
    }
}
