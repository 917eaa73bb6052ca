import Foundation
import Synchronization
import Testing
@testable @_spi(Internals) import Spindle

@Suite("Chase-Lev deque")
struct WorkStealingDequeTests {
    /// Random pushes, pops and steals on one thread against an array: pop takes the newest,
    /// steal the oldest. A capacity of 2 makes the ring grow many times.
    @Test(arguments: [1, 2, 3, 4, 5])
    func matchesAnArrayModel(seedIndex: UInt64) {
        let seed = testSeed(default: 0xDEC0_0000 + seedIndex)
        var rng = SplitMix64(seed: seed)
        let deque = WorkStealingDeque<Int>(capacity: 2)
        var model: [Int] = []
        var next = 1
        for step in 0..<200_000 {
            // Bias toward pushes early, toward removal late, so sizes vary widely.
            let roll = Int.random(in: 0..<100, using: &rng)
            let pushBias = step < 100_000 ? 55 : 45
            if roll < pushBias {
                deque.push(next)
                model.append(next)
                next += 1
            } else if roll < pushBias + (100 - pushBias) / 2 {
                let got = deque.pop()
                let expected = model.popLast()
                if got != expected {
                    Issue.record("pop at step \(step): got \(String(describing: got)), expected \(String(describing: expected)); seed \(seed)")
                    return
                }
            } else {
                let got: Int?
                switch deque.steal() {
                case .success(let value): got = value
                case .empty: got = nil
                case .retry:
                    Issue.record("steal reported a race with no other thread; seed \(seed)")
                    return
                }
                let expected = model.isEmpty ? nil : model.removeFirst()
                if got != expected {
                    Issue.record("steal at step \(step): got \(String(describing: got)), expected \(String(describing: expected)); seed \(seed)")
                    return
                }
            }
            if deque.approximateCount != model.count {
                Issue.record("count \(deque.approximateCount) != model \(model.count) at step \(step); seed \(seed)")
                return
            }
        }
        #expect(deque.capacity >= 2)
    }

