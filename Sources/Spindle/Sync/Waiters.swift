// The waiting side shared by JobMutex, JobEvent and JobSemaphore: a FIFO of waiter counters
// and a wait that parks a job's fiber or blocks another thread. docs/synchronization.md.

/// Waiters in arrival order, each a counter at 1 that the releasing side decrements to hand
/// over. Used under the primitive's internal lock only.
struct WaiterQueue {
    private var items: [JobCounter] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }

    mutating func append(_ waiter: JobCounter) {
        items.append(waiter)
    }

    /// Puts `waiter` first (a woken waiter that lost the race for the lock).
    mutating func prepend(_ waiter: JobCounter) {
        if head > 0 {
            head -= 1
            items[head] = waiter
        } else {
            items.insert(waiter, at: 0)
        }
    }

    /// The first waiter, removed.
    mutating func removeFirst() -> JobCounter? {
        guard head < items.count else { return nil }
        let first = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 32 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return first
    }

    /// Every waiter, removed.
    mutating func removeAll() -> ArraySlice<JobCounter> {
        let all = items[head...]
        items = []
        head = 0
        return all
    }
}

extension JobCounter {
    /// Waits until the counter is zero, from wherever the caller is: on a worker (of any
    /// system) it parks the running job's fiber; on any other thread it blocks on a futex.
    /// `api` names the call for the message when it comes from async code on a worker.
    func waitAnywhere(_ api: StaticString, file: StaticString, line: UInt) {
        if let context = JobContext.calling() {
            context.wait(for: self, file: file, line: line)
            return
        }
        if Scheduler.lentWorker() != nil {
            misuse("\(api) must wait, but it was called from async code running on a Spindle worker (the JobSystem task executor), where waiting would block the worker; take it in a job (jobs.compute { … }) or use an async lock")
        }
        blockCallingThread()
    }

    /// Blocks the calling thread (not a job) on a futex until the counter has been zero since
    /// the call began. The outside half of every wait (`Scheduler.waitOutside`, `waitAnywhere`).
    func blockCallingThread() {
        guard let observed = observeForWait() else { return }
        WaitList.blockThread(on: waiters) { waitIsOver(observed: observed) }
    }
}
