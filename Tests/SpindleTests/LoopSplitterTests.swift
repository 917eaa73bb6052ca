@testable import Spindle
import Testing

/// The split decisions of parallel loops (`LoopSplitter`, Loops/LoopEngine.swift; the rules are
/// docs/parallel-for.md's). `shouldSplit` is mutating, so it is called outside `#expect`.
struct LoopSplitterTests {
    @Test
    func partitionersSayWhatTheyAre() {
        #expect(Partitioner.adaptive.grain == 1)
        #expect(Partitioner.adaptive.kind == .adaptive)
        #expect(Partitioner.adaptive(minimumGrain: 16).grain == 16)
        #expect(Partitioner.fixed(grain: 16).kind == .fixed)
        #expect(Partitioner.adaptive.description == "adaptive")
        #expect(Partitioner.adaptive(minimumGrain: 16).description == "adaptive(minimumGrain: 16)")
        #expect(Partitioner.fixed(grain: 16).description == "fixed(grain: 16)")
    }

    /// Fixed: a range fits one chunk when it is at most one grain. Adaptive: when it cannot be
    /// halved without making a chunk smaller than the grain (fewer than two grains).
    @Test
    func fitsOneChunk() {
        let fixed = LoopSplitter(.fixed(grain: 16), workers: 4)
        #expect(!fixed.adaptive && fixed.grain == 16)
        #expect(fixed.fitsOneChunk(1))
        #expect(fixed.fitsOneChunk(16))
        #expect(!fixed.fitsOneChunk(17))
        let adaptive = LoopSplitter(.adaptive(minimumGrain: 16), workers: 4)
        #expect(adaptive.adaptive && adaptive.grain == 16)
        #expect(adaptive.fitsOneChunk(16))
        #expect(adaptive.fitsOneChunk(31))
        #expect(!adaptive.fitsOneChunk(32))
        let single = LoopSplitter(.adaptive, workers: 4)
        #expect(single.fitsOneChunk(1))
        #expect(!single.fitsOneChunk(2))
    }

    /// Fixed partitioning splits every range longer than a grain, whatever the budget or
    /// migration: the same chunks on every run.
    @Test(arguments: [1, 2, 8])
    func fixedSplitsEveryRangeLongerThanAGrain(workers: Int) {
        var splitter = LoopSplitter(.fixed(grain: 10), workers: workers)
        var split: Bool
        for _ in 0..<100 {
            split = splitter.shouldSplit(11, migrated: false)
            #expect(split)
        }
        split = splitter.shouldSplit(1_000_000, migrated: true)
        #expect(split)
        split = splitter.shouldSplit(10, migrated: false)
        #expect(!split)
        split = splitter.shouldSplit(10, migrated: true)
        #expect(!split)
        split = splitter.shouldSplit(1, migrated: false)
        #expect(!split)
        #expect(splitter.budget == workers, "fixed partitioning spent a budget it does not have")
    }

    /// Adaptive splitting starts with a budget of `workers` and halves it at each split made on
    /// the forking worker; once it is spent, only a stolen (migrated) node splits.
    @Test(arguments: [1, 2, 4, 8, 64])
    func theAdaptiveBudgetHalvesWithEachSplit(workers: Int) {
        var splitter = LoopSplitter(.adaptive, workers: workers)
        #expect(splitter.budget == workers)
        var budget = workers
        var splits = 0
        while splitter.shouldSplit(1 << 20, migrated: false) {
            budget /= 2
            splits += 1
            #expect(splitter.budget == budget)
            if splits > 64 { break }
        }
        #expect(splitter.budget == 0)
        // Splits while the budget lasts: floor(log2(workers)) + 1.
        #expect(splits == Int.bitWidth - workers.leadingZeroBitCount)
        let split = splitter.shouldSplit(1 << 20, migrated: false)
        #expect(!split, "split without a budget")
    }

