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

/// One frame of `frame_bytes` (a C array on the stack, no stack probes) whose lowest
/// `touched_bytes` are written, lowest address first: as C code with a large local buffer does.
unsigned long spindle_test_large_frame(size_t frame_bytes, size_t touched_bytes);

#endif
