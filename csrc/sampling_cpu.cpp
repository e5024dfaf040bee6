// CPU implementation of tsdi_ext::sample and tsdi_ext::sampling_probs: tensor checks, then the
// fused kernel of tsdi/cpu/sampling_kernel.h over rows in parallel (at::parallel_for).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "sampling_args.h"
#include "tsdi/cpu/sampling_kernel.h"

namespace tsdi_ext {
namespace {

tsdi::cpu::LogitsDType kernel_dtype(const at::Tensor& logits) {
  switch (logits.scalar_type()) {
    case at::kHalf: return tsdi::cpu::LogitsDType::kFloat16;
    case at::kBFloat16: return tsdi::cpu::LogitsDType::kBFloat16;
    default: return tsdi::cpu::LogitsDType::kFloat32;
  }
}

tsdi::cpu::Workspace& thread_workspace() {
  // One per thread, kept for the life of the thread: the hot path allocates only when a larger
  // vocabulary than ever before arrives.
  thread_local tsdi::cpu::Workspace workspace;
  return workspace;
}

// Rows per task: a row of V elements costs about V * 2 ns, so small rows are grouped to keep the
// task overhead of at::parallel_for (about a microsecond) negligible.
int64_t grain_rows(int64_t vocab) { return vocab >= 16384 ? 1 : (16384 + vocab - 1) / vocab; }

template <typename RowsFn>
void for_each_row_range(const tsdi::SamplingParams& p, RowsFn rows_fn) {
  const int64_t grain = grain_rows(p.vocab);
  if (p.batch <= grain) {  // one task: on this thread, without entering a parallel region
    if (p.batch > 0) rows_fn(p, 0, p.batch, thread_workspace());
    return;
  }
  at::parallel_for(0, p.batch, grain,
                   [&](int64_t begin, int64_t end) { rows_fn(p, begin, end, thread_workspace()); });
}

std::tuple<at::Tensor, at::Tensor> sample_cpu(const at::Tensor& logits,
                                              const std::optional<at::Tensor>& bias,
                                              const std::optional<at::Tensor>& positions,
                                              const OptionalTensorList& row_tensors,
                                              c10::ArrayRef<double> row_floats,
                                              c10::ArrayRef<int64_t> row_ints) {
  SampleCall call = prepare_sample(logits, bias, positions, {row_tensors, row_floats, row_ints});
  const auto dtype = kernel_dtype(call.logits);
  for_each_row_range(call.params, [dtype](const tsdi::SamplingParams& params, int64_t begin,
                                          int64_t end, tsdi::cpu::Workspace& ws) {
    tsdi::cpu::sample_rows(dtype, params, begin, end, ws);
  });
  return {call.tokens, call.valid};
}

// sample() with the drawn tokens' log-probabilities ([B, 2]: final, unfiltered).
std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_logprobs_cpu(
    const at::Tensor& logits, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& positions, const OptionalTensorList& row_tensors,
    c10::ArrayRef<double> row_floats, c10::ArrayRef<int64_t> row_ints) {
  SampleCall call =
      prepare_sample(logits, bias, positions, {row_tensors, row_floats, row_ints}, true);
  const auto dtype = kernel_dtype(call.logits);
  for_each_row_range(call.params, [dtype](const tsdi::SamplingParams& params, int64_t begin,
                                          int64_t end, tsdi::cpu::Workspace& ws) {
    tsdi::cpu::sample_rows(dtype, params, begin, end, ws);
  });
  return {call.tokens, call.valid, call.logprobs};
}

at::Tensor sampling_probs_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                              const std::optional<at::Tensor>& positions,
                              const OptionalTensorList& row_tensors,
                              c10::ArrayRef<double> row_floats, c10::ArrayRef<int64_t> row_ints) {
  ProbsCall call = prepare_probs(logits, bias, positions, {row_tensors, row_floats, row_ints});
  const auto dtype = kernel_dtype(call.logits);
  for_each_row_range(call.params, [dtype](const tsdi::SamplingParams& params, int64_t begin,
                                          int64_t end, tsdi::cpu::Workspace& ws) {
    tsdi::cpu::probs_rows(dtype, params, begin, end, ws);
  });
  return call.probs;
}

}  // namespace

TORCH_LIBRARY_IMPL(tsdi_ext, CPU, m) {
  m.impl("sample", &sample_cpu);
  m.impl("sample_logprobs", &sample_logprobs_cpu);
  m.impl("sampling_probs", &sampling_probs_cpu);
}

}  // namespace tsdi_ext
