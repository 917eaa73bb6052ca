// A program with parked fibers, for the debugger script (Scripts/gdb/spindle.py,
// docs/debugging.md): three jobs wait in `waitForGate` on a counter that main holds, then main
// stops at `spindle_debug_checkpoint`, where `Scripts/gdb/check` lists and backtraces the
// fibers. Run alone, it just finishes.

import Spindle

@_silgen_name("spindle_debug_checkpoint")
func debuggerCheckpoint()

/// Jobs that passed the gate (counted after the wait, which also keeps the wait from being a
/// tail call, so the frame shows in a backtrace).
let resumed = JobCounter()

@inline(never)
func waitForGate(_ gate: JobCounter, _ context: JobContext) {
    context.wait(for: gate)
    resumed.decrement()
}

let jobs = try JobSystem(configuration: .init(workers: 2))
let gate = JobCounter(1)
resumed.increment(by: 3)
let arrived = JobCounter(3)
let done = JobCounter()
for _ in 0..<3 {
    jobs.run(counter: done, priority: .high) { context in
        arrived.decrement()
        waitForGate(gate, context)
    }
}
jobs.wait(for: arrived)
// The jobs decrement `arrived` just before they park: wait until all three parks completed.
while jobs.metrics().total.fibersParked < 3 {
    jobs.wait(for: jobs.run { _ in })
}
jobs.wait(for: jobs.run(count: 4) { _, _ in })
debuggerCheckpoint()
gate.decrement()
jobs.wait(for: done)
jobs.wait(for: resumed)
jobs.shutdown()
print("parked-fibers: 3 jobs parked and resumed")
