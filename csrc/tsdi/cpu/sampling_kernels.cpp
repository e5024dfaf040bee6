// Instantiates the CPU kernel once per logits dtype and per instruction set. GCC/Clang
// `target_clones` compile each entry point for AVX-512, AVX2+FMA and baseline x86-64 and pick one
// at load time (ifunc), so one binary runs everywhere and uses the widest vectors it finds.
// Everything the clones call is force-inlined into them and so compiled for the clone's ISA.
#include "sampling_kernel.h"

#include <cstddef>

#if defined(__x86_64__) && defined(__linux__) && !defined(TSDI_NO_TARGET_CLONES)
#define TSDI_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TSDI_CPU_CLONES
#endif

namespace tsdi {
namespace cpu {
namespace {

void ensure_capacity(Workspace& ws, int64_t vocab) {
  const size_t v = static_cast<size_t>(vocab);
  if (ws.values.size() < v) ws.values.resize(v);
  if (ws.candidates.size() < v) ws.candidates.resize(v);
  if (ws.candidates_next.size() < v) ws.candidates_next.resize(v);
}

template <typename In>
TSDI_CPU_CLONES void sample_range(const SamplingParams& p, int64_t begin, int64_t end,
                                  Workspace& ws) {
  for (int64_t b = begin; b < end; ++b) detail::sample_row<In>(p, b, ws);
}

template <typename In>
TSDI_CPU_CLONES void probs_range(const SamplingParams& p, int64_t begin, int64_t end,
                                 Workspace& ws) {
  for (int64_t b = begin; b < end; ++b) detail::probs_row<In>(p, b, ws);
}

}  // namespace

void sample_rows(LogitsDType dtype, const SamplingParams& params, int64_t row_begin,
                 int64_t row_end, Workspace& workspace) {
  ensure_capacity(workspace, params.vocab);
  switch (dtype) {
    case LogitsDType::kFloat32: return sample_range<float>(params, row_begin, row_end, workspace);
    case LogitsDType::kFloat16:
      return sample_range<Float16Bits>(params, row_begin, row_end, workspace);
    case LogitsDType::kBFloat16:
      return sample_range<BFloat16Bits>(params, row_begin, row_end, workspace);
  }
}

void probs_rows(LogitsDType dtype, const SamplingParams& params, int64_t row_begin, int64_t row_end,
                Workspace& workspace) {
  ensure_capacity(workspace, params.vocab);
  switch (dtype) {
    case LogitsDType::kFloat32: return probs_range<float>(params, row_begin, row_end, workspace);
    case LogitsDType::kFloat16:
      return probs_range<Float16Bits>(params, row_begin, row_end, workspace);
    case LogitsDType::kBFloat16:
      return probs_range<BFloat16Bits>(params, row_begin, row_end, workspace);
  }
}

}  // namespace cpu
}  // namespace tsdi
