import CSpindle
import Synchronization

// The engine behind parallelFor, parallelMap, parallelReduce and friends: docs/parallel-for.md.
// One generic routine cuts a range into chunks, runs `leaf` on each (in parallel, through
// `join`) and combines the chunk results in index order with `combine`.

/// The splitting decision of one node of the split tree (docs/parallel-for.md, "Partitioners").
struct LoopSplitter: Sendable {
    /// Splits left before leaves run without a sign of hungry workers (adaptive only).
    var budget: Int
    let grain: Int
    let adaptive: Bool
    let workers: Int

    init(_ partitioner: Partitioner, workers: Int) {
        budget = workers
        grain = partitioner.grain
        adaptive = partitioner.kind == .adaptive
        self.workers = workers
    }

    /// Whether a range of `count` elements fits one chunk without ever splitting.
    func fitsOneChunk(_ count: Int) -> Bool {
        adaptive ? count / 2 < grain : count <= grain
    }

    /// Decides whether to split a range of `count` elements; `migrated` says whether this node
    /// runs on another worker than the one that forked it (it was stolen).
    mutating func shouldSplit(_ count: Int, migrated: Bool) -> Bool {
        guard adaptive else { return count > grain }
        guard count / 2 >= grain else { return false }
        if migrated {
            budget = Swift.max(workers, budget / 2)
            return true
        }
        guard budget > 0 else { return false }
        budget /= 2
        return true
    }

    /// Where to split `range`: the middle, or (fixed) the grain boundary nearest below it.
    func midpoint(_ range: Range<Int>) -> Int {
        let count = range.count
        guard !adaptive else { return range.lowerBound + count / 2 }
        let grains = count / grain + (count % grain == 0 ? 0 : 1)
        return range.lowerBound + (grains / 2) * grain
    }
}

/// The split engine of one job system: it reaches the scheduler only through the core's surface
/// (submitting, waiting, the current fiber, hunger), never the other way round.
@usableFromInline
struct LoopEngine: Sendable {
    @usableFromInline let scheduler: Scheduler

    @inlinable
    init(_ scheduler: Scheduler) {
        self.scheduler = scheduler
    }

    var workerCount: Int { scheduler.workerCount }

    /// How many workers can run at once (fewer than `workerCount` when there are more workers
    /// than CPUs): the splitting budget, so that a loop is not cut for workers with no CPU.
    var parallelism: Int { scheduler.parallelism }

    /// The largest batch a leaf runs between two checks for hungry workers.
    static let leafBatchLimit = 1024

    /// `loop` for bodies without a result (the for-each loops): specialised here, so the split
    /// tree does not look up generic metadata (the `(T, T)` of every join) at run time.
    @usableFromInline
    func forEachChunk(_ range: Range<Int>, _ partitioner: Partitioner, _ body: @Sendable (Range<Int>) -> Void) {
        loop(range, partitioner, leaf: body, combine: { _, _ in })
    }

    /// `loop` for `parallelMap`'s slot runs, specialised for the same reason.
    @usableFromInline
    func mapChunks(
        _ range: Range<Int>, _ partitioner: Partitioner,
        leaf: @Sendable (Range<Int>) -> LoopSlots, combine: @Sendable (LoopSlots, LoopSlots) -> LoopSlots
    ) -> LoopSlots {
        loop(range, partitioner, leaf: leaf, combine: combine)
    }

