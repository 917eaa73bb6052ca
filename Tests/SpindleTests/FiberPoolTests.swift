import CSpindle
import CSpindleTestSupport
import Foundation
import Synchronization
import Testing
@testable @_spi(Internals) import Spindle

/// Resident bytes of a mapping, from mincore(2).
private func residentBytes(_ region: UnsafeMutableRawBufferPointer) -> Int {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let pages = (region.count + page - 1) / page
    var vector = [UInt8](repeating: 0, count: pages)
    let result = mincore(region.baseAddress!, region.count, &vector)
    precondition(result == 0, "mincore failed: errno \(errno)")
    return vector.reduce(0) { $0 + Int($1 & 1) } * page
}

@Suite("Fiber pool: reuse, growth, memory")
struct FiberPoolTests {
    @Test func getReusesWhatPutReturned() throws {
        let pool = try FiberPool(preallocate: 2)
        #expect(pool.allocatedCount == 2 && pool.freeCount == 2)
        let a = try pool.get()
        let b = try pool.get()
        let c = try pool.get()  // grows
        #expect(pool.allocatedCount == 3 && pool.freeCount == 0)
        #expect(Set([a, b, c]).count == 3)
        pool.put(b)
        #expect(try pool.get() == b)
        pool.put(a)
        pool.put(b)
        pool.put(c)
        #expect(pool.freeCount == 3)
        pool.trim(keeping: 1)
        #expect(pool.freeCount == 1 && pool.allocatedCount == 1)
    }

    @Test func thousandsOfFibersSuspendedAtOnce() throws {
        // Every fiber starts, suspends, and waits; the pool grows to hold them all; then all
        // finish in reverse order and return to the pool for reuse.
        let count = 3000
        let thread = Fiber.makeThreadContext()
        defer { thread.releaseThreadContext() }
        let pool = try FiberPool(configuration: try FiberStackConfiguration(stackSize: 64 * 1024))
        let finished = Atomic<Int>(0)
        var fibers: [Fiber] = []
        for index in 0..<count {
            let fiber = try pool.get()
            fiber.prepare { fiber, _ in
                let mine = index  // on this fiber's stack while it is suspended
                fiber.switchTo(thread)
                finished.add(mine == index ? 1 : 0, ordering: .relaxed)
                return thread
            }
            thread.switchTo(fiber)
            fibers.append(fiber)
        }
        #expect(pool.allocatedCount == count)
        #expect(fibers.allSatisfy { $0.state == .suspended })
        for fiber in fibers.reversed() {
            thread.switchTo(fiber)
            pool.put(fiber)
        }
        #expect(finished.load(ordering: .relaxed) == count)
        #expect(pool.freeCount == count)
        _ = try pool.get()
        #expect(pool.allocatedCount == count, "a fiber from a full pool must be reused, not mapped")
    }

    @Test func aPooledFiberCostsAtMost16KiBResident() throws {
        let thread = Fiber.makeThreadContext()
        defer { thread.releaseThreadContext() }
        let pool = try FiberPool()
        let fiber = try pool.get()

        // Shallow use: a little Swift work.
        fiber.prepare { _, _ in
            _ = (0..<100).map { "\($0)" }.joined()
            return thread
        }
        thread.switchTo(fiber)
        pool.put(fiber)
        #expect(residentBytes(fiber.mapping) <= 16 * 1024)

        // Deep use: 200 KiB of a 256 KiB stack become resident...
        let again = try pool.get()
        #expect(again == fiber)
        again.prepare { _, _ in
            _ = spindle_test_touch_stack(200 * 1024)
            return thread
        }
        thread.switchTo(again)
        #expect(residentBytes(again.mapping) >= 200 * 1024)
        // ...and go back to the kernel when the fiber returns to the pool.
        pool.put(again)
        #expect(residentBytes(again.mapping) <= 16 * 1024)

        // The stack still works after its pages were dropped (they fault in as zero pages).
        let third = try pool.get()
        third.prepare { _, _ in
            _ = spindle_test_touch_stack(100 * 1024)
            return thread
        }
        thread.switchTo(third)
        #expect(third.state == .finished)
        pool.put(third)
    }

    @Test func putRejectsARunningFiber() async {
        await #expect(processExitsWith: .failure) {
            let thread = Fiber.makeThreadContext()
            let pool = try! FiberPool()
            let fiber = try! pool.get()
            fiber.prepare { fiber, _ in
                fiber.switchTo(thread)
                return thread
            }
            thread.switchTo(fiber)
            pool.put(fiber)  // suspended: its frames would be lost
        }
    }

    @Test(arguments: [1, 2, 4, 8])
    func concurrentGetAndPut(threads: Int) throws {
        let pool = try FiberPool(configuration: try FiberStackConfiguration(stackSize: 64 * 1024))
        let seed = testSeed(default: 0xF1BE5 + UInt64(threads))
        withTimeLimit(seconds: 60, "pool get/put, \(threads) threads, seed \(seed)") {
            onThreads(threads) { worker in
                var rng = SplitMix64(seed: seed &+ UInt64(worker))
                var held: [Fiber] = []
                for _ in 0..<5000 {
                    if held.isEmpty || (held.count < 8 && Bool.random(using: &rng)) {
                        held.append(try! pool.get())
                    } else {
                        pool.put(held.removeLast())
                    }
                }
                held.forEach(pool.put)
            }
        }
        #expect(pool.freeCount == pool.allocatedCount)
        #expect(pool.allocatedCount <= threads * 8)
    }
}
