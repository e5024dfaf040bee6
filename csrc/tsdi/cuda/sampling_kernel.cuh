// Fused CUDA kernel for debiased top-p sampling: torch-free (raw pointers, a stream, cudaError_t).
//
// One thread-block cluster per row (Hopper, sm_90): the row is split into `cluster` slices, each
// CTA loads its slice ONCE from global memory (16-byte vector loads with the evict-first hint)
// into shared memory (as float32) and every later pass runs on shared memory; cluster-wide
// reductions go through distributed shared memory. So a row costs one read of its logits (and of
// its bias row), whatever the number of passes, and a small batch still spreads over up to 16 SMs
// per row.
//
// What a row computes is docs/contract.md; this kernel does its steps as follows:
//   §2-§3  d = x - alpha * bias (rounded product, no FMA), max d, NaN/+inf/all -inf detection.
//   §4     T == 0: greedy (first index of max d).
//   §5     w = exp((d - max) * (1/T)) by tsdi::exp_nonpositive (common.h: every product and sum
//          rounded by __fmul_rn / __fadd_rn, so the bits are the CPU kernel's and the reference's),
//          S = sum w in float64.
//   §6     top-k's tau_k, then the nucleus within the top-k set: bisections over float bit patterns
//          with 32 power-of-two-wide buckets per round (<= 6 rounds each, one cluster.sync each,
//          bucket masses double-buffered): the float64 count (top-k) or mass (top-p) of each
//          bucket is reduced across the cluster and the bucket where the total from the top
//          crosses k or top_p * S_k becomes the next bracket; ends at a single bit pattern. Then
//          tau = max(tau_k, tau_p, min_p).
//   §7     kept mass per CTA, prefix over the cluster, then a block scan of per-thread chunks in
//          vocabulary order: the first kept index whose running float64 mass exceeds u * S_kept.
// Float64 sums use shared-memory atomics inside a CTA, so their last bits may vary run to run; the
// kept set and token can differ from the CPU only when u or top_p falls within ~1e-15 of a
// boundary (contract §8).
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "../common.h"
#include "device_common.cuh"
#include "vector_split.h"

namespace tsdi {
namespace cuda {

namespace cg = cooperative_groups;

constexpr int kMaxClusterPortable = 8;
constexpr int kMaxCluster = 16;               // non-portable cluster size, allowed on H100/H200
constexpr int kSmemBudgetBytes = 200 * 1024;  // dynamic shared memory for the slice, per CTA

// This CTA's shared memory: the dynamic slice and the static Scratch. (Functions rather than
// declarations in the kernel so that tests/simt can run the kernel on the CPU.)
#if defined(TSDI_CUDA_EMULATION)
inline float* shared_slice() { return static_cast<float*>(simt::dynamic_shared()); }
inline Scratch& shared_scratch() {
  return *static_cast<Scratch*>(simt::static_shared(sizeof(Scratch), alignof(Scratch)));
}
#else
__device__ __forceinline__ float* shared_slice() {
  extern __shared__ __align__(16) float slice_smem[];
  return slice_smem;
}
__device__ __forceinline__ Scratch& shared_scratch() {
  __shared__ Scratch s;
  return s;
}
#endif

// One row per cluster; `blockIdx.y` is the row, the cluster spans blockIdx.x.
// kProbs: write sampling_probs instead of (tokens, valid).
template <typename T, bool kProbs>
__global__ void __launch_bounds__(kThreads) sampling_kernel(SamplingParams p, int64_t slice) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  // Thread-block clusters need sm_90; builds for older architectures keep a stub so that a
  // multi-architecture wheel compiles. The host glue refuses such devices with a clear error.
  __trap();
#else
  float* const slice_smem = shared_slice();
  Scratch& s = shared_scratch();
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int ranks = static_cast<int>(cluster.num_blocks());
  const int64_t row = blockIdx.y;
  const int64_t begin = static_cast<int64_t>(rank) * slice;
  const int64_t end = begin + slice < p.vocab ? begin + slice : p.vocab;
  const int64_t n = end > begin ? end - begin : 0;
  const RowParams rp = resolve_row(p, row);