    /// Runs `leaf` over chunks covering `range` (not empty) and combines their results in index
    /// order. Blocks the calling thread (outside the system) or parks the calling job's fiber
    /// until every chunk is done.
    @usableFromInline
    func loop<T: Sendable>(
        _ range: Range<Int>, _ partitioner: Partitioner,
        leaf: @Sendable (Range<Int>) -> T, combine: @Sendable (T, T) -> T
    ) -> T {
        let splitter = LoopSplitter(partitioner, workers: parallelism)
        if splitter.fitsOneChunk(range.count) { return leaf(range) }
        if let worker = Scheduler.anyCurrentWorker() {
            requireOwn(worker)
            guard workerCount > 1 else { return sequential(range, splitter, leaf: leaf, combine: combine) }
            let state = worker.local.pointee.running!
            FiberLocal.word(FiberLocal.loopsEntered, of: state).pointee &+= 1
            // A nested loop on a busy system: every split made now would be taken back by this
            // worker, so leave splitting to the leaves' checks for hungry workers (adaptive only:
            // fixed partitioning has no budget, and need not read the shared activity word).
            var splitter = splitter
            if splitter.adaptive && !hungry() { splitter.budget = 0 }
            return split(range, splitter, state, migrated: false, leaf: leaf, combine: combine)
        }
        guard workerCount > 1 else { return sequential(range, splitter, leaf: leaf, combine: combine) }
        return withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot in
            let result = slot.baseAddress!
            enterFromOutside { state in
                result.initialize(to: self.split(range, splitter, state.assumingMemoryBound(to: FiberState.self),
                                                 migrated: false, leaf: leaf, combine: combine))
            }
            return result.move()
        }
    }

    // MARK: Bodies with a context

    /// Runs `body` inside a job of this system: at once when the calling thread runs one of its
    /// jobs (or a job of another system: the loop inside then traps with its message), else in
    /// one job that the calling thread waits for. The loop forms whose bodies take a
    /// `JobContext` run their loop through this, so every chunk runs in a job
    /// (docs/parallel-for.md, "Bodies with a context").
    @usableFromInline
    func inJob(_ body: () -> Void) {
        if Scheduler.anyCurrentWorker() != nil { return body() }
        enterFromOutside { _ in body() }
    }

    /// The context of the job running on the calling thread, which runs a chunk of a loop
    /// entered through `inJob`.
    @usableFromInline
    static func runningContext() -> JobContext {
        guard let context = JobContext.calling() else {
            misuse("Spindle internal error: a loop body with a context ran outside a job")
        }
        return context
    }

    /// Runs `entry` in one job and blocks the calling (outside) thread until it returned. The
    /// closure is recorded as its two words (closure.c), so the non-escaping body it captures
    /// stays on this stack; the job's own closure captures only their address.
    private func enterFromOutside(_ entry: (UnsafeMutableRawPointer) -> Void) {
        // SAFETY: `entry` outlives the job that calls it: we return only after its counter
        // reached zero, and the job calls the words before it completes.
        withRecordedEntry(entry) { address in
            let counter = JobCounter()
            counter.increment()
            scheduler.submit(priority: .normal, api: "a parallel loop (parallelFor, parallelMap, parallelReduce, parallelForEach)") { record in
                Execution.initializeRun(record, body: { context in
                    spindle_closure_invoke(address.words, UnsafeMutableRawPointer(context.state))
                }, counter: counter, priority: .normal, affinity: .migratable, site: madeByLibrary)
            }
            scheduler.waitOutside(for: counter)
        }
    }

    /// `forEachChunk` over blocks bound to nodes: each block's root job goes to its node's
    /// queue (docs/numa.md, "Node queues"), and the caller waits for all of them. With one node,
    /// an ordinary loop over the blocks' span.
    func forEachBlock(_ blocks: [NumaBlock], _ partitioner: Partitioner, _ body: @Sendable (Range<Int>) -> Void) {
        let nonEmpty = blocks.filter { !$0.range.isEmpty }
        guard scheduler.multiNode, nonEmpty.count > 1 || (nonEmpty.first.map { $0.node != 0 } ?? false) else {
            let lower = nonEmpty.first?.range.lowerBound ?? 0
            let upper = nonEmpty.last?.range.upperBound ?? 0
            if lower < upper { forEachChunk(lower..<upper, partitioner, body) }
            return
        }
        let current = Scheduler.anyCurrentWorker()
        if let current { requireOwn(current) }
        let splitter = LoopSplitter(partitioner, workers: parallelism)
        withRecordedEntry({ argument in
            let block = argument.load(as: BlockArgument.self)
            self.split(block.lower..<block.upper, splitter, block.state, migrated: false, leaf: body, combine: { _, _ in })
        }) { address in
            let counter = JobCounter()
            counter.increment(by: nonEmpty.count)
            for block in nonEmpty {
                let lower = block.range.lowerBound, upper = block.range.upperBound
                scheduler.submit(toNode: block.node, priority: .normal, api: "parallelForChunks(over:) of a NumaBuffer") { record in
                    Execution.initializeRun(record, body: { context in
                        var argument = BlockArgument(state: context.state, lower: lower, upper: upper)
                        withUnsafeMutableBytes(of: &argument) { spindle_closure_invoke(address.words, $0.baseAddress!) }
                    }, counter: counter, priority: .normal, affinity: .migratable, site: madeByLibrary)
                }
            }
            if let current {
                JobContext(state: current.local.pointee.running!).wait(for: counter)
            } else {
                scheduler.waitOutside(for: counter)
            }
        }
    }

    /// Traps unless `worker` belongs to this system: a loop waiting from another system's job
    /// would block that system's worker thread.
    private func requireOwn(_ worker: UnsafeMutablePointer<WorkerState>) {
        require(worker.pointee.scheduler === scheduler,
                "parallel loop of one JobSystem called from a job of another: it would block that system's worker thread; run the loop on the system the job belongs to")
    }

    /// Records `entry`'s two words on this stack and runs `body` with their address; `entry`
    /// stays alive until `body` returns (which must outlive every call of the words).
    private func withRecordedEntry(_ entry: (UnsafeMutableRawPointer) -> Void, _ body: (EntryAddress) -> Void) {
        withUnsafeTemporaryAllocation(byteCount: 2 * MemoryLayout<Int>.size, alignment: 16) { words in
            _spindleClosureWords(words.baseAddress!, entry)
            body(EntryAddress(words: UnsafePointer(words.baseAddress!.assumingMemoryBound(to: UnsafeMutableRawPointer.self))))
        }
    }

    /// One node of the split tree, on the fiber `state`.
    func split<T: Sendable>(
        _ range: Range<Int>, _ splitter: LoopSplitter, _ state: UnsafeMutablePointer<FiberState>, migrated: Bool,
        leaf: @Sendable (Range<Int>) -> T, combine: @Sendable (T, T) -> T
    ) -> T {
        var splitter = splitter
        guard splitter.shouldSplit(range.count, migrated: migrated) else {
            return runLeaf(range, splitter, state, leaf: leaf, combine: combine)
        }
        let middle = splitter.midpoint(range)
        let home = state.pointee.worker.pointee.index
        let forked = splitter
        let halves = JobContext(state: state).join({ context in
            self.split(range.lowerBound..<middle, forked, context.state, migrated: false, leaf: leaf, combine: combine)
        }, { context in
            self.split(middle..<range.upperBound, forked, context.state, migrated: context.workerIndex != home,
                       leaf: leaf, combine: combine)
        })
        return combine(halves.0, halves.1)
    }

    /// A leaf of the split tree. Fixed partitioning: one chunk. Adaptive: batches from `grain`
    /// doubling up to `leafBatchLimit`, except that a batch whose elements ran nested loops is
    /// followed by one of `grain` again (such elements are long, and a long batch cannot be
    /// shared); between batches, if some worker is hungry, the rest is split again with a fresh
    /// budget.
    private func runLeaf<T: Sendable>(
        _ range: Range<Int>, _ splitter: LoopSplitter, _ state: UnsafeMutablePointer<FiberState>,
        leaf: @Sendable (Range<Int>) -> T, combine: @Sendable (T, T) -> T
    ) -> T {
        guard splitter.adaptive else { return leaf(range) }
        let limit = Swift.max(splitter.grain, Self.leafBatchLimit)
        var batch = splitter.grain
        var lower = range.lowerBound
        var upper = batchEnd(lower, batch, range.upperBound, splitter.grain)
        // `state` is this fiber's: it stays valid when a nested loop parks the fiber and it resumes
        // on another worker.
        let loopsEntered = FiberLocal.word(FiberLocal.loopsEntered, of: state)
        var loopsBefore = loopsEntered.pointee
        var result = leaf(lower..<upper)
        while upper < range.upperBound {
            lower = upper
            if (range.upperBound - lower) / 2 >= splitter.grain && hungry() {
                var fresh = splitter
                fresh.budget = parallelism
                return combine(result, split(lower..<range.upperBound, fresh, state, migrated: false,
                                             leaf: leaf, combine: combine))
            }
            let loopsAfter = loopsEntered.pointee
            if loopsAfter != loopsBefore {
                batch = splitter.grain
                loopsBefore = loopsAfter
            } else {
                batch = Swift.min(batch * 2, limit)
            }
            upper = batchEnd(lower, batch, range.upperBound, splitter.grain)
            result = combine(result, leaf(lower..<upper))
        }
        return result
    }

    /// The end of a batch of `batch` elements from `lower`, extended to `end` when what would
    /// remain is less than a grain (no chunk smaller than the grain).
    @inline(__always)
    private func batchEnd(_ lower: Int, _ batch: Int, _ end: Int, _ grain: Int) -> Int {
        let remaining = end - lower
        return remaining - batch < grain ? end : lower + batch
    }

    /// Whether some worker is looking for work or asleep (it could take a half we offer).
    @inline(__always)
    func hungry() -> Bool {
        scheduler.hungryWorkers()
    }

    /// The split tree walked on the calling thread (one worker: nobody to share with). Fixed
    /// partitioning keeps its exact chunks and combine order.
    func sequential<T>(
        _ range: Range<Int>, _ splitter: LoopSplitter,
        leaf: (Range<Int>) -> T, combine: (T, T) -> T
    ) -> T {
        guard !splitter.adaptive, range.count > splitter.grain else { return leaf(range) }
        let middle = splitter.midpoint(range)
        let left = sequential(range.lowerBound..<middle, splitter, leaf: leaf, combine: combine)
        return combine(left, sequential(middle..<range.upperBound, splitter, leaf: leaf, combine: combine))
    }
}

/// What a block's root job passes to the loop entry: its fiber and its block.
private struct BlockArgument {
    let state: UnsafeMutablePointer<FiberState>
    let lower: Int
    let upper: Int
}

/// The address of an entry closure's recorded words, carried by the entry job.
private struct EntryAddress: @unchecked Sendable {
    // SAFETY: the words are written before the job is submitted and read-only afterwards.
    let words: UnsafePointer<UnsafeMutableRawPointer>
}
