import CSpindle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A started pipeline: send items, close or cancel, wait for the report.
///
/// Thread-safety: `send` and `close` belong to one producer at a time (sending from two threads
/// at once traps); `cancel`, `wait`, `finish`, `metrics` and `reportMetrics` may be called from
/// any thread.
public final class PipelineRun<Input: Sendable>: @unchecked Sendable {
    // SAFETY: `source` is used by the one producer `sourceState` admits; the rest is thread-safe.
    let state: PipelineRunState
    private let sources: [Channel<Input>]

    init(state: PipelineRunState, sources: [Channel<Input>]) {
        self.state = state
        self.sources = sources
    }

    /// Dropping the last reference to a run whose input is still open cancels it: nobody can
    /// send to it or close it any more, and its stages would otherwise wait for input forever
    /// (and `JobSystem.shutdown()` with them). Items in flight are discarded and counted. A run
    /// that was closed finishes its items on its own. docs/pipelines.md, "Ending a run".
    deinit {
        if state.isSourceOpen { state.stop(failure: nil) }
    }

    /// Sends `item` into the pipeline, waiting while the first stage's channel is full (parks the
    /// fiber inside a job, blocks the thread outside). Returns false, without sending, once the
    /// run was cancelled or a stage failed.
    ///
    /// - Precondition: not after `close()`; not from two threads at once.
    /// - Complexity: O(1) amortized; no allocation.
    @discardableResult
    public func send(_ item: Input) -> Bool {
        guard state.beginSend() else { return false }
        let accepted = push(item)
        if accepted { for index in 0..<sources.count { sources[index].publish() } }
        state.endSend(accepted: accepted ? 1 : 0)
        return accepted
    }

    /// Sends every item of `items` (publishing them in batches). Returns how many were accepted:
    /// all of them unless the run was cancelled or failed meanwhile.
    ///
    /// - Precondition: as for `send(_:)`.
    @discardableResult
    public func send(contentsOf items: some Sequence<Input>) -> Int {
        guard state.beginSend() else { return 0 }
        var accepted = 0
        for item in items {
            guard push(item) else { break }
            accepted += 1
        }
        for index in 0..<sources.count { sources[index].publish() }
        state.endSend(accepted: accepted)
        return accepted
    }

    private func push(_ item: Input) -> Bool {
        // Index loops here and in the stage loops: this code runs unspecialized when `Input` is
        // a client's type, and iterating an array through `Sequence` there allocates an
        // iterator per loop.
        for index in 0..<sources.count where !sources[index].tryPush(item) {
            let channel = sources[index]
            channel.publish()
            state.sourceWaker.wait(on: state.jobs) { channel.hasRoom() || state.isStopped }
            if !channel.tryPush(item) { return false }
        }
        return true
    }

    /// Ends the input: the stages finish every item sent, then stop. Idempotent.
    ///
    /// - Precondition: not while another thread is in `send`.
    public func close() {
        state.closeSource()
    }

    /// Stops the run: stages stop transforming, and every item still in a channel is discarded
    /// and counted (`PipelineReport.discarded`); later sends return false. Returns at once; wait
    /// for the report with `wait()`. Idempotent.
    public func cancel() {
        state.stop(failure: nil)
    }

    /// Waits until every stage has finished (after `close()` or `cancel()`, or a failure), and
    /// returns the report. Blocks the thread outside a job; parks the fiber inside one.
    ///
    /// - Throws: `PipelineFailure` if a stage threw (the run was stopped at the first error).
    public func wait() throws(PipelineFailure) -> PipelineReport {
        state.jobs.wait(for: state.done)
        let report = state.report()
        if let failure = state.failure {
            throw PipelineFailure(stage: failure.stage, error: failure.error, report: report)
        }
        return report
    }

    /// `close()`, then `wait()`.
    public func finish() throws(PipelineFailure) -> PipelineReport {
        close()
        return try wait()
    }

    /// Whether every stage has finished.
    public var isFinished: Bool { state.done.isComplete }

    /// A snapshot of every stage's counters, in the order the stages were added.
    public func metrics() -> [StageMetrics] { state.metrics() }

