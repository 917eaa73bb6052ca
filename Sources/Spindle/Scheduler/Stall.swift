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
            waits.append(JobSystem.StallReport.Wait(
                job: state.pointee.currentCounter.map { ObjectIdentifier(Unmanaged<JobCounter>.fromOpaque($0).takeUnretainedValue()) },
                counter: counter.map(ObjectIdentifier.init),
                counterValue: counter?.value,
                file: state.pointee.waitSite.map { "\($0.file)" },
                line: state.pointee.waitSite.map { Int($0.line) },
                worker: state.pointee.worker.pointee.index))
        }
        return waits
    }
}
