// Compile check of every kernel template instantiation, torch-free (CI builds this with the
// machine's nvcc for sm_90; the full extension is built on a GPU machine).
#include "sampling_kernel.cuh"

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
}  // namespace cuda
}  // namespace tsdi
