// CUDA sampling for GPUs without thread-block clusters (sm_80, sm_86, sm_89; it runs on sm_90 and
// newer too): torch-free (raw pointers, a stream, cudaError_t), the same contract
// (docs/contract.md) and the same arithmetic as the cluster kernel (sampling_kernel.cuh), whose
// device functions it shares (device_common.cuh).
//
// A row is split over `blocks_per_row` ordinary blocks (slices of at least 2048 elements, up to 32
// blocks when the batch is small, so that B = 1 still spreads over 32 SMs), and the cluster
// kernel's cluster.sync() steps become kernel boundaries: the host launches one short chain of
// launches of split_sampling_kernel on the stream. Each launch
//   1. combines, in every block of the row alike, what the previous launch's blocks of that row
//      wrote to the workspace (partial maxima, sums, bucket masses, ... summed in block order,
//      as the cluster kernel sums its ranks) with the row's state from that launch, and decides
//      the row's next step (warp 0, every lane alike);
//   2. makes that step's pass over its slice: max and bad flags; first index of the max (greedy);
//      sum of the weights; one bisection round's bucket counts or masses (the first top-p round
//      also sums the top-k set's mass); the kept mass; the draw or the probabilities;
//   3. writes its partial results, and block 0 the row's state, for the next launch.
// A launch reads only what the launch before it wrote (double-buffered by launch parity), so no
// block ever waits for another: no grid-wide barrier, no atomics on global memory, no cooperative
// launch, and a chain of plain launches on one stream is capturable in a CUDA graph. Rows advance
// independently (a greedy or invalid row is done after 2-3 launches and idles through the rest).
//
// The logits are read again by every pass that needs them (no copy of the weights is kept, so the
// workspace is small: split_workspace_bytes()); every pass recomputes the same weights bit for bit
// (tsdi::exp_nonpositive). At B = 1 the row stays in L2 between launches, and the passes' loads do
// not carry the evict-first hint for that reason.
//
// The workspace is global memory of split_workspace_bytes() (16-byte aligned), provided by the
// caller (the torch glue takes it from the caching allocator, which is graph-safe); it needs no
// initialisation: every field a launch reads was written by the launch before it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common.h"
#include "device_common.cuh"
#include "vector_split.h"