    /// A stolen node splits, and its budget becomes at least `workers` again (half the budget
    /// it had when that is more).
    @Test
    func aMigratedNodeRefillsTheBudget() {
        var splitter = LoopSplitter(.adaptive, workers: 4)
        var split: Bool
        splitter.budget = 0
        split = splitter.shouldSplit(100, migrated: true)
        #expect(split)
        #expect(splitter.budget == 4)
        splitter.budget = 1
        split = splitter.shouldSplit(100, migrated: true)
        #expect(split)
        #expect(splitter.budget == 4)
        splitter.budget = 20
        split = splitter.shouldSplit(100, migrated: true)
        #expect(split)
        #expect(splitter.budget == 10, "a migrated node keeps half a budget larger than twice the workers")
        // The refilled budget is spent by splits on the thief's side.
        splitter.budget = 0
        _ = splitter.shouldSplit(100, migrated: true)
        var more = 0
        while splitter.shouldSplit(100, migrated: false) { more += 1 }
        #expect(more == 3, "a budget of 4 allows splits at 4, 2 and 1")
    }

    /// Adaptive never makes a chunk smaller than the grain: below two grains nothing splits,
    /// migrated or not, and a refused split spends no budget.
    @Test(arguments: [1, 7, 16])
    func adaptiveDoesNotSplitBelowTwoGrains(grain: Int) {
        var splitter = LoopSplitter(.adaptive(minimumGrain: grain), workers: 8)
        var split: Bool
        split = splitter.shouldSplit(2 * grain - 1, migrated: false)
        #expect(!split)
        split = splitter.shouldSplit(2 * grain - 1, migrated: true)
        #expect(!split)
        split = splitter.shouldSplit(grain, migrated: true)
        #expect(!split)
        #expect(splitter.budget == 8, "a refused split spent budget")
        split = splitter.shouldSplit(2 * grain, migrated: false)
        #expect(split)
        #expect(splitter.budget == 4)
        // The halves of a range of two grains are one grain each: no chunk below the grain.
        let halves = splitter.midpoint(0..<(2 * grain))
        #expect(halves == grain)
    }

    @Test
    func adaptiveSplitsInTheMiddle() {
        let splitter = LoopSplitter(.adaptive(minimumGrain: 3), workers: 2)
        #expect(splitter.midpoint(0..<10) == 5)
        #expect(splitter.midpoint(10..<21) == 15)
        #expect(splitter.midpoint(-4..<4) == 0)
    }

    /// Fixed splits fall on grain boundaries counted from the range's start, at the boundary
    /// nearest below the middle (by chunks), so every leaf is a whole grain but perhaps the last.
    @Test(arguments: [1, 3, 10, 64])
    func fixedSplitsFallOnGrainBoundaries(grain: Int) {
        let splitter = LoopSplitter(.fixed(grain: grain), workers: 4)
        for start in [0, 5, 1000] {
            for count in (grain + 1)...(grain * 9 + 1) {
                let range = start..<(start + count)
                let middle = splitter.midpoint(range)
                #expect((middle - start) % grain == 0, "\(range) split at \(middle), off the grain \(grain)")
                #expect(range.lowerBound < middle && middle < range.upperBound, "\(range) split at \(middle): an empty half")
                let chunks = (count + grain - 1) / grain
                #expect((middle - start) / grain == chunks / 2, "\(range): \(chunks) chunks split at \(middle)")
            }
        }
        #expect(LoopSplitter(.fixed(grain: 10), workers: 4).midpoint(10..<110) == 60)
        #expect(LoopSplitter(.fixed(grain: 16), workers: 4).midpoint(10..<110) == 58)
    }

    /// Splitting fixed ranges recursively gives the chunks `fixed(grain:)` promises: exactly
    /// `grain` elements each at multiples of the grain from the start, the last one shorter.
    @Test
    func fixedSplittingGivesWholeGrains() {
        var splitter = LoopSplitter(.fixed(grain: 16), workers: 4)
        var leaves: [Range<Int>] = []
        func split(_ range: Range<Int>) {
            if splitter.shouldSplit(range.count, migrated: false) {
                let middle = splitter.midpoint(range)
                split(range.lowerBound..<middle)
                split(middle..<range.upperBound)
            } else {
                leaves.append(range)
            }
        }
        let end = 3 + 16 * 37 + 5
        split(3..<end)
        #expect(leaves.count == 38)
        #expect(leaves.dropLast().allSatisfy { $0.count == 16 && ($0.lowerBound - 3) % 16 == 0 })
        let lastLeaf: Range<Int> = (end - 5)..<end
        #expect(leaves.last == lastLeaf)
        #expect(zip(leaves, leaves.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
    }
}
