import CSpindle
import CSpindleTestSupport
import Foundation
import Synchronization
import Testing
@testable @_spi(Internals) import Spindle

/// A pointer-sized value to pass through switches in tests.
private func word(_ value: Int) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: value) }
private func value(_ pointer: UnsafeMutableRawPointer?) -> Int { Int(bitPattern: pointer) }


@Suite("Fibers: switching, migration, stacks")
struct FiberTests {
    @Test func fiberRunsAndPassesValuesBothWays() throws {
        let thread = Fiber.makeThreadContext()
        defer { thread.releaseThreadContext() }
        let fiber = try Fiber.allocate()
        defer { fiber.deallocate() }
        #expect(fiber.state == .finished)

        fiber.prepare { fiber, argument in
            var received = value(argument)
            for step in 1...3 {
                // Send back received * 10, receive the next number.
                received = value(fiber.switchTo(thread, passing: word(received * 10 + step)))
            }
            #expect(received == 4)
            return thread
        }
        #expect(fiber.state == .ready)
        #expect(value(thread.switchTo(fiber, passing: word(1))) == 11)
        #expect(fiber.state == .suspended)
        #expect(thread.state == .running)
        #expect(value(thread.switchTo(fiber, passing: word(2))) == 22)
        #expect(value(thread.switchTo(fiber, passing: word(3))) == 33)
        // The final switch passes nil.
        #expect(thread.switchTo(fiber, passing: word(4)) == nil)
        #expect(fiber.state == .finished)
    }

    @Test func fibersSwitchDirectlyToEachOther() throws {
        let thread = Fiber.makeThreadContext()
        defer { thread.releaseThreadContext() }
        let a = try Fiber.allocate()
        let b = try Fiber.allocate()
        defer { a.deallocate(); b.deallocate() }
        let log = Locked<[String]>([])
        b.prepare { b, _ in
            log.withLock { $0.append("b1") }
            b.switchTo(a)
            log.withLock { $0.append("b2") }
            return thread
        }
        a.prepare { a, _ in
            log.withLock { $0.append("a1") }
            a.switchTo(b)
            log.withLock { $0.append("a2") }
            return b
        }
        thread.switchTo(a)
        #expect(log.withLock { $0 } == ["a1", "b1", "a2", "b2"])
        #expect(a.state == .finished && b.state == .finished)
    }

    @Test func floatingPointControlStateIsPerContext() throws {
        // MXCSR / FPCR are callee-saved: a fiber that changes the rounding mode must not leak it
        // to the thread it switches to.
        let thread = Fiber.makeThreadContext()
        defer { thread.releaseThreadContext() }
        let fiber = try Fiber.allocate()
        defer { fiber.deallocate() }
        let modeAfterResume = Atomic<Int32>(-1)
        fiber.prepare { fiber, _ in
            fesetround(FE_TOWARDZERO)
            fiber.switchTo(thread)
            modeAfterResume.store(fegetround(), ordering: .relaxed)
            fesetround(FE_TONEAREST)
            return thread
        }
        #expect(fegetround() == FE_TONEAREST)
        thread.switchTo(fiber)
        #expect(fegetround() == FE_TONEAREST)  // the fiber's mode stayed on the fiber...
        fesetround(FE_UPWARD)
        thread.switchTo(fiber)
        #expect(modeAfterResume.load(ordering: .relaxed) == FE_TOWARDZERO)  // ...and came back with it
        #expect(fegetround() == FE_UPWARD)
        fesetround(FE_TONEAREST)
    }

    @Test func aFiberResumesOnAnotherThread() throws {
        // Each resumer passes its own thread context; the fiber records where it ran.
        let fiber = try Fiber.allocate()
        defer { fiber.deallocate() }
        let threadsSeen = Locked<[pid_t]>([])
        fiber.prepare { fiber, argument in
            var back = caller(argument)
            for _ in 0..<8 {
                threadsSeen.withLock { $0.append(CurrentThread.id) }
                back = caller(fiber.switchTo(back))
            }
            return back
        }
        for _ in 0..<8 {
            onNewThread {
                let context = Fiber.makeThreadContext()
                context.switchTo(fiber, passing: UnsafeMutableRawPointer(context.control))
                context.releaseThreadContext()
            }
        }
        let lastContext = Fiber.makeThreadContext()
        lastContext.switchTo(fiber, passing: UnsafeMutableRawPointer(lastContext.control))
        lastContext.releaseThreadContext()
        #expect(fiber.state == .finished)
        #expect(Set(threadsSeen.withLock { $0 }).count == 8)
    }