  // 1. Debiased logits into shared memory; max and bad flags. The slice is read in 16-byte vectors
  // (4 to 8 logits per load, so that enough bytes are in flight to reach the memory bandwidth with
  // one CTA per SM), with scalar loads up to the first 16-byte boundary and after the last one.
  const T* x = static_cast<const T*>(p.logits) + row * p.logits_row_stride + begin;
  const VectorSplit split =
      split_for_vectors(reinterpret_cast<uint64_t>(x), n, static_cast<int64_t>(sizeof(T)));
  float* const w = slice_smem + split.pad;  // w + split.head is 16-byte aligned
  const float* b = rp.bias != nullptr ? rp.bias + begin : nullptr;
  float local_max = -INFINITY;
  int32_t bad = 0;
  auto debias = [&](int64_t i, float value) {
    const float d = b != nullptr ? __fsub_rn(value, __fmul_rn(rp.alpha, b[i])) : value;
    local_max = fmaxf(local_max, d);
    bad |= !(d < INFINITY);
    return d;
  };
  for (int64_t i = threadIdx.x; i < split.head; i += kThreads) w[i] = debias(i, to_float(x[i]));
  constexpr int kPerVector = 16 / static_cast<int>(sizeof(T));
#pragma unroll 4
  for (int64_t v = threadIdx.x; v < split.vectors; v += kThreads) {
    const int64_t i0 = split.head + v * kPerVector;
    float f[kPerVector];
    load_vector(x + i0, f);
#pragma unroll
    for (int k = 0; k < kPerVector; k += 4) {
      float4 d;
      d.x = debias(i0 + k, f[k]);
      d.y = debias(i0 + k + 1, f[k + 1]);
      d.z = debias(i0 + k + 2, f[k + 2]);
      d.w = debias(i0 + k + 3, f[k + 3]);
      *reinterpret_cast<float4*>(w + i0 + k) = d;
    }
  }
  for (int64_t i = split.head + split.vectors * kPerVector + threadIdx.x; i < n; i += kThreads) {
    w[i] = debias(i, to_float(x[i]));
  }
  local_max = block_max(local_max, s);
  bad = block_or(bad, s);
  if (threadIdx.x == 0) {
    s.part_max = local_max;
    s.part_bad = bad;
  }
  cluster.sync();
  float row_max = -INFINITY;
  int32_t row_bad = 0;
  for (int r = 0; r < ranks; ++r) {
    const Scratch* other = cluster.map_shared_rank(&s, r);
    row_max = fmaxf(row_max, other->part_max);
    row_bad |= other->part_bad;
  }
  int32_t status = rp.status;
  if (status == kRowOk && row_bad) status = kRowNonFinite;
  if (status == kRowOk && row_max == -INFINITY) status = kRowAllMasked;

  if (status != kRowOk) {
    if (kProbs) {
      for (int64_t i = threadIdx.x; i < n; i += kThreads) p.probs[row * p.vocab + begin + i] = 0.0f;
    } else if (rank == 0 && threadIdx.x == 0) {
      p.tokens[row] = 0;
      p.valid[row] = false;
      if (p.logprobs != nullptr) p.logprobs[2 * row] = p.logprobs[2 * row + 1] = NAN;
    }
    cluster.sync();  // keep this CTA's shared memory alive while others may still read it
    return;
  }

  // 2. Greedy.
  if (rp.temperature == 0.0f) {
    int64_t first = INT64_MAX;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      if (w[i] == row_max && begin + i < first) first = begin + i;
    }
    first = block_min_index(first, s);
    if (threadIdx.x == 0) s.part_index = first;
    cluster.sync();
    int64_t argmax = INT64_MAX;
    for (int r = 0; r < ranks; ++r) {
      const int64_t c = cluster.map_shared_rank(&s, r)->part_index;
      argmax = c < argmax ? c : argmax;
    }
    if (kProbs) {
      for (int64_t i = threadIdx.x; i < n; i += kThreads) {
        p.probs[row * p.vocab + begin + i] = (begin + i == argmax) ? 1.0f : 0.0f;
      }
    } else if (rank == 0 && threadIdx.x == 0) {
      p.tokens[row] = argmax;
      p.valid[row] = true;
      if (p.logprobs != nullptr) p.logprobs[2 * row] = p.logprobs[2 * row + 1] = 0.0f;
    }
    cluster.sync();
    return;
  }

