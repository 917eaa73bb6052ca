import Synchronization

// The worker's loop: where it looks for work, in what order, and how it idles. Stealing is in
// Stealing.swift, falling asleep in Sleep/Sleep.swift. docs/scheduler.md, "The worker loop".

extension Scheduler {
    /// Entry of every scheduler fiber: completes the pending action of the context that switched
    /// here, runs the loop, and names the context to switch to when the loop ends.
    static let fiberEntry: Fiber.Entry = { control, _ in
        let state = control.pointee.context!.assumingMemoryBound(to: FiberState.self)
        let scheduler = state.pointee.worker.pointee.scheduler
        scheduler.completePendingAction(on: state.pointee.worker, running: state)
        return scheduler.workLoop(state).control
    }

    /// Runs jobs on `state`'s fiber until the system terminates (returns the worker's thread
    /// context) or until this fiber hands its worker to a ready fiber while the spare lists are
    /// full (returns that fiber; the switch to it finishes this one).
    private func workLoop(_ state: UnsafeMutablePointer<FiberState>) -> Fiber {
        while !state.pointee.exitRequested {
            let worker = state.pointee.worker
            guard let token = findWork(worker) ?? {
                worker.flushDecrements()
                worker.local.pointee.releaseFinishedBodies()
                return idle(worker)
            }() else { break }
            if !Token.isFiber(token) {
                let record = Token.recordPointer(token)
                worker.observeBegin(record, fiber: state)
                record.load(as: ExecuteFunction.self)(record, UnsafeMutableRawPointer(state))
                // The job may have finished on another worker.
                state.pointee.worker.observe(.end, fiber: state)
                continue
            }
            let target = Token.fiberState(token)
            target.pointee.worker = worker
            target.transition(from: .ready, to: .running)
            worker.count(.fibersResumed)
            worker.observe(.resume, fiber: target)
            // Completions deferred on this worker must not wait behind the resumed fiber.
            worker.flushDecrements()
            if worker.local.pointee.spareCount >= Scheduler.sparesPerWorker {
                // Enough spares: finish this fiber; the target recycles it.
                worker.local.pointee.pendingAction = .finished(state)
                return target.pointee.fiber
            }
            worker.local.pointee.pendingAction = .spare(state)
            state.pointee.fiber.switchTo(target.pointee.fiber)
            // Resumed as a spare by some worker (perhaps another one).
            completePendingAction(on: state.pointee.worker, running: state)
        }
        let worker = state.pointee.worker
        worker.local.pointee.releaseFinishedBodies()
        worker.local.pointee.pendingAction = .finished(state)
        return worker.local.pointee.threadContext!
    }

    /// The next token for `worker`: inbox, pinned fibers, own deques and injection queues by
    /// priority, then stealing by priority. Owner only.
    @inline(__always)
    func findWork(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        if worker.pointee.shared.inbox.pointee.load(ordering: .relaxed) != 0 { drainInbox(worker) }
        if worker.pointee.shared.pinnedInbox.pointee.load(ordering: .relaxed) != 0 { drainPinnedInbox(worker) }
        if let pinned = worker.local.pointee.pinnedReady {
            worker.local.pointee.pinnedReady = pinned.pointee.link
            return Token.fiber(pinned)
        }
        if let token = worker.pop(.high) { return token }
        if let token = takeInjected(worker, priority: .high) { return token }
        if multiNode, let token = takeNodeWork(worker) { return token }
        if let token = worker.pop(.normal) { return token }
        if let token = takeInjected(worker, priority: .normal) { return token }
        if let token = worker.pop(.low) { return token }
        if let token = takeInjected(worker, priority: .low) { return token }
        return steal(worker) ?? takeStalledFibers(worker)
    }

    private func drainInbox(_ worker: UnsafeMutablePointer<WorkerState>) {
        // Acquiring: pairs with the pushes' CAS, making each state's fields visible.
        var next = UnsafeMutablePointer<FiberState>(bitPattern: worker.pointee.shared.inbox.pointee.exchange(0, ordering: .acquiring))
        guard next != nil else { return }
        while let state = next {
            next = state.pointee.link
            worker.push(Token.fiber(state), priority: state.pointee.priority)
        }
        // Others may now steal the pushed fibers.
        sleep.workPosted(self)
    }

