#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A pthread mutex in stable heap memory.
///
/// Spindle's internal locks use this rather than `Synchronization.Mutex` for two measured
/// reasons: an uncontended lock/unlock costs about a third of Mutex's on the reference machine
/// (docs/fibers.md, "Measured facts", "Reference costs"), and ThreadSanitizer intercepts
/// `pthread_mutex_*` while it cannot see the futex-based lock inside the prebuilt Synchronization
/// module, so data guarded by a `Mutex` is reported as racing under `--sanitize=thread`.
///
/// Thread-safe. Not recursive. Never hold it across a fiber switch: a sibling fiber on the same
/// thread that takes it would deadlock (README.md, "Rules for job code").
@usableFromInline
final class Lock: @unchecked Sendable {
    // SAFETY: the mutex lives in its own allocation, so its address never changes (a pthread
    // mutex must not move), and it is only used through pthread calls.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let result = pthread_mutex_init(mutex, nil)
        require(result == 0, "pthread_mutex_init failed: errno \(result)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the lock held. May block the calling thread (never switches fibers).
    @inlinable
    func withLock<Result>(_ body: () throws -> Result) rethrows -> Result {
        lock()
        defer { unlock() }
        return try body()
    }

    @usableFromInline
    func lock() {
        let result = pthread_mutex_lock(mutex)
        require(result == 0, "pthread_mutex_lock failed: errno \(result)")
    }

    @usableFromInline
    func unlock() {
        let result = pthread_mutex_unlock(mutex)
        require(result == 0, "pthread_mutex_unlock failed: errno \(result)")
    }
}
