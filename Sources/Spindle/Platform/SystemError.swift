#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An operating-system call failed.
///
/// Carries the name of the call and the `errno` value it set; `description` reads like
/// "mmap failed: Cannot allocate memory (errno 12)".
public struct SystemError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The system call or libc function that failed, e.g. `"mmap"`.
    public let call: String
    /// The `errno` value it reported.
    public let errno: CInt

    /// The failure of `call` with the error number `errno`.
    public init(call: String, errno: CInt) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Runs a libc call that reports failure as `-1` with `errno`, retrying `EINTR`.
///
/// The one place where Spindle turns `errno` into a typed error (swift-nio's System.swift
/// pattern): `EINTR` is retried and never surfaces; `EFAULT` and `EBADF` mean Spindle passed a
/// bad pointer or descriptor, which is a bug of ours, so they trap; everything else is thrown.
///
/// - Complexity: O(1) per attempt.
@inline(__always)
@usableFromInline
func retryingSyscall(
    _ call: StaticString,
    _ body: () -> CInt
) throws(SystemError) -> CInt {
    while true {
        let result = body()
        if result != -1 { return result }
        let error = Glibc.errno
        if error != EINTR { throw failure(call, error) }
    }
}

/// Like `retryingSyscall`, for calls that return an `errno` value instead of setting it
/// (the pthread family: 0 on success).
@inline(__always)
@usableFromInline
func retryingErrnoReturning(
    _ call: StaticString,
    _ body: () -> CInt
) throws(SystemError) -> Void {
    while true {
        let error = body()
        if error == 0 { return }
        if error != EINTR { throw failure(call, error) }
    }
}

/// The one errno classification: `EFAULT` and `EBADF` mean Spindle passed a bad pointer or
/// descriptor, a bug of ours, so they trap; everything else becomes a `SystemError`.
@usableFromInline
func failure(_ call: StaticString, _ error: CInt) -> SystemError {
    if error == EFAULT || error == EBADF {
        misuse("\(call): errno \(error) means Spindle passed a bad argument (a bug in Spindle)")
    }
    return SystemError(call: "\(call)", errno: error)
}
