import Foundation
import Synchronization
import Testing
@testable import Spindle

/// Unique handles (docs/scheduler.md, "Unique handles: results in the job record"): the value
/// lives in the job's record, the handle is consumed by its wait, a dropped handle detaches the
/// job; waits inside jobs, outside, from other threads and from async code.
@Suite(.serialized)
struct UniqueJobHandleTests {
    enum Failure: Error, Equatable { case odd(Int) }

    /// Counts the instances alive, so that a value destroyed twice or never shows.
    final class Tracked: Sendable {
        static let live = Atomic<Int>(0)
        let number: Int
        init(_ number: Int) {
            self.number = number
            Tracked.live.add(1, ordering: .relaxed)
        }
        deinit { Tracked.live.subtract(1, ordering: .relaxed) }
    }

    /// A value over the 64 bytes kept in the record (it goes to a box) that owns references.
    struct Large: Sendable, Equatable {
        var words: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var name: String
        static func == (a: Large, b: Large) -> Bool {
            withUnsafeBytes(of: a.words) { x in withUnsafeBytes(of: b.words) { y in x.elementsEqual(y) } } && a.name == b.name
        }
    }

    /// A seeded random divide-and-conquer sum: each call splits its range at a random point,
    /// spawns the lower part with a unique handle, sums the upper part itself and adds the lower
    /// part's value. Equal to the closed form.
    @Test(arguments: workerCounts)
    func aRandomSplitSumMatchesTheClosedForm(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 120, "unique split sum workers=\(workers)") {
            for round in 0..<3 {
                let seed = testSeed(default: 0x0A1C_0000 + UInt64(round))
                @Sendable func sum(_ range: Range<Int>, _ salt: UInt64, _ context: JobContext) -> Int {
                    if range.count <= 16 { return range.reduce(0, +) }
                    var generator = SplitMix64(seed: salt)
                    let cut = range.lowerBound + Int.random(in: 1..<range.count, using: &generator)
                    let left = context.spawnUnique { sum(range.lowerBound..<cut, salt &* 31 &+ 1, $0) }
                    let right = sum(cut..<range.upperBound, salt &* 31 &+ 2, context)
                    return context.wait(for: left) + right
                }
                let n = 200_000
                let total = jobs.wait(for: jobs.spawnUnique { sum(0..<n, seed, $0) })
                #expect(total == n * (n - 1) / 2, "seed \(seed)")
            }
        }
        jobs.shutdown()
    }

    /// Errors reach the waiter typed, inside a job and outside; values over 64 bytes (boxed)
    /// and values that own references come through intact.
    @Test(arguments: workerCounts)
    func errorsAndLargeValuesReachTheWaiter(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "unique errors workers=\(workers)") {
            @Sendable func check(_ value: Int) throws(Failure) -> Int {
                if value % 2 == 1 { throw .odd(value) }
                return value * 10
            }
            for index in 0..<100 {
                let handle = jobs.spawnUnique { _ throws(Failure) in try check(index) }
                do throws(Failure) {
                    let value = try jobs.wait(for: handle)
                    #expect(index % 2 == 0 && value == index * 10, "index \(index)")
                } catch {
                    #expect(index % 2 == 1 && error == .odd(index), "index \(index)")
                }
            }
            let inside = jobs.spawnUnique { context in
                let failing = context.spawnUnique { _ throws(Failure) in try check(7) }
                let large = context.spawnUnique { _ in
                    Large(words: (1, 2, 3, 4, 5, 6, 7, 8, 9, 10), name: String(repeating: "x", count: 100))
                }
                let array = context.spawnUnique { _ in [Int](0..<1_000) }
                var report = ""
                do throws(Failure) {
                    _ = try context.wait(for: failing)
                    report = "no error"
                } catch {
                    report = "\(error)"
                }
                let value = context.wait(for: large)
                let numbers = context.wait(for: array)
                return "\(report) \(value.words.9) \(value.name.count) \(numbers.reduce(0, +))"
            }
            #expect(jobs.wait(for: inside) == "odd(7) 10 100 499500")
            let outsideLarge = jobs.spawnUnique { _ in Large(name: "outside") }
            #expect(jobs.wait(for: outsideLarge) == Large(name: "outside"))
        }
        jobs.shutdown()
    }

    /// Every outcome is destroyed exactly once: values read by a wait, values of handles dropped
    /// before their job finished (the job destroys them), and values of handles dropped after
    /// (the handle does), in records and in boxes. The job runs in every case.
    @Test(arguments: workerCounts)
    func droppedHandlesDetachAndDestroyTheirValueOnce(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        let before = Tracked.live.load(ordering: .relaxed)
        let ran = Atomic<Int>(0)
        withTimeLimit(seconds: 60, "unique detach workers=\(workers)") {
            let gate = JobCounter(1)
            for index in 0..<stressCount(2_000) {
                switch index % 4 {
                case 0:
                    // Dropped while the job cannot have finished: the job destroys the value.
                    _ = jobs.spawnUnique { context in
                        context.wait(for: gate)
                        ran.add(1, ordering: .relaxed)
                        return Tracked(index)
                    }
                case 1:
                    // Dropped once the job is done: the handle destroys it (boxed here).
                    let handle = jobs.spawnUnique { _ in
                        ran.add(1, ordering: .relaxed)
                        return (Tracked(index), Large(name: "boxed"))
                    }
                    while !handle.isComplete { sched_yield() }
                    _ = consume handle
                case 2:
                    // Read by a wait.
                    let handle = jobs.spawnUnique { _ in
                        ran.add(1, ordering: .relaxed)
                        return Tracked(index)
                    }
                    #expect(jobs.wait(for: handle).number == index)
                default:
                    // Dropped at whatever moment: either side may be last.
                    _ = jobs.spawnUnique { _ in
                        ran.add(1, ordering: .relaxed)
                        return Tracked(index)
                    }
                }
            }
            gate.decrement()
        }
        jobs.shutdown()
        #expect(ran.load(ordering: .relaxed) == stressCount(2_000))
        #expect(Tracked.live.load(ordering: .relaxed) == before, "outcomes leaked or destroyed twice")
    }

    /// Outside threads block on their handles while other threads spawn: each gets its own
    /// value; a handle made on one thread is waited for on another.
    @Test(arguments: workerCounts)
    func outsideThreadsBlockOnTheirHandles(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        withTimeLimit(seconds: 60, "unique outside workers=\(workers)") {
            let wrong = Atomic<Int>(0)
            onThreads(4) { thread in
                for index in 0..<500 {
                    let handle = jobs.spawnUnique { context in
                        // Some jobs wait themselves, so the outside wait often finds it pending.
                        if index % 3 == 0 {
                            let inner = context.spawnUnique { _ in index }
                            return context.wait(for: inner) + thread * 1_000
                        }
                        return index + thread * 1_000
                    }
                    if jobs.wait(for: handle) != index + thread * 1_000 { wrong.add(1, ordering: .relaxed) }
                }
            }
            #expect(wrong.load(ordering: .relaxed) == 0)
            // A closure cannot consume what it captures, so the handle travels in a box (the
            // thread's start orders the box's write before the thread reads it).
            let box = Mutex<UniqueJobHandle<String, Never>?>(jobs.spawnUnique { _ in "sent" })
            let value = onNewThread { () -> String in
                let handle: UniqueJobHandle<String, Never>? = box.withLock { slot in slot.take() }
                guard let handle else { return "lost" }
                return jobs.wait(for: handle)
            }
            #expect(value == "sent")
            // `JobSystem.wait(for:)` from inside a job waits as the job's context does.
            let nested = jobs.spawnUnique { _ in
                jobs.wait(for: jobs.spawnUnique { _ in 41 }) + 1
            }
            #expect(jobs.wait(for: nested) == 42)
        }
        jobs.shutdown()
    }

    /// From async code: `await jobs.wait(for:)` returns the value and carries the error, also
    /// when the job finishes after the task suspended.
    @Test(arguments: workerCounts)
    func asyncCodeAwaitsAUniqueHandle(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        runAsync("unique await workers=\(workers)") {
            var total = 0
            for index in 0..<50 {
                total += await jobs.wait(for: jobs.spawnUnique { _ in index * index })
            }
            #expect(total == (0..<50).reduce(0) { $0 + $1 * $1 })
            let gate = JobCounter(1)
            let late = jobs.spawnUnique { context in
                context.wait(for: gate)
                return "late"
            }
            jobs.run { _ in gate.decrement() }
            #expect(await jobs.wait(for: late) == "late")
            let failing = jobs.spawnUnique { _ throws(Failure) -> Int in throw .odd(3) }
            do throws(Failure) {
                _ = try await jobs.wait(for: failing)
                Issue.record("the error was not carried")
            } catch {
                #expect(error == .odd(3))
            }
        }
        jobs.shutdown()
    }

    /// `JobSystem.wait(for:)` of a unique handle from a job of another system traps and names
    /// the fix.
    @Test func waitingFromAJobOfAnotherSystemTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let first = try! JobSystem(configuration: .init(workers: 1, stallReportAfter: nil))
            let second = try! JobSystem(configuration: .init(workers: 1, stallReportAfter: nil))
            let gate = JobCounter(1)
            let done = JobCounter()
            first.run(counter: done) { _ in
                let handle = second.spawnUnique { context in
                    context.wait(for: gate)
                    return 1
                }
                print(second.wait(for: handle))
            }
            first.wait(for: done)
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("JobSystem.wait(for:) called from a job of another JobSystem"), "\(stderr)")
    }
}
