// simt's stand-in for <cuda_runtime.h>: the CUDA language keywords, vector types, intrinsics and
// the runtime calls the tsdi kernels use, implemented on the CPU by simt (see ../simt.h). Put this
// directory first on the include path of a host compiler (g++, clang++) and define
// TSDI_CUDA_EMULATION; never on nvcc's.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../simt.h"

#if defined(__CUDACC__)
#error "simt's CUDA headers are for a host compiler, not nvcc"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict

// ---- built-in variables ----
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
#define threadIdx (::simt::current_thread().thread_idx)
#define blockIdx (::simt::current_thread().block_idx)

// ---- vector types ----
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

// ---- runtime types ----
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidClusterSize = 912,
};
typedef struct simt_stream* cudaStream_t;
enum cudaDeviceAttr {
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributeNonPortableClusterSizeAllowed = 14,
};
enum cudaLaunchAttributeID { cudaLaunchAttributeClusterDimension = 4 };
struct cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim;
  dim3 blockDim;
  size_t dynamicSmemBytes = 0;
  cudaStream_t stream = nullptr;
  cudaLaunchAttribute* attrs = nullptr;
  unsigned numAttrs = 0;
};

inline const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidClusterSize: return "cluster size is invalid";
  }
  return "unknown error";
}

namespace simt {
// Per-function attributes set with cudaFuncSetAttribute (CUDA's defaults otherwise).
struct FunctionAttributes {
  int max_dynamic_shared_bytes = 48 * 1024;
  bool non_portable_cluster_allowed = false;
};
inline std::map<const void*, FunctionAttributes>& function_attributes() {
  static std::map<const void*, FunctionAttributes> attributes;
  return attributes;
}
// cudaFuncSetAttribute calls so far (tests count them).
inline long long& function_attribute_sets() {
  static long long sets = 0;
  return sets;
}
// The error cudaGetLastError returns and clears: that of the last failed launch.
inline cudaError_t& last_error() {
  static cudaError_t error = cudaSuccess;
  return error;
}
inline LaunchShape launch_shape(const cudaLaunchConfig_t& config, const void* function) {
  LaunchShape shape;
  shape.grid = {config.gridDim.x, config.gridDim.y, config.gridDim.z};
  shape.block = {config.blockDim.x, config.blockDim.y, config.blockDim.z};
  for (unsigned i = 0; i < config.numAttrs; ++i) {
    if (config.attrs[i].id == cudaLaunchAttributeClusterDimension) {
      const auto& c = config.attrs[i].val.clusterDim;
      shape.cluster = {c.x, c.y, c.z};
    }
  }
  shape.dynamic_shared_bytes = config.dynamicSmemBytes;
  const FunctionAttributes attributes = function_attributes()[function];
  shape.max_dynamic_shared_bytes = static_cast<size_t>(attributes.max_dynamic_shared_bytes);
  shape.non_portable_cluster_allowed = attributes.non_portable_cluster_allowed;
  return shape;
}
}  // namespace simt

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  switch (attribute) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = simt::device().optin_shared_bytes;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = simt::device().compute_capability_major;
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
template <typename Function>
cudaError_t cudaFuncSetAttribute(Function* function, cudaFuncAttribute attribute, int value) {
  ++simt::function_attribute_sets();
  simt::FunctionAttributes& a =
      simt::function_attributes()[reinterpret_cast<const void*>(function)];
  switch (attribute) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      if (value < 0 || value > simt::device().optin_shared_bytes) return cudaErrorInvalidValue;
      a.max_dynamic_shared_bytes = value;
      return cudaSuccess;
    case cudaFuncAttributeNonPortableClusterSizeAllowed:
      a.non_portable_cluster_allowed = value != 0;
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
// How many clusters of this shape fit on the device at once (0: none, the launch would fail).
template <typename Function>
cudaError_t cudaOccupancyMaxActiveClusters(int* clusters, Function* function,
                                           const cudaLaunchConfig_t* config) {
  const simt::LaunchShape shape =
      simt::launch_shape(*config, reinterpret_cast<const void*>(function));
  const unsigned ranks = shape.cluster.x * shape.cluster.y * shape.cluster.z;
  const bool fits =
      ranks <= static_cast<unsigned>(simt::device().max_cluster) &&
      shape.dynamic_shared_bytes <= static_cast<size_t>(simt::device().optin_shared_bytes);
  *clusters = fits ? simt::device().multiprocessors / static_cast<int>(ranks) : 0;
  return cudaSuccess;
}
// Runs the whole grid before returning (the emulated stream is synchronous). Arguments are copied
// into the kernel's parameter types, as a real launch does.
template <typename... Params, typename... Args>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Params...),
                               Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel argument count");
  std::tuple<std::decay_t<Params>...> parameters(std::forward<Args>(args)...);
  const std::function<void()> body = [&]() { std::apply(kernel, parameters); };
  const auto err = static_cast<cudaError_t>(
      simt::launch(simt::launch_shape(*config, reinterpret_cast<const void*>(kernel)), body));
  if (err != cudaSuccess) simt::last_error() = err;
  return err;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t err = simt::last_error();
  simt::last_error() = cudaSuccess;
  return err;
}

