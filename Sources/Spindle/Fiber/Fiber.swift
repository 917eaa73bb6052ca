import CSpindle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A context that can be switched to and from: a fiber on a guard-paged stack of its own, or an
/// OS thread's native stack ("thread context").
///
/// A `Fiber` is a handle (a pointer to the control block at the top of its stack mapping), so
/// copies refer to the same fiber. docs/fibers.md describes the switch, what it saves, and how it
/// keeps the Swift runtime's thread-local exclusivity state and the sanitizers informed.
///
/// Thread-safety: a fiber runs on one thread at a time. It may be resumed on a different thread
/// than the one it suspended on (the exclusivity state travels with it), but the caller must
/// make sure a fiber is resumed by only one thread, and only after it has finished suspending
/// (the scheduler's queues give that order).
///
/// Rules for code running on a fiber (README.md, "Rules for job code"): hold no OS lock, no
/// `@TaskLocal` binding and no `inout`/`modify` access of shared state across a switch; never
/// cache thread identity across a switch.
@_spi(Internals)
public struct Fiber: Hashable, @unchecked Sendable {
    /// A fiber's entry function: receives the fiber and the argument of the switch that started
    /// it, returns the context to switch to when it is done (that final switch passes `nil`).
    public typealias Entry = @convention(c) (
        UnsafeMutablePointer<spindle_fiber_t>, UnsafeMutableRawPointer?
    ) -> UnsafeMutablePointer<spindle_fiber_t>

    /// The life cycle of a context; see `spindle_fiber_state`.
    public enum State: UInt32, Sendable {
        /// Prepared; the first switch to it calls its entry function.
        case ready = 0
        /// Running on some thread now.
        case running = 1
        /// Switched away from; a later switch resumes it.
        case suspended = 2
        /// Its entry function returned; it may be prepared again.
        case finished = 3
    }

    /// The control block. For a fiber, it lives at the top of the fiber's stack mapping.
    public let control: UnsafeMutablePointer<spindle_fiber_t>

    @inlinable
    public init(control: UnsafeMutablePointer<spindle_fiber_t>) {
        self.control = control
    }

    /// Bytes at the top of a stack that a pooled fiber keeps resident (docs/fibers.md,
    /// "Memory"): the control block and the first frames live here.
    static let residentBudget = 16 * 1024
    /// Written at the bottom word of the resident budget when the stack is mapped; a pooled
    /// fiber whose canary changed ran deeper than the budget, and gives its lower pages back.
    static let canary: UInt64 = 0x5350_494E_444C_4521  // "SPINDLE!"

    // MARK: Creating and destroying

    /// Maps a new stack with its guard region and places a fiber control block at its top.
    ///
    /// Costs microseconds (mmap, mprotect, bookkeeping; BENCHMARK.md): take fibers from a `FiberPool` on hot
    /// paths. Thread-safe.
    /// - Throws: `SystemError` if the kernel refuses the mapping (`ENOMEM`: address space or
    ///   `vm.max_map_count` exhausted; every stack costs two mappings).
    public static func allocate(_ configuration: FiberStackConfiguration = .default) throws(SystemError) -> Fiber {
        _ = try retryingSyscall("sigaction") { spindle_overflow_install_handlers() }
        let mappingSize = configuration.guardSize + configuration.stackSize
        let mapping = try PageMemory.mapThrowing(mappingSize, stack: true)
        do {
            try PageMemory.protectNone(mapping, configuration.guardSize)
        } catch {
            PageMemory.unmap(mapping, mappingSize)
            throw error
        }
        let slot = spindle_overflow_register(mapping, configuration.guardSize, configuration.stackSize)
        if slot < 0 {
            let error = Glibc.errno
            PageMemory.unmap(mapping, mappingSize)
            throw SystemError(call: "mmap", errno: error)
        }

        // SAFETY: the control block fits in the top 256 bytes of a mapping of at least 64 KiB,
        // 64-byte aligned (page-aligned top minus a multiple of 64).
        let top = mapping + mappingSize
        let controlBytes = (MemoryLayout<spindle_fiber_t>.stride + 63) & ~63
        require(controlBytes <= 256, "spindle_fiber_t grew beyond its 256-byte budget")
        let control = (top - controlBytes).bindMemory(to: spindle_fiber_t.self, capacity: 1)
        control.initialize(to: spindle_fiber_t())
        control.pointee.kind = SPINDLE_FIBER_KIND_FIBER.rawValue
        control.pointee.state = SPINDLE_FIBER_FINISHED.rawValue  // preparable, not runnable
        control.pointee.guard_slot = slot
        control.pointee.mapping = mapping
        control.pointee.mapping_size = mappingSize
        control.pointee.guard_size = configuration.guardSize
        control.pointee.stack_bottom = mapping + configuration.guardSize
        control.pointee.stack_size = (top - controlBytes) - (mapping + configuration.guardSize)
        let fiber = Fiber(control: control)
        fiber.canaryAddress.storeBytes(of: canary, as: UInt64.self)
        return fiber
    }

