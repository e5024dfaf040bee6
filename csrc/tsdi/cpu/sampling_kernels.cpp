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
  const size_t chunks = static_cast<size_t>(detail::sum_chunks(vocab));
  if (ws.chunk_total.size() < chunks) {
    ws.chunk_max.resize(chunks);
    ws.chunk_status.resize(chunks);
    ws.chunk_total.resize(chunks);
  }
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

// The tasks of a row split over threads, one set per instruction set (see sample_row_split).
using SplitTask = void (*)(void* row, int64_t chunk_begin, int64_t chunk_end);
using SplitFinish = void (*)(const SamplingParams& p, int64_t b, const RowParams& rp, float* work,
                             double total, Workspace& ws);
struct SplitFns {
  SplitTask pass1;
  SplitTask pass2;
  SplitFinish finish;
};
#define TSDI_SPLIT_TASKS(suffix, attribute)                                                     \
  template <typename In>                                                                        \
  attribute void split_pass1_##suffix(void* row, int64_t begin, int64_t end) {                  \
    detail::split_pass1<In>(*static_cast<detail::SplitRow*>(row), begin, end);                  \
  }                                                                                             \
  attribute void split_pass2_##suffix(void* row, int64_t begin, int64_t end) {                  \
    detail::split_pass2(*static_cast<detail::SplitRow*>(row), begin, end);                      \
  }                                                                                             \
  attribute void split_finish_##suffix(const SamplingParams& p, int64_t b, const RowParams& rp, \
                                       float* work, double total, Workspace& ws) {              \
    detail::sample_from_weights(p, b, rp, work, total, ws);                                     \
  }                                                                                             \
  template <typename In>                                                                        \
  SplitFns split_fns_##suffix() {                                                               \
    return {split_pass1_##suffix<In>, split_pass2_##suffix, split_finish_##suffix};             \
  }
TSDI_SPLIT_TASKS(baseline, )
#if defined(TSDI_X86_ISA_DISPATCH)
TSDI_SPLIT_TASKS(v3, TSDI_TARGET_V3)
TSDI_SPLIT_TASKS(v4, TSDI_TARGET_V4)
#endif
#undef TSDI_SPLIT_TASKS

template <typename In>
SplitFns split_fns() {
#if defined(TSDI_X86_ISA_DISPATCH)
  switch (selected_isa()) {
    case Isa::kX86_64_V4: return split_fns_v4<In>();
    case Isa::kX86_64_V3: return split_fns_v3<In>();
    default: break;
  }
#endif
  return split_fns_baseline<In>();
}

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

void sample_row_split(LogitsDType dtype, const SamplingParams& p, int64_t b, Workspace& ws,
                      ChunkRunner run) {
  const RowParams rp = resolve_row(p, b);
  if (rp.status != kRowOk || rp.temperature == 0.0f) {  // one read or none: not worth a split
    return sample_rows(dtype, p, b, b + 1, ws);
  }
  ensure_capacity(ws, p.vocab);
  const SplitFns fns = dtype == LogitsDType::kFloat32   ? split_fns<float>()
                       : dtype == LogitsDType::kFloat16 ? split_fns<Float16Bits>()
                                                        : split_fns<BFloat16Bits>();
  const int64_t chunks = detail::sum_chunks(p.vocab);
  detail::SplitRow row{&p,
                       b,
                       rp,
                       ws.values.data(),
                       ws.chunk_max.data(),
                       ws.chunk_status.data(),
                       ws.chunk_total.data(),
                       0.0f,
                       0.0f};
  run(chunks, fns.pass1, &row);
  float row_max = -detail::kInf;
  bool non_finite = false;
  for (int64_t c = 0; c < chunks; ++c) {
    non_finite |= row.chunk_status[c] == kRowNonFinite;
    row_max = row.chunk_max[c] > row_max ? row.chunk_max[c] : row_max;
  }
  if (non_finite || row_max == -detail::kInf) return detail::write_invalid_sample(p, b);
  p.valid[b] = true;
  row.row_max = row_max;
  row.scale = detail::clamp_inverse_temperature(1.0f / rp.temperature);
  run(chunks, fns.pass2, &row);
  double total = 0.0;  // the chunk sums in chunk order, as detail::exp_in_place adds them
  for (int64_t c = 0; c < chunks; ++c) total += row.chunk_total[c];
  fns.finish(p, b, rp, ws.values.data(), total, ws);
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
