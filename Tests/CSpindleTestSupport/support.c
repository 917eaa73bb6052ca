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
