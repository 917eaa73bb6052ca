// How long an idle worker keeps searching before it sleeps: the spin budget, adapted to what
// spinning buys and dropped while the worker's CPU is contended. docs/sleep.md, "Spinning on a
// shared machine".

/// One worker's spin budget. Owner only (it lives in `WorkerLocal`). Pure bookkeeping: the
/// caller passes the time and the thread's count of involuntary context switches, so the rule
/// is tested without a clock or a kernel (IdlePolicyTests).
///
/// Rules:
/// 1. **Contention**: a worker whose thread lost its CPU involuntarily since the last check
///    (another runnable thread or process wanted it: a competing process, more workers than
///    CPUs, a second job system) does not spin: it sleeps as soon as one search round finds
///    nothing, which gives the CPU to whoever wanted it. It checks at most every
///    `checkInterval`, and spins again once a check finds no new involuntary switch.
/// 2. **What spinning buys**: spinning pays when work arrives soon after the worker would have
///    gone to sleep (it saves a sleep and a wake-up, tens of microseconds on a VM). A worker
///    woken within `maximum` of falling asleep spins the whole `maximum` next time; one that
///    slept for longer than `longSleepFactor` × `maximum` halves its budget, down to nothing.
struct IdlePolicy {
    /// The configured budget (`Configuration.spinBeforeSleeping`), in nanoseconds.
    let maximum: UInt64
    /// The budget of the next idle episode while the CPU is not contended.
    private(set) var budget: UInt64
    /// The thread's involuntary switches at the last check (-1: none yet).
    private var lastSwitches = -1
    /// When the last check ran (ns, monotonic).
    private var lastCheck: UInt64 = 0
    /// Whether the last check found the CPU contended.
    private(set) var contended = false
    /// When the worker last fell asleep (ns; nil: it is not asleep).
    private var asleepSince: UInt64?

    /// How often contention is checked at most.
    static let checkInterval: UInt64 = 1_000_000
    /// A sleep longer than this many budgets means spinning bought nothing.
    static let longSleepFactor: UInt64 = 16

    init(maximum: UInt64) {
        self.maximum = maximum
        budget = maximum
    }

    /// The spin budget of an idle episode that starts at `now` (nanoseconds): 0 while the CPU
    /// is contended. `switches` reads the thread's involuntary switch count; it is called at
    /// most once per `checkInterval`.
    mutating func spinBudget(at now: UInt64, switches: () -> Int) -> UInt64 {
        guard maximum > 0 else { return 0 }
        if lastSwitches < 0 || now &- lastCheck >= Self.checkInterval {
            let current = switches()
            contended = lastSwitches >= 0 && current > lastSwitches
            lastSwitches = current
            lastCheck = now
        }
        return contended ? 0 : budget
    }

    /// The worker falls asleep at `now`.
    mutating func fellAsleep(at now: UInt64) {
        asleepSince = now
    }

    /// The worker woke at `now`: adapt the budget to how long it slept.
    mutating func wokeUp(at now: UInt64) {
        guard let since = asleepSince else { return }
        let slept = now &- since
        asleepSince = nil
        if slept < maximum {
            budget = maximum
        } else if slept > Self.longSleepFactor * maximum {
            budget = budget > maximum / 16 ? budget / 2 : 0
        }
    }
}
