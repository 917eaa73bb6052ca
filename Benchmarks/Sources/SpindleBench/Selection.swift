// The benchmarks that run when spindle-bench is given no filter: one or two entries per
// workload for Spindle and each peer's strongest idiom, so that a first run finishes in a few
// minutes and still shows where Spindle stands. `--all` runs every benchmark
// (docs/benchmarking.md, "Selecting benchmarks").

import SpindleBenchKit

enum DefaultSelection {
    /// Ids of the default run, in the order they are registered (which is the order they run).
    static let ids: Set<String> = [
        "fiber/round-trip",
        "W1-spawn/spindle-inside", "W1-spawn/spindle-outside", "W1-spawn/dispatch-async-group",
        "W2-fib/spindle-join", "W2-fib/async-let", "W2-fib/serial",
        "W3-axpy/spindle", "W3-axpy/dispatch-concurrentPerform", "W3-axpy/serial",
        "W4-compute/spindle", "W4-compute/dispatch-concurrentPerform-chunks", "W4-compute/serial",
        "W5-dag/spindle", "W5-dag/dispatch", "W5-dag/serial",
        "W6-chain/spindle-argument", "W6-chain/dispatch-async",
        "W7-nested/spindle-chunks", "W7-nested/dispatch-concurrentPerform-chunks", "W7-nested/serial",
        "pipeline/spindle", "pipeline/dispatch-batched",
        "frame/spindle", "frame/dispatch",
        "wake/spindle-parked-worker", "wake/bare-futex",
    ]

    /// The time limit of each benchmark of the default selection, unless `--time-limit` or
    /// `--quick` says otherwise: criterion's 3 s of warm-up and 5 s of samples fit in it; slow
    /// entries stop with the samples they have and say so.
    static let timeLimitNanoseconds: UInt64 = 10_000_000_000

    static func contains(_ benchmark: Benchmark) -> Bool {
        ids.contains(benchmark.id.description)
    }
}
