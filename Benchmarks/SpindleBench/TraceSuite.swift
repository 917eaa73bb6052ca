// The job timeline recorder's cost: W1's inside spawn with no trace recorded and with one
// recorded (rings full, so every event overwrites one: the steady state of a long trace).

import Spindle
import SpindleBenchKit

enum TraceSuite {
    static func register(_ registry: inout BenchmarkRegistry) {
        let count = Workloads.w1Jobs
        let throughput = Throughput.elements(count)
        for recording in [false, true] {
            let name = recording ? "W1-inside-recording" : "W1-inside-off"
            let note = recording
                ? "W1 spawned inside a job while startTrace() records (2 events per job into 64 Ki-event rings)"
                : "the same W1 spawn with no trace recorded (the recorder's cost when off: a load and a branch per event site)"
            registry.register(Benchmark(BenchmarkID(group: "trace", name: name), throughput: throughput, mode: .flat,
                                        note: note) { _ in
                let jobs = try SharedJobSystem.get()
                let routine = WorkloadSuite.w1Routine { hits in
                    let body: @Sendable (JobContext) -> Void = { _ in hits.value.add(1, ordering: .relaxed) }
                    jobs.wait(for: jobs.run { ctx in
                        let counter = JobCounter()
                        for _ in 0..<count { ctx.run(counter: counter, body) }
                        ctx.wait(for: counter)
                    })
                }
                guard recording else { return routine }
                return { iterations in
                    jobs.startTrace()
                    defer { _ = jobs.stopTrace() }
                    return try routine(iterations)
                }
            })
        }
    }
}
