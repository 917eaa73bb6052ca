/* Outside submissions racing shutdown (docs/sleep.md, "Submissions and shutdown").
 *
 * Workers run the idle protocol far enough to take a job, fall asleep, be woken, and decide
 * termination; one outside thread submits one job; the main thread shuts the system down.
 * Every shared read and write is its own step (sequential consistency, which the Swift code's
 * orderings give for these operations), so SPIN explores every interleaving.
 *
 * PROTOCOL selects the termination protocol:
 *   0  before the fix: the submitter checks `shutdown`, pushes, and returns; the last worker's
 *      termination check ends the system.                     (SPIN finds the lost job)
 *   1  a closing flag, but any worker whose check passed may raise and lower it.
 *                                                             (SPIN finds the lost job)
 *   2  the protocol of the code: one decider (compare-and-exchange on `closing`), the whole
 *      check once more, and a submitter that meets a raised flag waits for the verdict and
 *      reads whether a worker took its record.                 (no error)
 *
 * The property: when every process has finished, a submission that returned normally ran.
 * WORKERS is the number of workers (2 or 3).
 */
#ifndef PROTOCOL
#define PROTOCOL 2
#endif
#ifndef WORKERS
#define WORKERS 2
#endif

byte queued = 0;            /* records in the injection queue */
byte awake = WORKERS;       /* the `awake` count of `activity` */
bool sleeping[WORKERS];     /* the sleeping mask */
bool shutdownRequested = false;
bool terminated = false;
bool closing = false;
bool taken = false;         /* the record's taken bit */
bool ran = false;           /* the job ran */
bool accepted = false;      /* the submission returned normally */
bool submitterDone = false;
byte exited = 0;

/* Claims and wakes one sleeper, if any (`wakeOne`: the fetch-and that clears the bit owns it). */
inline wakeOne() {
    if
    :: atomic { sleeping[0] -> sleeping[0] = false; awake++ }
    :: atomic { sleeping[1] -> sleeping[1] = false; awake++ }
#if WORKERS > 2
    :: atomic { sleeping[2] -> sleeping[2] = false; awake++ }
#endif
    :: else -> skip
    fi
}

inline wakeAll() {
    atomic { if :: sleeping[0] -> sleeping[0] = false; awake++ :: else -> skip fi }
    atomic { if :: sleeping[1] -> sleeping[1] = false; awake++ :: else -> skip fi }
#if WORKERS > 2
    atomic { if :: sleeping[2] -> sleeping[2] = false; awake++ :: else -> skip fi }
#endif
}

/* "Leaving": clear our bit; if it was still set nobody claimed us, so count ourselves awake. */
inline leave(id) {
    atomic { if :: sleeping[id] -> sleeping[id] = false; awake++ :: else -> skip fi }
}

proctype Worker(byte id) {
    bool sawShutdown; byte a1; byte q; byte a2; bool won;
    do
    :: terminated -> break
    :: else ->
        if
        :: atomic { queued > 0 -> queued--; taken = true };   /* take the record */
           ran = true                                          /* and run the job */
        :: else ->
            /* Falling asleep, steps 2-3: announce, then no longer awake. */
            sleeping[id] = true;
            awake--;
            /* Step 4: the re-check. */
            if
            :: queued > 0 || terminated -> leave(id)
            :: else ->
                /* The termination check: shutdown, awake, queues, awake again. */
                sawShutdown = shutdownRequested;
                a1 = awake; q = queued; a2 = awake;
                if
                :: sawShutdown && a1 == 0 && q == 0 && a2 == 0 ->
#if PROTOCOL == 0
                    terminated = true; leave(id); wakeAll()
#elif PROTOCOL == 1
                    closing = true;
                    a1 = awake; q = queued; a2 = awake;
                    if
                    :: a1 == 0 && q == 0 && a2 == 0 -> terminated = true; leave(id); wakeAll()
                    :: else -> closing = false; leave(id)
                    fi
#else
                    atomic { won = !closing; closing = true };   /* compare-and-exchange */
                    if
                    :: won ->
                        a1 = awake; q = queued; a2 = awake;
                        if
                        :: a1 == 0 && q == 0 && a2 == 0 -> terminated = true; leave(id); wakeAll()
                        :: else -> closing = false; leave(id)
                        fi
                    :: else -> leave(id)
                    fi
#endif
                :: else ->
                    /* Step 5: sleep until a waker clears our bit (or we are ended). */
                    (!sleeping[id] || terminated);
                    leave(id)
                fi
            fi
        fi
    od;
    exited++
}

proctype Submitter() {
    if
    :: shutdownRequested -> skip                 /* refused: traps, or tryRun returns false */
    :: else ->
        queued++;                                /* the push */
        wakeOne();                               /* the wake check (nobody searches here) */
#if PROTOCOL == 0
        accepted = true
#else
        if
        :: !closing -> accepted = true
        :: else ->
            do
            :: !closing -> accepted = true; break
            :: terminated -> accepted = taken; break
            od
        fi
#endif
    fi;
    submitterDone = true
}

proctype Main() {
    shutdownRequested = true;
    wakeAll()
}

init {
    atomic {
        run Worker(0); run Worker(1);
#if WORKERS > 2
        run Worker(2);
#endif
        run Submitter(); run Main()
    }
    /* The end: every worker exited, the submitter returned. */
    (exited == WORKERS && submitterDone);
    assert(!accepted || ran)
}
