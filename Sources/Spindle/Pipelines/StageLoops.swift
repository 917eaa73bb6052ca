import CSpindle
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The loops of the stages: serial and parallel maps, fan-out sends, waiting for input and room.
// docs/pipelines.md, "Waiting".

// MARK: - Stage loops

/// The loops stages run. docs/pipelines.md, "Stages".
enum StageLoops {
    /// Items taken from one input before looking at the next.
    static let pass = 64

    /// A serial stage: one item at a time, in arrival order; `transform` returning nil drops the
    /// item (compactMap; sinks).
    static func serial<Input: Sendable, Output: Sendable>(
        _ stage: StageRuntime, _ run: PipelineRunState, inputs: [Channel<Input>], outputs: [Channel<Output>],
        _ transform: @escaping (Input) throws -> Output?
    ) -> @Sendable () -> Void {
        let body = UncheckedSendable(transform)
        return {
            var live = inputs
            let filters = !outputs.isEmpty
            while !live.isEmpty {
                let start = MonotonicTime.now()
                // `send` adds its waits for room here; busy time leaves them out.
                let waitedBefore = stage.waitingForRoomNanoseconds.load(ordering: .relaxed)
                var took = 0
                for index in 0..<live.count {
                    let channel = live[index]
                    var taken = 0
                    while taken < pass, let item = channel.tryPop() {
                        taken += 1
                        if run.isStopped {
                            StageRuntime.add(stage.discarded, 1)
                            continue
                        }
                        do {
                            if let result = try body.value(item) {
                                send(result, to: outputs, stage, run, inputs: live)
                            } else if filters {
                                StageRuntime.add(stage.filtered, 1)
                            }
                        } catch {
                            StageRuntime.add(stage.failed, 1)
                            run.fail(stage: stage.name, error)
                        }
                    }
                    took += taken
                }
                StageRuntime.add(stage.itemsIn, took)
                let waited = stage.waitingForRoomNanoseconds.load(ordering: .relaxed) &- waitedBefore
                StageRuntime.add(stage.busyNanoseconds, (MonotonicTime.now() &- start) &- waited)
                if took == 0 {
                    live = waitForInput(live, outputs, stage, run)
                }
            }
            for output in outputs { output.close() }
        }
    }

    /// A parallel stage: batches of up to `batch` items transformed with `parallelMap`, each
    /// batch emitted in input order.
    static func parallel<Input: Sendable, Output: Sendable>(
        _ stage: StageRuntime, _ run: PipelineRunState, inputs: [Channel<Input>], outputs: [Channel<Output>],
        batch: Int, _ transform: @escaping @Sendable (Input) throws -> Output
    ) -> @Sendable () -> Void {
        return {
            var live = inputs
            var items: [Input] = []
            items.reserveCapacity(batch)
            while !live.isEmpty {
                items.removeAll(keepingCapacity: true)
                for index in 0..<live.count {
                    let channel = live[index]
                    while items.count < batch, let item = channel.tryPop() { items.append(item) }
                }
                if items.isEmpty {
                    live = waitForInput(live, outputs, stage, run)
                    continue
                }
                StageRuntime.add(stage.itemsIn, items.count)
                if run.isStopped {
                    StageRuntime.add(stage.discarded, items.count)
                    continue
                }
                let start = MonotonicTime.now()
                let batchItems = items
                do {
                    let results = try run.jobs.parallelMap(0..<batchItems.count, partitioner: .fixed(grain: 1)) { index in
                        try transform(batchItems[index])
                    }
                    StageRuntime.add(stage.busyNanoseconds, MonotonicTime.now() &- start)
                    for index in 0..<results.count { send(results[index], to: outputs, stage, run, inputs: live) }
                } catch {
                    // parallelMap returns no result when one transform throws: the batch is lost.
                    StageRuntime.add(stage.busyNanoseconds, MonotonicTime.now() &- start)
                    StageRuntime.add(stage.failed, batchItems.count)
                    run.fail(stage: stage.name, error)
                }
            }
            for output in outputs { output.close() }
        }
    }

    /// Writes `item` to every output, waiting for room (after releasing the inputs' slots and
    /// publishing what the outputs hold, so nobody waits on us meanwhile).
    @inline(__always)
    static func send<Input, Output>(_ item: Output, to outputs: [Channel<Output>], _ stage: StageRuntime,
                                    _ run: PipelineRunState, inputs: [Channel<Input>]) {
        for index in 0..<outputs.count where !outputs[index].tryPush(item) {
            let output = outputs[index]
            flush(inputs, outputs)
            let start = MonotonicTime.now()
            stage.outputWaker.wait(on: run.jobs) { output.hasRoom() }
            StageRuntime.add(stage.waitingForRoomNanoseconds, MonotonicTime.now() &- start)
            let pushed = output.tryPush(item)
            require(pushed, "Spindle pipeline: a channel reported room but refused an item (a bug in Spindle)")
        }
        StageRuntime.add(stage.itemsOut, 1)
    }

    /// Nothing to take: release and publish, drop finished inputs, and wait for an item or a
    /// close. Returns the inputs still open.
    static func waitForInput<Input, Output>(_ live: [Channel<Input>], _ outputs: [Channel<Output>],
                                            _ stage: StageRuntime, _ run: PipelineRunState) -> [Channel<Input>] {
        flush(live, outputs)
        // The same array unless an input finished: no allocation per wait.
        let open = any(live) { $0.isFinished() } ? live.filter { !$0.isFinished() } : live
        if open.isEmpty { return open }
        let start = MonotonicTime.now()
        stage.inputWaker.wait(on: run.jobs) { any(open) { $0.hasItemOrIsClosed() } }
        StageRuntime.add(stage.waitingForInputNanoseconds, MonotonicTime.now() &- start)
        return open
    }

    @inline(__always)
    static func flush<Input, Output>(_ inputs: [Channel<Input>], _ outputs: [Channel<Output>]) {
        for index in 0..<inputs.count { inputs[index].release() }
        for index in 0..<outputs.count { outputs[index].publish() }
    }

    /// Whether `test` holds for one of `channels` (an index loop: see `PipelineRun.push`).
    @inline(__always)
    static func any<Element>(_ channels: [Channel<Element>], _ test: (Channel<Element>) -> Bool) -> Bool {
        for index in 0..<channels.count where test(channels[index]) { return true }
        return false
    }
}

/// A closure the stage loop alone calls (the loop runs on one fiber or thread at a time).
struct UncheckedSendable<Value>: @unchecked Sendable {
    // SAFETY: used by a single stage loop.
    let value: Value
    init(_ value: Value) { self.value = value }
}
