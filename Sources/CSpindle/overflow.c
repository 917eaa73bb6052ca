// Fiber stack overflow reporting. docs/fibers.md, "Stack overflow".
//
// Every fiber stack has a PROT_NONE guard region below it. A fault inside a registered guard
// region is a fiber stack overflow: the handler (running on the thread's alternate signal
// stack, since the faulting stack is exhausted) writes a message that says so, with the stack
// size and how to raise it, then aborts. A fault anywhere else goes to the handler that was
// installed before ours (Swift's backtracer, or the default action): we put it back and return,
// so the faulting instruction runs again and faults into it.
//
// The guard table is read by the signal handler, so it is lock-free for readers: fixed-size
// chunks, linked, never freed; entries written by registering threads under a mutex and
// published with release stores.

#define _GNU_SOURCE
#include "CSpindle.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { SPINDLE_GUARD_CHUNK_ENTRIES = 1024, SPINDLE_ALTSTACK_BYTES = 64 * 1024 };

typedef struct spindle_guard_entry {
  _Atomic(uintptr_t) low;  // 0 = free
  _Atomic(uintptr_t) size;
  _Atomic(uintptr_t) stack_size;
} spindle_guard_entry;

typedef struct spindle_guard_chunk {
  spindle_guard_entry entries[SPINDLE_GUARD_CHUNK_ENTRIES];
  _Atomic(struct spindle_guard_chunk *) next;
} spindle_guard_chunk;

static _Atomic(spindle_guard_chunk *) spindle_guard_chunks;
static pthread_mutex_t spindle_guard_lock = PTHREAD_MUTEX_INITIALIZER;

int spindle_overflow_register(const void *guard_low, size_t guard_size, size_t stack_size) {
  pthread_mutex_lock(&spindle_guard_lock);
  int index = 0;
  spindle_guard_chunk *last = NULL;
  for (spindle_guard_chunk *chunk = atomic_load_explicit(&spindle_guard_chunks, memory_order_acquire);
       chunk != NULL; chunk = atomic_load_explicit(&chunk->next, memory_order_acquire)) {
    for (int i = 0; i < SPINDLE_GUARD_CHUNK_ENTRIES; i++, index++) {
      spindle_guard_entry *entry = &chunk->entries[i];
      if (atomic_load_explicit(&entry->low, memory_order_relaxed) == 0) {
        atomic_store_explicit(&entry->size, guard_size, memory_order_relaxed);
        atomic_store_explicit(&entry->stack_size, stack_size, memory_order_relaxed);
        // Releasing: publishes size and stack_size to the handler's acquiring load of `low`.
        atomic_store_explicit(&entry->low, (uintptr_t)guard_low, memory_order_release);
        pthread_mutex_unlock(&spindle_guard_lock);
        return index;
      }
    }
    last = chunk;
  }
  spindle_guard_chunk *fresh = mmap(NULL, sizeof(spindle_guard_chunk), PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fresh == MAP_FAILED) {
    int saved = errno;
    pthread_mutex_unlock(&spindle_guard_lock);
    errno = saved;
    return -1;
  }
  // mmap'd memory is zero: every entry free, next NULL.
  atomic_store_explicit(&fresh->entries[0].size, guard_size, memory_order_relaxed);
  atomic_store_explicit(&fresh->entries[0].stack_size, stack_size, memory_order_relaxed);
  atomic_store_explicit(&fresh->entries[0].low, (uintptr_t)guard_low, memory_order_relaxed);
  // Releasing: publishes the chunk's contents to readers that walk the list.
  if (last == NULL) {
    atomic_store_explicit(&spindle_guard_chunks, fresh, memory_order_release);
  } else {
    atomic_store_explicit(&last->next, fresh, memory_order_release);
  }
  pthread_mutex_unlock(&spindle_guard_lock);
  return index;
}

void spindle_overflow_unregister(int slot) {
  if (slot < 0) return;
  pthread_mutex_lock(&spindle_guard_lock);
  spindle_guard_chunk *chunk = atomic_load_explicit(&spindle_guard_chunks, memory_order_acquire);
  for (int skip = slot / SPINDLE_GUARD_CHUNK_ENTRIES; chunk != NULL && skip > 0; skip--) {
    chunk = atomic_load_explicit(&chunk->next, memory_order_acquire);
  }
  if (chunk != NULL) {
    atomic_store_explicit(&chunk->entries[slot % SPINDLE_GUARD_CHUNK_ENTRIES].low, 0,
                          memory_order_release);
  }
  pthread_mutex_unlock(&spindle_guard_lock);
}

// The handler and its helpers run on a thread that just faulted, possibly inside a sanitizer's
// runtime while it holds an internal lock; instrumented code here (ThreadSanitizer instruments
// every atomic load) would deadlock on that lock. So none of it is instrumented.
#if defined(__has_attribute)
#if __has_attribute(disable_sanitizer_instrumentation)
#define SPINDLE_UNINSTRUMENTED __attribute__((disable_sanitizer_instrumentation))
#endif
#endif
#ifndef SPINDLE_UNINSTRUMENTED
#define SPINDLE_UNINSTRUMENTED
#endif

// Async-signal-safe helpers: no stdio, no allocation.
SPINDLE_UNINSTRUMENTED static void spindle_signal_write(const char *text) {
  size_t length = strlen(text);
  while (length > 0) {
    ssize_t written = write(STDERR_FILENO, text, length);
    if (written <= 0) return;
    text += written;
    length -= (size_t)written;
  }
}

