import CSpindle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A monotonic clock in nanoseconds (`CLOCK_MONOTONIC`).
///
/// Thread-safe; never blocks. About 20 ns a reading through the vDSO.
enum MonotonicTime {
    @inline(__always)
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }
}

/// One CPU pause hint: lets a sibling hyperthread run while this one spins.
@inline(__always)
func spinPause() {
    spindle_cpu_relax()
}

/// Gives up the CPU to another runnable thread of the same priority, if any (`sched_yield`).
@inline(__always)
func yieldCPU() {
    sched_yield()
}