    @Test(arguments: [1, 2, 4, 8])
    func fibersMigrateBetweenThreadsUnderLoad(threads: Int) throws {
        // Every thread repeatedly takes a fiber from a shared queue, resumes it for one step and
        // puts it back. Each fiber counts its own steps on its own stack; the total must match.
        let seed = testSeed(default: 0x5EED_0000 + UInt64(threads))
        let fiberCount = 64
        let stepsPerFiber = 200
        let pool = try FiberPool(preallocate: fiberCount)
        let fibers = (0..<fiberCount).map { _ in try! pool.get() }
        let totals = Locked<[Int]>(Array(repeating: 0, count: fiberCount))
        for (index, fiber) in fibers.enumerated() {
            fiber.prepare { fiber, argument in
                var back = caller(argument)
                var localSteps = 0  // lives on the fiber's stack across migrations
                for _ in 0..<stepsPerFiber {
                    localSteps += 1
                    back = caller(fiber.switchTo(back, passing: word(1)))
                }
                totals.withLock { $0[index] = localSteps }
                return back
            }
        }
        let queue = Locked<[Int]>(Array(0..<fiberCount))
        let finished = Atomic<Int>(0)
        withTimeLimit(seconds: 120, "fiber migration, \(threads) threads, seed \(seed)") {
            onThreads(threads) { worker in
                var rng = SplitMix64(seed: seed &+ UInt64(worker))
                let context = Fiber.makeThreadContext()
                defer { context.releaseThreadContext() }
                while finished.load(ordering: .acquiring) < fiberCount {
                    let taken: Int? = queue.withLock { queue in
                        guard !queue.isEmpty else { return nil }
                        return queue.remove(at: Int.random(in: 0..<queue.count, using: &rng))
                    }
                    guard let index = taken else { continue }
                    let result = context.switchTo(fibers[index], passing: UnsafeMutableRawPointer(context.control))
                    if result == nil {
                        finished.add(1, ordering: .releasing)  // the fiber returned
                    } else {
                        queue.withLock { $0.append(index) }
                    }
                }
            }
        }
        #expect(totals.withLock { $0 } == Array(repeating: stepsPerFiber, count: fiberCount), "seed \(seed)")
        for fiber in fibers {
            #expect(fiber.state == .finished)
            pool.put(fiber)
        }
    }

    @Test func guardRegionIsInaccessibleAndBelowTheStack() throws {
        let configuration = try FiberStackConfiguration(stackSize: 128 * 1024, guardSize: 64 * 1024)
        let fiber = try Fiber.allocate(configuration)
        defer { fiber.deallocate() }
        let guardStart = UInt(bitPattern: fiber.guardRegion.baseAddress!)
        let guardEnd = guardStart + UInt(fiber.guardRegion.count)
        let stackBottom = UInt(bitPattern: fiber.control.pointee.stack_bottom)
        #expect(guardEnd == stackBottom)
        #expect(fiber.guardRegion.count == 64 * 1024)
        // The kernel merges neighbouring mappings with equal permissions, so find the lines that
        // contain the guard and the stack rather than lines that start exactly there.
        let maps = try readProcFile("/proc/self/maps")
        func mapping(containing address: UInt) -> (range: Range<UInt>, permissions: Substring)? {
            for line in maps.split(separator: "\n") {
                let fields = line.split(separator: " ")
                let bounds = fields[0].split(separator: "-").map { UInt($0, radix: 16)! }
                if bounds[0] <= address && address < bounds[1] { return (bounds[0]..<bounds[1], fields[1]) }
            }
            return nil
        }
        let guardMapping = try #require(mapping(containing: guardStart))
        #expect(guardMapping.permissions == "---p")
        #expect(guardMapping.range.upperBound == guardEnd, "the guard must end where the stack begins")
        let stackMapping = try #require(mapping(containing: stackBottom))
        #expect(stackMapping.permissions == "rw-p")
        #expect(fiber.stackSize <= 128 * 1024 && fiber.stackSize >= 128 * 1024 - 256)
    }

    @Test func configurationRejectsBadSizesClearly() throws {
        #expect(throws: FiberStackConfiguration.Error.stackSizeOutOfRange(4096)) {
            try FiberStackConfiguration(stackSize: 4096)
        }
        #expect(throws: FiberStackConfiguration.Error.guardSizeOutOfRange(0, pageSize: 4096)) {
            try FiberStackConfiguration(guardSize: 0)
        }
        let message = FiberStackConfiguration.Error.stackSizeOutOfRange(-1).description
        #expect(message.contains("-1 bytes is out of range") && message.contains("64 KiB"))
        #expect(try FiberStackConfiguration(stackSize: 100_000).stackSize == 102_400)
    }

    @Test func stackUseIsRealAndDeep() throws {
        // A job can use almost all of its stack: 200 KiB in one frame on a 256 KiB stack.
        let thread = Fiber.makeThreadContext()
        defer { thread.releaseThreadContext() }
        let fiber = try Fiber.allocate()
        defer { fiber.deallocate() }
        let result = Atomic<Int>(0)
        fiber.prepare { _, _ in
            result.store(Int(spindle_test_touch_stack(200 * 1024)), ordering: .relaxed)
            return thread
        }
        thread.switchTo(fiber)
        #expect(result.load(ordering: .relaxed) == 0x5a * 50)
    }
}
