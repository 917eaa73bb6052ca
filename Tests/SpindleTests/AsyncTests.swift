import Foundation
@testable import Spindle
import Synchronization
import Testing

/// A task executor with one thread of its own. The async tests run on it rather than on the
/// cooperative pool: synchronous tests of other suites block pool threads while they wait for
/// their jobs (the pool has one thread per CPU), and a test whose continuations wait for a pool
/// thread would then stall for as long as they run.
final class TestThreadExecutor: TaskExecutor, @unchecked Sendable {
    // SAFETY: `queue` is only touched with `condition` locked.
    private let condition = NSCondition()
    private var queue: [UnownedJob] = []

    static let shared = TestThreadExecutor()

    private init() {
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "test-executor"
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        queue.append(job)
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            let job = queue.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// Runs async `body` to completion from a synchronous test, inside a time limit, on the test
/// executor's thread.
func runAsync(seconds: Int = 60, _ what: @autoclosure () -> String, _ body: @escaping @Sendable () async -> Void) {
    withTimeLimit(seconds: seconds, what()) {
        let done = DispatchSemaphore(value: 0)
        Task.detached(executorPreference: TestThreadExecutor.shared) {
            await body()
            done.signal()
        }
        done.wait()
    }
}

/// The name of the calling thread, from /proc.
func currentThreadName() -> String {
    ((try? readProcFile("/proc/thread-self/comm")) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines)
}

/// The values of `range` as an async sequence.
func stream(_ range: Range<Int>) -> AsyncStream<Int> {
    AsyncStream { continuation in
        for value in range { continuation.yield(value) }
        continuation.finish()
    }
}

enum ComputeTestError: Error, Equatable {
    case boom(Int)
}

@Suite(.serialized)
struct AsyncBridgeTests {
    @Test(arguments: workerCounts)
    func computeReturnsEachValueFromAJobOnTheWorkers(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-async-w")
        runAsync("compute workers=\(workers)") {
            let results = await withTaskGroup(of: (Int, Int, Bool).self) { group in
                for index in 0..<200 {
                    group.addTask {
                        await jobs.compute { ctx in
                            // An ordinary job: it spawns and waits on a fiber.
                            let parts = Tally()
                            ctx.job.wait(for: ctx.job.run(count: 8) { _, _ in parts.add(index) })
                            return (index, parts.current, currentThreadName().hasPrefix("sp-async-w"))
                        }
                    }
                }
                var all: [(Int, Int, Bool)] = []
                for await result in group { all.append(result) }
                return all
            }
            #expect(results.count == 200)
            #expect(results.allSatisfy { $0.1 == 8 * $0.0 }, "a compute returned another job's value")
            #expect(results.allSatisfy { $0.2 }, "a compute body ran outside the workers")
        }
        jobs.shutdown()
    }

    /// `compute` runs its job at the awaiting task's priority unless told otherwise. Each task is
    /// detached and waited for with a semaphore, not awaited: awaiting a task's value raises its
    /// priority to the awaiting task's.
    @Test(arguments: workerCounts)
    func computeTakesTheAwaitingTasksPriority(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        let cases: [(TaskPriority, Priority?, Priority)] = [
            (.high, nil, .high), (.userInitiated, nil, .high), (.medium, nil, .normal),
            (.low, nil, .low), (.utility, nil, .low), (.background, nil, .low),
            (.background, .high, .high),   // an explicit priority wins over the task's
        ]
        for (taskPriority, explicit, expected) in cases {
            let seen = ResultBox<Priority>()
            let done = DispatchSemaphore(value: 0)
            Task.detached(priority: taskPriority) {
                seen.value = await jobs.compute(priority: explicit) { ctx in ctx.job.priority }
                done.signal()
            }
            #expect(done.wait(timeout: .now() + .seconds(60)) == .success, "compute from a \(taskPriority) task did not return")
            #expect(seen.value == expected, "a task of priority \(taskPriority) ran its job at \(String(describing: seen.value))")
        }
        jobs.shutdown()
    }

    @Test
    func computeRethrowsTheBodysErrorWithItsType() throws {
        let jobs = try makeSystem(workers: 2)
        runAsync("compute errors") {
            do throws(ComputeTestError) {
                let _: Int = try await jobs.compute { (_) throws(ComputeTestError) -> Int in throw .boom(7) }
                Issue.record("no error thrown")
            } catch {
                // `error` is a ComputeTestError here: typed throws carried through.
                #expect(error == .boom(7))
            }
        }
        jobs.shutdown()
    }

    @Test
    func cancellingTheAwaitingTaskIsSeenByTheJob() throws {
        let jobs = try makeSystem(workers: 2)
        runAsync("compute cancellation") {
            let started = JobCounter(1)
            let runningUncancelled = Tally()
            let task = Task {
                try await jobs.compute { ctx in
                    // Read before `started` lets the task be cancelled: the job saw itself
                    // running uncancelled, then (the loop ends) cancelled. Counting polls
                    // instead failed under ThreadSanitizer: the task was cancelled before the
                    // job, slowed down after `started`, made its first poll.
                    if !ctx.isCancelled { runningUncancelled.add() }
                    started.decrement()
                    while !ctx.isCancelled { sched_yield() }
                    try ctx.checkCancellation()
                    return 1
                }
            }
            await jobs.wait(for: started)
            task.cancel()
            let result = await task.result
            #expect(throws: CancellationError.self) { try result.get() }
            #expect(runningUncancelled.current == 1)
        }
        jobs.shutdown()
    }

    @Test(arguments: [1, 2])
    func awaitingACounterSuspendsTheTask(workers: Int) throws {
        let jobs = try makeSystem(workers: workers)
        runAsync("await wait workers=\(workers)") {
            let events = JobCounter(3)
            let decremented = Tally()
            for _ in 0..<3 {
                jobs.run { _ in
                    decremented.add()
                    events.decrement()
                }
            }
            await jobs.wait(for: events)
            #expect(decremented.current == 3)
            #expect(events.isComplete)
        }
        jobs.shutdown()
    }

    // MARK: computeMap

    @Test(arguments: [(1, 1), (2, 3), (4, 8), (8, 16)])
    func computeMapDeliversInOrderWithABoundedWindow(workers: Int, window: Int) throws {
        let jobs = try makeSystem(workers: workers)
        let count = stressCount(5_000)
        runAsync("computeMap workers=\(workers) window=\(window)") {
            let delivered = Atomic<Int>(0)
            let widest = Atomic<Int>(0)
            let taken = Atomic<Int>(0)
            let input = stream(0..<count)
            var results: [Int] = []
            let mapped = input.computeMap(on: jobs, maxInFlight: window) { value in
                let inFlight = taken.add(1, ordering: .relaxed).newValue - delivered.load(ordering: .relaxed)
                widest.max(inFlight, ordering: .relaxed)
                return value * 2
            }
            do {
                for try await value in mapped {
                    results.append(value)
                    delivered.add(1, ordering: .relaxed)
                }
            } catch {
                Issue.record("unexpected error \(error)")
            }
            #expect(results == (0..<count).map { $0 * 2 })
            let observed = widest.load(ordering: .relaxed)
            #expect(observed <= window, "\(observed) transforms in flight with a window of \(window)")
        }
        jobs.shutdown()
    }

    @Test
    func computeMapThrowsTheFirstErrorInOrder() throws {
        let jobs = try makeSystem(workers: 4)
        runAsync("computeMap errors") {
            // A transform fails at element 37: the 37 results before it arrive first.
            var received: [Int] = []
            do {
                for try await value in stream(0..<1_000).computeMap(on: jobs, maxInFlight: 8, { value in
                    if value == 37 { throw ComputeTestError.boom(value) }
                    return value
                }) {
                    received.append(value)
                }
                Issue.record("no error thrown")
            } catch {
                #expect(error as? ComputeTestError == .boom(37))
            }
            #expect(received == Array(0..<37))
            // The base sequence fails after 10 elements.
            let failing = AsyncThrowingStream<Int, any Error> { continuation in
                for index in 0..<10 { continuation.yield(index) }
                continuation.finish(throwing: ComputeTestError.boom(-1))
            }
            received = []
            do {
                for try await value in failing.computeMap(on: jobs, { $0 + 100 }) { received.append(value) }
                Issue.record("no error thrown")
            } catch {
                #expect(error as? ComputeTestError == .boom(-1))
            }
            #expect(received == Array(100..<110))
        }
        jobs.shutdown()
    }

    // MARK: Task executor

    @Test(arguments: workerCounts)
    func tasksPreferringTheSystemRunOnItsWorkers(workers: Int) throws {
        let jobs = try makeSystem(workers: workers, "sp-exec-w")
        let before = jobs.metrics().total.jobsRun
        runAsync("executor workers=\(workers)") {
            let name = await withTaskExecutorPreference(jobs) { currentThreadName() }
            #expect(name.hasPrefix("sp-exec-w"))
            let children = stressCount(2_000)
            let (sum, outside) = await Task(executorPreference: jobs) {
                await withTaskGroup(of: (Int, Bool).self) { group in
                    for index in 1...children {
                        group.addTask {
                            // A suspension in the middle: the task continues on a worker too.
                            await Task.yield()
                            return (index, currentThreadName().hasPrefix("sp-exec-w"))
                        }
                    }
                    var sum = 0, outside = 0
                    for await (value, onWorker) in group {
                        sum += value
                        if !onWorker { outside += 1 }
                    }
                    return (sum, outside)
                }
            }.value
            #expect(sum == children * (children + 1) / 2)
            #expect(outside == 0, "\(outside) child tasks ran outside the workers")
        }
        #expect(jobs.metrics().total.jobsRun > before)
        jobs.shutdown()
    }

    @Test
    func tasksOnTheExecutorCanComputeAndAwaitCounters() throws {
        let jobs = try makeSystem(workers: 1)
        runAsync("executor compute") {
            // With one worker, anything that blocked it inside the task would hang here.
            let value = await Task(executorPreference: jobs) {
                let counter = jobs.run(count: 100) { _, _ in }
                await jobs.wait(for: counter)
                return await jobs.compute { ctx in
                    ctx.job.wait(for: ctx.job.run(count: 10) { _, _ in })
                    return 42
                }
            }.value
            #expect(value == 42)
        }
        jobs.shutdown()
    }
}

@Suite(.serialized)
struct AsyncMisuseTests {
    @Test
    func aBlockingWaitInATaskOnTheExecutorTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            await Task(executorPreference: jobs) {
                jobs.wait(for: JobCounter())
            }.value
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("async code running on a Spindle worker"))
    }

    @Test
    func aZeroComputeMapWindowTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let jobs = try! JobSystem(configuration: .init(workers: 1))
            _ = stream(0..<3).computeMap(on: jobs, maxInFlight: 0) { $0 }
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("at least one element"))
    }
}