    /// Calls `handler` with a metrics snapshot every `interval` until the run finishes, from a
    /// thread of its own (named "sp-metrics"). Off unless called.
    ///
    /// - Precondition: `interval` is positive.
    public func reportMetrics(every interval: Duration, _ handler: @escaping @Sendable ([StageMetrics]) -> Void) {
        require(interval.nanosecondsSaturated > 0, "PipelineRun.reportMetrics(every: \(interval)): the interval must be positive")
        let state = self.state
        OSThread.repeating(name: "sp-metrics", every: interval, stop: { state.finishedWord }) {
            handler(state.metrics())
        }
    }
}

/// What a finished run did. For a pipeline without fan-out, every accepted item is counted once:
/// `accepted == delivered + filtered + discarded + failed`.
public struct PipelineReport: Sendable, Equatable {
    /// Items `send` accepted.
    public let accepted: Int
    /// Items the sinks consumed.
    public let delivered: Int
    /// Items discarded after a cancellation or failure: the items that were in flight. An item
    /// copied to two branches (fan-out) counts once per branch that discarded it.
    public let discarded: Int
    /// Items lost to the failure: the item whose transform threw, or the whole batch of a
    /// parallel stage whose transform threw for one of its items.
    public let failed: Int
    /// Items a stage dropped by design (a `compactMap` stage's nil).
    public let filtered: Int
    /// Whether the run was stopped by `cancel()` or a failure rather than by closing the input.
    public let stopped: Bool
    /// Every stage's counters at the end.
    public let stages: [StageMetrics]
    /// The final states of the run's stateful sinks (`PipelinePort.sink(_:state:execution:_:)`).
    let sinkStates: [Int: any Sendable]

    /// The final state of `sink` in this run: its initial state updated by every item it
    /// consumed (after a failure or a cancellation, by the items it consumed before). nil if
    /// `sink` is not a stage of the pipeline this run belongs to.
    public subscript<State: Sendable>(sink: PipelineSink<State>) -> State? {
        sinkStates[sink.stage] as? State
    }

    /// Reports are equal when their counts and stage metrics are; sink states are not compared.
    public static func == (left: PipelineReport, right: PipelineReport) -> Bool {
        left.accepted == right.accepted && left.delivered == right.delivered && left.discarded == right.discarded
            && left.failed == right.failed && left.filtered == right.filtered && left.stopped == right.stopped
            && left.stages == right.stages
    }
}

/// A stateful sink of a pipeline: the key to its final state in a run's `PipelineReport`.
public struct PipelineSink<State: Sendable>: Sendable, Hashable {
    let stage: Int
}

/// The first error a stage threw; the run was stopped there.
public struct PipelineFailure: Error, CustomStringConvertible {
    /// The stage that threw.
    public let stage: String
    /// What it threw.
    public let error: any Error
    /// The run's report (its `discarded` counts the items stopped in flight).
    public let report: PipelineReport

    public var description: String { "Pipeline stage \"\(stage)\" failed: \(error)" }
}

/// One stage's counters.
public struct StageMetrics: Sendable, Equatable {
    /// The stage's name.
    public let name: String
    /// Items the stage took from its inputs.
    public let itemsIn: Int
    /// Items it wrote (to each output: a fan-out of two counts an item once).
    public let itemsOut: Int
    /// Items it discarded after the run was stopped.
    public let discarded: Int
    /// Items lost to a failure of its own transform (the item, or a parallel stage's batch).
    public let failed: Int
    /// Items its transform dropped by design (nil from a `compactMap` stage).
    public let filtered: Int
    /// Whether the stage is a sink (its items taken, less discarded and failed, are delivered).
    public let isSink: Bool
    /// Time spent transforming items: not waiting for input, nor for room downstream.
    public let busy: Duration
    /// Time spent waiting for input.
    public let waitingForInput: Duration
    /// Time spent waiting for room in an output (backpressure).
    public let waitingForRoom: Duration
    /// Items queued in the stage's input channels at the snapshot.
    public let queued: Int
    /// The capacity of its input channels together.
    public let capacity: Int
}