  // 3. Weights and their sum.
  const float scale = clamp_inverse_temperature(1.0f / rp.temperature);
  double local_sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float e = tsdi::exp_nonpositive(__fmul_rn(__fsub_rn(w[i], row_max), scale));
    w[i] = e;
    local_sum += e;
  }
  local_sum = block_sum(local_sum, s);
  if (threadIdx.x == 0) s.part_sum = local_sum;
  cluster.sync();
  double total = 0.0;
  for (int r = 0; r < ranks; ++r) total += cluster.map_shared_rank(&s, r)->part_sum;

  // 4. The thresholds (docs/contract.md §6): top-k's tau_k by a bisection on counts, the nucleus
  // within the top-k set by the same bisection on masses, then min-p.
  const uint32_t end_bits = bisect_end_bits();
  int round = 0;  // across both bisections, so that the bucket buffers keep alternating
  // Bisection over the float bit patterns [lo, hi) with 32 power-of-two-wide buckets per round
  // (one cluster.sync each, bucket masses double-buffered): the float64 mass (with kCount, the
  // number) of the weights in each bucket is reduced across the cluster and the bucket where the
  // total from the top crosses `target` becomes the next bracket; ends at a single bit pattern.
  auto bisect = [&](uint32_t lo, uint32_t hi, double target, bool count) {
    double above = 0.0;
    for (; hi - lo > 1u; ++round) {
      const uint32_t span = hi - lo;  // 2 .. 2^30
      const int shift = bucket_shift(span);
      // Each warp accumulates into its own row of buckets: shared-memory float64 atomics are
      // compare-and-swap loops on sm_90, and 512 threads retrying on the same few buckets would
      // serialise; within one warp they contend with at most 31 others. (The previous round's
      // merge read these rows before the cluster.sync every thread has passed since.)
      double* wb = s.warp_bucket_mass[threadIdx.x >> 5];
      wb[threadIdx.x & 31] = 0.0;
      __syncwarp();
      BucketRun run;
      for (int i = threadIdx.x; i < static_cast<int>(n); i += kThreads) {
        run.add(wb, w[i], lo, span, shift, count);
      }
      run.flush(wb);
      __syncthreads();
      double* bm = s.bucket_mass[round & 1];
      if (threadIdx.x < kBuckets) bm[threadIdx.x] = block_bucket_mass(s);  // the CTA's masses
      cluster.sync();  // every CTA's bm[round & 1] is complete; the other buffer is free to reuse
      if (threadIdx.x < 32) {
        double m = 0.0;
        for (int r = 0; r < ranks; ++r) m += cluster.map_shared_rank(bm, r)[threadIdx.x];
        double running;
        const int chosen = choose_bucket(m, above, target, running);  // the same in every CTA
        if (threadIdx.x == 0) {
          s.chosen = chosen;
          s.chosen_above = running;
        }
      }
      __syncthreads();
      const int chosen = s.chosen;
      if (chosen < 0) break;  // rounding left the total short: keep everything in the bracket
      above = s.chosen_above;
      narrow_bracket(lo, hi, chosen, shift);
    }
    return lo;
  };
  float tau_k = 0.0f;
  double total_k = total;
  if (rp.top_k > 0 && rp.top_k < p.vocab) {
    tau_k = __uint_as_float(bisect(0u, end_bits, static_cast<double>(rp.top_k), true));
    double local = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) local += w[i] >= tau_k ? w[i] : 0.0f;
    local = block_sum(local, s);
    if (threadIdx.x == 0) s.part_sum_k = local;
    cluster.sync();
    total_k = 0.0;
    for (int r = 0; r < ranks; ++r) total_k += cluster.map_shared_rank(&s, r)->part_sum_k;
  }
  float tau;
  if (rp.top_p >= 1.0f) {
    tau = tau_k;
  } else if (rp.top_p <= 0.0f) {
    tau = 1.0f;
  } else {
    const double target = static_cast<double>(rp.top_p) * total_k;
    // Without top-k the tokens below floor = (1 - top_p) * S / V hold at most (1 - top_p) * S
    // of mass, so tau >= floor; with it, tau >= tau_k.
    const float floor_value = static_cast<float>((1.0 - static_cast<double>(rp.top_p)) * total /
                                                 static_cast<double>(p.vocab) * (1.0 - 1e-6));
    const uint32_t lo = tau_k > 0.0f ? __float_as_uint(tau_k) : __float_as_uint(floor_value);
    tau = fmaxf(__uint_as_float(bisect(lo, end_bits, target, false)), tau_k);
  }
  tau = fmaxf(tau, rp.min_p);

  // 5. Kept mass per CTA, then the draw (or the probabilities).
  double kept = 0.0;
  int64_t last_kept = -1;
  float last_kept_w = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    if (w[i] >= tau) {
      kept += w[i];
      if (w[i] > 0.0f && begin + i > last_kept) {
        last_kept = begin + i;
        last_kept_w = w[i];
      }
    }
  }
  kept = block_sum(kept, s);
  const int64_t my_last_kept = last_kept;
  last_kept = block_max_index(last_kept, s);
  if (my_last_kept == last_kept && last_kept >= 0) s.part_last_kept_w = last_kept_w;  // one thread
  if (threadIdx.x == 0) {
    s.part_kept = kept;
    s.part_last_kept = last_kept;
  }
  cluster.sync();
  double kept_before = 0.0, kept_total = 0.0;
  int64_t row_last_kept = 0;
  float row_last_kept_w = 0.0f;
  for (int r = 0; r < ranks; ++r) {
    const Scratch* other = cluster.map_shared_rank(&s, r);
    if (r < rank) kept_before += other->part_kept;
    kept_total += other->part_kept;
    if (other->part_last_kept > row_last_kept) {
      row_last_kept = other->part_last_kept;
      row_last_kept_w = other->part_last_kept_w;
    }
  }

  if (kProbs) {
    const float inv = static_cast<float>(1.0 / kept_total);
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      p.probs[row * p.vocab + begin + i] = w[i] >= tau ? __fmul_rn(w[i], inv) : 0.0f;
    }
    cluster.sync();
    return;
  }

  const double u = uniform_from_seed_offset(rp.seed, rp.offset);
  const double target = u * kept_total;
  int64_t found = INT64_MAX;
  float found_w = 0.0f;
  if (target < kept_before + s.part_kept) {  // later CTAs search too: rounding gaps fall through to
                                             // the next kept token
    // Each thread owns a contiguous chunk, so thread order is vocabulary order.
    const int64_t chunk = ((n + kThreads - 1) / kThreads) | 1;  // odd stride: no bank conflicts
    const int64_t c0 = threadIdx.x * chunk;
    const int64_t c1 = c0 + chunk < n ? c0 + chunk : n;
    double mine = 0.0;
    for (int64_t i = c0; i < c1; ++i) mine += w[i] >= tau ? static_cast<double>(w[i]) : 0.0;
    double block_total;
    double running = kept_before + block_exclusive_scan(mine, block_total, s);
    if (mine > 0.0 && target < running + mine) {
      for (int64_t i = c0; i < c1; ++i) {
        if (w[i] >= tau && w[i] > 0.0f) {  // a zero weight never ends the search
          running += w[i];
          if (running > target) {
            found = begin + i;
            found_w = w[i];
            break;
          }
        }
      }
    }
  }  // (the branch is uniform across the CTA, so the scan's barriers are too)
  const int64_t my_found = found;
  found = block_min_index(found, s);
  if (threadIdx.x == 0) s.part_token = found;
  if (my_found == found && found != INT64_MAX) s.part_token_w = found_w;  // one thread
  cluster.sync();
  if (rank == 0 && threadIdx.x == 0) {
    int64_t token = INT64_MAX;
    float token_w = 0.0f;
    for (int r = 0; r < ranks; ++r) {
      const Scratch* other = cluster.map_shared_rank(&s, r);
      if (other->part_token < token) {
        token = other->part_token;
        token_w = other->part_token_w;
      }
    }
    if (token == INT64_MAX) {  // rounding: the last kept token
      token = row_last_kept;
      token_w = row_last_kept_w;
    }
    p.tokens[row] = token;
    p.valid[row] = true;
    if (p.logprobs != nullptr) {  // from the sums already made: no pass over the row
      const double log_w = log(static_cast<double>(token_w));
      p.logprobs[2 * row] = static_cast<float>(log_w - log(kept_total));
      p.logprobs[2 * row + 1] = static_cast<float>(log_w - log(total));
    }
  }
  cluster.sync();
