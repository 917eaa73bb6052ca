// The table a debugger reads to list Spindle's fibers (CSpindle.h, spindle_debug_info;
// docs/debugging.md).

#include "CSpindle.h"

spindle_debug_info_t spindle_debug_info = {.version = 1};

int spindle_debug_claim_slot(void) {
  for (int slot = 0; slot < SPINDLE_DEBUG_SLOTS; slot++) {
    uint32_t expected = 0;
    if (__atomic_compare_exchange_n(&spindle_debug_info.slot_used[slot], &expected, 1u, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
      return slot;
    }
  }
  return -1;
}

void spindle_debug_release_slot(int slot) {
  if (slot < 0 || slot >= SPINDLE_DEBUG_SLOTS) return;
  __atomic_store_n(&spindle_debug_info.heads[slot], (void *)0, __ATOMIC_RELEASE);
  __atomic_store_n(&spindle_debug_info.slot_used[slot], 0u, __ATOMIC_RELEASE);
}

void spindle_debug_set_head(int slot, void *head) {
  if (slot < 0 || slot >= SPINDLE_DEBUG_SLOTS) return;
  __atomic_store_n(&spindle_debug_info.heads[slot], head, __ATOMIC_RELEASE);
}

void spindle_debug_set_layout(uint32_t fiber_control, uint32_t fiber_phase, uint32_t fiber_priority,
                              uint32_t fiber_job, uint32_t fiber_waited, uint32_t fiber_worker,
                              uint32_t fiber_next, uint32_t counter_word) {
  spindle_debug_info.fiber_control = fiber_control;
  spindle_debug_info.fiber_phase = fiber_phase;
  spindle_debug_info.fiber_priority = fiber_priority;
  spindle_debug_info.fiber_job = fiber_job;
  spindle_debug_info.fiber_waited = fiber_waited;
  spindle_debug_info.fiber_worker = fiber_worker;
  spindle_debug_info.fiber_next = fiber_next;
  spindle_debug_info.counter_word = counter_word;
}

__attribute__((noinline)) void spindle_debug_checkpoint(void) {
  __asm__ volatile("" ::: "memory");
}
