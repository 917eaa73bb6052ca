// The glue around the raw context switch: the Swift runtime's exclusivity context, sanitizer
// fiber annotations, and the state machine of a context. docs/fibers.md explains the protocol.
//
// Rule for this file (docs/fibers.md, "Measured facts"): C compilers cache the address of
// errno and __thread variables across opaque calls, so no function here touches either on both
// sides of a switch.

#define _GNU_SOURCE  // dl_iterate_phdr
#include "CSpindle.h"

#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SPINDLE_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define SPINDLE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define SPINDLE_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SPINDLE_ASAN 1
#endif

#if SPINDLE_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif
#if SPINDLE_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
#endif

#if defined(DEBUG) || SPINDLE_TSAN || SPINDLE_ASAN
int spindle_fiber_switch_is_checked = 1;
#else
int spindle_fiber_switch_is_checked = 0;
#endif

_Noreturn void spindle_fiber_main(void *argument, spindle_fiber_t *self);

// MARK: Skipping the exclusivity swap (docs/fibers.md)

long spindle_exclusivity_head_offset;
int spindle_exclusivity_skip_enabled;

typedef struct spindle_tls_lookup {
  const void *code;    // an address inside the module we look for
  char *tls_block;     // the calling thread's instance of its PT_TLS segment
  size_t tls_size;
} spindle_tls_lookup;

int spindle_fiber_exclusivity_skip_is_enabled(void) {
  return __atomic_load_n(&spindle_exclusivity_skip_enabled, __ATOMIC_ACQUIRE);
}

int spindle_fiber_set_switch_checked(int checked) {
#if SPINDLE_TSAN || SPINDLE_ASAN
  // The sanitizers must see every switch: a sanitizer build never leaves the checked path.
  (void)checked;
  return 1;
#else
  return __atomic_exchange_n(&spindle_fiber_switch_is_checked, checked, __ATOMIC_SEQ_CST);
#endif
}

static int spindle_find_tls_block(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  spindle_tls_lookup *lookup = data;
  int contains = 0;
  size_t tls_size = 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *header = &info->dlpi_phdr[i];
    uintptr_t start = info->dlpi_addr + header->p_vaddr;
    if (header->p_type == PT_LOAD && (uintptr_t)lookup->code >= start &&
        (uintptr_t)lookup->code < start + header->p_memsz) {
      contains = 1;
    }
    if (header->p_type == PT_TLS) tls_size = header->p_memsz;
  }
  if (!contains) return 0;
  lookup->tls_block = info->dlpi_tls_data;
  lookup->tls_size = tls_size;
  return 1;
}

// The calling thread's libswiftCore TLS block, or NULL.
static char *spindle_swift_tls_block(size_t *size) {
  spindle_tls_lookup lookup = {(const void *)&swift_task_enterThreadLocalContext, NULL, 0};
  dl_iterate_phdr(spindle_find_tls_block, &lookup);
  *size = lookup.tls_size;
  return lookup.tls_block;
}

// Finds the offset of the exclusivity access-set head inside the runtime's TLS block by making
// the runtime store a recognizable pointer there: entering a context whose saved access list is
// one fake, zeroed access node sets the head to that node; exiting again restores everything.
// Returns the offset within the block, or -1.
static long spindle_probe_head_offset_in_block(char *block, size_t size) {
  if (block == NULL || size < sizeof(void *) || size > 4096) return -1;
  uintptr_t before[4096 / sizeof(uintptr_t)];
  memcpy(before, block, size);
  // An access record is a few words (pointer, pc, next-and-action); zero means "no next".
  _Alignas(16) uintptr_t fake_access[8] = {0};
  uintptr_t state[2] = {(uintptr_t)fake_access, (uintptr_t)fake_access};
  swift_task_enterThreadLocalContext((char *)state);
  long found = -1;
  int matches = 0;
  for (size_t offset = 0; offset + sizeof(void *) <= size; offset += sizeof(void *)) {
    if (*(uintptr_t *)(block + offset) == (uintptr_t)fake_access) {
      found = (long)offset;
      matches++;
    }
  }
  swift_task_exitThreadLocalContext((char *)state);
  if (matches != 1 || memcmp(before, block, size) != 0) return -1;
  return found;
}

static long spindle_head_offset_in_block = -1;
static pthread_once_t spindle_probe_once = PTHREAD_ONCE_INIT;