namespace tsdi {
namespace cuda {

constexpr int kMaxSplitBlocks = 32;       // blocks per row at most
constexpr int64_t kMinSplitSlice = 2048;  // elements per block at least (unless V is smaller)

// What the launch that wrote a state did in its pass (and so what the next launch combines).
enum SplitPhase : int32_t {
  kSplitMax = 0,      // max and bad flags of the debiased logits
  kSplitArgmax = 1,   // first index of the max (greedy)
  kSplitSum = 2,      // sum of the weights
  kSplitBuckets = 3,  // one bisection round's bucket masses (and the top-k set's mass)
  kSplitKept = 4,     // kept mass and last kept token
  kSplitDraw = 5,     // the token search (or the probabilities)
  kSplitZero = 6,     // probabilities of an invalid row (zeros)
  kSplitOneHot = 7,   // probabilities of a greedy row
  kSplitDone = 8,     // outputs written
};

// One block's results of one pass. Only the fields of the pass that wrote it are read.
struct alignas(16) SplitPartial {
  double buckets[kBuckets];
  double sum;     // weights; or the kept mass
  double sum_k;   // mass of the top-k set (first top-p round)
  int64_t index;  // first index of the max; last kept token; drawn token (INT64_MAX: none)
  float max;
  int32_t bad;
  float weight;  // weight of the last kept or of the drawn token
};

// A row's state after one launch (block 0 writes it; every block of the row computed the same).
struct alignas(16) SplitState {
  double total;    // S
  double total_k;  // mass of the top-k set
  double above;    // bisection: mass above the bracket
  double target;   // bisection: count or mass to reach from the top
  double kept_total;
  int64_t token;   // greedy: argmax; after the kept pass: the last kept token
  int32_t phase;   // SplitPhase
  int32_t status;  // RowStatus of a row found invalid
  float row_max;
  float tau_k;
  float tau;
  float token_weight;     // weight of the last kept token
  uint32_t lo, hi;        // bisection bracket of bit patterns
  int32_t topp_stage;     // the bisection is top-p's (else top-k's)
  int32_t sum_k_pending;  // this pass also sums the top-k set's mass
};

// The workspace as the kernel sees it.
struct SplitWorkspace {
  SplitPartial* partials;  // [2][batch][blocks_per_row]
  SplitState* states;      // [2][batch]
  int32_t blocks_per_row;
};

// A block's shared memory (one static object, so that tests/simt can run the kernel).
struct alignas(16) SplitShared {
  Scratch scratch;
  SplitState state;
  double kept_before;  // kept mass of the row's earlier blocks
  double my_kept;      // and of this block
};
#if defined(TSDI_CUDA_EMULATION)
inline SplitShared& split_shared() {
  return *static_cast<SplitShared*>(simt::static_shared(sizeof(SplitShared), alignof(SplitShared)));
}
#else
__device__ __forceinline__ SplitShared& split_shared() {
  __shared__ SplitShared s;
  return s;
}
#endif

// Calls f(i, logit as float) for every element i of x[0, n) this thread owns, in 16-byte vectors
// where the address allows (the cluster kernel's split into head, vectors and tail), without the
// evict-first hint: later launches read the row again.
template <typename T, typename F>
__device__ __forceinline__ void for_each_logit(const T* x, int64_t n, F f) {
  const VectorSplit split =
      split_for_vectors(reinterpret_cast<uint64_t>(x), n, static_cast<int64_t>(sizeof(T)));
  for (int64_t i = threadIdx.x; i < split.head; i += kThreads) f(i, to_float(x[i]));
  constexpr int kPerVector = 16 / static_cast<int>(sizeof(T));
#pragma unroll 4
  for (int64_t v = threadIdx.x; v < split.vectors; v += kThreads) {
    const int64_t i0 = split.head + v * kPerVector;
    float values[kPerVector];
    load_vector<false>(x + i0, values);
#pragma unroll
    for (int k = 0; k < kPerVector; ++k) f(i0 + k, values[k]);
  }
  for (int64_t i = split.head + split.vectors * kPerVector + threadIdx.x; i < n; i += kThreads) {
    f(i, to_float(x[i]));
  }
}

// The row's next steps after a pass, decided from the launch's input state and the row's partials
// of that pass. Run by warp 0 of every block of the row, every lane alike; writes tokens, valid
// and log-probabilities (block 0, lane 0) when the row ends here. Leaves in `st` the pass this
// launch makes (and, after the kept pass, this block's kept mass and that of the blocks before it).
template <bool kProbs>
__device__ __forceinline__ void split_combine(const SamplingParams& p, const RowParams& rp,
                                              int64_t row, const SplitPartial* part, int blocks,
                                              SplitState& st, double& kept_before_out,
                                              double& my_kept_out) {
  const int lane = threadIdx.x & 31;
  const int block = static_cast<int>(blockIdx.x);
  const bool writer = block == 0 && lane == 0;
  const uint32_t end_bits = bisect_end_bits();
  // Steps without a pass of their own, chained within this launch until one needs a pass.
  enum { kNone, kStartTopP, kStartBisect, kFinishBisect, kKeep } next = kNone;
  switch (st.phase) {
    case kSplitMax: {
      float row_max = -INFINITY;
      int32_t row_bad = 0;
      for (int b = 0; b < blocks; ++b) {
        row_max = fmaxf(row_max, part[b].max);
        row_bad |= part[b].bad;
      }
      int32_t status = rp.status;
      if (status == kRowOk && row_bad) status = kRowNonFinite;
      if (status == kRowOk && row_max == -INFINITY) status = kRowAllMasked;
      st.row_max = row_max;
      st.status = status;
      if (status != kRowOk) {
        if (kProbs) {
          st.phase = kSplitZero;
        } else {
          if (writer) {
            p.tokens[row] = 0;
            p.valid[row] = false;
            if (p.logprobs != nullptr) p.logprobs[2 * row] = p.logprobs[2 * row + 1] = NAN;
          }
          st.phase = kSplitDone;
        }
      } else {
        st.phase = rp.temperature == 0.0f ? kSplitArgmax : kSplitSum;
      }
      break;
    }
    case kSplitArgmax: {
      int64_t argmax = INT64_MAX;
      for (int b = 0; b < blocks; ++b) argmax = part[b].index < argmax ? part[b].index : argmax;
      st.token = argmax;
      if (kProbs) {
        st.phase = kSplitOneHot;
      } else {
        if (writer) {
          p.tokens[row] = argmax;
          p.valid[row] = true;
          if (p.logprobs != nullptr) p.logprobs[2 * row] = p.logprobs[2 * row + 1] = 0.0f;
        }
        st.phase = kSplitDone;
      }
      break;
    }
    case kSplitSum: {
      double total = 0.0;
      for (int b = 0; b < blocks; ++b) total += part[b].sum;
      st.total = total;
      st.total_k = total;
      st.tau_k = 0.0f;
      if (rp.top_k > 0 && rp.top_k < p.vocab) {
        st.topp_stage = 0;
        st.lo = 0u;
        st.hi = end_bits;
        st.target = static_cast<double>(rp.top_k);
        st.sum_k_pending = 0;
        next = kStartBisect;
      } else {
        next = kStartTopP;
      }
      break;
    }
    case kSplitBuckets: {
      if (st.sum_k_pending) {
        double total_k = 0.0;
        for (int b = 0; b < blocks; ++b) total_k += part[b].sum_k;
        st.total_k = total_k;
        st.target = static_cast<double>(rp.top_p) * total_k;
        st.sum_k_pending = 0;
      }
      double m = 0.0;
      for (int b = 0; b < blocks; ++b) m += part[b].buckets[lane];
      double running;
      const int chosen = choose_bucket(m, st.above, st.target, running);
      if (chosen < 0) {  // rounding left the total short: keep everything in the bracket
        next = kFinishBisect;
      } else {
        st.above = running;
        uint32_t lo = st.lo, hi = st.hi;
        narrow_bracket(lo, hi, chosen, bucket_shift(hi - lo));
        st.lo = lo;
        st.hi = hi;
        next = hi - lo > 1u ? kNone : kFinishBisect;  // kNone: another round (phase unchanged)
      }
      break;
    }
    case kSplitKept: {
      double kept_before = 0.0, kept_total = 0.0;
      int64_t last_kept = 0;
      float last_kept_w = 0.0f;
      for (int b = 0; b < blocks; ++b) {
        if (b < block) kept_before += part[b].sum;
        kept_total += part[b].sum;
        if (part[b].index > last_kept) {
          last_kept = part[b].index;
          last_kept_w = part[b].weight;
        }
      }
      kept_before_out = kept_before;
      my_kept_out = part[block].sum;
      st.kept_total = kept_total;
      st.token = last_kept;
      st.token_weight = last_kept_w;
      st.phase = kSplitDraw;
      break;
    }
    case kSplitDraw: {
      if (kProbs) {  // the draw pass wrote the probabilities
        st.phase = kSplitDone;
        break;
      }
      int64_t token = INT64_MAX;
      float token_w = 0.0f;
      for (int b = 0; b < blocks; ++b) {
        if (part[b].index < token) {
          token = part[b].index;
          token_w = part[b].weight;
        }
      }
      if (token == INT64_MAX) {  // rounding: the last kept token
        token = st.token;
        token_w = st.token_weight;
      }
      if (writer) {
        p.tokens[row] = token;
        p.valid[row] = true;
        if (p.logprobs != nullptr) {
          const double log_w = log(static_cast<double>(token_w));
          p.logprobs[2 * row] = static_cast<float>(log_w - log(st.kept_total));
          p.logprobs[2 * row + 1] = static_cast<float>(log_w - log(st.total));
        }
      }
      st.phase = kSplitDone;
      break;
    }
    default: st.phase = kSplitDone; break;  // zeros, one-hot, done
  }
  while (next != kNone) {
    switch (next) {
      case kStartTopP:  // docs/contract.md §6: the nucleus within the top-k set
        if (rp.top_p >= 1.0f) {
          st.tau = st.tau_k;
          next = kKeep;
        } else if (rp.top_p <= 0.0f) {
          st.tau = 1.0f;
          next = kKeep;
        } else {
          // Without top-k the tokens below floor = (1 - top_p) * S / V hold at most
          // (1 - top_p) * S of mass, so tau >= floor; with it, tau >= tau_k.
          const float floor_value =
              static_cast<float>((1.0 - static_cast<double>(rp.top_p)) * st.total /
                                 static_cast<double>(p.vocab) * (1.0 - 1e-6));
          st.topp_stage = 1;
          st.lo = st.tau_k > 0.0f ? __float_as_uint(st.tau_k) : __float_as_uint(floor_value);
          st.hi = end_bits;
          const bool top_k = rp.top_k > 0 && rp.top_k < p.vocab;
          st.sum_k_pending = top_k ? 1 : 0;  // the first round's pass sums the top-k set too
          st.target = static_cast<double>(rp.top_p) * st.total;
          next = kStartBisect;
        }
        break;
      case kStartBisect:
        st.above = 0.0;
        if (st.hi - st.lo > 1u) {
          st.phase = kSplitBuckets;
          next = kNone;
        } else {
          next = kFinishBisect;
        }
        break;
      case kFinishBisect:
        if (!st.topp_stage) {
          st.tau_k = __uint_as_float(st.lo);
          next = kStartTopP;
        } else {
          st.tau = fmaxf(__uint_as_float(st.lo), st.tau_k);
          next = kKeep;
        }
        break;
      case kKeep:
        st.tau = fmaxf(st.tau, rp.min_p);
        st.sum_k_pending = 0;
        st.phase = kSplitKept;
        next = kNone;
        break;
      default: next = kNone; break;
    }
  }
}

// One launch of the chain: `step` 0 makes the max pass, every later step combines the previous
// launch's results and makes the next pass (see the header comment). `blockIdx.y` is the row,
// `blockIdx.x` its slice. kProbs: write sampling_probs instead of (tokens, valid).
template <typename T, bool kProbs>
__global__ void __launch_bounds__(kThreads)
    split_sampling_kernel(SamplingParams p, SplitWorkspace ws, int64_t slice, int32_t step) {
  SplitShared& sh = split_shared();
  Scratch& s = sh.scratch;
  const int64_t row = blockIdx.y;
  const int block = static_cast<int>(blockIdx.x);
  const int blocks = ws.blocks_per_row;
  const int64_t begin = static_cast<int64_t>(block) * slice;
  const int64_t end = begin + slice < p.vocab ? begin + slice : p.vocab;
  const int64_t n = end > begin ? end - begin : 0;
  const RowParams rp = resolve_row(p, row);
  const int in = (step + 1) & 1, out = step & 1;
  const SplitPartial* part_in = ws.partials + (in * p.batch + row) * blocks;
  SplitPartial& mine = ws.partials[(out * p.batch + row) * blocks + block];

  if (threadIdx.x < 32) {
    // Every lane of warp 0 combines alike (shuffles need the whole warp); lane 0 stores the result.
    SplitState st;
    double kept_before = 0.0, my_kept = 0.0;
    if (step == 0) {
      st = SplitState();
      st.phase = kSplitMax;
    } else {
      st = ws.states[in * p.batch + row];
      split_combine<kProbs>(p, rp, row, part_in, blocks, st, kept_before, my_kept);
    }
    if (threadIdx.x == 0) {
      sh.state = st;
      sh.kept_before = kept_before;
      sh.my_kept = my_kept;
      if (block == 0) ws.states[out * p.batch + row] = st;
    }
  }
  __syncthreads();
  const SplitState& st = sh.state;
  const int32_t phase = st.phase;
  if (phase == kSplitDone) return;

  const T* x = static_cast<const T*>(p.logits) + row * p.logits_row_stride + begin;
  const float* bias = rp.bias != nullptr ? rp.bias + begin : nullptr;
  auto debias = [&](int64_t i, float value) {
    return bias != nullptr ? __fsub_rn(value, __fmul_rn(rp.alpha, bias[i])) : value;
  };
  const float row_max = st.row_max;
  const float scale = clamp_inverse_temperature(1.0f / rp.temperature);
  auto weight = [&](int64_t i, float value) {
    return tsdi::exp_nonpositive(__fmul_rn(__fsub_rn(debias(i, value), row_max), scale));
  };
  float* const probs = kProbs ? p.probs + row * p.vocab + begin : nullptr;

  switch (phase) {
    case kSplitMax: {
      float local_max = -INFINITY;
      int32_t bad = 0;
      for_each_logit(x, n, [&](int64_t i, float value) {
        const float d = debias(i, value);
        local_max = fmaxf(local_max, d);
        bad |= !(d < INFINITY);
      });
      local_max = block_max(local_max, s);
      bad = block_or(bad, s);
      if (threadIdx.x == 0) {
        mine.max = local_max;
        mine.bad = bad;
      }
      break;
    }
    case kSplitArgmax: {
      int64_t first = INT64_MAX;
      for_each_logit(x, n, [&](int64_t i, float value) {
        if (debias(i, value) == row_max && begin + i < first) first = begin + i;
      });
      first = block_min_index(first, s);
      if (threadIdx.x == 0) mine.index = first;
      break;
    }
    case kSplitZero:
      for (int64_t i = threadIdx.x; i < n; i += kThreads) probs[i] = 0.0f;
      break;
    case kSplitOneHot:
      for (int64_t i = threadIdx.x; i < n; i += kThreads) {
        probs[i] = begin + i == st.token ? 1.0f : 0.0f;
      }
      break;
    case kSplitSum: {
      double local_sum = 0.0;
      for_each_logit(x, n, [&](int64_t i, float value) { local_sum += weight(i, value); });
      local_sum = block_sum(local_sum, s);
      if (threadIdx.x == 0) mine.sum = local_sum;
      break;
    }
    case kSplitBuckets: {
      const uint32_t lo = st.lo, span = st.hi - st.lo;
      const int shift = bucket_shift(span);
      const bool count = !st.topp_stage;
      const float tau_k = st.tau_k;
      const bool sum_k = st.sum_k_pending != 0;
      double* wb = s.warp_bucket_mass[threadIdx.x >> 5];
      wb[threadIdx.x & 31] = 0.0;
      __syncwarp();
      BucketRun run;
      double local_k = 0.0;
      for_each_logit(x, n, [&](int64_t i, float value) {
        const float v = weight(i, value);
        run.add(wb, v, lo, span, shift, count);
        if (sum_k) local_k += v >= tau_k ? v : 0.0f;
      });
      run.flush(wb);
      if (sum_k) {
        local_k = block_sum(local_k, s);  // (its barriers also order the atomics above)
        if (threadIdx.x == 0) mine.sum_k = local_k;
      }
      __syncthreads();
      if (threadIdx.x < kBuckets) mine.buckets[threadIdx.x] = block_bucket_mass(s);
      break;
    }
    case kSplitKept: {
      const float tau = st.tau;
      double kept = 0.0;
      int64_t last_kept = -1;
      float last_kept_w = 0.0f;
      for_each_logit(x, n, [&](int64_t i, float value) {
        const float v = weight(i, value);
        if (v >= tau) {
          kept += v;
          if (v > 0.0f && begin + i > last_kept) {
            last_kept = begin + i;
            last_kept_w = v;
          }
        }
      });
      kept = block_sum(kept, s);
      const int64_t my_last_kept = last_kept;
      last_kept = block_max_index(last_kept, s);
      if (my_last_kept == last_kept && last_kept >= 0) mine.weight = last_kept_w;  // one thread
      if (threadIdx.x == 0) {
        mine.sum = kept;
        mine.index = last_kept;
      }
      break;
    }
    case kSplitDraw: {
      const float tau = st.tau;
      auto weight_at = [&](int64_t i) { return weight(i, to_float(x[i])); };
      if (kProbs) {
        const float inv = static_cast<float>(1.0 / st.kept_total);
        for (int64_t i = threadIdx.x; i < n; i += kThreads) {
          const float v = weight_at(i);
          probs[i] = v >= tau ? __fmul_rn(v, inv) : 0.0f;
        }
        break;
      }
      const double u = uniform_from_seed_offset(rp.seed, rp.offset);
      const double target = u * st.kept_total;
      const double kept_before = sh.kept_before;
      int64_t found = INT64_MAX;
      float found_w = 0.0f;
      if (target < kept_before + sh.my_kept) {  // later blocks search too: rounding gaps fall
                                                // through to the next kept token
        // Each thread owns a contiguous chunk, so thread order is vocabulary order.
        const int64_t chunk = ((n + kThreads - 1) / kThreads) | 1;  // as the cluster kernel
        const int64_t c0 = threadIdx.x * chunk;
        const int64_t c1 = c0 + chunk < n ? c0 + chunk : n;
        double chunk_mass = 0.0;
        for (int64_t i = c0; i < c1; ++i) {
          const float v = weight_at(i);
          chunk_mass += v >= tau ? static_cast<double>(v) : 0.0;
        }
        double block_total;
        double running = kept_before + block_exclusive_scan(chunk_mass, block_total, s);
        if (chunk_mass > 0.0 && target < running + chunk_mass) {
          for (int64_t i = c0; i < c1; ++i) {
            const float v = weight_at(i);
            if (v >= tau && v > 0.0f) {  // a zero weight never ends the search
              running += v;
              if (running > target) {
                found = begin + i;
                found_w = v;
                break;
              }
            }
          }
        }
      }  // (the branch is uniform across the block, so the scan's barriers are too)
      const int64_t my_found = found;
      found = block_min_index(found, s);
      if (threadIdx.x == 0) mine.index = found;
      if (my_found == found && found != INT64_MAX) mine.weight = found_w;  // one thread
      break;
    }
    default: break;
  }
}

// Launch geometry and length of the chain for one call.
struct SplitPlan {
  int blocks_per_row = 1;
  int64_t slice = 0;
  int launches = 0;
  size_t workspace_bytes = 0;
};

// Workspace bytes for `batch` rows of `blocks_per_row` blocks (a multiple of 16).
inline size_t split_workspace_bytes(int64_t batch, int blocks_per_row) {
  return static_cast<size_t>(2 * batch) *
         (static_cast<size_t>(blocks_per_row) * sizeof(SplitPartial) + sizeof(SplitState));
}

// Launches the chain needs for `p`: the max pass, the sum (or argmax) pass, up to 6 bisection
// rounds each for top-k and top-p where some row may use them, the kept-mass pass, the draw, and
// for tokens one more launch that combines the draw. Rows that finish earlier idle through the
// rest; fewer launches are planned when the scalars show that no row can need them.
inline int split_launches(const SamplingParams& p, bool probs) {
  if (p.temperature.values == nullptr && p.temperature.scalar == 0.0f) return 3;  // all greedy
  const bool top_k = p.top_k.values != nullptr || (p.top_k.scalar > 0 && p.top_k.scalar < p.vocab);
  const bool top_p = p.top_p.values != nullptr || (p.top_p.scalar > 0.0f && p.top_p.scalar < 1.0f);
  const int passes = 2 + (top_k ? kMaxBisectRounds : 0) + (top_p ? kMaxBisectRounds : 0) + 2;
  return probs ? passes : passes + 1;
}

// Blocks per row: about two blocks per SM over the batch (so that a small batch still fills the
// GPU: 32 blocks per row at B = 1 on an A100 or L4), at most 32, each with a slice of at least
// 2048 elements; one block per row from B = 2 * SMs on. `multiprocessors`: the device's SM count.
inline cudaError_t plan_split(const SamplingParams& p, bool probs, int multiprocessors,
                              SplitPlan& plan) {
  if (p.batch <= 0 || p.vocab <= 0 || p.batch > 65535 || multiprocessors <= 0)
    return cudaErrorInvalidValue;
  const int64_t wanted_blocks = 2 * static_cast<int64_t>(multiprocessors);
  int64_t blocks = (wanted_blocks + p.batch - 1) / p.batch;
  const int64_t by_slice = p.vocab / kMinSplitSlice > 1 ? p.vocab / kMinSplitSlice : 1;
  blocks = blocks < by_slice ? blocks : by_slice;
  blocks = blocks < kMaxSplitBlocks ? (blocks > 1 ? blocks : 1) : kMaxSplitBlocks;
  plan.slice = (p.vocab + blocks - 1) / blocks;
  plan.blocks_per_row = static_cast<int>((p.vocab + plan.slice - 1) / plan.slice);  // none empty
  plan.launches = split_launches(p, probs);
  plan.workspace_bytes = split_workspace_bytes(p.batch, plan.blocks_per_row);
  return cudaSuccess;
}

// Enqueues the chain for every row of `params` on `stream`, with `plan` from plan_split() for the
// same params and `workspace` (plan.workspace_bytes, 16-byte aligned, no initialisation needed;
// it must not be used by anything else until the chain has run). T: float, __half or
// __nv_bfloat16.
template <typename T, bool kProbs>
cudaError_t launch_sampling_split(const SamplingParams& params, const SplitPlan& plan,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (params.batch == 0) return cudaSuccess;
  if (params.batch > 65535 || plan.blocks_per_row < 1 || plan.launches < 1 ||
      workspace_bytes < split_workspace_bytes(params.batch, plan.blocks_per_row) ||
      workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  SplitWorkspace ws;
  ws.partials = static_cast<SplitPartial*>(workspace);
  ws.states = reinterpret_cast<SplitState*>(ws.partials + 2 * params.batch * plan.blocks_per_row);
  ws.blocks_per_row = plan.blocks_per_row;
  auto kernel = split_sampling_kernel<T, kProbs>;
  cudaLaunchConfig_t config = {};
  config.gridDim =
      dim3(static_cast<unsigned>(plan.blocks_per_row), static_cast<unsigned>(params.batch), 1);
  config.blockDim = dim3(kThreads, 1, 1);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = nullptr;
  config.numAttrs = 0;
  for (int32_t step = 0; step < plan.launches; ++step) {
    const cudaError_t err = cudaLaunchKernelEx(&config, kernel, params, ws, plan.slice, step);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace tsdi
