// GNU libc functions that Swift's Glibc module cannot see (it is built without _GNU_SOURCE).
// Thin pass-throughs: error handling and retries live in Swift (Platform/Syscall.swift).

#define _GNU_SOURCE
#include "CSpindle.h"

#include <dlfcn.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int spindle_sched_getaffinity(size_t mask_bytes, unsigned long *mask) {
  return sched_getaffinity(0, mask_bytes, (cpu_set_t *)mask);
}

int spindle_sched_setaffinity(size_t mask_bytes, const unsigned long *mask) {
  return sched_setaffinity(0, mask_bytes, (const cpu_set_t *)mask);
}

int spindle_thread_set_name(const char *name) {
  return pthread_setname_np(pthread_self(), name);
}

int spindle_sched_getcpu(void) { return sched_getcpu(); }

pid_t spindle_gettid(void) { return (pid_t)syscall(SYS_gettid); }

long spindle_thread_involuntary_switches(void) {
  struct rusage usage;
  if (getrusage(RUSAGE_THREAD, &usage) != 0) return 0;
  return usage.ru_nivcsw;
}

long spindle_futex_wait(uint32_t *address, uint32_t expected, const struct timespec *timeout) {
  return syscall(SYS_futex, address, FUTEX_WAIT_PRIVATE, expected, timeout, NULL, 0);
}

long spindle_futex_wake(uint32_t *address, int count) {
  return syscall(SYS_futex, address, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

int spindle_errno(void) { return errno; }

long spindle_mbind(void *address, unsigned long length, int mode, const unsigned long *nodemask,
                   unsigned long max_node, unsigned flags) {
  return syscall(SYS_mbind, address, length, mode, nodemask, max_node, flags);
}

long spindle_get_mempolicy_of(void *address, int *mode, unsigned long *nodemask,
                              unsigned long max_node) {
  // MPOL_F_ADDR (2): the policy governing `address`.
  return syscall(SYS_get_mempolicy, mode, nodemask, max_node, address, 2UL);
}

long spindle_page_nodes(unsigned long count, void *const *pages, int *status) {
  return syscall(SYS_move_pages, 0, count, pages, NULL, status, 0);
}

void *spindle_dlvsym(void *handle, const char *symbol, const char *version) {
  return dlvsym(handle, symbol, version);
}
