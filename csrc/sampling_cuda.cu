// CUDA implementation of tsdi_ext::sample and tsdi_ext::sampling_probs: tensor checks, then one of
// the two kernel paths on the current stream: the cluster kernel (tsdi/cuda/sampling_kernel.cuh,
// sm_90 and newer) or the split chain (tsdi/cuda/sampling_split_kernel.cuh, any GPU from sm_80).
// No host synchronisation and no allocation besides the outputs and the split chain's small
// workspace (from the caching allocator, which is graph-safe), so the op can be captured in a CUDA
// graph.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <tuple>

#include "sampling_args.h"
#include "tsdi/cuda/sampling_kernel.cuh"
#include "tsdi/cuda/sampling_split_kernel.cuh"

namespace tsdi_ext {
namespace {

// Which path runs: TSDI_EXT_CUDA_PATH=cluster|split forces one (read once, at the first CUDA
// call; docs/cuda_kernel.md); unset or auto: the cluster kernel on sm_90 and newer while V fits
// its shared memory, the split chain otherwise.
enum class CudaPath { kAuto, kCluster, kSplit };
CudaPath requested_path() {
  static const CudaPath path = [] {
    const char* value = std::getenv("TSDI_EXT_CUDA_PATH");
    if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0)
      return CudaPath::kAuto;
    if (std::strcmp(value, "cluster") == 0) return CudaPath::kCluster;
    if (std::strcmp(value, "split") == 0) return CudaPath::kSplit;
    TORCH_CHECK_VALUE(false, "tsdi_ext: TSDI_EXT_CUDA_PATH must be auto, cluster or split, got '",
                      value, "'");
  }();
  return path;
}

// The launch this call makes.
struct Launch {
  bool cluster = false;
  int64_t smem_budget = 0;  // cluster kernel: the device's shared-memory budget for slices
  int multiprocessors = 0;  // split chain: the device's SM count
};

Launch choose_launch(const at::Tensor& logits) {
  // c10 headers and plain runtime queries, not ATen/cuda/CUDAContext.h (which pulls in the cuBLAS
  // and cuSPARSE headers this file does not need).
  const int device = logits.device().index();
  TORCH_CHECK_VALUE(logits.size(0) <= 65535,
                    "tsdi_ext: the CUDA kernel handles B <= 65535 rows per call");
  const CudaPath path = requested_path();
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  Launch launch;
  if (path != CudaPath::kSplit && major >= 9) {
    C10_CUDA_CHECK(tsdi::cuda::slice_smem_budget(device, launch.smem_budget));
    const int64_t max_vocab = tsdi::cuda::max_vocab(launch.smem_budget);
    launch.cluster = logits.size(1) <= max_vocab;
    TORCH_CHECK_VALUE(launch.cluster || path == CudaPath::kAuto,
                      "tsdi_ext: the CUDA cluster kernel handles V <= ", max_vocab,
                      " on this GPU, got ", logits.size(1),
                      " (TSDI_EXT_CUDA_PATH=cluster; auto takes the split chain there)");
  } else if (path == CudaPath::kCluster) {
    cudaDeviceProp props;
    C10_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    TORCH_CHECK(false,
                "tsdi_ext: TSDI_EXT_CUDA_PATH=cluster needs a Hopper GPU (sm_90) or newer (the "
                "cluster kernel uses thread-block clusters); this is ",
                props.name, " (sm_", props.major, props.minor, "). Unset it for the split chain.");
  }
  if (!launch.cluster) {
    C10_CUDA_CHECK(
        cudaDeviceGetAttribute(&launch.multiprocessors, cudaDevAttrMultiProcessorCount, device));
  }
  return launch;
}

template <bool kProbs, typename T>
cudaError_t launch_typed(const at::Tensor& logits, const tsdi::SamplingParams& p,
                         const Launch& launch, cudaStream_t stream) {
  if (launch.cluster) return tsdi::cuda::launch_sampling<T, kProbs>(p, launch.smem_budget, stream);
  tsdi::cuda::SplitPlan plan;
  const cudaError_t err = tsdi::cuda::plan_split(p, kProbs, launch.multiprocessors, plan);
  if (err != cudaSuccess) return err;
  // The caching allocator hands out memory ordered on the current stream (and a graph's private
  // pool under capture): no synchronisation, and 512-byte aligned.
  const at::Tensor workspace =
      at::empty({static_cast<int64_t>(plan.workspace_bytes)}, logits.options().dtype(at::kByte));
  return tsdi::cuda::launch_sampling_split<T, kProbs>(p, plan, workspace.data_ptr(),
                                                      plan.workspace_bytes, stream);
}

template <bool kProbs>
void launch(const at::Tensor& logits, const tsdi::SamplingParams& p) {
  const Launch chosen = choose_launch(logits);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  cudaError_t err = cudaSuccess;
  switch (logits.scalar_type()) {
    case at::kFloat: err = launch_typed<kProbs, float>(logits, p, chosen, stream); break;
    case at::kHalf: err = launch_typed<kProbs, __half>(logits, p, chosen, stream); break;
    case at::kBFloat16: err = launch_typed<kProbs, __nv_bfloat16>(logits, p, chosen, stream); break;
    default: TORCH_CHECK(false, "tsdi_ext: unsupported logits dtype ", logits.scalar_type());
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so the next torch kernel does not report it
  }
  TORCH_CHECK(err == cudaSuccess, "tsdi_ext: CUDA sampling kernel launch failed (",
              chosen.cluster ? "cluster kernel" : "split chain", "): ", cudaGetErrorString(err),
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
    launch<false>(call.logits, call.params);
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
    launch<false>(call.logits, call.params);
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
    launch<true>(call.logits, call.params);
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
