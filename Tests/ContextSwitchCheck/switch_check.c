// A freestanding check of switch.S for any architecture it supports: build it with the target's
// C compiler and run it (natively, or under qemu-user for aarch64; see run.sh).
//
// It drives spindle_context_make / spindle_context_swap directly, without Swift, and checks that
//   - arguments pass both ways and a fresh context starts in spindle_fiber_main(argument, fiber);
//   - values the compiler keeps in callee-saved integer and floating-point registers across a
//     swap survive it, on both sides;
//   - the floating-point control state (rounding mode) is per context;
//   - the stack is 16-byte aligned where the ABI says it is.

#include "../../Sources/CSpindle/include/CSpindle.h"

#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *main_sp;
static spindle_fiber_t fiber;
static int failures;

#define CHECK(condition, ...)                       \
  do {                                              \
    if (!(condition)) {                             \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                 \
      fputc('\n', stderr);                          \
      failures++;                                   \
    }                                               \
  } while (0)

static __attribute__((noinline)) void *swap_to_main(void *value) {
  return spindle_context_swap(&fiber.sp, main_sp, value);
}

// Called by spindle_context_entry on the fresh stack.
_Noreturn void spindle_fiber_main(void *argument, spindle_fiber_t *self) {
  CHECK(self == &fiber, "fresh context got fiber %p, expected %p", (void *)self, (void *)&fiber);
  CHECK((uintptr_t)argument == 1, "first argument %lu, expected 1", (unsigned long)(uintptr_t)argument);
  // Alignment at function entry plus the call's return address: a local's address is 16-aligned.
  _Alignas(16) volatile char probe[16];
  CHECK(((uintptr_t)probe & 15) == 0, "misaligned stack in the fresh context");

  fesetround(FE_TOWARDZERO);
  // Many values live across each swap: the compiler keeps them in callee-saved registers.
  volatile uintptr_t seed = (uintptr_t)argument;
  uintptr_t a = seed * 3, b = seed * 5, c = seed * 7, d = seed * 11, e = seed * 13, f = seed * 17;
  uintptr_t g = seed * 19, h = seed * 23, i = seed * 29, j = seed * 31;
  double x = (double)seed * 1.25, y = (double)seed * 2.5, z = (double)seed * 3.75, w = (double)seed * 5.0;
  double u = (double)seed * 6.25, v = (double)seed * 7.5, s = (double)seed * 8.75, t = (double)seed * 10.0;
  uintptr_t next = 1;
  for (int round = 0; round < 1000; round++) {
    next = (uintptr_t)swap_to_main((void *)(next * 10));
    CHECK(next == (uintptr_t)round + 2, "round %d: got %lu", round, (unsigned long)next);
    CHECK(fegetround() == FE_TOWARDZERO, "fiber's rounding mode was lost across a swap");
    a += 1; b += 1; c += 1; d += 1; e += 1; f += 1; g += 1; h += 1; i += 1; j += 1;
    x += 1; y += 1; z += 1; w += 1; u += 1; v += 1; s += 1; t += 1;
  }
  uintptr_t sum = a + b + c + d + e + f + g + h + i + j;
  double fsum = x + y + z + w + u + v + s + t;
  CHECK(sum == 3 + 5 + 7 + 11 + 13 + 17 + 19 + 23 + 29 + 31 + 10 * 1000, "integer registers corrupted: %lu", (unsigned long)sum);
  CHECK(fsum == 1.25 + 2.5 + 3.75 + 5.0 + 6.25 + 7.5 + 8.75 + 10.0 + 8 * 1000, "fp registers corrupted: %f", fsum);
  fesetround(FE_TONEAREST);
  swap_to_main(NULL);
  abort();  // never resumed
}

int main(void) {
  size_t size = 256 * 1024;
  char *stack = aligned_alloc(16, size);
  fiber.sp = spindle_context_make(stack + size, &fiber);

  fesetround(FE_UPWARD);
  volatile uintptr_t seed = 2;
  uintptr_t a = seed * 3, b = seed * 5, c = seed * 7, d = seed * 11, e = seed * 13, f = seed * 17;
  double x = (double)seed * 1.5, y = (double)seed * 2.5, z = (double)seed * 3.5, w = (double)seed * 4.5;
  void *result = spindle_context_swap(&main_sp, fiber.sp, (void *)1);
  for (uintptr_t round = 0; result != NULL; round++) {
    CHECK((uintptr_t)result == (round == 0 ? 10 : (round + 1) * 10), "main round %lu: got %lu", (unsigned long)round, (unsigned long)(uintptr_t)result);
    CHECK(fegetround() == FE_UPWARD, "main's rounding mode was changed by the fiber");
    a += 2; b += 2; c += 2; d += 2; e += 2; f += 2;
    x += 2; y += 2; z += 2; w += 2;
    result = spindle_context_swap(&main_sp, fiber.sp, (void *)(round + 2));
  }
  uintptr_t sum = a + b + c + d + e + f;
  double fsum = x + y + z + w;
  CHECK(sum == 2 * (3 + 5 + 7 + 11 + 13 + 17) + 6 * 2 * 1000, "main integer registers corrupted: %lu", (unsigned long)sum);
  CHECK(fsum == 2 * (1.5 + 2.5 + 3.5 + 4.5) + 4 * 2 * 1000, "main fp registers corrupted: %f", fsum);
  free(stack);
  if (failures == 0) {
    printf("context switch check: 1 passed, 0 failed\n");
    return 0;
  }
  printf("context switch check: 0 passed, 1 failed (%d checks)\n", failures);
  return 1;
}
