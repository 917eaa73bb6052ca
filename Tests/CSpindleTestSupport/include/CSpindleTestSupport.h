// Helpers for Spindle's tests that need precise control over stack memory.
#ifndef CSPINDLE_TEST_SUPPORT_H
#define CSPINDLE_TEST_SUPPORT_H

#include <stddef.h>

/// Writes to `bytes` bytes of the calling stack (one frame, below the caller) and returns a
/// value that depends on them, so the compiler cannot drop the writes.
unsigned long spindle_test_touch_stack(size_t bytes);

/// Recurses with 1 KiB frames until `depth` frames deep, writing every frame. Used to overflow a
/// fiber stack the way runaway recursion does: one page at a time, into the guard region.
unsigned long spindle_test_recurse(size_t depth);

#endif
