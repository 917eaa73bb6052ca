import Testing
@testable import Spindle

/// The idle policy's spin budget (docs/sleep.md, "Spinning on a shared machine"), with explicit
/// times and a counter of involuntary context switches in place of the kernel's.
struct IdlePolicyTests {
    let maximum: UInt64 = 50_000

    @Test func aQuietWorkerSpinsTheWholeBudget() {
        var policy = IdlePolicy(maximum: maximum)
        #expect(policy.spinBudget(at: 1_000_000) { 3 } == maximum)
        // No new involuntary switch at the next check: still the whole budget.
        #expect(policy.spinBudget(at: 3_000_000) { 3 } == maximum)
        #expect(!policy.contended)
    }

    @Test func aContendedWorkerDoesNotSpinUntilAQuietCheck() {
        var policy = IdlePolicy(maximum: maximum)
        _ = policy.spinBudget(at: 1_000_000) { 3 }
        // The thread lost its CPU involuntarily since the last check.
        #expect(policy.spinBudget(at: 2_500_000) { 5 } == 0)
        #expect(policy.contended)
        // Within the check interval the verdict stands, whatever the counter says.
        var read = false
        #expect(policy.spinBudget(at: 2_600_000) { read = true; return 5 } == 0)
        #expect(!read)
        // A later check with no new switch: spinning again.
        #expect(policy.spinBudget(at: 4_000_000) { 5 } == maximum)
        #expect(!policy.contended)
    }

    @Test func aShortSleepRestoresTheBudgetAndLongSleepsHalveIt() {
        var policy = IdlePolicy(maximum: maximum)
        // Slept far longer than spinning could cover: the budget halves each time.
        policy.fellAsleep(at: 0)
        policy.wokeUp(at: 17 * maximum)
        #expect(policy.budget == maximum / 2)
        policy.fellAsleep(at: 100 * maximum)
        policy.wokeUp(at: 200 * maximum)
        #expect(policy.budget == maximum / 4)
        // Down to nothing once it is small.
        for round in 0..<8 {
            let start = UInt64(1000 + 100 * round) * maximum
            policy.fellAsleep(at: start)
            policy.wokeUp(at: start + 50 * maximum)
        }
        #expect(policy.budget == 0)
        #expect(policy.spinBudget(at: 1) { 0 } == 0)
        // Woken soon after falling asleep: spinning would have paid, so the whole budget again.
        policy.fellAsleep(at: 5_000 * maximum)
        policy.wokeUp(at: 5_000 * maximum + maximum / 2)
        #expect(policy.budget == maximum)
        // A sleep between the two thresholds changes nothing.
        policy.fellAsleep(at: 6_000 * maximum)
        policy.wokeUp(at: 6_000 * maximum + 4 * maximum)
        #expect(policy.budget == maximum)
    }

    @Test func aZeroConfiguredSpinNeverSpinsAndReadsNoCounter() {
        var policy = IdlePolicy(maximum: 0)
        var read = false
        #expect(policy.spinBudget(at: 1) { read = true; return 0 } == 0)
        #expect(!read)
    }

    @Test func wakingWithoutHavingSleptChangesNothing() {
        var policy = IdlePolicy(maximum: maximum)
        policy.wokeUp(at: 10 * maximum)
        #expect(policy.budget == maximum)
    }
}
