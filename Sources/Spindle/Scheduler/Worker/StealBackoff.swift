// A thief's rule for fine-grained work: after a burst of stolen jobs that ran for less time than
// stealing them cost, leave that victim's normal and low work alone for a while.
// docs/scheduler.md, "Stealing".

/// One worker's judgement of its last stolen burst, and the victim it is backing off from.
///
/// Owner only (it lives in `WorkerLocal`). Pure bookkeeping: the caller passes the time, so the
/// rule can be checked without a clock.
struct StealBackoff {
    /// A burst whose run time per stolen token is under this is fine-grained: the steal cost
    /// more than the work it moved.
    static let fineGrainNanoseconds: UInt64 = 200
    /// The first back-off after a fine-grained burst; each further one doubles it.
    static let initialNanoseconds: UInt64 = 1_000
    /// The longest back-off: the most a stealable normal or low job waits for this thief.
    static let maximumNanoseconds: UInt64 = 32_000

    /// The victim of the burst not judged yet, or -1.
    private(set) var burstVictim = -1
    private var burstStart: UInt64 = 0
    private var burstTokens: UInt64 = 0
    /// The victim backed off from, or -1.
    private(set) var victim = -1
    /// When the back-off from `victim` ends (ns, monotonic).
    private(set) var until: UInt64 = 0
    /// The length of the last back-off; 0 after a burst worth its steal.
    private(set) var step: UInt64 = 0

    /// Whether a burst waits to be judged (`settle`).
    @inline(__always)
    var hasBurst: Bool { burstVictim >= 0 }

    /// Whether any back-off may be running (the caller then needs the time).
    @inline(__always)
    var mayBackOff: Bool { victim >= 0 }

    /// Records a burst of `tokens` stolen from `victim`, at `now`, once they are on this worker.
    @inline(__always)
    mutating func stole(_ tokens: Int, from victim: Int, at now: UInt64) {
        burstVictim = victim
        burstStart = now
        burstTokens = UInt64(tokens)
    }

    /// Judges the last burst at `now`, when the thief has run out of local work again: its run
    /// time per token against `fineGrainNanoseconds`.
    mutating func settle(at now: UInt64) {
        guard burstVictim >= 0 else { return }
        defer { burstVictim = -1 }
        if now &- burstStart < Self.fineGrainNanoseconds &* burstTokens {
            step = victim == burstVictim && step > 0 ? Swift.min(step &* 2, Self.maximumNanoseconds) : Self.initialNanoseconds
            victim = burstVictim
            until = now &+ step
        } else if victim == burstVictim {
            victim = -1
            step = 0
            until = 0
        }
    }

    /// Whether the thief is backing off from `victim` at `now`.
    @inline(__always)
    func isBackingOff(from victim: Int, at now: UInt64) -> Bool {
        victim == self.victim && now < until
    }
}
