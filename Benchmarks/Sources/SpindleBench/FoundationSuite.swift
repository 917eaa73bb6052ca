// The foundation microbenchmarks: fiber switch, fiber pool, stacks, deque.

import CSpindle
import Foundation
@_spi(Internals) import Spindle
import SpindleBenchKit

enum Suites {
    static func registerAll(_ registry: inout BenchmarkRegistry) {
        FoundationSuite.register(&registry)
        WorkloadSuite.register(&registry)
        SchedulerSuite.register(&registry)
        LoopSuite.register(&registry)
        GraphSuite.register(&registry)
        GraphBuildSuite.register(&registry)
        W9Suite.register(&registry)
        PipelineSuite.register(&registry)
        AsyncSuite.register(&registry)
        TraceSuite.register(&registry)
        FrameSuite.register(&registry)
        OffloadSuite.register(&registry)
        ResultSuite.register(&registry)
        SyncSuite.register(&registry)
        if ProcessInfo.processInfo.environment["SPINDLE_BENCH_SELFTEST"] == "1" {
            // For the CLI's own tests: a benchmark whose check value is always wrong.
            registry.register(Benchmark(BenchmarkID(group: "selftest", name: "wrong-check")) { _ in
                { _ in throw BenchmarkCheckFailure("selftest: counter = 41, expected 42") }
            })
            // A slow routine: each call spends 50 ms of wall-clock time (the time-limit test).
            registry.register(Benchmark(BenchmarkID(group: "selftest", name: "slow"), mode: .flat) { _ in
                { iterations in
                    let start = Clock.nanoseconds()
                    while Clock.nanoseconds() &- start < 50_000_000 {}
                    return UInt64(iterations) * 1000
                }
            })
            // A synthetic sweep: one iteration "takes" 1 µs divided by the worker count.
            registry.register(Benchmark(BenchmarkID(group: "selftest", name: "sweep"), sweepsThreads: true) { threads in
                { iterations in UInt64(iterations * 1000 / Swift.max(threads, 1)) }
            })
        }
    }
}

/// Keeps a value alive so the optimizer cannot drop the work that produced it.
@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}

enum FoundationSuite {
    static func register(_ registry: inout BenchmarkRegistry) {
        registry.register(Benchmark(BenchmarkID(group: "fiber", name: "round-trip"),
                                    note: "resume + suspend through Fiber.switchTo (two switches)") { _ in
            try fiberRoundTrip()
        })
        registry.register(Benchmark(BenchmarkID(group: "fiber", name: "bare-swap-round-trip"),
                                    note: "the same two switches through the raw assembly swap, no runtime glue") { _ in
            try bareSwapRoundTrip()
        })
        registry.register(Benchmark(BenchmarkID(group: "fiber", name: "fresh-context"),
                                    note: "pool get, prepare, run an entry that returns at once, put") { _ in
            try freshContext()
        })
        registry.register(Benchmark(BenchmarkID(group: "fiber", name: "pool-get-put"), note: "FiberPool.get then put, uncontended") { _ in
            let pool = try FiberPool(preallocate: 4)
            return { iterations in
                try Clock.measure { for _ in 0..<iterations { pool.put(try pool.get()) } }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "fiber", name: "stack-map-unmap"), mode: .flat,
                                    note: "mmap + guard + overflow registration + munmap: why stacks are pooled") { _ in
            { iterations in
                try Clock.measure { for _ in 0..<iterations { try Fiber.allocate().deallocate() } }
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "deque", name: "push-pop"),
                                    note: "owner push then pop, one element: every pop takes the last element (one CAS, no fence)") { _ in
            let deque = WorkStealingDeque<Int>(capacity: 1024)
            return { iterations in
                var sum = 0
                let time = Clock.measure {
                    for value in 0..<iterations {
                        deque.push(value)
                        sum &+= deque.pop()!
                    }
                }
                blackHole(sum)
                return time
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "deque", name: "push-pop-batch-256"),
                                    note: "256 pushes then 256 pops; per push+pop") { _ in
            let deque = WorkStealingDeque<Int>(capacity: 1024)
            return { iterations in
                var sum = 0
                let time = Clock.measure {
                    var remaining = iterations
                    while remaining > 0 {
                        let batch = Swift.min(256, remaining)
                        for value in 0..<batch { deque.push(value) }
                        for _ in 0..<batch { sum &+= deque.pop()! }
                        remaining -= batch
                    }
                }
                blackHole(sum)
                return time
            }
        })
        registry.register(Benchmark(BenchmarkID(group: "deque", name: "steal-uncontended"),
                                    note: "steal from a deque filled beforehand (fills untimed), one thread") { _ in
            let deque = WorkStealingDeque<Int>(capacity: 1 << 16)
            return { iterations in
                var sum = 0
                var total: UInt64 = 0
                var remaining = iterations
                while remaining > 0 {
                    let batch = Swift.min(1 << 16, remaining)
                    for value in 0..<batch { deque.push(value) }
                    total &+= Clock.measure {
                        for _ in 0..<batch {
                            if case .success(let value) = deque.steal() { sum &+= value }
                        }
                    }
                    remaining -= batch
                }
                blackHole(sum)
                return total
            }
        })
    }

    // The fiber routines keep their fiber for the life of the process: a benchmark's routine
    // may be called until the run ends, and the stacks are reclaimed at exit.

    static func fiberRoundTrip() throws -> Routine {
        let thread = Fiber.makeThreadContext()
        let fiber = try Fiber.allocate()
        fiber.prepare(entry: { control, argument in
            let fiber = Fiber(control: control)
            let back = Fiber(control: argument!.assumingMemoryBound(to: spindle_fiber_t.self))
            while fiber.switchTo(back) != nil {}
            return back.control
        }, context: nil)
        let me = UnsafeMutableRawPointer(thread.control)
        return { iterations in
            Clock.measure { for _ in 0..<iterations { thread.switchTo(fiber, passing: me) } }
        }
    }

    static func bareSwapRoundTrip() throws -> Routine {
        let thread = Fiber.makeThreadContext()
        let fiber = try Fiber.allocate()
        fiber.prepare(entry: { control, argument in
            let thread = argument!.assumingMemoryBound(to: spindle_fiber_t.self)
            while spindle_context_swap(&control.pointee.sp, thread.pointee.sp!, nil) != nil {}
            return thread
        }, context: nil)
        thread.switchTo(fiber, passing: UnsafeMutableRawPointer(thread.control))  // start it
        let token = UnsafeMutableRawPointer(bitPattern: 1)
        return { iterations in
            Clock.measure {
                for _ in 0..<iterations {
                    spindle_context_swap(&thread.control.pointee.sp, fiber.control.pointee.sp!, token)
                }
            }
        }
    }

    static func freshContext() throws -> Routine {
        let thread = Fiber.makeThreadContext()
        let pool = try FiberPool(preallocate: 1)
        let entry: Fiber.Entry = { _, argument in argument!.assumingMemoryBound(to: spindle_fiber_t.self) }
        let me = UnsafeMutableRawPointer(thread.control)
        return { iterations in
            try Clock.measure {
                for _ in 0..<iterations {
                    let fiber = try pool.get()
                    fiber.prepare(entry: entry, context: nil)
                    thread.switchTo(fiber, passing: me)
                    pool.put(fiber)
                }
            }
        }
    }
}
