// The job timeline recorder's cost: W1's inside spawn with no trace recorded and with one
// recorded (rings full, so every event overwrites one: the steady state of a long trace).

import Spindle
import SpindleBenchKit

enum TraceSuite {
    static func register(_ registry: inout BenchmarkRegistry) {
        let throughput = Throughput.elements(Workloads.w1Jobs)
        for recording in [false, true] {
            let name = recording ? "W1-inside-recording" : "W1-inside-off"
            let note = recording
                ? "W1 spawned inside a job while startTrace() records (2 events per job into 64 Ki-event rings)"
                : "the same W1 spawn with no trace recorded (the recorder's cost when off: a load and a branch per event site)"
            registry.register(Benchmark(BenchmarkID(group: "trace", name: name), throughput: throughput, mode: .flat,
                                        note: note) { _ in
                let jobs = try SharedJobSystem.get()
                let routine = SchedulerSuite.w1InsideRoutine(jobs)
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
