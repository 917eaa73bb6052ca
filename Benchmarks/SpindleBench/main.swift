// spindle-bench: Spindle's benchmark executable.
//
// For now it runs the foundation microbenchmarks (fiber switch, fiber pool, deque) with a small
// sampling harness and prints a Markdown table; the full criterion-style CLI with peers and
// statistics replaces this harness (BENCHMARK.md).
//
//   swift run -c release spindle-bench            all microbenchmarks
//   swift run -c release spindle-bench --quick    fewer samples (smoke run)

import CSpindle
import Foundation
@_spi(Internals) import Spindle

// MARK: Harness

/// Per-operation times of one benchmark, one value per sample.
struct Measurement {
    let name: String
    let samples: [Double]  // nanoseconds per operation

    func percentile(_ p: Double) -> Double {
        let sorted = samples.sorted()
        let position = p * Double(sorted.count - 1)
        let low = Int(position.rounded(.down))
        let high = Int(position.rounded(.up))
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }
}

@inline(__always)
func now() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

let quick = CommandLine.arguments.contains("--quick")
let sampleCount = quick ? 5 : 51

/// Runs `body(iterations)` (which performs `iterations` operations) a few times to warm up, then
/// `sampleCount` timed samples; each sample's time is divided by `iterations`.
func measure(_ name: String, iterations: Int, _ body: (Int) -> Void) -> Measurement {
    for _ in 0..<3 { body(iterations) }
    var samples: [Double] = []
    samples.reserveCapacity(sampleCount)
    for _ in 0..<sampleCount {
        let start = now()
        body(iterations)
        let end = now()
        samples.append(Double(end - start) / Double(iterations))
    }
    let result = Measurement(name: name, samples: samples)
    FileHandle.standardError.write(Data("  \(name): median \(String(format: "%.2f", result.percentile(0.5))) ns\n".utf8))
    return result
}

/// Keeps a value alive so the optimizer cannot drop the work that produced it.
@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}

// MARK: Fiber benchmarks

/// Resume + suspend through Fiber.switchTo: two switches, each with the exclusivity-context swap
/// and state checks, between a thread context and a fiber.
func fiberRoundTrip() -> Measurement {
    let thread = Fiber.makeThreadContext()
    let fiber = try! Fiber.allocate()
    fiber.prepare(entry: { control, argument in
        let fiber = Fiber(control: control)
        var back = Fiber(control: argument!.assumingMemoryBound(to: spindle_fiber_t.self))
        while true {
            guard let next = fiber.switchTo(back) else { return back.control }
            back = Fiber(control: next.assumingMemoryBound(to: spindle_fiber_t.self))
        }
    }, context: nil)
    let me = UnsafeMutableRawPointer(thread.control)
    let result = measure("fiber resume+suspend round trip", iterations: 1_000_000) { iterations in
        for _ in 0..<iterations { thread.switchTo(fiber, passing: me) }
    }
    thread.switchTo(fiber, passing: nil)  // let it finish
    fiber.deallocate()
    thread.releaseThreadContext()
    return result
}

/// The bare stack swap (switch.S) without the runtime glue, for reference: what the
/// exclusivity swap and the state machine add is the difference to the round trip above.
func bareSwapRoundTrip() -> Measurement {
    let thread = Fiber.makeThreadContext()
    let fiber = try! Fiber.allocate()
    fiber.prepare(entry: { control, argument in
        let thread = argument!.assumingMemoryBound(to: spindle_fiber_t.self)
        // Raw swaps back and forth until the main side passes nil.
        while spindle_context_swap(&control.pointee.sp, thread.pointee.sp!, nil) != nil {}
        return thread
    }, context: nil)
    thread.switchTo(fiber, passing: UnsafeMutableRawPointer(thread.control))  // start it
    let token = UnsafeMutableRawPointer(bitPattern: 1)
    let result = measure("bare context swap round trip (reference)", iterations: 1_000_000) { iterations in
        for _ in 0..<iterations {
            spindle_context_swap(&thread.control.pointee.sp, fiber.control.pointee.sp!, token)
        }
    }
    spindle_context_swap(&thread.control.pointee.sp, fiber.control.pointee.sp!, nil)
    fiber.deallocate()
    thread.releaseThreadContext()
    return result
}