    /// Moves the pinned inbox to the private pinned-ready list. Owner only.
    private func drainPinnedInbox(_ worker: UnsafeMutablePointer<WorkerState>) {
        var next = UnsafeMutablePointer<FiberState>(bitPattern: worker.pointee.shared.pinnedInbox.pointee.exchange(0, ordering: .acquiring))
        while let state = next {
            next = state.pointee.link
            state.pointee.link = worker.local.pointee.pinnedReady
            worker.local.pointee.pinnedReady = state
        }
    }

    @inline(__always)
    private func takeInjected(_ worker: UnsafeMutablePointer<WorkerState>, priority: Priority) -> UInt? {
        guard injectionRefs[priority.index]._withUnsafeGuaranteedRef({ $0.hasLinkedRecord }) else { return nil }
        return takeInjectedBatch(worker, priority: priority)
    }

    /// Takes up to `injectionBatch` records of `priority` off the injection queue: runs the oldest
    /// now and queues the others on this worker's deque so that they start in the order they
    /// arrived (the owner pops its deque newest first, so they are pushed newest first). Outside
    /// submissions of equal priority thus start in about their arrival order; pushed oldest
    /// first, a batch of waiting requests was served in reverse and its first arrivals waited
    /// longest (docs/scheduler.md, "Injection queues").
    private func takeInjectedBatch(_ worker: UnsafeMutablePointer<WorkerState>, priority: Priority) -> UInt? {
        withUnsafeTemporaryAllocation(of: UInt.self, capacity: Scheduler.injectionBatch) { batch in
            let taken = injectionRefs[priority.index]._withUnsafeGuaranteedRef { queue in
                var index = 0
                return queue.take(limit: Scheduler.injectionBatch) { record in
                    JobHeader.markTaken(record)
                    batch[index] = Token.record(record)
                    index += 1
                }
            }
            guard taken > 0 else { return nil }
            var index = taken - 1
            while index > 0 {
                worker.push(batch[index], priority: priority)
                index -= 1
            }
            if taken > 1 { sleep.workPosted(self) }
            return batch[0]
        }
    }

    /// One job from the queue of `worker`'s node (node-bound work: only that node's workers
    /// take it, one at a time, so it starts on the node). docs/numa.md, "Node queues".
    private func takeNodeWork(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        nodeQueueRefs[workerNodes[worker.pointee.index]]._withUnsafeGuaranteedRef { queue in
            var taken: UInt?
            _ = queue.take(limit: 1) { record in
                JobHeader.markTaken(record)
                taken = Token.record(record)
            }
            return taken
        }
    }

    /// No work found: search (keep looking in every queue) for the idle policy's budget, then
    /// sleep; a woken worker searches again. Returns the work it found, or nil when the system
    /// has terminated. docs/sleep.md, "Searching" and "Spinning on a shared machine".
    private func idle(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        var search = sleep.startSearching(worker: worker.pointee.index)
        while true {
            let start = MonotonicTime.now()
            let budget = worker.local.pointee.idlePolicy.spinBudget(at: start) { CurrentThread.involuntarySwitches }
            let deadline = start &+ budget
            var rounds = 0
            while true {
                if terminated.load(ordering: .acquiring) {
                    sleep.stopSearching(search, self)
                    return nil
                }
                if let token = findWork(worker) {
                    sleep.stopSearching(search, self)
                    return token
                }
                rounds += 1
                if rounds & 3 == 0 {
                    if MonotonicTime.now() >= deadline { break }
                    // Let a thread that shares this CPU (a worker of this or another system, or
                    // another process) run: it may hold the work this worker waits for.
                    yieldCPU()
                }
                if budget == 0 { break }
                // Back off between rounds (1, 2, 4, … up to 64 pauses, about 1–2 µs): every
                // round reads other workers' deque indices, and polling them constantly takes
                // their cache lines away from owners pushing and popping on them.
                for _ in 0..<(1 << Swift.min(rounds / 4, 6)) { spinPause() }
            }
            worker.local.pointee.idlePolicy.fellAsleep(at: MonotonicTime.now())
            guard let next = sleep.fallAsleep(search, self) else { return nil }
            worker.local.pointee.idlePolicy.wokeUp(at: MonotonicTime.now())
            search = next
        }
    }
}
