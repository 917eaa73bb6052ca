import CSpindle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension CPUSet {
    /// The CPUs the calling thread may run on, from `sched_getaffinity`.
    ///
    /// Unlike `ProcessInfo.activeProcessorCount` and `sysconf(_SC_NPROCESSORS_ONLN)`, this
    /// respects `taskset`, cpuset cgroups and container CPU limits, so size worker pools by it.
    /// Thread-safe; a system call, so not for hot paths.
    public static func allowed() throws(SystemError) -> CPUSet {
        try CurrentThread.allowedCPUs()
    }
}

/// Operations on the calling OS thread: affinity, naming, identity.
///
/// Never cache what these return across a fiber wait: a resumed fiber may run on another
/// thread (docs/fibers.md, "Measured facts", "The Swift runtime's thread-local state").
@_spi(Internals)
public enum CurrentThread {
    /// The CPUs the calling thread may run on (`sched_getaffinity(0)`). The kernel's mask may be
    /// larger than the default 1024 bits; the buffer grows until it fits.
    public static func allowedCPUs() throws(SystemError) -> CPUSet {
        var words = 1024 / UInt.bitWidth
        while true {
            var mask = [UInt](repeating: 0, count: words)
            let result = mask.withUnsafeMutableBufferPointer { buffer in
                spindle_sched_getaffinity(buffer.count * MemoryLayout<UInt>.stride, buffer.baseAddress!)
            }
            if result == 0 {
                return mask.withUnsafeBufferPointer { CPUSet(mask: $0) }
            }
            let error = Glibc.errno
            if error == EINVAL && words * UInt.bitWidth <= CPUSet.maximumCPU {
                words *= 2
                continue
            }
            if error == EINTR { continue }
            throw SystemError(call: "sched_getaffinity", errno: error)
        }
    }

    /// Restricts the calling thread to `cpus` (`sched_setaffinity(0)`).
    ///
    /// - Throws: `SystemError` with `EINVAL` when no CPU of `cpus` is allowed for this process
    ///   (outside its cpuset cgroup, or offline).
    public static func pin(to cpus: CPUSet) throws(SystemError) {
        require(!cpus.isEmpty, "cannot pin a thread to an empty CPU set")
        let maximum = cpus.reduce(0) { Swift.max($0, $1) }
        let words = (maximum / UInt.bitWidth + 1 + 15) / 16 * 16  // whole 1024-bit blocks
        var mask = [UInt](repeating: 0, count: words)
        for cpu in cpus { mask[cpu / UInt.bitWidth] |= 1 << UInt(cpu % UInt.bitWidth) }
        _ = try mask.withUnsafeBufferPointer { (buffer) throws(SystemError) in
            try retryingSyscall("sched_setaffinity") {
                spindle_sched_setaffinity(buffer.count * MemoryLayout<UInt>.stride, buffer.baseAddress!)
            }
        }
    }

    /// The longest thread name Linux keeps, in bytes (16 with the terminating NUL).
    public static let maximumNameLength = 15

    /// Names the calling thread; the name shows in `/proc/self/task/*/comm`, `top -H` and htop.
    ///
    /// - Throws: `ThreadNameError` when `name` is longer than 15 UTF-8 bytes (Linux refuses,
    ///   rather than truncates, longer names), or `SystemError` if the kernel refuses it.
    public static func setName(_ name: String) throws {
        let length = name.utf8.count
        guard length <= maximumNameLength else {
            throw ThreadNameError(name: name, byteCount: length)
        }
        try retryingErrnoReturning("pthread_setname_np") { spindle_thread_set_name(name) }
    }

    /// The kernel's id of the calling thread (`gettid`).
    public static var id: pid_t { spindle_gettid() }

    /// The CPU the calling thread runs on at this instant, or nil if the kernel cannot say.
    public static var cpu: Int? {
        let cpu = spindle_sched_getcpu()
        return cpu >= 0 ? Int(cpu) : nil
    }

    /// How often the kernel has taken the CPU from the calling thread while it could still run
    /// (`getrusage(RUSAGE_THREAD).ru_nivcsw`): it grows when another runnable thread or process
    /// wants this thread's CPU. About a fifth of a microsecond.
    static var involuntarySwitches: Int {
        spindle_thread_involuntary_switches()
    }

    /// The calling thread's `pthread_t` as an integer: a cheap identity for ownership checks.
    static var identifier: UInt { UInt(pthread_self()) }
}

/// Joinable OS threads: the workers.
enum JoinableThread {
    /// Starts a thread that calls `body(argument)`; returns its handle, or `pthread_create`'s
    /// error number.
    static func start(_ argument: UnsafeMutableRawPointer,
                      _ body: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer?) -> Result<pthread_t, SystemError> {
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, body, argument)
        return result == 0 ? .success(thread) : .failure(SystemError(call: "pthread_create", errno: result))
    }

    /// Waits for `thread` to exit.
    static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }

    /// Lets `thread` exit on its own (its resources are freed when it does).
    static func detach(_ thread: pthread_t) {
        pthread_detach(thread)
    }
}

/// A thread name was longer than Linux allows.
public struct ThreadNameError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The name that was asked for.
    public let name: String
    /// Its length in UTF-8 bytes.
    public let byteCount: Int

    public var description: String {
        "thread name \"\(name)\" is \(byteCount) bytes long; Linux allows at most \(CurrentThread.maximumNameLength): choose a shorter name or prefix"
    }
}
