// The two machine words of a Swift closure: recorded for join records (docs/scheduler.md,
// "Join"), and called for job records and task-graph nodes (docs/graphs.md).
//
// Swift passes a thick closure argument as two scalars, the function pointer and the context,
// and calls a closure with its context in the swift_context register (and, if it throws, returns
// the error in the swift_error_result register). Clang's swiftcall attributes describe exactly
// that convention, so a non-escaping closure can be recorded here and called later from another
// thread without Swift boxing it (withoutActuallyEscaping would heap-allocate a wrapper per
// call), and a stored closure can be called without copying it (a copy retains its context).
// The caller keeps the closure alive until the call is done.

#include "CSpindle.h"

#include <stdbool.h>
#include <stdint.h>

__attribute__((swiftcall)) void spindle_closure_words(void **out, const void *function,
                                                      void *context);

__attribute__((swiftcall)) void spindle_closure_words(void **out, const void *function,
                                                      void *context) {
  out[0] = (void *)function;
  out[1] = context;
}

typedef void (*spindle_swift_closure_t)(void *argument,
                                        void *__attribute__((swift_context)) context)
    __attribute__((swiftcall));

void spindle_closure_invoke(void *const *words, void *argument) {
  ((spindle_swift_closure_t)words[0])(argument, words[1]);
}

typedef void (*spindle_swift_integer_closure_t)(intptr_t integer, void *argument,
                                                void *__attribute__((swift_context)) context)
    __attribute__((swiftcall));

void spindle_closure_invoke_with_integer(void *const *words, intptr_t integer, void *argument) {
  ((spindle_swift_integer_closure_t)words[0])(integer, argument, words[1]);
}

typedef void (*spindle_swift_throwing_closure_t)(
    void *argument, void *__attribute__((swift_context)) context,
    void **__attribute__((swift_error_result)) error) __attribute__((swiftcall));

// A throwing closure returns its error in the swift_error_result register, which swiftcall's
// error parameter models: it is null unless the closure threw, and then an owned error box.
void *spindle_throwing_closure_invoke(void *const *words, void *argument) {
  void *error = NULL;
  ((spindle_swift_throwing_closure_t)words[0])(argument, words[1], &error);
  return error;
}

typedef void (*spindle_swift_throwing_integer_closure_t)(
    intptr_t integer, void *argument, void *__attribute__((swift_context)) context,
    void **__attribute__((swift_error_result)) error) __attribute__((swiftcall));

void *spindle_throwing_closure_invoke_with_integer(void *const *words, intptr_t integer,
                                                   void *argument) {
  void *error = NULL;
  ((spindle_swift_throwing_integer_closure_t)words[0])(integer, argument, words[1], &error);
  return error;
}

// The Swift runtime's uniqueness check (libswiftCore; C calling convention).
extern bool swift_isUniquelyReferenced_nonNull_native(const void *object);

bool spindle_closure_context_is_unique(const void *context) {
  return swift_isUniquelyReferenced_nonNull_native(context);
}

// The Swift runtime's release of n strong references with one atomic operation (libswiftCore;
// C calling convention; a null object is ignored).
extern void swift_release_n(void *object, uint32_t n);

void spindle_closure_context_release(void *context, uint32_t count) {
  swift_release_n(context, count);
}
