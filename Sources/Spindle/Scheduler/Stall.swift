#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The stall watch's side in the scheduler: the progress stamp, and the report built from the
// fibers parked when every worker sleeps. Idle path only. docs/sleep.md, "Stalls".

extension Scheduler {
    /// Changes whenever a job runs or a fiber resumes (relaxed sums of the workers' metrics).
    func progressStamp() -> UInt64 {
        var stamp: UInt64 = 0
        for index in 0..<workerCount {
            stamp &+= workers[index].metric(.jobsRun) &+ workers[index].metric(.fibersResumed)
        }
        return stamp
    }

    /// Every worker has slept for `stallNanoseconds` with fibers parked, nothing queued and no
    /// progress since `stamp`: builds the report and hands it to the handler, once per stall.
    func stalled(since stamp: UInt64) {
        let handler: (@Sendable (JobSystem.StallReport) -> Void)?
        let report: JobSystem.StallReport
        lock.lock()
        if lastStallStamp == stamp {
            lock.unlock()
            return
        }
        lastStallStamp = stamp
        handler = stallHandler
        report = JobSystem.StallReport(waits: parkedWaits(), idle: .nanoseconds(Int64(clamping: stallNanoseconds ?? 0)))
        lock.unlock()
        if let handler {
            handler(report)
        } else {
            Self.defaultStallAction(report)
        }
    }

    /// Debug builds trap with the report; release builds write it to standard error.
    static func defaultStallAction(_ report: JobSystem.StallReport) {
        #if DEBUG
        misuse(report.description)
        #else
        let text = report.description + "\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        #endif
    }

    /// The fibers parked now and what they wait for. Under `lock` (the list of fibers).
    private func parkedWaits() -> [JobSystem.StallReport.Wait] {
        var waits: [JobSystem.StallReport.Wait] = []
        var next = allFibers
        while let state = next {
            next = state.pointee.allNext
            guard state.pointee.phase == .parked else { continue }
            let counter = state.pointee.waitedCounter.map { Unmanaged<JobCounter>.fromOpaque($0).takeUnretainedValue() }
            #if DEBUG
            let origin = state.pointee.origin
            let site = origin?.site
            let described = origin.map(Self.describe)
            #else
            let site: SourceSite? = nil
            let described: String? = nil
            #endif
            waits.append(JobSystem.StallReport.Wait(
                job: state.pointee.currentCounter.map { ObjectIdentifier(Unmanaged<JobCounter>.fromOpaque($0).takeUnretainedValue()) },
                counter: counter.map(ObjectIdentifier.init),
                counterValue: counter?.value,
                file: state.pointee.waitSite.map { "\($0.file)" },
                line: state.pointee.waitSite.map { Int($0.line) },
                worker: state.pointee.worker.pointee.index,
                submittedFile: site.map { "\($0.file)" },
                submittedLine: site.map { Int($0.line) },
                origin: described))
        }
        return waits
    }

    #if DEBUG
    /// What a parked job is, for the report: its kind, and a graph node's name.
    private static func describe(_ origin: JobOrigin) -> String {
        guard origin.kind == .graphNode, let graph = origin.graph else { return origin.kind.traceName }
        // The running graph holds its plan, and a node of it is parked: the plan is alive.
        let plan = Unmanaged<GraphPlan>.fromOpaque(graph).takeUnretainedValue()
        return "graph node \"\(plan.names[origin.node])\""
    }
    #endif
}