    /// Unmaps the fiber's stack. The fiber must not be running or suspended (its frames would be
    /// lost silently). Thread-safe for distinct fibers.
    public func deallocate() {
        require(!isThreadContext, "deallocate() is for fibers; use releaseThreadContext() for thread contexts")
        require(state == .ready || state == .finished,
                     "deallocating a fiber that is \(state): its frames would be lost; let it finish first")
        spindle_fiber_destroy(control)
        spindle_overflow_unregister(control.pointee.guard_slot)
        let mapping = control.pointee.mapping!
        let size = control.pointee.mapping_size
        // After this line `control` points into unmapped memory.
        PageMemory.unmap(mapping, size)
    }

    /// A context for the calling thread's own stack, so it can switch to fibers and be switched
    /// back to. Also gives the thread an alternate signal stack, so a fiber stack overflow on it
    /// is reported (docs/fibers.md, "Stack overflow"). Call on the thread it describes;
    /// release with `releaseThreadContext()` on any thread when it is no longer running fibers.
    public static func makeThreadContext() -> Fiber {
        _ = try? retryingSyscall("sigaction") { spindle_overflow_install_handlers() }
        let control = UnsafeMutablePointer<spindle_fiber_t>.allocate(capacity: 1)
        control.initialize(to: spindle_fiber_t())
        spindle_fiber_init_thread(control)
        return Fiber(control: control)
    }

    /// Frees a context made by `makeThreadContext()`.
    public func releaseThreadContext() {
        require(isThreadContext, "releaseThreadContext() is for thread contexts; use deallocate() for fibers")
        control.deinitialize(count: 1)
        control.deallocate()
    }

    // MARK: Running

    /// Prepares the fiber to call `entry` with its control block and the argument of the first
    /// switch to it. `context` is stored for the entry function (`Fiber.context`).
    ///
    /// - Precondition: the fiber is `.ready` or `.finished`.
    /// - Complexity: O(1); no allocation, no system call.
    @inlinable
    public func prepare(entry: Entry, context: UnsafeMutableRawPointer?) {
        spindle_fiber_prepare(control, control.pointee.stack_bottom!, control.pointee.stack_size, entry, context)
    }

    /// Prepares the fiber to run `body`, which receives the fiber and the first switch's argument
    /// and returns the context to switch to when it is done.
    ///
    /// Allocates one box for the closure; use `prepare(entry:context:)` on hot paths.
    public func prepare(_ body: @escaping @Sendable (Fiber, UnsafeMutableRawPointer?) -> Fiber) {
        let box = Unmanaged.passRetained(ClosureBox(body)).toOpaque()
        prepare(entry: { control, argument in
            // Released here, before the final switch: that switch never returns.
            let body = Unmanaged<ClosureBox>.fromOpaque(control.pointee.context!).takeRetainedValue().body
            return body(Fiber(control: control), argument).control
        }, context: box)
    }

    private final class ClosureBox {
        let body: @Sendable (Fiber, UnsafeMutableRawPointer?) -> Fiber
        init(_ body: @escaping @Sendable (Fiber, UnsafeMutableRawPointer?) -> Fiber) { self.body = body }
    }

