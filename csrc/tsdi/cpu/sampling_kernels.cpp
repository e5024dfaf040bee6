// Instantiates the CPU kernel once per logits dtype and per instruction set: each entry point is
// compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and baseline x86-64, and the widest one
// the CPU has runs (selected_isa() in sampling_kernel.h; TSDI_EXT_CPU_ISA picks another, so that
// tests run every path on one machine). Everything the entry points call is force-inlined into
// them and so compiled for their instruction set. All of them give the same bits (the kernel has
// no FMA and one exp; docs/contract.md §8).
#include "sampling_kernel.h"

#include <cstddef>

#if defined(TSDI_X86_ISA_DISPATCH)
#define TSDI_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define TSDI_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
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

// One row loop per (instruction set, op); `Row` is detail::sample_row<In> or probs_row<In>.
#define TSDI_ROW_LOOP(name, attribute, row)                                                 \
  template <typename In>                                                                    \
  attribute void name(const SamplingParams& p, int64_t begin, int64_t end, Workspace& ws) { \
    for (int64_t b = begin; b < end; ++b) detail::row<In>(p, b, ws);                        \
  }
TSDI_ROW_LOOP(sample_range_baseline, , sample_row)
TSDI_ROW_LOOP(probs_range_baseline, , probs_row)
#if defined(TSDI_X86_ISA_DISPATCH)
TSDI_ROW_LOOP(sample_range_v3, TSDI_TARGET_V3, sample_row)
TSDI_ROW_LOOP(probs_range_v3, TSDI_TARGET_V3, probs_row)
TSDI_ROW_LOOP(sample_range_v4, TSDI_TARGET_V4, sample_row)
TSDI_ROW_LOOP(probs_range_v4, TSDI_TARGET_V4, probs_row)
#endif
#undef TSDI_ROW_LOOP

template <typename In>
void sample_range(const SamplingParams& p, int64_t begin, int64_t end, Workspace& ws) {
#if defined(TSDI_X86_ISA_DISPATCH)
  switch (selected_isa()) {
    case Isa::kX86_64_V4: return sample_range_v4<In>(p, begin, end, ws);
    case Isa::kX86_64_V3: return sample_range_v3<In>(p, begin, end, ws);
    default: break;
  }
#endif
  sample_range_baseline<In>(p, begin, end, ws);
}

template <typename In>
void probs_range(const SamplingParams& p, int64_t begin, int64_t end, Workspace& ws) {
#if defined(TSDI_X86_ISA_DISPATCH)
  switch (selected_isa()) {
    case Isa::kX86_64_V4: return probs_range_v4<In>(p, begin, end, ws);
    case Isa::kX86_64_V3: return probs_range_v3<In>(p, begin, end, ws);
    default: break;
  }
#endif
  probs_range_baseline<In>(p, begin, end, ws);
}

#if defined(TSDI_X86_ISA_DISPATCH)
TSDI_TARGET_V4 double exp_pass_v4(float* w, int64_t n) {
  return detail::exp_weights(w, n, 0.0f, 1.0f);
}
TSDI_TARGET_V3 double exp_pass_v3(float* w, int64_t n) {
  return detail::exp_weights(w, n, 0.0f, 1.0f);
}
#endif

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

double exp_weights_in_place(float* values, int64_t n) {
  // exp((x - 0) * 1) = exp(x): pass 2 of a row whose maximum is 0, at temperature 1.
#if defined(TSDI_X86_ISA_DISPATCH)
  switch (selected_isa()) {
    case Isa::kX86_64_V4: return exp_pass_v4(values, n);
    case Isa::kX86_64_V3: return exp_pass_v3(values, n);
    default: break;
  }
#endif
  return detail::exp_weights(values, n, 0.0f, 1.0f);
}

}  // namespace cpu
}  // namespace tsdi
