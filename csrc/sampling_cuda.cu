// CUDA implementation of tsdi_ext::sample and tsdi_ext::sampling_probs: tensor checks, then the
// fused kernel of tsdi/cuda/sampling_kernel.cuh on the current stream. No host synchronisation and
// no allocation besides the outputs, so the op can be captured in a CUDA graph.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "sampling_args.h"
#include "tsdi/cuda/sampling_kernel.cuh"

namespace tsdi_ext {
namespace {

// Returns the device's shared-memory budget for logits slices (the launch plans with it).
int64_t check_device_and_shape(const at::Tensor& logits) {
  // c10 headers and a plain runtime query, not ATen/cuda/CUDAContext.h (which pulls in the cuBLAS
  // and cuSPARSE headers this file does not need).
  const int device = logits.device().index();
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 9) {
    cudaDeviceProp props;
    C10_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    TORCH_CHECK(false,
                "tsdi_ext: the CUDA sampling kernel needs a Hopper GPU (sm_90) or newer (it "
                "uses thread-block clusters); this is ",
                props.name, " (sm_", props.major, props.minor,
                "). Use backend='torch' on this device.");
  }
  int64_t smem_budget = 0;
  C10_CUDA_CHECK(tsdi::cuda::slice_smem_budget(device, smem_budget));
  const int64_t max_vocab = tsdi::cuda::max_vocab(smem_budget);
  TORCH_CHECK_VALUE(logits.size(1) <= max_vocab,
                    "tsdi_ext: the CUDA kernel handles V <= ", max_vocab, " on this GPU, got ",
                    logits.size(1));
  TORCH_CHECK_VALUE(logits.size(0) <= 65535,
                    "tsdi_ext: the CUDA kernel handles B <= 65535 rows per call");
  return smem_budget;
}

template <bool kProbs>
void launch(const at::Tensor& logits, const tsdi::SamplingParams& p, int64_t smem_budget) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  cudaError_t err = cudaSuccess;
  switch (logits.scalar_type()) {
    case at::kFloat:
      err = tsdi::cuda::launch_sampling<float, kProbs>(p, smem_budget, stream);
      break;
    case at::kHalf:
      err = tsdi::cuda::launch_sampling<__half, kProbs>(p, smem_budget, stream);
      break;
    case at::kBFloat16:
      err = tsdi::cuda::launch_sampling<__nv_bfloat16, kProbs>(p, smem_budget, stream);
      break;
    default: TORCH_CHECK(false, "tsdi_ext: unsupported logits dtype ", logits.scalar_type());
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so the next torch kernel does not report it
  }
  TORCH_CHECK(err == cudaSuccess,
              "tsdi_ext: CUDA sampling kernel launch failed: ", cudaGetErrorString(err),
              " (B=", p.batch, ", V=", p.vocab, ")");
}

std::tuple<at::Tensor, at::Tensor> sample_cuda(const at::Tensor& logits,
                                               const std::optional<at::Tensor>& bias,
                                               const std::optional<at::Tensor>& positions,
                                               const OptionalTensorList& row_tensors,
                                               c10::ArrayRef<double> row_floats,
                                               c10::ArrayRef<int64_t> row_ints) {
  const c10::cuda::CUDAGuard guard(logits.device());
  SampleCall call = prepare_sample(logits, bias, positions, {row_tensors, row_floats, row_ints});
  if (call.params.batch > 0) {
    const int64_t smem_budget = check_device_and_shape(call.logits);
    launch<false>(call.logits, call.params, smem_budget);
  }
  return {call.tokens, call.valid};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_logprobs_cuda(
    const at::Tensor& logits, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& positions, const OptionalTensorList& row_tensors,
    c10::ArrayRef<double> row_floats, c10::ArrayRef<int64_t> row_ints) {
  const c10::cuda::CUDAGuard guard(logits.device());
  SampleCall call =
      prepare_sample(logits, bias, positions, {row_tensors, row_floats, row_ints}, true);
  if (call.params.batch > 0) {
    const int64_t smem_budget = check_device_and_shape(call.logits);
    launch<false>(call.logits, call.params, smem_budget);
  }
  return {call.tokens, call.valid, call.logprobs};
}

at::Tensor sampling_probs_cuda(const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& positions,
                               const OptionalTensorList& row_tensors,
                               c10::ArrayRef<double> row_floats, c10::ArrayRef<int64_t> row_ints) {
  const c10::cuda::CUDAGuard guard(logits.device());
  ProbsCall call = prepare_probs(logits, bias, positions, {row_tensors, row_floats, row_ints});
  if (call.params.batch > 0) {
    const int64_t smem_budget = check_device_and_shape(call.logits);
    launch<true>(call.logits, call.params, smem_budget);
  }
  return call.probs;
}

}  // namespace

TORCH_LIBRARY_IMPL(tsdi_ext, CUDA, m) {
  m.impl("sample", &sample_cuda);
  m.impl("sample_logprobs", &sample_logprobs_cuda);
  m.impl("sampling_probs", &sampling_probs_cuda);
}

}  // namespace tsdi_ext