    /// Suspends `self` (the context running on the calling thread) and runs `target`, passing
    /// `argument`. Returns, with the argument of that switch, when some thread switches back to
    /// `self`, which may be a different thread.
    ///
    /// May switch fibers, by definition. Debug builds stop with a clear message when `self` is a
    /// fiber that holds a dynamic exclusivity access (a wait inside an `inout`/`modify` of shared
    /// state), when `self` is not running, or when `target` is running or finished.
    ///
    /// - Complexity: O(1); no allocation, no system call. BENCHMARK.md has the round-trip cost.
    @inlinable
    @discardableResult
    public func switchTo(_ target: Fiber, passing argument: UnsafeMutableRawPointer? = nil) -> UnsafeMutableRawPointer? {
        spindle_fiber_switch(control, target.control, argument)
    }

    // MARK: Inspecting

    /// The context's current state. Racy when read from another thread than the one running it.
    public var state: State { State(rawValue: control.pointee.state)! }

    /// Whether this context is an OS thread's native stack.
    public var isThreadContext: Bool { control.pointee.kind == SPINDLE_FIBER_KIND_THREAD.rawValue }

    /// The pointer passed to `prepare(entry:context:)`.
    @inlinable
    public var context: UnsafeMutableRawPointer? { control.pointee.context }

    /// Usable bytes of stack (the configured size less the control block at its top).
    public var stackSize: Int { control.pointee.stack_size }

    /// Allows this fiber to suspend while it holds a dynamic exclusivity access, which debug builds
    /// otherwise stop on. Only for tests that prove such an access survives migration.
    var allowsSuspendingInsideAccess: Bool {
        get { control.pointee.flags & UInt32(SPINDLE_FIBER_ALLOW_ACCESS_ACROSS_SUSPEND) != 0 }
        nonmutating set {
            if newValue {
                control.pointee.flags |= UInt32(SPINDLE_FIBER_ALLOW_ACCESS_ACROSS_SUSPEND)
            } else {
                control.pointee.flags &= ~UInt32(SPINDLE_FIBER_ALLOW_ACCESS_ACROSS_SUSPEND)
            }
        }
    }

    // MARK: Memory

    private var stackTop: UnsafeMutableRawPointer {
        control.pointee.mapping! + control.pointee.mapping_size
    }

    private var canaryAddress: UnsafeMutableRawPointer { stackTop - Self.residentBudget }

    /// If the stack was used deeper than the resident budget (its canary was overwritten), gives
    /// the pages below the budget back to the kernel (`madvise(MADV_DONTNEED)`); the next use
    /// faults them in again as zero pages. Returns whether it did.
    ///
    /// - Precondition: the fiber is not running or suspended (its frames would be destroyed).
    /// - Complexity: O(1) when the canary is intact; one system call otherwise.
    @discardableResult
    public func releaseDeepStackPages() -> Bool {
        require(!isThreadContext && (state == .ready || state == .finished),
                     "releasing stack pages of a fiber that is \(state)")
        guard canaryAddress.load(as: UInt64.self) != Self.canary else { return false }
        dropPagesBelowResidentBudget()
        return true
    }

    /// Returns every stack page below the resident budget to the kernel, whatever the canary
    /// says (for `FiberPool.trim()`). Same precondition as `releaseDeepStackPages()`.
    func releaseAllDeepStackPages() {
        require(!isThreadContext && (state == .ready || state == .finished),
                     "releasing stack pages of a fiber that is \(state)")
        dropPagesBelowResidentBudget()
    }

    /// `madvise(MADV_DONTNEED)` on the stack below the resident budget, then re-arms the canary
    /// (its page lies inside the budget, so it survives).
    private func dropPagesBelowResidentBudget() {
        let bottom = control.pointee.stack_bottom!
        PageMemory.discard(bottom, canaryAddress - bottom)
        canaryAddress.storeBytes(of: Self.canary, as: UInt64.self)
    }

    /// The whole mapping (guard and stack), for tests that inspect residency.
    var mapping: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: control.pointee.mapping, count: control.pointee.mapping_size)
    }

    /// The guard region below the stack.
    var guardRegion: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: control.pointee.mapping, count: control.pointee.guard_size)
    }
}
