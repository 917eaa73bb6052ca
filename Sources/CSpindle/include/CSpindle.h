// CSpindle: the parts of Spindle that Swift cannot express.
//
//   - the context switch (switch.S) and the C glue around it that keeps the Swift runtime's
//     exclusivity state and the sanitizers informed (fiber.c); docs/fibers.md explains both;
//   - the fiber-stack overflow reporter: a SIGSEGV/SIGBUS handler on an alternate signal stack
//     (overflow.c);
//   - prototypes of GNU libc functions that Swift's Glibc module hides because it is built
//     without _GNU_SOURCE (platform.c).
//
// Nothing here is public API of Spindle; the Swift module wraps every function.

#ifndef CSPINDLE_H
#define CSPINDLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

// Nullability qualifiers are clang's; other C compilers (the aarch64 cross check in
// Tests/ContextSwitchCheck uses gcc) read this header without them.
#if !defined(__clang__)
#define _Nonnull
#define _Nullable
#endif

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Fibers (fiber.c, switch.S; see docs/fibers.md)

/// What a context is: the native stack of an OS thread, or a fiber on a stack of our own.
typedef enum spindle_fiber_kind {
  SPINDLE_FIBER_KIND_THREAD = 0,
  SPINDLE_FIBER_KIND_FIBER = 1,
} spindle_fiber_kind;

/// The life cycle of a context. Every transition happens in spindle_fiber_switch or
/// spindle_fiber_prepare and is asserted there in debug builds.
typedef enum spindle_fiber_state {
  /// Prepared on a stack; the first switch to it calls its entry function.
  SPINDLE_FIBER_READY = 0,
  /// Running on some thread right now.
  SPINDLE_FIBER_RUNNING = 1,
  /// Switched away from; a later switch resumes it where it left off.
  SPINDLE_FIBER_SUSPENDED = 2,
  /// Its entry function returned; its stack may be prepared again.
  SPINDLE_FIBER_FINISHED = 3,
} spindle_fiber_state;

/// Flag: the fiber may suspend while it holds a dynamic exclusivity access. Only tests set it
/// (to prove that a suspended access survives migration); see docs/fibers.md.
#define SPINDLE_FIBER_ALLOW_ACCESS_ACROSS_SUSPEND 1u

typedef struct spindle_fiber spindle_fiber_t;

/// The function a fiber runs. `argument` is the value passed by the switch that started the
/// fiber. It returns the context to switch to when it is done; that final switch passes NULL.
typedef spindle_fiber_t *_Nonnull (*spindle_fiber_entry_t)(spindle_fiber_t *_Nonnull self,
                                                           void *_Nullable argument);

/// A context control block. For a fiber it lives at the top of the fiber's own stack mapping;
/// for a thread, wherever the thread keeps it. Field order is deliberate: the fields a switch
/// touches come first, in one cache line.
struct spindle_fiber {
  /// Saved stack pointer while the context is not running.
  void *_Nullable sp;
  /// The Swift runtime's per-context exclusivity state (two machine words, see
  /// swift_task_enterThreadLocalContext). Zero for a fresh fiber.
  uintptr_t exclusivity[2];
  uint32_t kind;   // spindle_fiber_kind
  uint32_t state;  // spindle_fiber_state
  uint32_t flags;  // SPINDLE_FIBER_* flags
  /// Slot of the stack's guard region in the overflow table (-1: none).
  int32_t guard_slot;
  spindle_fiber_entry_t _Nullable entry;
  /// Opaque to CSpindle: the owner's pointer (Spindle keeps its per-fiber data here).
  void *_Nullable context;
  /// Usable stack: lowest address and size in bytes (zero size for a thread we have not yet
  /// learned the bounds of; only AddressSanitizer needs them).
  void *_Nullable stack_bottom;
  size_t stack_size;
  /// ThreadSanitizer's fiber handle (NULL unless built with -fsanitize=thread).
  void *_Nullable tsan_fiber;
  /// AddressSanitizer's fake-stack handle and the context that switched to this one.
  void *_Nullable asan_fake_stack;
  spindle_fiber_t *_Nullable asan_switched_from;
  /// Free to use by a pool while the context is not in use (intrusive free-list link).
  spindle_fiber_t *_Nullable pool_next;
  /// The whole mapping (guard region and stack) this control block lives in; NULL for a thread.
  void *_Nullable mapping;
  size_t mapping_size;
  size_t guard_size;
};

