#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// Detached OS threads for work that must not run on the workers (dedicated pipeline stages,
/// the metrics reporter).
enum OSThread {
    private final class Start {
        let name: String
        let cpu: Int?
        let body: @Sendable () -> Void
        init(name: String, cpu: Int?, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.cpu = cpu
            self.body = body
        }
    }

    /// Starts a detached thread named `name` (at most 15 bytes are kept), pinned to `cpu` if
    /// given, that runs `body`. Returns nil on success, or `pthread_create`'s error number.
    ///
    /// Pinning or naming failures inside the new thread are ignored: the thread still runs
    /// (the CPU was checked against the allowed set beforehand).
    @discardableResult
    static func detach(name: String, cpu: Int? = nil, _ body: @escaping @Sendable () -> Void) -> Int32? {
        let start = Unmanaged.passRetained(Start(name: name, cpu: cpu, body: body))
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { argument in
            let start = Unmanaged<Start>.fromOpaque(argument!).takeRetainedValue()
            try? CurrentThread.setName(String(start.name.utf8.prefix(15))!)
            if let cpu = start.cpu { try? CurrentThread.pin(to: CPUSet([cpu])) }
            start.body()
            return nil
        }, start.toOpaque())
        guard result == 0 else {
            start.release()
            return result
        }
        pthread_detach(thread)
        return nil
    }
}

extension OSThread {
    /// Starts a detached thread named `name` that calls `tick` every `interval` until the word
    /// `stop()` returns (owned by what the closure captures) holds a non-zero value, then calls
    /// `exited`. The thread
    /// sleeps on `stop` with a futex timeout, so storing to `stop` and waking it ends the wait at
    /// once; a tick never starts after the thread has seen `stop` set. Returns nil on success,
    /// or `pthread_create`'s error number (then nothing runs).
    ///
    /// Used by the periodic metrics reports of job systems and pipeline runs.
    @discardableResult
    static func repeating(
        name: String, every interval: Duration,
        stop: @escaping @Sendable () -> UnsafeMutablePointer<Atomic<UInt32>>,
        _ tick: @escaping @Sendable () -> Void, exited: @escaping @Sendable () -> Void = {}
    ) -> Int32? {
        let nanoseconds = UInt64(interval.nanosecondsSaturated)
        return detach(name: name) {
            let word = stop()
            while word.pointee.load(ordering: .acquiring) == 0 {
                if Futex.wait(on: word, expected: 0, timeoutNanoseconds: nanoseconds) == .timedOut,
                   word.pointee.load(ordering: .acquiring) == 0 {
                    tick()
                }
            }
            exited()
        }
    }
}

extension Duration {
    /// The duration in whole nanoseconds (negative durations as they are; saturating at the
    /// bounds of Int64).
    var nanosecondsSaturated: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflowed) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflowed ? (seconds < 0 ? .min : .max) : sum
    }
}