static void spindle_probe_exclusivity_once(void) {
  size_t size = 0;
  char *block = spindle_swift_tls_block(&size);
  spindle_head_offset_in_block = spindle_probe_head_offset_in_block(block, size);
  if (spindle_head_offset_in_block < 0) return;  // fast path stays off: always call the runtime
  spindle_exclusivity_head_offset = (long)(block + spindle_head_offset_in_block - spindle_thread_pointer());
  __atomic_store_n(&spindle_exclusivity_skip_enabled, 1, __ATOMIC_RELEASE);
}

// Every thread that switches fibers makes a thread context first, so checking here that the
// head sits at the same offset from this thread's thread pointer covers every thread that can
// take the fast path. One disagreement turns the fast path off for the process.
static void spindle_verify_exclusivity_offset(void) {
  pthread_once(&spindle_probe_once, spindle_probe_exclusivity_once);
  if (!__atomic_load_n(&spindle_exclusivity_skip_enabled, __ATOMIC_ACQUIRE)) return;
  size_t size = 0;
  char *block = spindle_swift_tls_block(&size);
  if (block == NULL ||
      block + spindle_head_offset_in_block != spindle_thread_pointer() + spindle_exclusivity_head_offset) {
    __atomic_store_n(&spindle_exclusivity_skip_enabled, 0, __ATOMIC_RELEASE);
  }
}

static void spindle_write_stderr(const char *message) {
  size_t length = strlen(message);
  while (length > 0) {
    ssize_t written = write(STDERR_FILENO, message, length);
    if (written <= 0) return;
    message += written;
    length -= (size_t)written;
  }
}

// Debug-build diagnostics (an internal invariant broke, or a fiber suspended inside an access).
static _Noreturn void spindle_fiber_fatal(const char *message) {
  spindle_write_stderr(message);
  abort();
}

void spindle_fiber_init_thread(spindle_fiber_t *fiber) {
  memset(fiber, 0, sizeof *fiber);
  fiber->guard_slot = -1;
  fiber->kind = SPINDLE_FIBER_KIND_THREAD;
  fiber->state = SPINDLE_FIBER_RUNNING;
#if SPINDLE_TSAN
  fiber->tsan_fiber = __tsan_get_current_fiber();
#endif
  // Overflow reports need an alternate signal stack on every thread that runs fibers; a
  // failure here only costs the clear message, so it is not fatal.
  (void)spindle_thread_ensure_altstack();
  spindle_verify_exclusivity_offset();
}

void spindle_fiber_prepare(spindle_fiber_t *fiber, void *stack_bottom, size_t stack_size,
                           spindle_fiber_entry_t entry, void *context) {
#ifdef DEBUG
  if (fiber->kind == SPINDLE_FIBER_KIND_FIBER && fiber->state != SPINDLE_FIBER_READY &&
      fiber->state != SPINDLE_FIBER_FINISHED) {
    spindle_fiber_fatal("Spindle internal error: preparing a fiber that is running or suspended\n");
  }
#endif
#if SPINDLE_TSAN
  // A finished fiber's TSan shadow stack still holds the frames of its last run; start afresh.
  if (fiber->tsan_fiber != NULL) __tsan_destroy_fiber(fiber->tsan_fiber);
  fiber->tsan_fiber = __tsan_create_fiber(0);
#else
  fiber->tsan_fiber = NULL;
#endif
  fiber->kind = SPINDLE_FIBER_KIND_FIBER;
  fiber->state = SPINDLE_FIBER_READY;
  fiber->exclusivity[0] = 0;
  fiber->exclusivity[1] = 0;
  fiber->entry = entry;
  fiber->context = context;
  fiber->stack_bottom = stack_bottom;
  fiber->stack_size = stack_size;
  fiber->asan_fake_stack = NULL;
  fiber->asan_switched_from = NULL;
  uintptr_t top = ((uintptr_t)stack_bottom + stack_size) & ~(uintptr_t)15;
  fiber->sp = spindle_context_make((void *)top, fiber);
}

void spindle_fiber_destroy(spindle_fiber_t *fiber) {
#if SPINDLE_TSAN
  if (fiber->kind == SPINDLE_FIBER_KIND_FIBER && fiber->tsan_fiber != NULL) {
    __tsan_destroy_fiber(fiber->tsan_fiber);
  }
#endif
  fiber->tsan_fiber = NULL;
}

