import CSpindle
import Synchronization

/// A pool of fibers with stacks of one configuration, so that getting a fiber costs a few
/// nanoseconds instead of the microseconds of mapping a stack (BENCHMARK.md).
///
/// Free fibers are kept in an intrusive list threaded through their control blocks
/// (`pool_next`), so the pool never allocates to hold them and grows without bound: `get()` maps
/// a new stack when the list is empty. A fiber whose stack was used deeper than 16 KiB gives
/// the pages below that mark back to the kernel when it is returned (docs/fibers.md, "Memory"),
/// so an idle pooled fiber costs at most 16 KiB of resident memory in the common case.
///
/// Thread-safety: all methods are thread-safe (one mutex around the free list; a scheduler
/// keeps a small per-worker cache in front of it).
@_spi(Internals)
public final class FiberPool: @unchecked Sendable {
    // SAFETY: `head` and `count` are only read or written with `lock` held.
    public let configuration: FiberStackConfiguration

    private let lock = Lock()
    private var head: UnsafeMutablePointer<spindle_fiber_t>?
    private var count = 0
    private let allocated = Atomic<Int>(0)

    /// - Parameter preallocate: stacks to map now, so the first `get()` calls are fast.
    /// - Throws: `SystemError` if mapping a preallocated stack fails.
    public init(configuration: FiberStackConfiguration = .default, preallocate: Int = 0) throws(SystemError) {
        require(preallocate >= 0, "FiberPool preallocate count must not be negative (got \(preallocate))")
        self.configuration = configuration
        for _ in 0..<preallocate {
            put(try Fiber.allocate(configuration))
        }
        // `put` does not count allocations: the preallocated fibers are this pool's.
        allocated.wrappingAdd(preallocate, ordering: .relaxed)
    }

    /// Unmaps the free fibers. Fibers still handed out are not the pool's any more: whoever holds
    /// them deallocates them (`Fiber.deallocate()`).
    deinit {
        var next = head
        while let control = next {
            next = control.pointee.pool_next
            Fiber(control: control).deallocate()
        }
    }

    /// A fiber ready to be prepared (state `.ready` or `.finished`).
    ///
    /// - Complexity: O(1); maps a new stack (microseconds) only when the pool is empty.
    /// - Throws: `SystemError` when a new stack cannot be mapped.
    public func get() throws(SystemError) -> Fiber {
        try get(preparingNew: { _ in })
    }

    /// `get()`, calling `prepareNew` on a fiber whose stack was just mapped (nothing has touched
    /// its stack pages yet besides the control block): the place to set their NUMA policy.
    public func get(preparingNew prepareNew: (Fiber) -> Void) throws(SystemError) -> Fiber {
        let reused: UnsafeMutablePointer<spindle_fiber_t>? = lock.withLock {
            guard let first = head else { return nil }
            head = first.pointee.pool_next
            count -= 1
            return first
        }
        if let reused {
            reused.pointee.pool_next = nil
            return Fiber(control: reused)
        }
        let fiber = try Fiber.allocate(configuration)
        allocated.wrappingAdd(1, ordering: .relaxed)
        prepareNew(fiber)
        return fiber
    }

    /// Returns a fiber to the pool. If its stack was used deeper than the resident budget, the
    /// deep pages go back to the kernel first (one `madvise`).
    ///
    /// - Precondition: `fiber` is not running or suspended, and its stack has this pool's
    ///   configuration.
    /// - Complexity: O(1).
    public func put(_ fiber: Fiber) {
        require(!fiber.isThreadContext, "FiberPool.put: a thread context is not a pooled fiber")
        require(fiber.state == .ready || fiber.state == .finished,
                     "FiberPool.put: the fiber is \(fiber.state); only a fiber that finished (or never started) can be pooled")
        require(fiber.control.pointee.guard_size == configuration.guardSize
                     && fiber.control.pointee.mapping_size == configuration.guardSize + configuration.stackSize,
                     "FiberPool.put: the fiber's stack has another configuration than this pool's")
        fiber.releaseDeepStackPages()
        let control = fiber.control
        lock.withLock {
            control.pointee.pool_next = head
            head = control
            count += 1
        }
    }

    /// Unmaps free fibers beyond `keeping`, and releases the deep stack pages of those kept.
    /// For quiet periods (after a burst of waits created many fibers).
    ///
    /// - Complexity: O(number of free fibers), with a system call per fiber.
    public func trim(keeping: Int = 0) {
        require(keeping >= 0, "FiberPool.trim(keeping:) needs a count of zero or more (got \(keeping))")
        var released: UnsafeMutablePointer<spindle_fiber_t>?
        var kept: [UnsafeMutablePointer<spindle_fiber_t>] = []
        lock.withLock {
            var next = head
            var remaining = keeping
            head = nil
            count = 0
            while let control = next {
                next = control.pointee.pool_next
                if remaining > 0 {
                    remaining -= 1
                    kept.append(control)
                } else {
                    control.pointee.pool_next = released
                    released = control
                }
            }
        }
        var freedCount = 0
        while let control = released {
            released = control.pointee.pool_next
            Fiber(control: control).deallocate()
            freedCount += 1
        }
        allocated.wrappingSubtract(freedCount, ordering: .relaxed)
        for control in kept {
            Fiber(control: control).releaseAllDeepStackPages()
        }
        lock.withLock {
            for control in kept.reversed() {
                control.pointee.pool_next = head
                head = control
                count += 1
            }
        }
    }

    /// Fibers waiting in the pool now.
    public var freeCount: Int { lock.withLock { count } }

    /// Fibers this pool has mapped and not unmapped (in the pool or handed out).
    public var allocatedCount: Int { allocated.load(ordering: .relaxed) }
}