/// What a debugger needs to list Spindle's fibers without knowing Swift's type layouts
/// (Scripts/gdb/spindle.py; docs/debugging.md). Written by Spindle on slow paths only: the
/// offsets once, a slot's head whenever its scheduler makes or recycles a fiber.
#define SPINDLE_DEBUG_SLOTS 16
typedef struct spindle_debug_info {
  /// Layout version of this struct (the script checks it).
  uint32_t version;
  /// Offsets into Spindle's per-fiber state (`FiberState`, what a fiber's `context` points to).
  uint32_t fiber_control;     // spindle_fiber_t *: the fiber's control block
  uint32_t fiber_phase;       // uint8_t: 0 running, 1 spare, 2 parking, 3 parked, 4 ready, 5 finished
  uint32_t fiber_priority;    // uint8_t: 0 high, 1 normal, 2 low
  uint32_t fiber_job;         // JobCounter *: the counter of the job running on it (or NULL)
  uint32_t fiber_waited;      // JobCounter *: the counter it last parked on (or NULL)
  uint32_t fiber_worker;      // worker state *: the worker running it, or that it parked on
  uint32_t fiber_next;        // next fiber state in the scheduler's list (or NULL)
  /// Offset of the count word in a JobCounter (its low 40 bits are the pending count).
  uint32_t counter_word;
  /// Each live scheduler's list of fiber states (NULL: a free slot, or no fiber yet).
  void *_Nullable volatile heads[SPINDLE_DEBUG_SLOTS];
  /// Which slots are taken.
  uint32_t slot_used[SPINDLE_DEBUG_SLOTS];
} spindle_debug_info_t;

extern spindle_debug_info_t spindle_debug_info;

/// Takes a free slot of `spindle_debug_info.heads` (-1 when all are taken). Thread-safe.
int spindle_debug_claim_slot(void);
/// Frees a slot taken by spindle_debug_claim_slot and clears its head. Thread-safe.
void spindle_debug_release_slot(int slot);
/// Publishes slot `slot`'s list head. Written under the scheduler's lock; read by a debugger.
void spindle_debug_set_head(int slot, void *_Nullable head);
/// Records the layout offsets (see spindle_debug_info_t).
void spindle_debug_set_layout(uint32_t fiber_control, uint32_t fiber_phase, uint32_t fiber_priority,
                              uint32_t fiber_job, uint32_t fiber_waited, uint32_t fiber_worker,
                              uint32_t fiber_next, uint32_t counter_word);
/// Does nothing; a place for a debugger's breakpoint in tests of the debugger script.
void spindle_debug_checkpoint(void);

/// Makes `fiber` describe the calling thread's native stack, which is running now.
/// Also makes sure the thread has an alternate signal stack (see overflow.c).
void spindle_fiber_init_thread(spindle_fiber_t *_Nonnull fiber);

/// Prepares `fiber` to run `entry` on the stack [stack_bottom, stack_bottom + stack_size).
/// The fiber must not be running (READY, FINISHED, or freshly zeroed memory).
void spindle_fiber_prepare(spindle_fiber_t *_Nonnull fiber, void *_Nonnull stack_bottom,
                           size_t stack_size, spindle_fiber_entry_t _Nonnull entry,
                           void *_Nullable context);

/// Releases sanitizer state of a fiber whose stack is about to be unmapped. The fiber must not
/// be running.
void spindle_fiber_destroy(spindle_fiber_t *_Nonnull fiber);

/// The checked switch: everything spindle_fiber_switch does, plus the sanitizer annotations and,
/// in debug builds, the state-machine and held-access checks. Out of line (fiber.c).
void *_Nullable spindle_fiber_switch_checked(spindle_fiber_t *_Nonnull from,
                                             spindle_fiber_t *_Nonnull to,
                                             void *_Nullable argument);

/// Non-zero when this build of CSpindle must take the checked switch: debug builds, and builds
/// with ThreadSanitizer or AddressSanitizer (which must see every switch). Set by fiber.c from
/// its own compiler flags, which the Swift compiler's view of this header does not share.
/// Tests clear it to run the fast path in a debug build; nothing else writes it.
extern int spindle_fiber_switch_is_checked;

// Exported by libswiftCore: what Swift Concurrency calls around every task switch. The state is
// two machine words per context. Runtime ABI rather than public API: the test "a fiber suspended
// inside a modify access completes on another thread" guards against a change.
void swift_task_enterThreadLocalContext(char *_Nonnull state);
void swift_task_exitThreadLocalContext(char *_Nonnull state);

void *_Nullable spindle_context_swap(void *_Nullable *_Nonnull save_sp, void *_Nonnull to_sp,
                                     void *_Nullable argument);

/// Where the calling thread's Swift exclusivity access-set head lives, as an offset from the
/// thread pointer; valid only while spindle_exclusivity_skip_enabled is non-zero. Found at run
/// time by spindle_fiber_init_thread (docs/fibers.md, "Skipping the exclusivity swap").
extern long spindle_exclusivity_head_offset;
extern int spindle_exclusivity_skip_enabled;

