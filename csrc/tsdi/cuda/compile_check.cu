// Compile check of every kernel template instantiation, torch-free (CI builds this with the
// machine's nvcc for every architecture the CUDA wheel carries; the full extension is built on a
// GPU machine): the cluster kernel (a stub below sm_90) and the split chain.
#include "sampling_kernel.cuh"
#include "sampling_split_kernel.cuh"

namespace tsdi {
namespace cuda {
template cudaError_t launch_sampling<float, false>(const SamplingParams&, cudaStream_t);
template cudaError_t launch_sampling<float, true>(const SamplingParams&, cudaStream_t);
template cudaError_t launch_sampling<__half, false>(const SamplingParams&, cudaStream_t);
template cudaError_t launch_sampling<__half, true>(const SamplingParams&, cudaStream_t);
template cudaError_t launch_sampling<__nv_bfloat16, false>(const SamplingParams&, cudaStream_t);
template cudaError_t launch_sampling<__nv_bfloat16, true>(const SamplingParams&, cudaStream_t);
template cudaError_t launch_sampling<float, false>(const SamplingParams&, int64_t, cudaStream_t);
template cudaError_t launch_sampling<float, true>(const SamplingParams&, int64_t, cudaStream_t);
template cudaError_t launch_sampling<__half, false>(const SamplingParams&, int64_t, cudaStream_t);
template cudaError_t launch_sampling<__half, true>(const SamplingParams&, int64_t, cudaStream_t);
template cudaError_t launch_sampling<__nv_bfloat16, false>(const SamplingParams&, int64_t,
                                                           cudaStream_t);
template cudaError_t launch_sampling<__nv_bfloat16, true>(const SamplingParams&, int64_t,
                                                          cudaStream_t);
#define TSDI_SPLIT_INSTANCE(T, kProbs)                                                           \
  template cudaError_t launch_sampling_split<T, kProbs>(const SamplingParams&, const SplitPlan&, \
                                                        void*, size_t, cudaStream_t);
TSDI_SPLIT_INSTANCE(float, false)
TSDI_SPLIT_INSTANCE(float, true)
TSDI_SPLIT_INSTANCE(__half, false)
TSDI_SPLIT_INSTANCE(__half, true)
TSDI_SPLIT_INSTANCE(__nv_bfloat16, false)
TSDI_SPLIT_INSTANCE(__nv_bfloat16, true)
#undef TSDI_SPLIT_INSTANCE
}  // namespace cuda
}  // namespace tsdi
