// Heap-allocation counting for spindle-bench, without third-party interposers.
//
// malloc.c defines malloc, calloc, realloc, free, posix_memalign, aligned_alloc and memalign in
// the spindle-bench executable. The dynamic linker resolves every library's calls to these (the
// Swift runtime's included) to the executable's definitions, which forward to glibc's
// __libc_* entry points and, while counting is on, count each call that allocates (malloc,
// calloc, the aligned forms, and realloc of a null pointer or to a new size). Counting is off
// except during the untimed allocation pass, so timings never pay for it.
//
// Builds with AddressSanitizer or ThreadSanitizer leave the interposers out (the sanitizer
// runtimes define malloc themselves): spindle_malloc_counter_available() is then 0.
#ifndef CMALLOC_COUNTER_H
#define CMALLOC_COUNTER_H

#ifdef __cplusplus
extern "C" {
#endif

/// 1 if this build interposes malloc and a test allocation was seen, else 0.
int spindle_malloc_counter_available(void);
/// Resets the count and starts counting allocations on every thread.
void spindle_malloc_counter_start(void);
/// Stops counting and returns the allocations since start.
long spindle_malloc_counter_stop(void);

/// Asks the kernel to kill the calling process when its parent exits (PR_SET_PDEATHSIG with
/// SIGKILL), for spindle-bench's background-load processes. Returns 0 on success; -1 if the
/// parent had already exited when the request took effect.
int spindle_bench_die_with_parent(void);

#ifdef __cplusplus
}
#endif

#endif
