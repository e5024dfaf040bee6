// How the CUDA kernel splits a slice of logits into 16-byte vector loads: a scalar head up to the
// first 16-byte boundary, whole vectors, a scalar tail. Plain C++ (no CUDA headers) so that the C++
// kernel test checks the arithmetic on the host.
#pragma once

#include <cstdint>

#include "../common.h"

namespace tsdi {
namespace cuda {

// Floats of shared memory the kernel reserves in front of a slice, so that the slice's vector
// stores are 16-byte aligned too (see VectorSplit::pad).
constexpr int64_t kSlicePadFloats = 4;

struct VectorSplit {
  int64_t head = 0;  // elements [0, head) are loaded one by one
  int64_t vectors =
      0;            // then `vectors` loads of 16 bytes: elements [head, head + vectors * 16 / size)
  int64_t pad = 0;  // the slice starts `pad` floats into its shared memory: element head lands
                    // on a 16-byte boundary, so each vector's floats are stored 4 at a time
};

// `address`: where the slice's first element lies; `n`: its length; `element_bytes`: 4 (float) or
// 2 (half, bfloat16). A slice whose address is not a multiple of the element size (no tensor
// gives one) is loaded one by one.
TSDI_HOST_DEVICE VectorSplit split_for_vectors(uint64_t address, int64_t n, int64_t element_bytes) {
  VectorSplit split;
  if (n <= 0 || address % static_cast<uint64_t>(element_bytes) != 0) {
    split.head = n > 0 ? n : 0;
    return split;
  }
  const int64_t per_vector = 16 / element_bytes;
  int64_t head = static_cast<int64_t>((16 - address % 16) % 16) / element_bytes;
  head = head < n ? head : n;
  split.head = head;
  split.vectors = (n - head) / per_vector;
  split.pad = (4 - head % 4) % 4;
  return split;
}

}  // namespace cuda
}  // namespace tsdi