#endif
}

// Dynamic shared memory per CTA for its slice on `device`: kSmemBudgetBytes, or less where the
// device allows less per block (consumer Blackwell, sm_12x: 99 KB), after the kernel's static
// Scratch and 1 KB of slack. Asking for more would make every launch fail.
inline cudaError_t slice_smem_budget(int device, int64_t& budget) {
  int optin = 0;
  const cudaError_t err =
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  const int64_t usable = static_cast<int64_t>(optin) - static_cast<int64_t>(sizeof(Scratch)) - 1024;
  budget = (usable < kSmemBudgetBytes ? usable : kSmemBudgetBytes) / 16 * 16;
  return budget > 0 ? cudaSuccess : cudaErrorInvalidValue;
}

// Logits one CTA can hold with `budget` bytes of dynamic shared memory (the slice's alignment
// pad comes out of it).
inline int64_t slice_capacity(int64_t budget) {
  return budget / static_cast<int64_t>(sizeof(float)) - kSlicePadFloats;
}

// Largest vocabulary one cluster can hold with `budget` bytes of slice per CTA.
inline int64_t max_vocab(int64_t budget) {
  return static_cast<int64_t>(kMaxCluster) * slice_capacity(budget);
}

// Launch geometry of one call.
struct LaunchPlan {
  int cluster = 1;
  int64_t slice = 0;
  size_t smem_bytes = 0;
};

