import CSpindle
@testable @_spi(Internals) import Spindle
import Foundation
import Synchronization
import Testing

/// SplitMix64: a small, seedable generator so every randomized test can print and replay its
/// seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The seed for a randomized test: `SPINDLE_TEST_SEED` if set (to replay a failure), else a
/// fixed default per test so CI runs are reproducible.
func testSeed(default value: UInt64) -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["SPINDLE_TEST_SEED"], let seed = UInt64(text) {
        return seed
    }
    return value
}

/// Runs `body` on a new OS thread and waits for it to finish.
func onNewThread<T: Sendable>(name: String? = nil, _ body: @escaping @Sendable () -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    let result = ResultBox<T>()
    let thread = Thread {
        result.value = body()
        done.signal()
    }
    if let name { thread.name = name }
    thread.start()
    done.wait()
    return result.value!
}

final class ResultBox<T>: @unchecked Sendable {
    // SAFETY: written once by the worker thread before `done.signal()`, read after `wait()`.
    var value: T?
}

/// Runs `body` on its own thread and kills the test process with a clear message if it has not
/// finished within `seconds`, so that a hang fails the run instead of stalling it. `what` should
/// name the configuration and seed, so the failure can be replayed.
func withTimeLimit(seconds: Int, _ what: @autoclosure () -> String, _ body: @escaping @Sendable () -> Void) {
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        body()
        done.signal()
    }
    thread.stackSize = 8 << 20
    thread.start()
    if done.wait(timeout: .now() + .seconds(seconds)) == .timedOut {
        let message = "time limit of \(seconds) s exceeded (a hang?): \(what())\n"
        FileHandle.standardError.write(Data(message.utf8))
        fatalError(message)
    }
}

/// Runs `body(0..<count)` on `count` OS threads of their own (unlike `concurrentPerform`,
/// which never runs more threads than CPUs), released together from a start barrier so that
/// they really overlap, and waits for all of them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let started = DispatchSemaphore(value: 0)
    let go = DispatchSemaphore(value: 0)
    let finished = DispatchSemaphore(value: 0)
    for index in 0..<count {
        let thread = Thread {
            started.signal()
            go.wait()
            body(index)
            finished.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
    for _ in 0..<count { started.wait() }
    for _ in 0..<count { go.signal() }
    for _ in 0..<count { finished.wait() }
}

/// Reads a /proc file completely with read(2): such files report size 0 and are produced in
/// pieces, so size-based readers can stop early on a large one (such as maps of a process with
/// thousands of fiber stacks).
func readProcFile(_ path: String) throws -> String {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { throw CocoaError(.fileReadNoSuchFile) }
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        bytes.append(contentsOf: chunk[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A value guarded by Spindle's pthread-based `Lock`. Tests use it rather than
/// `Synchronization.Mutex`, whose futex-based lock ThreadSanitizer cannot see, so that the tests
/// run clean under `--sanitize=thread` (see Lock.swift).
final class Locked<Value>: @unchecked Sendable {
    // SAFETY: `value` is only touched with `lock` held.
    private let lock = Lock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try lock.withLock { try body(&value) }
    }
}

/// The context a fiber should switch back to, passed as the switch argument by whoever resumes it.
func caller(_ pointer: UnsafeMutableRawPointer?) -> Fiber {
    Fiber(control: pointer!.assumingMemoryBound(to: spindle_fiber_t.self))
}

/// Whether this test binary runs under ThreadSanitizer or AddressSanitizer, where every memory
/// access and fiber switch costs far more: long stress loops shrink there (the interleavings
/// still get exercised; the full sizes run in the plain and release test runs).
let underSanitizer: Bool = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__tsan_init") != nil
    || dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__asan_init") != nil

/// `count`, or a tenth of it under a sanitizer.
func stressCount(_ count: Int) -> Int { underSanitizer ? Swift.max(1, count / 10) : count }

// MARK: Job system helpers

/// Flags, one per job, that catch a job running twice or never.
final class Flags: @unchecked Sendable {
    // SAFETY: only touched through atomics.
    let pointer: UnsafeMutablePointer<Atomic<UInt8>>
    let count: Int

    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: count)
        for index in 0..<count { (pointer + index).initialize(to: Atomic(0)) }
    }

    deinit { pointer.deallocate() }

    /// Marks `index`; returns false if it was already marked.
    func mark(_ index: Int) -> Bool {
        pointer[index].exchange(1, ordering: .relaxed) == 0
    }

    var unmarked: [Int] {
        (0..<count).filter { pointer[$0].load(ordering: .relaxed) == 0 }
    }
}

final class Tally: Sendable {
    let value = Atomic<Int>(0)
    func add(_ amount: Int = 1) { value.wrappingAdd(amount, ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}

let workerCounts = [1, 2, 4, 8]

func makeSystem(workers: Int, _ name: String = "sp-test-w") throws -> JobSystem {
    try JobSystem(configuration: .init(workers: workers, threadNamePrefix: name))
}

// MARK: Job system tests

/// The job system's tests, one suite per subsystem in a file of its own (JobSubmissionTests,
/// FiberWaitTests, WakingTests, PriorityTests, ShutdownTests, FrameTests, ConfigurationTests),
/// nested here so that they run one at a time, as they did when they were one suite, and so that
/// `--filter JobSystem` (the sanitizer runs of .ci/run) still selects every one of them.
@Suite(.serialized)
enum JobSystemTests {
    /// A node of a random tree: its own value, and how `size` nodes split among children.
    struct TreeNode {
        static func mix(_ value: UInt64) -> UInt64 {
            var z = value &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }

        /// The children's seeds and sizes for a node of `size` nodes (itself included).
        static func children(seed: UInt64, size: Int) -> [(seed: UInt64, size: Int)] {
            var remaining = size - 1
            guard remaining > 0 else { return [] }
            let count = Swift.min(remaining, Int(mix(seed ^ 0xC0FFEE) % 4) + 1)
            var result: [(UInt64, Int)] = []
            var state = seed
            for child in 0..<count {
                state = mix(state)
                let share = child == count - 1 ? remaining : 1 + Int(state % UInt64(remaining - (count - child - 1)))
                result.append((mix(state ^ UInt64(child)), share))
                remaining -= share
            }
            return result
        }

        static func oracle(seed: UInt64, size: Int) -> UInt64 {
            var total = mix(seed)
            for child in children(seed: seed, size: size) {
                total &+= oracle(seed: child.seed, size: child.size)
            }
            return total
        }
    }
}