    @Test func growsAndKeepsOrder() {
        let deque = WorkStealingDeque<Int>(capacity: 4)
        for value in 0..<1000 { deque.push(value) }
        #expect(deque.capacity == 1024)
        #expect(deque.approximateCount == 1000)
        if case .success(let first) = deque.steal() { #expect(first == 0) } else { Issue.record("steal failed") }
        #expect(deque.pop() == 999)
        var remaining: [Int] = []
        while let value = deque.pop() { remaining.append(value) }
        #expect(remaining == Array((1...998).reversed()))
        #expect(deque.pop() == nil)
        if case .empty = deque.steal() {} else { Issue.record("steal from an empty deque must report .empty") }
    }

    /// Slots that thieves vacated are reused without growing the ring, although the owner's
    /// capacity check starts from its own copy of `top` (docs/deque.md, push step 2).
    @Test func reusesStolenSlotsWithoutGrowing() {
        let deque = WorkStealingDeque<Int>(capacity: 8)
        for round in 0..<100 {
            for value in 0..<8 { deque.push(round * 8 + value) }
            for value in 0..<8 {
                guard case .success(let stolen) = deque.steal(), stolen == round * 8 + value else {
                    Issue.record("round \(round): steal \(value) did not return \(round * 8 + value)")
                    return
                }
            }
        }
        #expect(deque.capacity == 8)
        #expect(deque.approximateCount == 0)
    }

    @Test func holdsPointers() {
        let deque = WorkStealingDeque<UnsafeMutableRawPointer>()
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        defer { buffer.deallocate() }
        deque.push(buffer)
        deque.push(buffer + 8)
        #expect(deque.pop() == buffer + 8)
        if case .success(let pointer) = deque.steal() { #expect(pointer == buffer) } else { Issue.record("steal failed") }
    }

    /// One owner pushes `items` values (popping some itself, at random) while `thieves` threads
    /// steal. Every value must be taken exactly once: none lost, none duplicated.
    @Test(arguments: [1, 2, 4, 8])
    func everyItemIsTakenExactlyOnce(thieves: Int) {
        let seed = testSeed(default: 0x57EA_1000 + UInt64(thieves))
        takeEveryItemOnce(thieves: thieves, items: 2_000_000, seed: seed) { deque, items, rng, taken, _ in
            for value in 0..<items {
                deque.push(value)
                if rng.next() % 3 == 0, let popped = deque.pop() { taken.append(popped) }
            }
        }
    }

    /// The race for a deque's last element, over and over: the owner pushes one or two values and
    /// pops until empty, so most pops take the last element (the pop's CAS-only path) while
    /// thieves steal the same slots.
    @Test(arguments: [1, 2, 4])
    func lastElementGoesToExactlyOneTaker(thieves: Int) {
        let seed = testSeed(default: 0x1A57_0000 + UInt64(thieves))
        takeEveryItemOnce(thieves: thieves, items: 1_000_000, seed: seed) { deque, items, rng, taken, thiefHasStolen in
            var value = 0
            while value < items {
                let burst = Swift.min(items - value, 1 + Int(rng.next() % 2))
                for _ in 0..<burst { deque.push(value); value += 1 }
                // Until some thief has taken a value, the burst waits for one: an owner this fast
                // could otherwise finish before any thief is scheduled, leaving the race untried.
                while !thiefHasStolen() { sched_yield() }
                while let popped = deque.pop() { taken.append(popped) }
            }
        }
    }

    /// Runs `owner` (which pushes `0..<items` and may pop; its last argument says whether any
    /// thief has stolen yet) on one thread while `thieves` threads steal, then checks that every
    /// value was taken exactly once and that thieves took some.
    private func takeEveryItemOnce(
        thieves: Int, items: Int, seed: UInt64,
        owner: @escaping @Sendable (WorkStealingDeque<Int>, Int, inout SplitMix64, inout [Int], () -> Bool) -> Void
    ) {
        let deque = WorkStealingDeque<Int>(capacity: 64)
        let ownerDone = Atomic<Bool>(false)
        let anyStolen = Atomic<Bool>(false)
        let takenBy = UnsafeMutableBufferPointer<[Int]>.allocate(capacity: thieves + 1)
        takenBy.initialize(repeating: [])
        defer { takenBy.deinitialize(); takenBy.deallocate() }
        let counts = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: items)
        counts.initialize(repeating: 0)
        defer { counts.deallocate() }
        nonisolated(unsafe) let results = takenBy

        withTimeLimit(seconds: 300, "deque stress, \(thieves) thieves, seed \(seed)") {
            onThreads(thieves + 1) { index in
                var taken: [Int] = []
                taken.reserveCapacity(items / (thieves + 1))
                if index == 0 {
                    // The owner.
                    var rng = SplitMix64(seed: seed)
                    owner(deque, items, &rng, &taken) { anyStolen.load(ordering: .relaxed) }
                    while let popped = deque.pop() { taken.append(popped) }
                    ownerDone.store(true, ordering: .releasing)
                } else {
                    while true {
                        switch deque.steal() {
                        case .success(let value):
                            taken.append(value)
                            if taken.count == 1 { anyStolen.store(true, ordering: .relaxed) }
                        case .retry: continue
                        case .empty:
                            // The owner drains the deque before it says it is done, so empty
                            // after that means finished.
                            if ownerDone.load(ordering: .acquiring) {
                                if case .success(let value) = deque.steal() { taken.append(value); continue }
                                results[index] = taken
                                return
                            }
                        }
                    }
                }
                results[index] = taken
            }
        }
        var total = 0
        for taken in takenBy {
            total += taken.count
            for value in taken { counts[value] &+= 1 }
        }
        let lost = counts.indices.filter { counts[$0] == 0 }
        let duplicated = counts.indices.filter { counts[$0] > 1 }
        #expect(total == items, "seed \(seed)")
        #expect(lost.isEmpty, "lost \(lost.count) items, first \(lost.prefix(5)); seed \(seed)")
        #expect(duplicated.isEmpty, "duplicated \(duplicated.count) items, first \(duplicated.prefix(5)); seed \(seed)")
        #expect(takenBy[1...].contains { !$0.isEmpty } || thieves == 0, "no thief ever stole: the test did not exercise stealing; seed \(seed)")
    }
}
