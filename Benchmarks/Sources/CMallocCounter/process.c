// Process helpers spindle-bench needs from C (prctl is variadic, so Swift cannot call it).
#define _GNU_SOURCE
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "CMallocCounter.h"

int spindle_bench_die_with_parent(void) {
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return -1;
    // The parent may have exited before the request: then this process was re-parented.
    return getppid() == parent ? 0 : -1;
}