// Cluster size: enough CTAs for the row to fit in shared memory, and more (up to 8) when the batch
// is small so that the GPU's SMs are not left idle; each CTA keeps at least 2048 elements.
inline cudaError_t plan_launch(int64_t batch, int64_t vocab, int64_t smem_budget,
                               LaunchPlan& plan) {
  const int64_t fit = slice_capacity(smem_budget);
  int cluster = 1;
  while (static_cast<int64_t>(cluster) * fit < vocab && cluster < kMaxCluster) cluster *= 2;
  if (static_cast<int64_t>(cluster) * fit < vocab) return cudaErrorInvalidValue;  // V too large
  const int wanted = batch <= 16 ? 8 : batch <= 64 ? 4 : batch <= 128 ? 2 : 1;
  while (cluster < wanted && cluster < kMaxClusterPortable && vocab / (cluster * 2) >= 2048)
    cluster *= 2;
  plan.cluster = cluster;
  plan.slice = (vocab + cluster - 1) / cluster;
  plan.smem_bytes = static_cast<size_t>(plan.slice + kSlicePadFloats) * sizeof(float);
  return cudaSuccess;
}

// The kernel attributes a launch needs, as last set on each device for one kernel instantiation,
// so that cudaFuncSetAttribute runs when they change (once per device and process in practice),
// not on every call: it is a driver call, and the CUDA runtime makes it wait for in-flight
// host<->device copies (as reported in intel/llvm#16928), which a decoding loop's overlapped copies
// should not hold up. A function template's static: one cache per instantiation and process,
// shared by every translation unit.
struct KernelAttributeCache {
  static constexpr int kDevices = 64;              // devices past this set them on every launch
  std::atomic<int64_t> smem_bytes[kDevices] = {};  // MaxDynamicSharedMemorySize; 0: not set
  std::atomic<bool> non_portable_cluster[kDevices] = {};
};
template <typename T, bool kProbs>
KernelAttributeCache& kernel_attribute_cache() {
  static KernelAttributeCache cache;
  return cache;
}

