// simt's stand-in for <cuda_bf16.h>: bfloat16 storage and exact conversion to float.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

struct __nv_bfloat16 {
  uint16_t bits;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t out = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return {__bfloat162float(h.x), __bfloat162float(h.y)};
}
