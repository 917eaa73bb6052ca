import Synchronization

// A job that is not submitted until its input counters have completed: no fiber, no park until
// it runs. docs/dataflow.md, "No fiber, no park before a task runs".

/// The pending start of one task: a count of pending inputs and one wait node per input, on the
/// inputs' waiter lists. The last input to complete calls `start`.
final class DeferredStart: @unchecked Sendable {
    // SAFETY: `remaining` is atomic; the nodes are written before they are registered and then
    // belong to the waiter lists until resumed; `start` is called exactly once.
    private let remaining: Atomic<Int>
    private let nodes: UnsafeMutablePointer<DeferredNode>
    private let capacity: Int
    private let start: @Sendable () -> Void

    /// One input's node: the wait node first (the list resumes it by its address), then the
    /// task it belongs to.
    struct DeferredNode {
        var wait: WaitNode
        var owner: Unmanaged<DeferredStart>
    }

    /// Starts `start` once every counter of `inputs` has been zero since this call (at once if
    /// all are). The object keeps itself alive until then.
    ///
    /// - Complexity: O(inputs); one allocation for the object and one for its nodes.
    @discardableResult
    static func arm(after inputs: some Collection<JobCounter>, _ start: @escaping @Sendable () -> Void) -> DeferredStart {
        let deferred = DeferredStart(capacity: inputs.count, start)
        deferred.register(inputs)
        return deferred
    }

    private init(capacity: Int, _ start: @escaping @Sendable () -> Void) {
        // One more than the inputs: the registration's own count, dropped when it ends.
        remaining = Atomic(capacity + 1)
        self.capacity = capacity
        nodes = .allocate(capacity: Swift.max(1, capacity))
        self.start = start
    }

    deinit {
        nodes.deallocate()
    }

    private func register(_ inputs: some Collection<JobCounter>) {
        // Released by the last `inputDone`.
        let owner = Unmanaged.passRetained(self)
        var slot = 0
        for counter in inputs {
            guard let observed = counter.observeForWait() else {
                inputDone()
                continue
            }
            let node = nodes + slot
            slot += 1
            node.initialize(to: DeferredNode(wait: WaitNode(resume: DeferredStart.resume), owner: owner))
            // The node is the first field, so its address is the wait node's.
            WaitList.register(UnsafeMutableRawPointer(node).assumingMemoryBound(to: WaitNode.self), on: counter.waiters) {
                counter.waitIsOver(observed: observed)
            }
        }
        inputDone()
    }

    /// One input completed (or the registration ended): the last one starts the task.
    private func inputDone() {
        // Acquiring and releasing: the task's start sees every input's completion (each was
        // observed through its counter's sequentially consistent decrement).
        if remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            start()
            Unmanaged.passUnretained(self).release()
        }
    }

    /// `WaitNode.Resume` of an input's node: the input's counter reached zero.
    private static let resume: WaitNode.Resume = { raw in
        raw.assumingMemoryBound(to: DeferredNode.self).pointee.owner.takeUnretainedValue().inputDone()
    }
}