// Step "after the switch" (docs/fibers.md): runs on `self`'s stack once it is running again.
static inline void spindle_fiber_did_switch_in(spindle_fiber_t *self) {
#if SPINDLE_ASAN
  spindle_fiber_t *from = self->asan_switched_from;
  const void *from_bottom = NULL;
  size_t from_size = 0;
  __sanitizer_finish_switch_fiber(self->asan_fake_stack, &from_bottom, &from_size);
  // A thread's native stack bounds are learned the first time it switches to a fiber.
  if (from != NULL && from->kind == SPINDLE_FIBER_KIND_THREAD && from->stack_size == 0) {
    from->stack_bottom = (void *)from_bottom;
    from->stack_size = from_size;
  }
#endif
  if (self->kind == SPINDLE_FIBER_KIND_FIBER) {
    swift_task_enterThreadLocalContext((char *)self->exclusivity);
  }
}

// Step "before the switch" (docs/fibers.md): runs on `from`'s stack while it is still current.
static inline void spindle_fiber_will_switch(spindle_fiber_t *from, spindle_fiber_t *to,
                                             int finishing) {
  if (from->kind == SPINDLE_FIBER_KIND_FIBER) {
    swift_task_exitThreadLocalContext((char *)from->exclusivity);
#ifdef DEBUG
    // A non-zero head after exit means this fiber still holds a dynamic exclusivity access:
    // a wait inside an inout/modify of shared state. Its accesses would no longer be checked
    // against other fibers on this thread, so stop here, deterministically.
    if (from->exclusivity[0] != 0 && !(from->flags & SPINDLE_FIBER_ALLOW_ACCESS_ACROSS_SUSPEND)) {
      spindle_fiber_fatal(
          "Spindle: a fiber suspended while it holds an exclusive access (an inout or modify "
          "access of a class property, global or captured variable is still open across a "
          "wait). Finish the access before waiting: copy the value out, wait, then write it "
          "back.\n");
    }
#endif
  }
#ifdef DEBUG
  if (from->state != SPINDLE_FIBER_RUNNING) {
    spindle_fiber_fatal("Spindle internal error: switching away from a context that is not running\n");
  }
  if (to->state != SPINDLE_FIBER_READY && to->state != SPINDLE_FIBER_SUSPENDED) {
    spindle_fiber_fatal(
        "Spindle internal error: switching to a context that is running or finished\n");
  }
#endif
  from->state = finishing ? SPINDLE_FIBER_FINISHED : SPINDLE_FIBER_SUSPENDED;
  to->state = SPINDLE_FIBER_RUNNING;
#if SPINDLE_ASAN
  to->asan_switched_from = from;
#endif
}

// The sanitizers' half of "before the switch". A macro, not a function: after
// __tsan_switch_to_fiber, TSan attributes every function exit to the *target* fiber's shadow
// stack, so nothing may return between it and the swap (in a debug build even a static inline
// helper is a real call whose return would corrupt the target's shadow stack).
#if SPINDLE_ASAN
// A NULL fake-stack save tells ASan the current fiber is finishing, so it frees its fake stack.
#define SPINDLE_ASAN_START_SWITCH(from, to, finishing)                                        \
  __sanitizer_start_switch_fiber((finishing) ? NULL : &(from)->asan_fake_stack,              \
                                 (to)->stack_bottom, (to)->stack_size)
#else
#define SPINDLE_ASAN_START_SWITCH(from, to, finishing) ((void)0)
#endif
#if SPINDLE_TSAN
#define SPINDLE_TSAN_SWITCH(to) __tsan_switch_to_fiber((to)->tsan_fiber, 0)
#else
#define SPINDLE_TSAN_SWITCH(to) ((void)0)
#endif

void *spindle_fiber_switch_checked(spindle_fiber_t *from, spindle_fiber_t *to, void *argument) {
  spindle_fiber_will_switch(from, to, 0);
  SPINDLE_ASAN_START_SWITCH(from, to, 0);
  SPINDLE_TSAN_SWITCH(to);
  void *result = spindle_context_swap(&from->sp, to->sp, argument);
  spindle_fiber_did_switch_in(from);
  return result;
}

// Called by spindle_context_entry on a fresh stack (see switch.S).
_Noreturn void spindle_fiber_main(void *argument, spindle_fiber_t *self) {
  spindle_fiber_did_switch_in(self);
  spindle_fiber_t *next = self->entry(self, argument);
  spindle_fiber_will_switch(self, next, 1);
  SPINDLE_ASAN_START_SWITCH(self, next, 1);
  SPINDLE_TSAN_SWITCH(next);
  void *unused_sp;
  spindle_context_swap(&unused_sp, next->sp, NULL);
  spindle_fiber_fatal("Spindle internal error: a finished fiber was resumed\n");
}
