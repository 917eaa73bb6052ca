import Synchronization

// Stealing: the order in which a worker visits victims, the patience rule for a lone job, the
// back-off from fine-grained work, bursts, and taking the ready fibers of a busy worker.
// docs/scheduler.md, "Stealing" and "A busy owner does not hold its ready fibers"; docs/numa.md,
// "Stealing".

/// The victims of one worker in the order it visits them: groups (its own NUMA node first, then
/// the other nodes nearest first; with one node, one group of every other worker), each visited
/// from a random position. One order for one node and for many, so stealing is written once.
/// Immutable after init; owned by the worker (`WorkerLocal.victims`), which frees it with
/// `deallocate`. Plain buffers, so a steal reads it without reference counting.
struct VictimOrder {
    /// The victims, group after group.
    let victims: UnsafeBufferPointer<Int>
    /// Where each group ends in `victims`.
    let groupEnds: UnsafeBufferPointer<Int>

    /// The order of worker `index`: `groups` of victims, nearest first (docs/numa.md), or with
    /// `groups` nil every other worker in one group.
    init(worker index: Int, workers: Int, groups: [[Int]]?) {
        let chosen = groups ?? [Array((0..<workers).filter { $0 != index })]
        var end = 0
        victims = UnsafeBufferPointer(Self.copy(chosen.flatMap { $0 }))
        groupEnds = UnsafeBufferPointer(Self.copy(chosen.map { end += $0.count; return end }))
    }

    /// A copy of `values` in whole 128-byte blocks of its own: the thief reads it at every steal,
    /// and a neighbouring allocation written by another thread would make those reads miss.
    private static func copy(_ values: [Int]) -> UnsafeMutableBufferPointer<Int> {
        let bytes = (Swift.max(1, values.count) * MemoryLayout<Int>.stride + 127) & ~127
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 128)
        let buffer = UnsafeMutableBufferPointer(start: raw.bindMemory(to: Int.self, capacity: values.count), count: values.count)
        _ = buffer.initialize(from: values)
        return buffer
    }

    /// Frees the buffers (once, when the worker is destroyed).
    func deallocate() {
        UnsafeMutableRawPointer(mutating: victims.baseAddress).map { $0.deallocate() }
        UnsafeMutableRawPointer(mutating: groupEnds.baseAddress).map { $0.deallocate() }
    }
}

extension Scheduler {
    /// Steals one job (and, from a deque holding several, a burst: `stealMore`) for `worker`:
    /// for each priority from high to low, every victim in `VictimOrder`. Returns nil when
    /// nothing was stolen, or when a job of some priority was left for later (a lone job in its
    /// patience, a victim backed off from): taking lower-priority work then would let it wait
    /// behind a whole burst (the fairness bound of docs/scheduler.md). Owner only.
    func steal(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        guard workerCount > 1 else { return nil }
        // The clock is read only while a burst waits to be judged or a back-off may run.
        var now: UInt64 = 0
        if worker.local.pointee.stealBackoff.hasBurst {
            now = MonotonicTime.now()
            worker.local.pointee.stealBackoff.settle(at: now)
        }
        let order = worker.local.pointee.victims
        for priority in Priority.allCases {
            var deferred = false
            var groupStart = 0
            for groupEnd in order.groupEnds {
                let count = groupEnd - groupStart
                let start = Int(worker.nextRandom() % UInt64(count))
                var retry = true
                while retry {
                    retry = false
                    for offset in 0..<count {
                        var position = start + offset
                        if position >= count { position -= count }
                        switch tryToSteal(from: order.victims[groupStart + position], priority: priority, into: worker,
                                          deferred: &deferred, now: &now) {
                        case .success(let token): return token
                        case .retry: retry = true
                        case .empty: break
                        }
                    }
                }
                groupStart = groupEnd
            }
            if deferred { return nil }
        }
        return nil
    }

    /// One steal attempt on `victim`'s deque of `priority`, with the patience rule for a lone
    /// job and the back-off from fine-grained work (docs/scheduler.md, "Stealing"). Sets
    /// `deferred` when a rule leaves the victim's work of `priority` for later: a lone job in
    /// its patience, or any work of a victim backed off from (whose deque is then not read).
    /// `now` is the time if already read (0 otherwise).
    @inline(__always)
    private func tryToSteal(from victim: Int, priority: Priority, into worker: UnsafeMutablePointer<WorkerState>,
                            deferred: inout Bool, now: inout UInt64) -> WorkStealingDeque<UInt>.Steal {
        if priority != .high && worker.local.pointee.stealBackoff.mayBackOff {
            if now == 0 { now = MonotonicTime.now() }
            if worker.local.pointee.stealBackoff.isBackingOff(from: victim, at: now) {
                deferred = true
                return .empty
            }
        }
        let available = workers[victim].approximateCount(priority)
        guard available > 0 else { return .empty }
        if available == 1 && !worker.patienceExpired(victim: victim, priority: priority,
                                                     deque: workers[victim].storage(priority),
                                                     sharedIndex: workers[victim].pointee.shared.sharedIndex(priority), now: &now) {
            deferred = true
            return .empty
        }
        worker.count(.stealAttempts)
        let result = workers[victim].steal(priority)
        if case .success = result {
            worker.count(.steals)
            worker.observe(.steal, fiber: nil, detail: UInt(victim))
            let taken = stealMore(from: workers[victim], priority: priority, into: worker)
            if priority != .high {
                worker.local.pointee.stealBackoff.stole(1 + taken, from: victim, at: MonotonicTime.now())
            }
        }
        return result
    }

