// Internal invariant checks, compiled in only with `-Xswiftc -DSPINDLE_INTERNAL_CHECKS`
// (docs/internal-checks.md). They verify Spindle's own bookkeeping (fiber and record state
// transitions, owner-only access, raw slot bounds), not the caller's use of the API, which
// `require` checks in every build. With the flag on, Spindle's performance promises do not hold.

/// Whether this build checks Spindle's internal invariants.
@usableFromInline
let internalChecksEnabled: Bool = {
    #if SPINDLE_INTERNAL_CHECKS
    return true
    #else
    return false
    #endif
}()

/// Traps with `message` unless `condition` holds, in builds with SPINDLE_INTERNAL_CHECKS; does
/// nothing (and evaluates nothing) otherwise.
@inlinable @inline(__always)
func internalCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                   file: StaticString = #fileID, line: UInt = #line) {
    #if SPINDLE_INTERNAL_CHECKS
    if !condition() { misuse("Spindle internal check failed: \(message())", file: file, line: line) }
    #endif
}
