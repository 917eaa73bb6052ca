import CSpindle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Linux futexes on a 32-bit atomic word: the blocking primitive under Spindle's idle workers and
/// outside-thread waits (process-private futexes only).
///
/// A futex carries no state of its own: the protocol lives in the atomic word, and `wait` only
/// sleeps while the word still holds the value the caller last saw, which is what rules out lost
/// wake-ups. Every caller re-checks its condition after `wait` returns, whatever it returned.
///
/// Thread-safety: all functions are thread-safe. `wait` blocks the calling OS thread (never call
/// it from a fiber that could instead park); `wake` never blocks.
@_spi(Internals)
public enum Futex {
    /// Why `wait` returned.
    public enum WaitResult: Hashable, Sendable {
        /// Woken by `wake`, or spuriously (a signal): re-check the condition.
        case woken
        /// The word did not hold `expected` when the kernel looked: no sleep happened.
        case valueChanged
        /// The timeout passed.
        case timedOut
    }

    /// Sleeps while `word` holds `expected`, until woken or until `timeoutNanoseconds` pass.
    ///
    /// - Complexity: one system call.
    public static func wait(
        on word: UnsafePointer<Atomic<UInt32>>, expected: UInt32, timeoutNanoseconds: UInt64? = nil
    ) -> WaitResult {
        // SAFETY: Atomic<UInt32> is a UInt32 in memory; the kernel reads it atomically.
        let address = UnsafeMutableRawPointer(mutating: word).assumingMemoryBound(to: UInt32.self)
        let result: Int
        if let timeoutNanoseconds {
            var timeout = timespec(tv_sec: Int(timeoutNanoseconds / 1_000_000_000),
                                   tv_nsec: Int(timeoutNanoseconds % 1_000_000_000))
            result = spindle_futex_wait(address, expected, &timeout)
        } else {
            result = spindle_futex_wait(address, expected, nil)
        }
        guard result == -1 else { return .woken }
        switch Glibc.errno {
        case EAGAIN: return .valueChanged
        case ETIMEDOUT: return .timedOut
        case EINTR: return .woken
        case let error:
            misuse("futex wait failed with errno \(error): a bad address or argument (a bug in Spindle)")
        }
    }

    /// Wakes up to `count` threads sleeping on `word`; returns how many it woke.
    ///
    /// - Complexity: one system call.
    @discardableResult
    public static func wake(_ word: UnsafePointer<Atomic<UInt32>>, count: Int32 = 1) -> Int {
        require(count > 0, "Futex.wake needs a positive count (got \(count))")
        let address = UnsafeMutableRawPointer(mutating: word).assumingMemoryBound(to: UInt32.self)
        let woken = spindle_futex_wake(address, count)
        require(woken >= 0, "futex wake failed with errno \(Glibc.errno): a bad address (a bug in Spindle)")
        return woken
    }
}