    /// After a successful steal from a deque that still holds several jobs, takes up to half of
    /// them (at most 16) in the same burst and queues them on the thief's own deque: the victim's
    /// `top` line then changes hands once per burst rather than once per job, and the thief has
    /// local work for a while. Each take is an ordinary steal, so the deque's guarantees hold.
    /// Returns how many it took.
    private func stealMore(from victim: UnsafeMutablePointer<WorkerState>, priority: Priority,
                           into worker: UnsafeMutablePointer<WorkerState>) -> Int {
        let available = victim.approximateCount(priority)
        guard available >= 4 else { return 0 }
        var taken = 0
        for _ in 0..<Swift.min(available / 2, Scheduler.stealBurst) {
            guard case .success(let token) = victim.steal(priority) else { break }
            worker.push(token, priority: priority)
            taken += 1
        }
        if taken > 0 {
            worker.count(.steals, UInt64(taken))
            // Others may take from the thief now.
            sleep.workPosted(self)
        }
        return taken
    }

    /// Takes the ready fibers of a worker that has not drained its inbox for longer than the
    /// inbox patience (it is inside a long job): they would wait for it while this worker idles.
    /// Victims in `VictimOrder`, so a fiber's stack stays on its node when a worker there can
    /// run it. Pinned fibers are never in that inbox. Owner only.
    func takeStalledFibers(_ worker: UnsafeMutablePointer<WorkerState>) -> UInt? {
        guard workerCount > 1 else { return nil }
        var now: UInt64 = 0
        for victim in worker.local.pointee.victims.victims {
            if let token = takeStalledInbox(of: victim, into: worker, now: &now) { return token }
        }
        return nil
    }

    /// `takeStalledFibers` for one victim: its whole inbox if it has waited out the patience.
    /// `now` is read once per search, on first need.
    private func takeStalledInbox(of victim: Int, into worker: UnsafeMutablePointer<WorkerState>,
                                  now: inout UInt64) -> UInt? {
        let other = workers[victim]
        guard other.pointee.shared.inbox.pointee.load(ordering: .relaxed) != 0 else { return nil }
        if now == 0 { now = MonotonicTime.now() }
        guard now &- other.pointee.shared.inboxSince.pointee.load(ordering: .relaxed) >= WorkerState.inboxPatienceNanoseconds else { return nil }
        // Acquiring: pairs with the pushes' CAS. Take-all, so the owner and thieves cannot
        // take a node twice.
        var next = UnsafeMutablePointer<FiberState>(bitPattern: other.pointee.shared.inbox.pointee.exchange(0, ordering: .acquiring))
        guard next != nil else { return nil }
        worker.count(.steals)
        worker.observe(.steal, fiber: nil, detail: UInt(victim))
        var first: UInt?
        var pushed = false
        while let state = next {
            next = state.pointee.link
            if first == nil {
                first = Token.fiber(state)
            } else {
                worker.push(Token.fiber(state), priority: state.pointee.priority)
                pushed = true
            }
        }
        // Others may steal the rest from this worker.
        if pushed { sleep.workPosted(self) }
        return first
    }
}

extension UnsafeMutablePointer where Pointee == WorkerState {
    /// Whether the only job in `victim`'s deque of `priority` has waited long enough to steal.
    ///
    /// Stealing a deque's only job right after it was pushed usually races its owner, who is
    /// about to pop it (a job that spawns its successor and returns): the job then moves to
    /// another core and its data with it. A thief therefore takes a lone job only once it has
    /// seen the same job (same `top` index) for `stealPatienceNanoseconds`; two or more jobs are
    /// stolen at once, and so is a job its owner marked for sharing (`sharedIndex`). docs/scheduler.md, "Stealing". `now` is the time if the caller's search
    /// has read it already (0 otherwise); it is read here and kept for the rest of the search.
    func patienceExpired(victim: Int, priority: Priority, deque: UnsafeMutableRawPointer,
                         sharedIndex: UnsafeMutablePointer<Atomic<Int>>, now: inout UInt64) -> Bool {
        let top = WorkStealingDeque<UInt>.top(deque).pointee.load(ordering: .relaxed)
        // A job its owner pushed for sharing (a released successor) is taken at once.
        if sharedIndex.pointee.load(ordering: .relaxed) == top { return true }
        if now == 0 { now = MonotonicTime.now() }
        if local.pointee.patienceVictim == victim && local.pointee.patiencePriority == priority && local.pointee.patienceTop == top {
            return now &- local.pointee.patienceSince >= WorkerState.stealPatienceNanoseconds
        }
        local.pointee.patienceVictim = victim
        local.pointee.patiencePriority = priority
        local.pointee.patienceTop = top
        local.pointee.patienceSince = now
        return false
    }

}
