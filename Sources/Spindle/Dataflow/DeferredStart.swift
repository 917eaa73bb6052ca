import Synchronization

// A job that is not submitted until its input counters have completed: no fiber, no park until
// it runs. docs/dataflow.md, "No fiber, no park before a task runs".

/// The pending start of one job: what to submit, a count of pending inputs, and one wait node
/// per input (tail-allocated in the same object) on the inputs' waiter lists. The last input to
/// complete submits the job.
final class DeferredStart: ManagedBuffer<DeferredStart.Header, DeferredStart.DeferredNode> {
    // SAFETY: `remaining` is only touched atomically (`remainingWord`); the nodes are written
    // before they are registered and then belong to the waiter lists until resumed; the job is
    // submitted exactly once, by the thread that takes `remaining` to zero.

    struct Header {
        /// Inputs not yet done, plus one while the inputs are being registered. Atomic.
        var remaining: Int
        let scheduler: Scheduler
        let counter: JobCounter
        let priority: Priority
        let affinity: JobAffinity
        let api: StaticString
        let site: SubmissionSite
        var body: (@Sendable (JobContext) -> Void)?
    }

    /// One input's node: the wait node first (the list resumes it by its address), then the
    /// object it belongs to.
    struct DeferredNode {
        var wait: WaitNode
        var owner: Unmanaged<DeferredStart>
    }

    /// Submits `body` as a job counted on `counter` (already incremented by the caller) once
    /// every counter of `inputs` has been zero since this call (at once if all are).
    ///
    /// - Complexity: O(inputs); one allocation (the object with its nodes).
    static func arm(after inputs: [JobCounter], scheduler: Scheduler, counter: JobCounter, priority: Priority,
                    affinity: JobAffinity, api: StaticString, site: SubmissionSite,
                    _ body: @escaping @Sendable (JobContext) -> Void) {
        let object = create(minimumCapacity: Swift.max(1, inputs.count)) { _ in
            Header(remaining: inputs.count + 1, scheduler: scheduler, counter: counter, priority: priority,
                   affinity: affinity, api: api, site: site, body: body)
        }
        // SAFETY: `create` called on this class makes an instance of it.
        unsafeDowncast(object, to: DeferredStart.self).register(inputs)
    }

    /// The atomic view of `remaining`.
    private var remainingWord: UnsafeMutablePointer<Atomic<Int>> {
        withUnsafeMutablePointerToHeader { header in
            // SAFETY: an `Atomic<Int>` has the layout of an `Int`; the header lives as long as
            // the object, and `remaining` is only ever accessed through this view.
            (UnsafeMutableRawPointer(header) + MemoryLayout<Header>.offset(of: \Header.remaining)!)
                .assumingMemoryBound(to: Atomic<Int>.self)
        }
    }

    private func register(_ inputs: [JobCounter]) {
        // Released by the last `inputDone`.
        let owner = Unmanaged.passRetained(self)
        withUnsafeMutablePointerToElements { nodes in
            var slot = 0
            for counter in inputs {
                guard let observed = counter.observeForWait() else {
                    inputDone()
                    continue
                }
                let node = nodes + slot
                slot += 1
                node.initialize(to: DeferredNode(wait: WaitNode(resume: DeferredStart.resume), owner: owner))
                // The wait node is the first field, so its address is the node's.
                WaitList.register(UnsafeMutableRawPointer(node).assumingMemoryBound(to: WaitNode.self), on: counter.waiters) {
                    counter.waitIsOver(observed: observed)
                }
            }
        }
        inputDone()
    }

    /// One input completed (or the registration ended): the last one submits the job.
    private func inputDone() {
        // Acquiring and releasing: the job's submission sees every input's completion (each was
        // observed through its counter's sequentially consistent decrement).
        guard remainingWord.pointee.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        let (scheduler, counter, priority, affinity, api, site, body) = withUnsafeMutablePointerToHeader { header in
            let body = header.pointee.body.take()!
            return (header.pointee.scheduler, header.pointee.counter, header.pointee.priority, header.pointee.affinity,
                    header.pointee.api, header.pointee.site, body)
        }
        // Released by a completion, not the next job of this thread: shared at once
        // (docs/scheduler.md, "Stealing").
        scheduler.submitRun(priority: priority, affinity: affinity, counter: counter, api: api, site: site,
                            sharedAtOnce: true, body)
        Unmanaged.passUnretained(self).release()
    }

    /// `WaitNode.Resume` of an input's node: the input's counter reached zero.
    private static let resume: WaitNode.Resume = { raw in
        raw.assumingMemoryBound(to: DeferredNode.self).pointee.owner.takeUnretainedValue().inputDone()
    }
}