SPINDLE_UNINSTRUMENTED static void spindle_signal_write_number(uintptr_t value, unsigned base) {
  char digits[32];
  int position = 31;
  digits[position] = '\0';
  do {
    unsigned digit = (unsigned)(value % base);
    digits[--position] = (char)(digit < 10 ? '0' + digit : 'a' + digit - 10);
    value /= base;
  } while (value != 0 && position > 0);
  spindle_signal_write(&digits[position]);
}

static struct sigaction spindle_previous_segv;
static struct sigaction spindle_previous_bus;

SPINDLE_UNINSTRUMENTED static void spindle_overflow_handler(int signal_number, siginfo_t *info,
                                                            void *ucontext) {
  (void)ucontext;
  int saved_errno = errno;
  // si_code > 0: raised by the kernel for a fault, so si_addr is the faulting address.
  if (info != NULL && info->si_code > 0) {
    uintptr_t address = (uintptr_t)info->si_addr;
    for (spindle_guard_chunk *chunk = atomic_load_explicit(&spindle_guard_chunks, memory_order_acquire);
         chunk != NULL; chunk = atomic_load_explicit(&chunk->next, memory_order_acquire)) {
      for (int i = 0; i < SPINDLE_GUARD_CHUNK_ENTRIES; i++) {
        spindle_guard_entry *entry = &chunk->entries[i];
        // Acquiring: pairs with the releasing store in spindle_overflow_register.
        uintptr_t low = atomic_load_explicit(&entry->low, memory_order_acquire);
        if (low == 0 || address < low) continue;
        uintptr_t size = atomic_load_explicit(&entry->size, memory_order_relaxed);
        if (address - low >= size) continue;
        uintptr_t stack_size = atomic_load_explicit(&entry->stack_size, memory_order_relaxed);
        spindle_signal_write("\nSpindle: fiber stack overflow.\n  A job used more than its fiber's stack of ");
        spindle_signal_write_number(stack_size / 1024, 10);
        spindle_signal_write(" KiB (fault at 0x");
        spindle_signal_write_number(address, 16);
        spindle_signal_write(", in the ");
        spindle_signal_write_number(size / 1024, 10);
        spindle_signal_write(
            " KiB guard region below the stack).\n  Raise the fiber stack size "
            "(FiberStackConfiguration's stackSize; a JobSystem takes it in its "
            "configuration), or move large values and deep recursion off the fiber's stack.\n");
        abort();
      }
    }
  }
  // Not a fiber stack overflow: hand it to whoever handled it before us.
  sigaction(signal_number, signal_number == SIGSEGV ? &spindle_previous_segv : &spindle_previous_bus,
            NULL);
  if (info == NULL || info->si_code <= 0) {
    // Sent by kill/raise: it will not repeat by itself, so send it again. It stays pending
    // while this handler runs and is delivered to the restored handler when we return.
    raise(signal_number);
  }
  errno = saved_errno;
}

static pthread_once_t spindle_handlers_once = PTHREAD_ONCE_INIT;
static int spindle_handlers_error;

static void spindle_install_handlers_once(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = spindle_overflow_handler;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGSEGV, &action, &spindle_previous_segv) != 0 ||
      sigaction(SIGBUS, &action, &spindle_previous_bus) != 0) {
    spindle_handlers_error = errno;
  }
}

int spindle_overflow_install_handlers(void) {
  pthread_once(&spindle_handlers_once, spindle_install_handlers_once);
  if (spindle_handlers_error != 0) {
    errno = spindle_handlers_error;
    return -1;
  }
  return 0;
}

// MARK: Alternate signal stacks

static pthread_key_t spindle_altstack_key;
static pthread_once_t spindle_altstack_key_once = PTHREAD_ONCE_INIT;
static __thread int spindle_thread_has_altstack;

static void spindle_altstack_release(void *mapping) {
  stack_t disable;
  memset(&disable, 0, sizeof disable);
  disable.ss_flags = SS_DISABLE;
  sigaltstack(&disable, NULL);
  munmap(mapping, SPINDLE_ALTSTACK_BYTES + (size_t)sysconf(_SC_PAGESIZE));
}

static void spindle_altstack_key_create(void) {
  pthread_key_create(&spindle_altstack_key, spindle_altstack_release);
}

int spindle_thread_ensure_altstack(void) {
  if (spindle_thread_has_altstack) return 0;
  stack_t current;
  if (sigaltstack(NULL, &current) != 0) return -1;
  if (!(current.ss_flags & SS_DISABLE) && current.ss_size >= SPINDLE_ALTSTACK_BYTES) {
    // The thread has one of its own (the Swift runtime gives the main thread one).
    spindle_thread_has_altstack = 1;
    return 0;
  }
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  // One guard page below the alternate stack, so a runaway handler faults instead of writing
  // over a neighbour mapping.
  char *mapping = mmap(NULL, SPINDLE_ALTSTACK_BYTES + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping == MAP_FAILED) return -1;
  if (mprotect(mapping, page, PROT_NONE) != 0) {
    int saved = errno;
    munmap(mapping, SPINDLE_ALTSTACK_BYTES + page);
    errno = saved;
    return -1;
  }
  stack_t alternate;
  memset(&alternate, 0, sizeof alternate);
  alternate.ss_sp = mapping + page;
  alternate.ss_size = SPINDLE_ALTSTACK_BYTES;
  if (sigaltstack(&alternate, NULL) != 0) {
    int saved = errno;
    munmap(mapping, SPINDLE_ALTSTACK_BYTES + page);
    errno = saved;
    return -1;
  }
  pthread_once(&spindle_altstack_key_once, spindle_altstack_key_create);
  pthread_setspecific(spindle_altstack_key, mapping);
  spindle_thread_has_altstack = 1;
  return 0;
}