/// Prepare a pooled fiber, start it, and let it finish at once: the cost of running a fresh
/// context on a pooled stack (two switches and the start-up).
func fiberStartFinish() -> Measurement {
    let thread = Fiber.makeThreadContext()
    let pool = try! FiberPool(preallocate: 1)
    let entry: Fiber.Entry = { _, argument in argument!.assumingMemoryBound(to: spindle_fiber_t.self) }
    let me = UnsafeMutableRawPointer(thread.control)
    let result = measure("fiber get+prepare+run+put (fresh context)", iterations: 200_000) { iterations in
        for _ in 0..<iterations {
            let fiber = try! pool.get()
            fiber.prepare(entry: entry, context: nil)
            thread.switchTo(fiber, passing: me)
            pool.put(fiber)
        }
    }
    thread.releaseThreadContext()
    return result
}

func poolGetPut() -> Measurement {
    let pool = try! FiberPool(preallocate: 4)
    return measure("fiber pool get+put", iterations: 1_000_000) { iterations in
        for _ in 0..<iterations {
            let fiber = try! pool.get()
            pool.put(fiber)
        }
    }
}

func stackMapUnmap() -> Measurement {
    measure("fiber stack mmap+guard+munmap (never on a hot path)", iterations: 2_000) { iterations in
        for _ in 0..<iterations {
            let fiber = try! Fiber.allocate()
            fiber.deallocate()
        }
    }
}

// MARK: Deque benchmarks

func dequePushPop() -> Measurement {
    let deque = WorkStealingDeque<Int>(capacity: 1024)
    var sum = 0
    let result = measure("deque owner push+pop", iterations: 10_000_000) { iterations in
        for value in 0..<iterations {
            deque.push(value)
            sum &+= deque.pop()!
        }
    }
    blackHole(sum)
    return result
}

func dequeBatchPushPop() -> Measurement {
    // 256 pushes then 256 pops: the ring stays warm, pops see more than one element.
    let deque = WorkStealingDeque<Int>(capacity: 1024)
    var sum = 0
    let result = measure("deque owner push, then pop (batches of 256), per push+pop", iterations: 4_000_000) { iterations in
        var done = 0
        while done < iterations {
            for value in 0..<256 { deque.push(value) }
            for _ in 0..<256 { sum &+= deque.pop()! }
            done += 256
        }
    }
    blackHole(sum)
    return result
}

func dequeSteal() -> Measurement {
    // Uncontended: one thread steals a batch it pushed (untimed pushes excluded by subtracting a
    // push-only pass would add noise; instead each sample pushes N then steals N, and the push
    // cost is measured separately below).
    let deque = WorkStealingDeque<Int>(capacity: 1 << 20)
    var sum = 0
    for _ in 0..<3 {
        for value in 0..<100_000 { deque.push(value) }
        while case .success(let value) = deque.steal() { sum &+= value }
    }
    var samples: [Double] = []
    for _ in 0..<sampleCount {
        let count = 1_000_000
        for value in 0..<count { deque.push(value) }
        let start = now()
        for _ in 0..<count {
            if case .success(let value) = deque.steal() { sum &+= value }
        }
        samples.append(Double(now() - start) / Double(count))
    }
    blackHole(sum)
    let result = Measurement(name: "deque steal (uncontended)", samples: samples)
    FileHandle.standardError.write(Data("  \(result.name): median \(String(format: "%.2f", result.percentile(0.5))) ns\n".utf8))
    return result
}

// MARK: Report

func machineDescription() -> String {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
        .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    let cpus = (try? CPUSet.allowed().count) ?? 0
    var name = utsname()
    uname(&name)
    let kernel = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    return "\(model), \(cpus) allowed CPUs, Linux \(kernel)"
}

#if DEBUG
FileHandle.standardError.write(Data("warning: spindle-bench is a debug build; figures are meaningless. Use `swift run -c release spindle-bench`.\n".utf8))
#endif

FileHandle.standardError.write(Data("spindle-bench: \(sampleCount) samples per benchmark\n".utf8))
let results: [(Measurement, String)] = [
    (fiberRoundTrip(), "≤ 20"),
    (bareSwapRoundTrip(), ""),
    (fiberStartFinish(), ""),
    (poolGetPut(), ""),
    (stackMapUnmap(), ""),
    (dequePushPop(), "≤ 5"),
    (dequeBatchPushPop(), ""),
    (dequeSteal(), ""),
]

print("Machine: \(machineDescription()). Samples per benchmark: \(sampleCount).")
print("")
print("| benchmark | median ns/op | p10 | p90 | goal ns/op |")
print("|---|---:|---:|---:|---:|")
for (measurement, goal) in results {
    let cells = [0.5, 0.1, 0.9].map { String(format: "%.2f", measurement.percentile($0)) }
    print("| \(measurement.name) | \(cells[0]) | \(cells[1]) | \(cells[2]) | \(goal) |")
}
