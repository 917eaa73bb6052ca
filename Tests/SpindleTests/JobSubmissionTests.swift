import Foundation
@testable @_spi(Internals) import Spindle
import Testing

/// Jobs submitted every way (run, run(counter:argument:), run(count:), join, from outside and
/// from inside jobs) run exactly once, and random job trees compute what a sequential oracle does.
extension JobSystemTests {
    @Suite(.serialized)
    struct JobSubmissionTests {
        // MARK: Exactly once

        @Test(arguments: workerCounts)
        func everyJobRunsExactlyOnce(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 120, "everyJobRunsExactlyOnce workers=\(workers)") {
                let outside = 20_000
                let flags = Flags(outside * 4 + 10_000)
                let duplicates = Tally()
                let counter = JobCounter()
                for index in 0..<outside {
                    jobs.run(counter: counter) { ctx in
                        if !flags.mark(index) { duplicates.add() }
                        // Three children per job, spawned from inside and waited on.
                        let children = JobCounter()
                        for child in 1...3 {
                            ctx.run(counter: children) { _ in
                                if !flags.mark(outside * child + index) { duplicates.add() }
                            }
                        }
                        ctx.wait(for: children)
                    }
                }
                let many = jobs.run(count: 10_000) { index, _ in
                    if !flags.mark(outside * 4 + index) { duplicates.add() }
                }
                jobs.wait(for: counter)
                jobs.wait(for: many)
                #expect(duplicates.current == 0)
                #expect(flags.unmarked.isEmpty, "jobs that never ran: \(flags.unmarked.prefix(10))")
                #expect(counter.isComplete && many.isComplete)
                #expect(jobs.metrics().total.jobsRun == UInt64(outside * 4 + 10_000))
            }
            jobs.shutdown()
        }