// Sets the attributes `plan` needs on `device`, skipping those the cache (when given) says are
// set. *skipped: whether the cache skipped any.
template <typename Kernel>
cudaError_t set_kernel_attributes(Kernel kernel, KernelAttributeCache* cache, int device,
                                  int64_t smem_budget, const LaunchPlan& plan, bool* skipped) {
  *skipped = false;
  // The whole budget, not this launch's need: a captured CUDA graph replays its launches with the
  // attribute as it is then, which a later, smaller setting must not undercut. The budget is a
  // constant of the device, so concurrent callers set the same value.
  if (cache != nullptr &&
      cache->smem_bytes[device].load(std::memory_order_acquire) == smem_budget) {
    *skipped = true;
  } else {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_budget));
    if (err != cudaSuccess) return err;
    if (cache != nullptr) cache->smem_bytes[device].store(smem_budget, std::memory_order_release);
  }
  if (plan.cluster > kMaxClusterPortable) {
    if (cache != nullptr && cache->non_portable_cluster[device].load(std::memory_order_acquire)) {
      *skipped = true;
    } else {
      const cudaError_t err =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (err != cudaSuccess) return err;
      if (cache != nullptr)
        cache->non_portable_cluster[device].store(true, std::memory_order_release);
    }
  }
  return cudaSuccess;
}

// Launches the kernel for every row of `params` on `stream`, with `smem_budget` from
// slice_smem_budget() for the current device (a caller that already queried it for its own checks
// passes it on). T: float, __half or __nv_bfloat16.
template <typename T, bool kProbs>
cudaError_t launch_sampling(const SamplingParams& params, int64_t smem_budget,
                            cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  if (params.batch > 65535) return cudaErrorInvalidValue;
  LaunchPlan plan;
  cudaError_t err = plan_launch(params.batch, params.vocab, smem_budget, plan);
  if (err != cudaSuccess) return err;
  int device = 0;
  err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  KernelAttributeCache* cache = device >= 0 && device < KernelAttributeCache::kDevices
                                    ? &kernel_attribute_cache<T, kProbs>()
                                    : nullptr;
  auto kernel = sampling_kernel<T, kProbs>;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(plan.cluster, static_cast<unsigned>(params.batch), 1);
  config.blockDim = dim3(kThreads, 1, 1);
  config.dynamicSmemBytes = plan.smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = plan.cluster;
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  const auto attempt = [&](bool* skipped) {
    cudaError_t e = set_kernel_attributes(kernel, cache, device, smem_budget, plan, skipped);
    if (e != cudaSuccess) return e;
    if (plan.cluster > kMaxClusterPortable) {
      // 16 co-resident CTAs of ~200 KB shared memory each need 16 free SMs in one GPC: true on a
      // full H100/H200, not under MIG or on smaller parts. Ask before launching (rare path only).
      int clusters = 0;
      e = cudaOccupancyMaxActiveClusters(&clusters, kernel, &config);
      if (e != cudaSuccess) return e;
      if (clusters == 0)
        return cudaErrorInvalidClusterSize;  // "cannot be scheduled on this device"
    }
    return cudaLaunchKernelEx(&config, kernel, params, plan.slice);
  };
  bool skipped = false;
  err = attempt(&skipped);
  if (err != cudaSuccess && skipped) {
    // The cached attributes may have gone with the context they were set in (cudaDeviceReset):
    // forget them, clear the failed launch's error and try once more, setting them again.
    cache->smem_bytes[device].store(0, std::memory_order_release);
    cache->non_portable_cluster[device].store(false, std::memory_order_release);
    (void)cudaGetLastError();
    err = attempt(&skipped);
  }
  return err;
}

// As above, with the shared-memory budget of the current device queried here.
template <typename T, bool kProbs>
cudaError_t launch_sampling(const SamplingParams& params, cudaStream_t stream) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  int64_t smem_budget = 0;
  err = slice_smem_budget(device, smem_budget);
  if (err != cudaSuccess) return err;
  return launch_sampling<T, kProbs>(params, smem_budget, stream);
}

}  // namespace cuda
}  // namespace tsdi