// ---- synchronisation and warp intrinsics ----
// The trailing defaulted arguments record the call site (see simt::Site).
#define SIMT_SITE_PARAMETERS const char *file = __builtin_FILE(), int line = __builtin_LINE()
inline void __syncthreads(SIMT_SITE_PARAMETERS) {
  simt::syncthreads({"__syncthreads", file, line});
}
inline void __syncwarp(unsigned mask = 0xffffffffu, SIMT_SITE_PARAMETERS) {
  simt::syncwarp(mask, {"__syncwarp", file, line});
}
[[noreturn]] inline void __trap() { simt::fail("simt: __trap() in device code"); }

namespace simt {
template <typename T>
T warp_gather(unsigned mask, T value, int source_lane, const Site& site) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "8-byte shuffles at most");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = warp_exchange(mask, bits, source_lane, nullptr, site);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
inline int lane_id() { return static_cast<int>(current_thread().thread_idx.x % 32); }
}  // namespace simt

// Out-of-range sources as CUDA has them for width 32: an xor or up-shift past the warp returns the
// lane's own value; __shfl_sync takes the source lane modulo 32.
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32, SIMT_SITE_PARAMETERS) {
  if (width != 32) simt::fail("simt: only width-32 shuffles are modelled");
  const int source = simt::lane_id() ^ lane_mask;
  return simt::warp_gather(mask, value, source >= 0 && source < 32 ? source : -1,
                           {"__shfl_xor_sync", file, line});
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32, SIMT_SITE_PARAMETERS) {
  if (width != 32) simt::fail("simt: only width-32 shuffles are modelled");
  const int source = simt::lane_id() - static_cast<int>(delta);
  return simt::warp_gather(mask, value, source >= 0 ? source : -1, {"__shfl_up_sync", file, line});
}
template <typename T>
T __shfl_sync(unsigned mask, T value, int source_lane, int width = 32, SIMT_SITE_PARAMETERS) {
  if (width != 32) simt::fail("simt: only width-32 shuffles are modelled");
  return simt::warp_gather(mask, value, source_lane & 31, {"__shfl_sync", file, line});
}
inline int __any_sync(unsigned mask, int predicate, SIMT_SITE_PARAMETERS) {
  uint64_t all[32];
  simt::warp_exchange(mask, predicate != 0 ? 1u : 0u, -1, all, {"__any_sync", file, line});
  for (uint64_t v : all) {
    if (v != 0) return 1;
  }
  return 0;
}

// Shared-memory atomics: each thread runs alone between synchronisation points, so a plain
// read-modify-write is atomic here.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

// ---- loads ----
template <typename V>
V simt_load_16(const V* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) simt::fail("simt: misaligned 16-byte global load");
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
inline float4 __ldcs(const float4* p) { return simt_load_16(p); }
inline uint4 __ldcs(const uint4* p) { return simt_load_16(p); }
inline float4 __ldg(const float4* p) { return simt_load_16(p); }
inline uint4 __ldg(const uint4* p) { return simt_load_16(p); }

// ---- float arithmetic with explicit rounding (the host compiles with -ffp-contract=off) ----
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
