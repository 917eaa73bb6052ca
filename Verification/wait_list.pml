/* A counter's wait list (docs/scheduler.md, "Waiting"; Sources/Spindle/Scheduler/WaitList.swift
 * and JobCounter.swift).
 *
 * A waiter observes the counter's word (count and zero epoch); if the count is not zero it
 * pushes its node on the list (a compare-and-exchange on the head, modelled as one step), then
 * reads the word again: if the wait is over (count zero, or the epoch moved on) it takes the
 * whole list and resumes every node on it, itself included. The thread that takes the count to
 * zero advances the epoch in the same step, then takes the whole list and resumes it. A resumed
 * waiter whose wait is not over (a wake-up of an earlier round of a reused counter) registers
 * again. Every operation is sequentially consistent, as in the code.
 *
 * Checked: no waiter is left waiting when every process has finished (no lost wake-up: SPIN's
 * invalid-end-state check), and no node is resumed more often than it was registered.
 *
 * ORDER 1 (the code): register, then read the word. ORDER 0 reads the word first and registers
 * after, which loses a wake-up that comes between the two (SPIN finds it).
 *
 * Two rounds: the counter starts at 1; one job completes it; then it is reused (count 1 again)
 * and completed a second time. WAITERS waiters (2 or 3) start at any point.
 */
#ifndef WAITERS
#define WAITERS 2
#endif
#ifndef ORDER
#define ORDER 1
#endif

byte count = 1;
byte epoch = 0;
byte list = 0;               /* the registered nodes, one bit per waiter */
bool resumed[WAITERS];
byte registrations[WAITERS];
byte resumptions[WAITERS];
bool roundOneDone = false;

/* Takes every node off the list and resumes it (one exchange on the head, then the nodes). */
inline wakeAll() {
    byte taken;
    atomic { taken = list; list = 0 };
    if :: taken & 1 -> atomic { resumed[0] = true; resumptions[0]++ } :: else -> skip fi;
    if :: taken & 2 -> atomic { resumed[1] = true; resumptions[1]++ } :: else -> skip fi;
#if WAITERS > 2
    if :: taken & 4 -> atomic { resumed[2] = true; resumptions[2]++ } :: else -> skip fi;
#endif
}

proctype Waiter(byte id) {
    byte seenCount; byte seenEpoch; byte observedEpoch;
    /* observeForWait: nothing to wait for at zero. */
    atomic { seenCount = count; observedEpoch = epoch };
    if
    :: seenCount == 0 -> goto done
    :: else -> skip
    fi;
again:
#if ORDER == 1
    atomic { list = list | (1 << id); registrations[id]++ };      /* register: push the node */
    atomic { seenCount = count; seenEpoch = epoch };               /* isZero(), after pushing */
#else
    atomic { seenCount = count; seenEpoch = epoch };               /* read first... */
    atomic { list = list | (1 << id); registrations[id]++ };      /* ...then register */
#endif
    if
    :: seenCount == 0 || seenEpoch != observedEpoch -> wakeAll()
    :: else -> skip
    fi;
    resumed[id];                                                   /* parked until resumed */
    resumed[id] = false;
    atomic { seenCount = count; seenEpoch = epoch };               /* waitIsOver(observed:) */
    if
    :: seenCount == 0 || seenEpoch != observedEpoch -> skip
    :: else -> goto again                                          /* an earlier round's wake-up */
    fi;
done:
    assert(resumptions[id] <= registrations[id])
}

/* Completes the counter (subtract reaching zero advances the epoch in the same step), reuses it
 * for a second round once it is zero, and completes it again. */
proctype Jobs() {
    atomic { count = 0; epoch = epoch + 1 };
    wakeAll();
    atomic { count == 0 -> count = 1 };                            /* reused: increment from zero */
    atomic { count = 0; epoch = epoch + 1 };
    wakeAll()
}

init {
    atomic {
        run Waiter(0); run Waiter(1);
#if WAITERS > 2
        run Waiter(2);
#endif
        run Jobs()
    }
}