/// For tests: whether the skip is enabled (after a thread context was made), and a way to pick
/// the switch path in a debug build (returns the previous setting).
int spindle_fiber_exclusivity_skip_is_enabled(void);
int spindle_fiber_set_switch_checked(int checked);

/// The thread pointer, read fresh each time: `volatile` keeps the compiler from reusing a value
/// read before a switch after it, when the fiber may run on another thread.
static inline __attribute__((always_inline)) char *_Nonnull spindle_thread_pointer(void) {
  char *pointer;
#if defined(__x86_64__)
  __asm__ volatile("mov %%fs:0, %0" : "=r"(pointer));
#elif defined(__aarch64__)
  __asm__ volatile("mrs %0, tpidr_el0" : "=r"(pointer));
#else
#error "unsupported architecture"
#endif
  return pointer;
}

/// Whether swift_task_enter/exitThreadLocalContext would change anything for `fiber` on the
/// calling thread: they do nothing when the fiber has no saved accesses and the thread's
/// access set is empty, which is the common case. Without a verified head location: always.
static inline __attribute__((always_inline)) int spindle_exclusivity_swap_needed(
    const spindle_fiber_t *_Nonnull fiber) {
  if (fiber->exclusivity[0] != 0) return 1;
  if (!__atomic_load_n(&spindle_exclusivity_skip_enabled, __ATOMIC_RELAXED)) return 1;
  return *(void *const *)(spindle_thread_pointer() + spindle_exclusivity_head_offset) != 0;
}

/// Suspends `from` (the context running on this thread now) and runs `to` (READY or SUSPENDED),
/// passing `argument`. Returns when some thread switches back to `from`, with the argument that
/// switch passed. See docs/fibers.md for what is saved and why.
///
/// Inline on purpose: the caller makes exactly one call per switch (to the stack swap), as the
/// bare swap does. An out-of-line wrapper adds a call and a return on each side, and a return
/// right after a stack swap is mispredicted (the return stack buffer holds the other side's
/// addresses).
static inline __attribute__((always_inline)) void *_Nullable spindle_fiber_switch(
    spindle_fiber_t *_Nonnull from, spindle_fiber_t *_Nonnull to, void *_Nullable argument) {
  if (__builtin_expect(spindle_fiber_switch_is_checked, 0)) {
    return spindle_fiber_switch_checked(from, to, argument);
  }
  // Step 1 of "Switching" (docs/fibers.md): take the fiber's accesses off the thread.
  if (from->kind == SPINDLE_FIBER_KIND_FIBER && spindle_exclusivity_swap_needed(from)) {
    swift_task_exitThreadLocalContext((char *)from->exclusivity);
  }
  from->state = SPINDLE_FIBER_SUSPENDED;
  to->state = SPINDLE_FIBER_RUNNING;
  void *result = spindle_context_swap(&from->sp, to->sp, argument);
  // Step 4: running again (perhaps on another thread): put the fiber's accesses on this thread.
  if (from->kind == SPINDLE_FIBER_KIND_FIBER && spindle_exclusivity_swap_needed(from)) {
    swift_task_enterThreadLocalContext((char *)from->exclusivity);
  }
  return result;
}

// MARK: - Raw context switch (switch.S). Use spindle_fiber_switch, which adds the runtime glue.
// spindle_context_swap is declared above, for spindle_fiber_switch.
/// Builds the initial frame below `stack_top` (16-byte aligned) so that the first swap to the
/// returned stack pointer calls spindle_fiber_main(argument, fiber).
void *_Nonnull spindle_context_make(void *_Nonnull stack_top, spindle_fiber_t *_Nonnull fiber);

// MARK: - Closures (closure.c)

/// Calls the Swift closure of type `(UnsafeMutableRawPointer) -> Void` whose two words
/// (function, context) are at `words`, as recorded by spindle_closure_words (declared to Swift
/// with @_silgen_name, since Swift passes the closure itself).
void spindle_closure_invoke(void *_Nonnull const *_Nonnull words, void *_Nullable argument);
/// Calls the Swift closure of type `(Int, UnsafeMutableRawPointer) -> Void` (or `(Int, JobContext)
/// -> Void`, whose second parameter is one pointer) whose two words are at `words`.
void spindle_closure_invoke_with_integer(void *_Nonnull const *_Nonnull words, intptr_t integer,
                                         void *_Nullable argument);
/// Calls the Swift closure of type `(UnsafeMutableRawPointer) throws -> Void` (or of a
/// one-pointer struct such as `JobContext`) whose two words are at `words`; returns nil, or the
/// error it threw (an owned reference to the error box, which the caller must release).
void *_Nullable spindle_throwing_closure_invoke(void *_Nonnull const *_Nonnull words,
                                               void *_Nullable argument);