        /// Jobs carrying an integer argument, submitted from outside and from inside jobs (a binary
        /// tree: job `i` submits `2i + 1` and `2i + 2` to the counter it runs under): each index runs
        /// once, with the priority it was submitted at.
        @Test(arguments: workerCounts)
        func argumentJobsRunOnceWithTheirArgument(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 120, "argumentJobsRunOnceWithTheirArgument workers=\(workers)") {
                let tree = 30_000
                let outside = 10_000
                let flags = Flags(tree + outside)
                let duplicates = Tally()
                let wrongPriority = Tally()
                let counter = JobCounter()
                // A closure formed per submission (its context freed when its one job ends) ...
                @Sendable func node(_ index: Int, _ ctx: JobContext) {
                    if !flags.mark(index) { duplicates.add() }
                    if ctx.priority != .normal { wrongPriority.add() }
                    for child in [2 * index + 1, 2 * index + 2] where child < tree {
                        ctx.run(counter: counter, argument: child, node)
                    }
                }
                jobs.run(counter: counter, argument: 0, node)
                // ... and one closure value shared by many jobs (its references released in batches).
                let high: @Sendable (Int, JobContext) -> Void = { index, ctx in
                    if !flags.mark(index) { duplicates.add() }
                    if ctx.priority != .high { wrongPriority.add() }
                }
                let outsideCounter = JobCounter()
                for index in tree..<(tree + outside) {
                    jobs.run(counter: outsideCounter, priority: .high, argument: index, high)
                }
                jobs.wait(for: counter)
                jobs.wait(for: outsideCounter)
                #expect(duplicates.current == 0)
                #expect(wrongPriority.current == 0)
                #expect(flags.unmarked.isEmpty, "jobs that never ran: \(flags.unmarked.prefix(10))")
                #expect(jobs.metrics().total.jobsRun == UInt64(tree + outside))
            }
            jobs.shutdown()
        }

        /// Jobs that submit more jobs to the counter they run under (chains and random branching):
        /// a worker then takes back a completion it deferred instead of adding one, and a waiter
        /// must still see the counter at zero only once every job of it has finished.
        @Test(arguments: workerCounts)
        func jobsSpawningOnTheirOwnCounterKeepItAboveZero(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            let seed = testSeed(default: 0x5EED_C4A1)
            withTimeLimit(seconds: 120, "jobsSpawningOnTheirOwnCounterKeepItAboveZero workers=\(workers) seed=\(seed)") {
                for round in 0..<20 {
                    // Each job draws from its own generator how many successors it submits to the
                    // shared counter: two for the first levels, then mostly one (long chains), now
                    // and then none or two, up to a depth of 400.
                    @Sendable func successorCount(_ depth: Int, _ random: inout SplitMix64) -> Int {
                        if depth < 4 { return 2 }
                        switch random.next() % 16 { case 0: return 0; case 1: return 2; default: return 1 }
                    }
                    let ran = Tally()
                    let early = Tally()
                    let counter = JobCounter()
                    @Sendable func spawn(_ depth: Int, _ state: UInt64, _ ctx: JobContext) {
                        ran.add()
                        guard depth < 400 else { return }
                        var random = SplitMix64(seed: state)
                        let successors = successorCount(depth, &random)
                        for _ in 0..<successors {
                            let next = random.next()
                            ctx.run(counter: counter) { ctx in spawn(depth + 1, next, ctx) }
                        }
                    }
                    // The expected number of jobs, from the same draws, serially.
                    func expected(_ depth: Int, _ state: UInt64) -> Int {
                        guard depth < 400 else { return 1 }
                        var random = SplitMix64(seed: state)
                        let successors = successorCount(depth, &random)
                        var total = 1
                        for _ in 0..<successors { total += expected(depth + 1, random.next()) }
                        return total
                    }
                    let start = seed &+ UInt64(round)
                    let total = expected(0, start)
                    // One waiter inside a job, one outside: both must see every job finished. The
                    // root is counted before the watcher is submitted, so the watcher cannot find
                    // the counter at zero before the run began.
                    jobs.run(counter: counter) { ctx in spawn(0, start, ctx) }
                    let watcher = jobs.run { ctx in
                        ctx.wait(for: counter)
                        if ran.current != total { early.add() }
                    }
                    jobs.wait(for: counter)
                    #expect(ran.current == total, "round \(round): \(ran.current) of \(total) jobs had run when the wait returned")
                    jobs.wait(for: watcher)
                    #expect(early.current == 0, "round \(round): a job's wait returned before all \(total) jobs ran")
                    #expect(counter.isComplete)
                }
            }
            jobs.shutdown()
        }

        @Test(arguments: workerCounts)
        func nestingFiveLevelsDeep(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 60, "nestingFiveLevelsDeep workers=\(workers)") {
                let leaves = Tally()
                @Sendable func level(_ depth: Int, _ ctx: JobContext) {
                    if depth == 5 {
                        leaves.add()
                        return
                    }
                    let children = JobCounter()
                    for _ in 0..<4 {
                        ctx.run(counter: children) { ctx in level(depth + 1, ctx) }
                    }
                    ctx.wait(for: children)
                    // Every child has finished once the wait returns.
                    #expect(children.isComplete)
                }
                jobs.wait(for: jobs.run { ctx in level(0, ctx) })
                #expect(leaves.current == 1024)
            }
            jobs.shutdown()
        }

        // MARK: Random trees against a sequential oracle

        /// Computes a tree node as jobs: join for two children, run + wait or run(count:) + wait
        /// otherwise, with the node's own work before or after the wait (chosen by its seed).
        static func compute(seed: UInt64, size: Int, _ ctx: JobContext) -> UInt64 {
            let children = TreeNode.children(seed: seed, size: size)
            let style = TreeNode.mix(seed ^ 0xBEEF) % 3
            if children.isEmpty { return TreeNode.mix(seed) }
            if children.count == 2 && style == 0 {
                let (a, b) = ctx.join({ ctx in compute(seed: children[0].seed, size: children[0].size, ctx) },
                                      { ctx in compute(seed: children[1].seed, size: children[1].size, ctx) })
                return TreeNode.mix(seed) &+ a &+ b
            }
            let results = ResultSlots(children.count)
            let counter: JobCounter
            if style == 1 {
                counter = JobCounter()
                for (index, child) in children.enumerated() {
                    ctx.run(counter: counter) { ctx in
                        results.set(index, compute(seed: child.seed, size: child.size, ctx))
                    }
                }
            } else {
                counter = ctx.run(count: children.count) { index, ctx in
                    results.set(index, compute(seed: children[index].seed, size: children[index].size, ctx))
                }
            }
            // Wait at a seed-chosen point: before or after this node's own work.
            var total: UInt64 = 0
            if seed & 1 == 0 {
                ctx.wait(for: counter)
                total = TreeNode.mix(seed)
            } else {
                total = TreeNode.mix(seed)
                ctx.wait(for: counter)
            }
            for index in 0..<children.count { total &+= results.get(index) }
            return total
        }

        final class ResultSlots: @unchecked Sendable {
            // SAFETY: each slot is written by one job and read after its counter reached zero.
            let values: UnsafeMutablePointer<UInt64>
            init(_ count: Int) { values = .allocate(capacity: count) }
            deinit { values.deallocate() }
            func set(_ index: Int, _ value: UInt64) { values[index] = value }
            func get(_ index: Int) -> UInt64 { values[index] }
        }

        @Test(arguments: workerCounts)
        func randomJobTreesMatchSequentialOracle(workers: Int) throws {
            let seed = testSeed(default: 0x5EED_0000 + UInt64(workers))
            let size = 1_000_000
            let expected = TreeNode.oracle(seed: seed, size: size)
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 300, "randomJobTreesMatchSequentialOracle workers=\(workers) SPINDLE_TEST_SEED=\(seed)") {
                let result = ResultSlots(1)
                jobs.wait(for: jobs.run { ctx in result.set(0, Self.compute(seed: seed, size: size, ctx)) })
                #expect(result.get(0) == expected, "tree of \(size) jobs, SPINDLE_TEST_SEED=\(seed)")
            }
            jobs.shutdown()
        }

        @Test(arguments: workerCounts)
        func joinComputesBothHalves(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            withTimeLimit(seconds: 60, "joinComputesBothHalves workers=\(workers)") {
                @Sendable func fib(_ n: Int, _ ctx: JobContext) -> Int {
                    if n < 2 { return n }
                    let (a, b) = ctx.join({ ctx in fib(n - 1, ctx) }, { ctx in fib(n - 2, ctx) })
                    return a + b
                }
                let result = Tally()
                jobs.wait(for: jobs.run { ctx in result.add(fib(22, ctx)) })
                #expect(result.current == 17711)
                // A right half that waits (parks) on the thief's side, and a left half that does.
                let mixed = Tally()
                jobs.wait(for: jobs.run { ctx in
                    for _ in 0..<50 {
                        let (a, b) = ctx.join({ ctx -> Int in
                            ctx.wait(for: ctx.run(count: 4) { _, _ in })
                            return 1
                        }, { ctx -> Int in
                            ctx.wait(for: ctx.run(count: 4) { _, _ in })
                            return 2
                        })
                        mixed.add(a + b)
                    }
                })
                #expect(mixed.current == 150)
                // Results that are reference counted (an array, a class instance), taken back inline
                // or computed by a thief: each is delivered once and released once.
                let sums = Tally()
                let released = Tally()
                jobs.wait(for: jobs.run(count: 64) { index, ctx in
                    let (values, box) = ctx.join({ _ in [index, index, index] },
                                                 { _ in JoinResultBox(2 * index, releases: released) })
                    sums.add(values.reduce(0, +) + box.value)
                })
                #expect(sums.current == 5 * (0..<64).reduce(0, +))
                #expect(released.current == 64)
            }
            jobs.shutdown()
        }

        /// Job bodies are released exactly once: a closure submitted many times (whose references
        /// workers release in batches) and closures formed per job, from outside and inside, in
        /// random counts (not multiples of the batch). A missed release keeps a captured box alive
        /// after shutdown; an extra one frees a box while jobs still use it.
        @Test(arguments: workerCounts)
        func jobBodiesAreReleasedExactlyOnce(workers: Int) throws {
            let jobs = try makeSystem(workers: workers)
            let seed = testSeed(default: 0xB0D1_E5)
            let sharedReleased = Tally()
            let perJobReleased = Tally()
            let ran = Tally()
            var random = SplitMix64(seed: seed)
            let counts = (0..<8).map { _ in 1 + Int(random.next() % 500) }
            let rounds = counts.count
            withTimeLimit(seconds: 60, "jobBodiesAreReleasedExactlyOnce workers=\(workers) seed=\(seed)") {
                for (round, count) in counts.enumerated() {
                    do {
                        // One closure value submitted `count` times from outside.
                        let box = JoinResultBox(round, releases: sharedReleased)
                        let shared: @Sendable (JobContext) -> Void = { _ in ran.add(box.value == round ? 1 : 1_000_000) }
                        let counter = JobCounter()
                        for _ in 0..<count { jobs.run(counter: counter, shared) }
                        jobs.wait(for: counter)
                    }
                    // The same from inside a job, interleaved with closures formed per job.
                    jobs.wait(for: jobs.run { ctx in
                        let box = JoinResultBox(round, releases: sharedReleased)
                        let shared: @Sendable (JobContext) -> Void = { _ in ran.add(box.value == round ? 1 : 1_000_000) }
                        let counter = JobCounter()
                        for index in 0..<count {
                            ctx.run(counter: counter, shared)
                            let own = JoinResultBox(index, releases: perJobReleased)
                            ctx.run(counter: counter) { _ in ran.add(own.value == index ? 1 : 1_000_000) }
                        }
                        ctx.wait(for: counter)
                    })
                }
            }
            let perJobBoxes = counts.reduce(0, +)
            #expect(ran.current == 3 * perJobBoxes, "seed \(seed)")
            // Workers release what they still hold before they exit.
            jobs.shutdown()
            #expect(sharedReleased.current == 2 * rounds, "shared bodies released: \(sharedReleased.current) of \(2 * rounds), seed \(seed)")
            #expect(perJobReleased.current == perJobBoxes, "per-job bodies released: \(perJobReleased.current) of \(perJobBoxes), seed \(seed)")
        }

        /// A join result that counts its releases.
        final class JoinResultBox: Sendable {
            let value: Int
            let releases: Tally
            init(_ value: Int, releases: Tally) {
                self.value = value
                self.releases = releases
            }
            deinit { releases.add(1) }
        }
    }
}
