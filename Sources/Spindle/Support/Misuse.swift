/// Stops the program because a caller broke a documented contract (or Spindle found a bug in
/// itself), printing `message`: what was wrong and what to do.
///
/// Spindle uses this rather than `precondition`, whose message is dropped in optimized builds;
/// these checks stay on and their messages are printed in every build configuration.
@usableFromInline
@inline(never)
func misuse(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError(message(), file: file, line: line)
}

/// `misuse(message)` unless `condition` holds. As cheap as `precondition` when it holds.
@inlinable
@inline(__always)
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { misuse(message(), file: file, line: line) }
}
