import CSpindle
@testable @_spi(Internals) import Spindle
import Foundation
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
