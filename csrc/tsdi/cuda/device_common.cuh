// Device functions shared by the two CUDA sampling kernels (sampling_kernel.cuh: one cluster per
// row, sm_90+; sampling_split_kernel.cuh: a row split over ordinary blocks and a chain of launches,
// sm_80+): the block shape, the shared-memory scratch, vector loads, block reductions and scans,
// and the pieces of the threshold bisection (bucket widths, per-warp bucket runs, the bucket
// choice). One definition, so that both kernels make the same float operations in the same order.
// Torch-free; compiles with nvcc and, under TSDI_CUDA_EMULATION, with the host compiler against
// csrc/tests/simt.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common.h"
#include "vector_split.h"

namespace tsdi {
namespace cuda {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBuckets = 32;
static_assert(kBuckets == 32, "each lane of a warp clears one bucket of its warp's row");

// Shared-memory scratch of a block (the cluster kernel's CTA-level partial results too). In the
// cluster kernel, every field that other CTAs read is written before a cluster.sync() and not
// rewritten before the next one.
// Shared-memory scratch besides the slice. Every field that other CTAs read is written before a
// cluster.sync() and not rewritten before the next one.
struct alignas(16) Scratch {
  float warp_float[kWarps];
  int32_t warp_int[kWarps];
  int64_t warp_index[kWarps];
  double warp_double[kWarps];
  double warp_bucket_mass[kWarps][kBuckets];  // each warp's own bucket masses (atomics in-warp)
  double bucket_mass[2][kBuckets];            // this CTA's bucket masses, double-buffered by round
  int32_t chosen;  // bisection decision of this round (written by thread 0)
  double chosen_above;
  float part_max;  // this CTA's partial results, read by the cluster
  int32_t part_bad;
  int64_t part_index;
  int64_t part_last_kept;
  float part_last_kept_w;  // its weight (for the log-probabilities)
  double part_sum;
  double part_sum_k;  // mass of the top-k set
  double part_kept;
  int64_t part_token;
  float part_token_w;  // its weight
};

// 16 bytes of logits as float32 (4 floats, or 8 halves / bfloat16s converted exactly). kStream:
// with the streaming (evict-first) hint, for a kernel that reads each logit once; without it for
// one that reads the row again in later launches and wants it kept in L2.
template <bool kStream>
__device__ __forceinline__ float4 load_16(const float4* p) {
  return kStream ? __ldcs(p) : __ldg(p);
}
template <bool kStream>
__device__ __forceinline__ uint4 load_16(const uint4* p) {
  return kStream ? __ldcs(p) : __ldg(p);
}
template <bool kStream = true>
__device__ __forceinline__ void load_vector(const float* p, float (&f)[4]) {
  const float4 v = load_16<kStream>(reinterpret_cast<const float4*>(p));
  f[0] = v.x;
  f[1] = v.y;
  f[2] = v.z;
  f[3] = v.w;
}
template <bool kStream, typename T2, typename Convert>
__device__ __forceinline__ void load_vector_pairs(const void* p, float (&f)[8], Convert convert) {
  const uint4 v = load_16<kStream>(reinterpret_cast<const uint4*>(p));
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    T2 pair;
    memcpy(&pair, &words[k], sizeof(pair));  // element 2k is the low half (little-endian)
    const float2 two = convert(pair);
    f[2 * k] = two.x;
    f[2 * k + 1] = two.y;
  }
}
template <bool kStream = true>
__device__ __forceinline__ void load_vector(const __half* p, float (&f)[8]) {
  load_vector_pairs<kStream, __half2>(p, f, [](__half2 h) { return __half22float2(h); });
}
template <bool kStream = true>
__device__ __forceinline__ void load_vector(const __nv_bfloat16* p, float (&f)[8]) {
  load_vector_pairs<kStream, __nv_bfloat162>(
      p, f, [](__nv_bfloat162 h) { return __bfloat1622float2(h); });
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float clamp_inverse_temperature(float inv) {
  return fminf(fmaxf(inv, 1.17549435e-38f), 3.40282347e+38f);
}

// ---- block reductions (all threads get the result) ----
__device__ __forceinline__ float block_max(float v, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s.warp_float[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = s.warp_float[0];
  for (int w = 1; w < kWarps; ++w) r = fmaxf(r, s.warp_float[w]);
  return r;
}
__device__ __forceinline__ int32_t block_or(int32_t v, Scratch& s) {
  v = __any_sync(0xffffffffu, v != 0) ? 1 : 0;
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s.warp_int[threadIdx.x >> 5] = v;
  __syncthreads();
  int32_t r = 0;
  for (int w = 0; w < kWarps; ++w) r |= s.warp_int[w];
  return r;
}
__device__ __forceinline__ int64_t block_min_index(int64_t v, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) {
    const int64_t other = __shfl_xor_sync(0xffffffffu, v, o);
    v = other < v ? other : v;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s.warp_index[threadIdx.x >> 5] = v;
  __syncthreads();
  int64_t r = s.warp_index[0];
  for (int w = 1; w < kWarps; ++w) r = s.warp_index[w] < r ? s.warp_index[w] : r;
  return r;
}
__device__ __forceinline__ int64_t block_max_index(int64_t v, Scratch& s) {
  return -block_min_index(-v, s);
}
// Sum in a fixed order (warp tree, then warps 0..kWarps-1): deterministic for given inputs.
__device__ __forceinline__ double block_sum(double v, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s.warp_double[threadIdx.x >> 5] = v;
  __syncthreads();
  double r = 0.0;
  for (int w = 0; w < kWarps; ++w) r += s.warp_double[w];
  return r;
}
// Exclusive prefix of per-thread values (thread order), and the block total.
__device__ __forceinline__ double block_exclusive_scan(double v, double& total, Scratch& s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double inclusive = v;
  for (int o = 1; o < 32; o <<= 1) {
    const double up = __shfl_up_sync(0xffffffffu, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  // The exclusive prefix is the previous lane's inclusive one, exactly (inclusive - v could
  // cancel when v dominates).
  double exclusive = __shfl_up_sync(0xffffffffu, inclusive, 1);
  if (lane == 0) exclusive = 0.0;
  __syncthreads();
  if (lane == 31) s.warp_double[warp] = inclusive;
  __syncthreads();
  double before = 0.0;
  total = 0.0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += s.warp_double[w];
    total += s.warp_double[w];
  }
  return before + exclusive;
}

// ---- the threshold bisection (docs/contract.md §6) ----
// The bisection runs over float bit patterns [lo, hi) with kBuckets power-of-two-wide buckets per
// round; it ends at one bit pattern, after at most kMaxBisectRounds rounds from the widest bracket
// [0, bits(1) + 1).
constexpr int kMaxBisectRounds = 6;
__device__ __forceinline__ uint32_t bisect_end_bits() { return __float_as_uint(1.0f) + 1u; }
// log2 of the bucket width for a bracket of `span` (2 .. 2^30) bit patterns: ceil(log2(span)) - 5.
__device__ __forceinline__ int bucket_shift(uint32_t span) {
  return max(0, 27 - __clz(static_cast<int>(span - 1)));
}

// A thread's run of consecutive weights in one bucket, added to its warp's row of bucket masses by
// one shared-memory atomic when the bucket changes (shared float64 atomics are compare-and-swap
// loops on sm_90, so fewer of them contend less).
struct BucketRun {
  int bucket = -1;
  double mass = 0.0;
  // `v`'s bucket, if it lies in [lo, lo + span), gets 1 (count) or v (mass).
  __device__ __forceinline__ void add(double* warp_buckets, float v, uint32_t lo, uint32_t span,
                                      int shift, bool count) {
    const uint32_t off = __float_as_uint(v) - lo;
    if (off < span) {
      const int b = static_cast<int>(off >> shift);
      if (b != bucket) {
        if (bucket >= 0) atomicAdd(&warp_buckets[bucket], mass);
        bucket = b;
        mass = 0.0;
      }
      mass += count ? 1.0 : static_cast<double>(v);
    }
  }
  __device__ __forceinline__ void flush(double* warp_buckets) {
    if (bucket >= 0) atomicAdd(&warp_buckets[bucket], mass);
  }
};

// Thread `threadIdx.x < kBuckets`: the block's mass of that bucket, its warps summed in a fixed
// order (call after a __syncthreads that follows every warp's last atomic).
__device__ __forceinline__ double block_bucket_mass(const Scratch& s) {
  double m = 0.0;
  for (int warp = 0; warp < kWarps; ++warp) m += s.warp_bucket_mass[warp][threadIdx.x];
  return m;
}

// One warp, every lane with the same `above` and `target`; lane k holds bucket k's mass (of the
// whole row). Scans the buckets from the top in the same order in every lane: returns the bucket
// where the running total from `above` first reaches `target` (-1: rounding left the total short),
// and in `running` the total above it.
__device__ __forceinline__ int choose_bucket(double mass, double above, double target,
                                             double& running) {
  running = above;
  int chosen = -1;
  for (int k = kBuckets - 1; k >= 0; --k) {
    const double mk = __shfl_sync(0xffffffffu, mass, k);
    if (chosen < 0) {
      if (running + mk >= target)
        chosen = k;
      else
        running += mk;
    }
  }
  return chosen;
}

// The bracket [lo, hi) narrowed to bucket `chosen` of width 2^shift (clipped at hi).
__device__ __forceinline__ void narrow_bracket(uint32_t& lo, uint32_t& hi, int chosen, int shift) {
  const uint64_t new_lo = static_cast<uint64_t>(lo) + (static_cast<uint64_t>(chosen) << shift);
  const uint64_t new_hi = static_cast<uint64_t>(lo) + (static_cast<uint64_t>(chosen + 1) << shift);
  lo = static_cast<uint32_t>(new_lo);
  hi = new_hi < hi ? static_cast<uint32_t>(new_hi) : hi;
}

}  // namespace cuda
}  // namespace tsdi
