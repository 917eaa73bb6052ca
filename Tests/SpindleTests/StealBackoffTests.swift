import Testing
@testable import Spindle

/// The thief's rule for fine-grained work (docs/scheduler.md, "Stealing"), driven with explicit
/// times: which bursts start a back-off, how it grows and ends, and whom it covers.
@Suite("Steal back-off")
struct StealBackoffTests {
    static let fine = StealBackoff.fineGrainNanoseconds
    static let initial = StealBackoff.initialNanoseconds
    static let maximum = StealBackoff.maximumNanoseconds

    @Test func aFineGrainedBurstBacksOffFromItsVictimOnly() {
        var backoff = StealBackoff()
        #expect(!backoff.mayBackOff)
        backoff.stole(17, from: 3, at: 1_000)
        #expect(backoff.hasBurst)
        // 17 tokens ran in less than 17 × fineGrainNanoseconds.
        let settled: UInt64 = 1_000 + 17 * Self.fine - 1
        backoff.settle(at: settled)
        #expect(!backoff.hasBurst)
        #expect(backoff.isBackingOff(from: 3, at: settled))
        #expect(backoff.isBackingOff(from: 3, at: settled + Self.initial - 1))
        #expect(!backoff.isBackingOff(from: 3, at: settled + Self.initial))
        #expect(!backoff.isBackingOff(from: 2, at: settled))
    }

    @Test func aBurstWorthItsStealStartsNoBackOff() {
        var backoff = StealBackoff()
        backoff.stole(4, from: 1, at: 0)
        backoff.settle(at: 4 * Self.fine)
        #expect(!backoff.mayBackOff)
        #expect(!backoff.isBackingOff(from: 1, at: 4 * Self.fine))
    }

    @Test func consecutiveFineGrainedBurstsDoubleTheBackOffUpToTheMaximum() {
        var backoff = StealBackoff()
        var now: UInt64 = 10_000
        var expected = Self.initial
        var steps: [UInt64] = []
        for _ in 0..<10 {
            backoff.stole(1, from: 0, at: now)
            now += 1
            backoff.settle(at: now)
            steps.append(backoff.step)
            #expect(backoff.isBackingOff(from: 0, at: now + expected - 1))
            #expect(!backoff.isBackingOff(from: 0, at: now + expected))
            now += expected
            expected = min(expected * 2, Self.maximum)
        }
        #expect(steps.first == Self.initial)
        #expect(steps.last == Self.maximum)
        #expect(zip(steps, steps.dropFirst()).allSatisfy { $1 == min($0 * 2, Self.maximum) })
    }

    @Test func aCoarseBurstFromTheSameVictimClearsTheBackOff() {
        var backoff = StealBackoff()
        backoff.stole(2, from: 5, at: 0)
        backoff.settle(at: 1)
        backoff.stole(2, from: 5, at: 2 * Self.initial)
        backoff.settle(at: 2 * Self.initial + 1)
        #expect(backoff.step == 2 * Self.initial)
        // The next burst from victim 5 ran long: the back-off ends and starts over next time.
        let start = 10 * Self.initial
        backoff.stole(2, from: 5, at: start)
        backoff.settle(at: start + 2 * Self.fine)
        #expect(!backoff.mayBackOff)
        #expect(backoff.step == 0)
        backoff.stole(2, from: 5, at: start + 3 * Self.fine)
        backoff.settle(at: start + 3 * Self.fine + 1)
        #expect(backoff.step == Self.initial)
    }

    @Test func aFineGrainedBurstFromAnotherVictimMovesTheBackOff() {
        var backoff = StealBackoff()
        backoff.stole(1, from: 1, at: 0)
        backoff.settle(at: 1)
        backoff.stole(1, from: 1, at: Self.initial + 1)
        backoff.settle(at: Self.initial + 2)
        #expect(backoff.step == 2 * Self.initial)
        // A coarse burst from another victim leaves victim 1's back-off alone.
        backoff.stole(1, from: 2, at: Self.initial + 3)
        backoff.settle(at: Self.initial + 3 + Self.fine)
        #expect(backoff.isBackingOff(from: 1, at: Self.initial + 3 + Self.fine))
        // A fine-grained one moves it to that victim, starting again from the first step.
        let now = 4 * Self.initial
        backoff.stole(1, from: 2, at: now)
        backoff.settle(at: now + 1)
        #expect(backoff.isBackingOff(from: 2, at: now + 1))
        #expect(!backoff.isBackingOff(from: 1, at: now + 1))
        #expect(backoff.step == Self.initial)
    }

    @Test func settlingWithoutABurstChangesNothing() {
        var backoff = StealBackoff()
        backoff.stole(1, from: 0, at: 0)
        backoff.settle(at: 1)
        let step = backoff.step
        backoff.settle(at: 5)
        backoff.settle(at: 50_000)
        #expect(backoff.step == step)
        #expect(backoff.isBackingOff(from: 0, at: 2))
    }
}
