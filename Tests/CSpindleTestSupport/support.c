#include "CSpindleTestSupport.h"

#include <string.h>

__attribute__((noinline)) unsigned long spindle_test_touch_stack(size_t bytes) {
  volatile unsigned char buffer[bytes];
  memset((void *)buffer, 0x5a, bytes);
  unsigned long sum = 0;
  for (size_t i = 0; i < bytes; i += 4096) sum += buffer[i];
  return sum;
}

__attribute__((noinline)) unsigned long spindle_test_recurse(size_t depth) {
  volatile unsigned char frame[1024];
  memset((void *)frame, (int)(depth & 0xff), sizeof frame);
  if (depth == 0) return frame[0];
  return spindle_test_recurse(depth - 1) + frame[depth % sizeof frame];
}

__attribute__((noinline)) unsigned long spindle_test_large_frame(size_t frame_bytes, size_t touched_bytes) {
  volatile unsigned char frame[frame_bytes];
  // Only the lowest `touched_bytes` are written, lowest address first: a frame that jumps over a
  // small guard and writes the memory below it.
  for (size_t i = 0; i < touched_bytes; i += 64) frame[i] = (unsigned char)i;
  return frame[0] + frame[frame_bytes - 1];
}
