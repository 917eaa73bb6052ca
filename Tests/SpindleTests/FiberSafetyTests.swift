import CSpindle
import CSpindleTestSupport
import Foundation
import Synchronization
import Testing
@testable @_spi(Internals) import Spindle

/// Shared state whose stored property gets dynamic exclusivity enforcement.
final class SharedLog: @unchecked Sendable {
    var entries: [String] = []
}

/// Holds an `inout` (modify) access to `entries` across `body`: the access begins before and
/// ends after, so a fiber switch inside `body` suspends in the middle of the access.
@inline(never)
func appendAround(_ entries: inout [String], _ body: () -> Void) {
    entries.append("begin")
    body()
    entries.append("end")
}


/// Runs `body` with the inline fast switch (the release build's path) or the checked one.
/// In a release build the switch is never checked, so `checked: true` runs the fast path too.
func withSwitchPath(checked: Bool, _ body: () throws -> Void) rethrows {
    #if DEBUG
    let saved = spindle_fiber_set_switch_checked(checked ? 1 : 0)
    defer { _ = spindle_fiber_set_switch_checked(saved) }
    #endif
    try body()
}

// Serialized: the switch-path toggle is process-wide.
@Suite("Fibers: Swift runtime and crash safety", .serialized)
struct FiberSafetyTests {
    @Test func theExclusivitySkipIsVerifiedOnThisPlatform() {
        // Not needed for correctness (without it every switch calls the runtime), but a failure
        // here means switches got about 9 ns slower: docs/fibers.md, "Skipping the exclusivity
        // swap", says how the head is found.
        let context = Fiber.makeThreadContext()
        defer { context.releaseThreadContext() }
        #expect(spindle_fiber_exclusivity_skip_is_enabled() == 1,
                "the Swift runtime's exclusivity head could not be located; every switch will call the runtime")
        let onAnotherThread: Int32 = onNewThread {
            let context = Fiber.makeThreadContext()
            defer { context.releaseThreadContext() }
            return spindle_fiber_exclusivity_skip_is_enabled()
        }
        #expect(onAnotherThread == 1, "the head's offset from the thread pointer differs between threads")
    }

    /// The test that guards the runtime ABI Spindle relies on (docs/fibers.md, "The Swift
    /// runtime's exclusivity state"): without the per-fiber swap, `swift_endAccess` on the second
    /// thread cannot find the access begun on the first and the process crashes.
    @Test(arguments: [true, false])
    func aFiberSuspendedInsideAModifyAccessCompletesOnAnotherThread(checked: Bool) throws {
        try withSwitchPath(checked: checked) { try suspendInsideAccessAndMigrate() }
    }

    private func suspendInsideAccessAndMigrate() throws {
        let shared = SharedLog()
        let fiber = try Fiber.allocate()
        defer { fiber.deallocate() }
        fiber.allowsSuspendingInsideAccess = true
        let threads = Locked<[pid_t]>([])
        fiber.prepare { fiber, argument in
            var back = caller(argument)
            appendAround(&shared.entries) {
                threads.withLock { $0.append(CurrentThread.id) }
                back = caller(fiber.switchTo(back))  // suspend in the middle of the access
                threads.withLock { $0.append(CurrentThread.id) }
            }
            return back
        }
        onNewThread {
            let context = Fiber.makeThreadContext()
            context.switchTo(fiber, passing: UnsafeMutableRawPointer(context.control))
            context.releaseThreadContext()
        }
        #expect(fiber.state == .suspended)
        onNewThread {
            let context = Fiber.makeThreadContext()
            context.switchTo(fiber, passing: UnsafeMutableRawPointer(context.control))
            context.releaseThreadContext()
        }
        #expect(fiber.state == .finished)
        #expect(shared.entries == ["begin", "end"])
        let seen = threads.withLock { $0 }
        #expect(seen.count == 2 && seen[0] != seen[1], "the fiber must have resumed on another thread")
    }

    @Test(arguments: [true, false])
    func eachFiberHasItsOwnAccessSet(checked: Bool) throws {
        try withSwitchPath(checked: checked) { try twoFibersOneVariable() }
    }

    private func twoFibersOneVariable() throws {
        // Fiber A suspends inside a modify access of `log.entries`; fiber B, on the same thread,
        // then reads the same property. With one access set per thread that read is reported
        // as a conflict ("Simultaneous accesses ... modification requires exclusive access") and
        // the process stops; with an access set per fiber, as Swift Concurrency keeps one per
        // task, each fiber sees only its own accesses. (What B reads is unspecified: A's inout
        // value may live in a register while A is suspended; only A's result is asserted.)
        let thread = Fiber.makeThreadContext()
        defer { thread.releaseThreadContext() }
        let a = try Fiber.allocate()
        let b = try Fiber.allocate()
        defer { a.deallocate(); b.deallocate() }
        a.allowsSuspendingInsideAccess = true
        let log = SharedLog()
        let bRead = Atomic<Int>(-1)
        a.prepare { a, _ in
            appendAround(&log.entries) { a.switchTo(thread) }
            return thread
        }
        b.prepare { _, _ in
            bRead.store(log.entries.count, ordering: .relaxed)
            return thread
        }
        thread.switchTo(a)
        thread.switchTo(b)
        thread.switchTo(a)
        #expect(a.state == .finished && b.state == .finished)
        #expect(bRead.load(ordering: .relaxed) >= 0)
        #expect(log.entries == ["begin", "end"])
    }

    #if DEBUG
    @Test func suspendingInsideAnAccessStopsDebugBuildsWithAClearMessage() async throws {
        let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
            let shared = SharedLog()
            let thread = Fiber.makeThreadContext()
            let fiber = try! Fiber.allocate()
            fiber.prepare { fiber, _ in
                appendAround(&shared.entries) { fiber.switchTo(thread) }
                return thread
            }
            thread.switchTo(fiber)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("Spindle: a fiber suspended while it holds an exclusive access"))
        #expect(stderr.contains("Finish the access before waiting"))
    }
    #endif

    @Test func aFiberStackOverflowIsReportedClearly() async throws {
        let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
            let thread = Fiber.makeThreadContext()
            let configuration = try! FiberStackConfiguration(stackSize: 64 * 1024)
            let fiber = try! Fiber.allocate(configuration)
            fiber.prepare { _, _ in
                // 1 KiB frames, 1000 deep: runs into the guard page by page, as runaway
                // recursion does.
                _ = spindle_test_recurse(1000)
                return thread
            }
            thread.switchTo(fiber)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("Spindle: fiber stack overflow."))
        #expect(stderr.contains("stack of 64 KiB"))
        #expect(stderr.contains("1024 KiB guard region"))
        #expect(stderr.contains("Raise the fiber stack size"))
    }

    /// A job calling C code with a 332 KiB frame that writes its lowest 13 KiB: with the default
    /// stack and guard, the write faults in the guard and is reported, instead of landing in the
    /// stack mapped below (another fiber's).
    @Test func aLargeCFrameInAJobFaultsInTheGuard() async throws {
        let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 2))
            // Other fibers' stacks exist around the job's.
            let counter = JobCounter()
            for _ in 0..<8 {
                jobs.run(counter: counter) { context in
                    let inner = JobCounter()
                    context.run(counter: inner) { _ in }
                    context.wait(for: inner)
                }
            }
            jobs.wait(for: counter)
            let big = JobCounter()
            jobs.run(counter: big) { _ in _ = spindle_test_large_frame(332 * 1024, 13 * 1024) }
            jobs.wait(for: big)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("Spindle: fiber stack overflow."), "\(stderr)")
    }

    @Test func anOverflowOnAWorkerThreadIsReportedToo() async throws {
        // A thread other than the main thread has no alternate signal stack unless Spindle gives
        // it one; without it the process dies with a bare SIGSEGV and no message.
        let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
            let done = DispatchSemaphore(value: 0)
            let worker = Thread {
                let thread = Fiber.makeThreadContext()
                let fiber = try! Fiber.allocate(try! FiberStackConfiguration(stackSize: 64 * 1024))
                fiber.prepare { _, _ in
                    _ = spindle_test_recurse(1000)
                    return thread
                }
                thread.switchTo(fiber)
                done.signal()
            }
            worker.start()
            done.wait()
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("Spindle: fiber stack overflow."))
    }

    @Test func otherFaultsGoToThePreviousHandler() async throws {
        // A null-pointer write on a fiber is not an overflow: no Spindle message, and the process
        // dies the ordinary way (the default action, Swift's crash handler, or a sanitizer's).
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let thread = Fiber.makeThreadContext()
            let fiber = try! Fiber.allocate()
            fiber.prepare { _, _ in
                let bad = UnsafeMutablePointer<Int>(bitPattern: 16)!
                bad.pointee = 1
                return thread
            }
            thread.switchTo(fiber)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(!stderr.contains("fiber stack overflow"))
    }
}
