// The cache-line hand-off probe run around every benchmark (`--handoff-probe`): how long one
// cache line takes to pass between two CPUs right then. On a virtual machine the host may move
// the virtual CPUs between nearby and distant physical cores while the process runs; every
// figure that passes work between threads moves with it. docs/benchmarking.md, "Hand-off probe".

import Foundation
@_spi(Internals) import Spindle
import SpindleBenchKit
import Synchronization

/// Two threads, pinned to the first and the last allowed CPU, pass a count back and forth
/// through one cache line; the time per one-way pass is the probe's reading.
final class HandoffProbe: @unchecked Sendable {
    // SAFETY: the threads share only atomics; `word` lives in raw memory that outlives both (the
    // caller waits for both `finished` signals before the probe is released).
    private let memory: UnsafeMutableRawPointer
    private let word: UnsafeMutablePointer<Atomic<Int>>
    private let finished = DispatchSemaphore(value: 0)
    /// The lead's reading as a bit pattern, 0 for none (published by `finished`).
    private let reading = Atomic<UInt64>(0)

    /// Hand-offs timed per probe in `blocks` blocks, after `warmUp` untimed ones (the helper's
    /// start and pinning). The reading is the fastest block's: a thread of the benchmark still
    /// running on one of the CPUs (a pool winding down) slows some blocks, while CPUs placed
    /// farther apart slow all of them.
    static let handoffs = 20_000
    static let blocks = 4
    static let warmUp = 1_000
    /// A probe that takes longer than this (both CPUs busy with other work) gives up: no reading.
    static let timeLimitNanoseconds: UInt64 = 1_000_000_000
    /// Written instead of a count to tell the helper to stop.
    private static let abandoned = -1

    private init() {
        // The word alone on its 128 bytes (the adjacent-line prefetcher pairs lines).
        memory = .allocate(byteCount: 256, alignment: 128)
        word = (memory + 128).bindMemory(to: Atomic<Int>.self, capacity: 1)
        word.initialize(to: Atomic(0))
    }

    deinit { memory.deallocate() }

    /// One probe: nanoseconds per one-way hand-off between the first and the last CPU the process
    /// may use, or nil with fewer than two CPUs or past the time limit. Both sides run on threads
    /// of their own, so the calling thread's placement is left as it was; it blocks until they
    /// are done.
    static func measure() -> Double? {
        guard let all = try? ProcessCPUs.all(), all.count > 1, let first = all.min(), let last = all.max() else {
            return nil
        }
        let probe = HandoffProbe()
        let lead = Thread { [probe] in
            defer { probe.finished.signal() }
            guard (try? CurrentThread.pin(to: [first])) != nil else {
                probe.word.pointee.store(Self.abandoned, ordering: .releasing)
                return
            }
            if let nanoseconds = probe.lead() { probe.reading.store(nanoseconds.bitPattern, ordering: .relaxed) }
        }
        let helper = Thread { [probe] in
            defer { probe.finished.signal() }
            try? CurrentThread.pin(to: [last])
            probe.answer()
        }
        lead.start()
        helper.start()
        probe.finished.wait()
        probe.finished.wait()
        let bits = probe.reading.load(ordering: .relaxed)
        return bits == 0 ? nil : Double(bitPattern: bits)
    }

    /// The lead's side: writes the odd counts, times each block of hand-offs after the warm-up
    /// (a block ends when its last count arrives) and returns the fastest block's time per
    /// hand-off.
    private func lead() -> Double? {
        let deadline = Clock.nanoseconds() &+ Self.timeLimitNanoseconds
        let block = Self.handoffs / Self.blocks
        let last = Self.warmUp + Self.handoffs
        var fastest = UInt64.max
        var start: UInt64 = 0
        var count = 0
        while true {
            guard spin(until: count, deadline: deadline) else {
                word.pointee.store(Self.abandoned, ordering: .releasing)
                return nil
            }
            if count >= Self.warmUp && (count - Self.warmUp) % block == 0 {
                let now = Clock.nanoseconds()
                if count > Self.warmUp { fastest = Swift.min(fastest, now &- start) }
                start = now
            }
            if count == last { return Double(fastest) / Double(block) }
            word.pointee.store(count + 1, ordering: .releasing)
            count += 2
        }
    }

    /// The helper's side: answers each odd count with the next even one until the last.
    private func answer() {
        var expected = 1
        while expected < Self.handoffs + Self.warmUp {
            var value = word.pointee.load(ordering: .acquiring)
            while value != expected {
                if value == Self.abandoned { return }
                value = word.pointee.load(ordering: .acquiring)
            }
            // Not a plain store: the lead may have written `abandoned` since the load.
            guard word.pointee.compareExchange(expected: expected, desired: expected + 1,
                                               ordering: .releasing).exchanged else { return }
            expected += 2
        }
    }

    /// Spins until the word reads `value`; false past `deadline` (checked every 4,096 reads).
    private func spin(until value: Int, deadline: UInt64) -> Bool {
        var reads = 0
        while word.pointee.load(ordering: .acquiring) != value {
            reads &+= 1
            if reads & 4095 == 0 && Clock.nanoseconds() > deadline { return false }
        }
        return true
    }
}