/// `spindle_throwing_closure_invoke` for a closure of type `(Int, JobContext) throws -> Void`.
void *_Nullable spindle_throwing_closure_invoke_with_integer(void *_Nonnull const *_Nonnull words,
                                                            intptr_t integer, void *_Nullable argument);
/// Whether a closure context (a native Swift object) has only one strong reference: releasing
/// it then frees the context, and nothing else touches its count.
_Bool spindle_closure_context_is_unique(const void *_Nonnull context);
/// Releases `count` references to a closure context (a native Swift object) with one atomic
/// operation.
void spindle_closure_context_release(void *_Nonnull context, uint32_t count);

// MARK: - Stack-overflow reporting (overflow.c)

/// Records a guard region below a fiber stack of `stack_size` bytes, so that a fault in it is
/// reported as a fiber stack overflow. Returns a slot for unregistering, or -1 if the
/// bookkeeping memory could not be mapped (errno set).
int spindle_overflow_register(const void *_Nonnull guard_low, size_t guard_size,
                              size_t stack_size);
void spindle_overflow_unregister(int slot);
/// Installs the SIGSEGV and SIGBUS handlers (once per process; later calls are no-ops).
/// Returns 0, or -1 with errno set.
int spindle_overflow_install_handlers(void);
/// Gives the calling thread an alternate signal stack if it has none. Returns 0, or -1 with
/// errno set. Cheap after the first call on a thread.
int spindle_thread_ensure_altstack(void);

// MARK: - Platform (platform.c): GNU functions hidden from Swift's Glibc module

/// sched_getaffinity(0, ...): the calling thread's allowed CPUs. 0 or -1 with errno.
int spindle_sched_getaffinity(size_t mask_bytes, unsigned long *_Nonnull mask);
/// sched_setaffinity(0, ...): pins the calling thread. 0 or -1 with errno.
int spindle_sched_setaffinity(size_t mask_bytes, const unsigned long *_Nonnull mask);
/// pthread_setname_np(pthread_self(), name). Returns 0 or an errno value (not -1).
int spindle_thread_set_name(const char *_Nonnull name);
/// sched_getcpu(): the CPU the calling thread runs on now, or -1 with errno.
int spindle_sched_getcpu(void);
/// gettid().
pid_t spindle_gettid(void);
/// The calling thread's involuntary context switches (getrusage RUSAGE_THREAD, ru_nivcsw).
long spindle_thread_involuntary_switches(void);
/// futex(FUTEX_WAIT_PRIVATE): sleeps while *address == expected, until woken or `timeout`
/// (relative; NULL: none) passes. 0 when woken (or spuriously), -1 with errno (EAGAIN: the value
/// differed; ETIMEDOUT; EINTR). glibc's syscall() is variadic, which Swift cannot call.
long spindle_futex_wait(uint32_t *_Nonnull address, uint32_t expected,
                        const struct timespec *_Nullable timeout);
/// futex(FUTEX_WAKE_PRIVATE): wakes up to `count` waiters; returns how many were woken.
long spindle_futex_wake(uint32_t *_Nonnull address, int count);
/// mbind(2): sets the NUMA policy of [address, address + length) (page-aligned). `mode` is an
/// MPOL_* value, `nodemask` a bit mask of `max_node` bits. 0 or -1 with errno.
long spindle_mbind(void *_Nonnull address, unsigned long length, int mode,
                   const unsigned long *_Nullable nodemask, unsigned long max_node, unsigned flags);
/// get_mempolicy(2) for the page holding `address` (MPOL_F_ADDR): the policy mode into *mode and
/// its node mask into `nodemask` (`max_node` bits). 0 or -1 with errno.
long spindle_get_mempolicy_of(void *_Nonnull address, int *_Nonnull mode,
                              unsigned long *_Nonnull nodemask, unsigned long max_node);
/// move_pages(2) of the calling process with no target nodes: the node of each page into
/// `status` (a negative errno for a page that is not present). 0 or -1 with errno.
long spindle_page_nodes(unsigned long count, void *_Nonnull const *_Nonnull pages, int *_Nonnull status);
/// dlvsym(3), which Swift's Glibc module hides: a symbol at a given version.
void *_Nullable spindle_dlvsym(void *_Nonnull handle, const char *_Nonnull symbol,
                               const char *_Nonnull version);
/// A spin-wait hint to the CPU (x86 `pause`, aarch64 `yield`).
static inline __attribute__((always_inline)) void spindle_cpu_relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}
/// errno of the calling thread, for C callers' results (Swift reads errno itself).
int spindle_errno(void);

#ifdef __cplusplus
}
#endif

#endif  // CSPINDLE_H
