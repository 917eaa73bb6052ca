#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A thread-specific pointer slot (`pthread_key_t`): each thread sees its own value, nil until
/// it stores one.
///
/// Reads are opaque calls, so a value is read afresh every time and never cached across a fiber
/// switch (a fiber may resume on another thread). Thread-safe; never blocks.
struct ThreadLocalKey: @unchecked Sendable {
    // SAFETY: a pthread key is an integer valid on every thread.
    private let key: pthread_key_t

    /// A new key. `what` names its use in the message if the process has run out of keys.
    init(_ what: StaticString) {
        var key = pthread_key_t()
        let result = pthread_key_create(&key, nil)
        require(result == 0, "Spindle: pthread_key_create failed for \(what) (error \(result)): the process has used up its thread-specific keys (PTHREAD_KEYS_MAX)")
        self.key = key
    }

    /// The calling thread's value.
    @inline(__always)
    var value: UnsafeMutableRawPointer? {
        pthread_getspecific(key)
    }

    /// Sets the calling thread's value.
    @inline(__always)
    func set(_ value: UnsafeRawPointer?) {
        pthread_setspecific(key, value)
    }

    /// Frees the key (every thread's value is forgotten, nothing is released).
    func delete() {
        pthread_key_delete(key)
    }
}
