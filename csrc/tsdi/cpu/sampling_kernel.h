// Fused CPU kernel for debiased top-p sampling: torch-free, one row at a time. What a row computes
// is docs/contract.md; the passes below are how (V = vocabulary size):
//
// (elementwise arithmetic in float32, sums of masses in float64; the exp is tsdi::exp_nonpositive
// of common.h on every instruction set, the same bits as the reference and the CUDA kernel)
//   pass 1  d_i = logit_i - alpha * bias_i, max d, NaN / +inf detection       (reads logits + bias)
//   pass 2  w_i = exp((d_i - max d) * s), s = 1/T clamped, S = sum w             (in place)
//   pass 3  the top-p threshold tau = the largest w such that the mass of {w_i >= tau} is at least
//           top_p * S: a strided sample (peaked, flat or in-between rows) or probe and pivot passes
//           bracket it, one pass collects the values inside the bracket, then a mass-weighted
//           radix select on the float bit patterns (w >= 0, so the bits sort like the values) of
//           those values finds it exactly, with the kept mass. No sort of V (see top_p_threshold).
//   greedy  rows with T = 0 stop after pass 1, run without its stores: the first index of max d
//           (first_argmax: the maximum per block, then a scan of the block that raised it).
//   pass 4  the inverse-CDF draw in vocabulary order, skipping blocks of kBlock elements by their
//           kept mass up to the drawn one (or, for sampling_probs, the renormalised probabilities).
// Inner loops are written over kLanes independent lanes so the compiler vectorises them for the
// instruction set of each function clone (see sampling_kernels.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(TSDI_NO_TARGET_CLONES)
#define TSDI_AVX512_COLLECT 1
#define TSDI_X86_ISA_DISPATCH 1
#include <immintrin.h>
#endif
#include <cstdlib>
#include <cstring>

namespace tsdi {
namespace cpu {

// Logit element types, as raw bit containers (no c10 types here).
struct BFloat16Bits {
  uint16_t bits;
};
struct Float16Bits {
  uint16_t bits;
};

enum class LogitsDType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Per-thread scratch memory, reused across rows and calls so the hot path does not allocate once
// warmed up (vectors only grow).
struct Workspace {
  std::vector<float> values;      // [V] debiased logits, then exp weights (sampling without probs)
  std::vector<float> candidates;  // [V] values inside the bracket that holds the threshold
  std::vector<float> candidates_next;  // [V] the next, narrower bracket (ping-pong)
  double hist_mass[1024];
};

// The instruction set the kernel runs with (x86-64): the widest the CPU has, or the one named by
// TSDI_EXT_CPU_ISA ("x86-64-v4", "x86-64-v3", "baseline"; read once) when the CPU has it, so that
// the tests run every path on one machine. TSDI_EXT_CPU_PORTABLE=1 keeps the x86-64-v4 build of
// the loops but not the hand-written AVX-512 routines.
enum class Isa : int32_t { kBaseline = 0, kX86_64_V3 = 3, kX86_64_V4 = 4 };

inline Isa detect_isa() {
#if defined(TSDI_X86_ISA_DISPATCH)
  const bool v4 = __builtin_cpu_supports("x86-64-v4");
  const bool v3 = __builtin_cpu_supports("x86-64-v3");
  const char* wanted = std::getenv("TSDI_EXT_CPU_ISA");
  if (wanted != nullptr) {
    if (std::strcmp(wanted, "baseline") == 0) return Isa::kBaseline;
    if (std::strcmp(wanted, "x86-64-v3") == 0 && v3) return Isa::kX86_64_V3;
    if (std::strcmp(wanted, "x86-64-v4") == 0 && v4) return Isa::kX86_64_V4;
  }
  return v4 ? Isa::kX86_64_V4 : v3 ? Isa::kX86_64_V3 : Isa::kBaseline;
#else
  return Isa::kBaseline;
#endif
}

inline Isa selected_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

// Kernel entry points (defined in sampling_kernels.cpp, one build per instruction set).
// Rows [row_begin, row_end) of `params` are processed; each thread passes its own workspace.
void sample_rows(LogitsDType dtype, const SamplingParams& params, int64_t row_begin,
                 int64_t row_end, Workspace& workspace);
void probs_rows(LogitsDType dtype, const SamplingParams& params, int64_t row_begin, int64_t row_end,
                Workspace& workspace);
// Pass 2 alone on `n` values x <= 0 in place (exp(x), as a row with maximum 0 at temperature 1
// gets it), through the selected instruction set's build; returns their float64 sum. For tests.
double exp_weights_in_place(float* values, int64_t n);

namespace detail {

#define TSDI_ALWAYS_INLINE inline __attribute__((always_inline))

constexpr int kLanes = 16;
constexpr int64_t kBlock = 512;
constexpr float kInf = __builtin_inff();
constexpr int64_t kSortCandidates = 64;  // below this many candidates, sort instead of refining
constexpr int kHistBuckets = 1024;       // 10-bit digits
constexpr int kPivots = 8;               // pivots per bracketing pass
constexpr int kMaxRounds = 6;            // bracketing rounds (each narrows the bit range ~9-fold)
constexpr int64_t kSelectCandidates = 2048;  // stop bracketing below this many candidates

TSDI_ALWAYS_INLINE float bits_to_float(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}
TSDI_ALWAYS_INLINE uint32_t float_to_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return u;
}

TSDI_ALWAYS_INLINE float load_as_float(float x) { return x; }
TSDI_ALWAYS_INLINE float load_as_float(BFloat16Bits x) {
  return bits_to_float(static_cast<uint32_t>(x.bits) << 16);
}
// IEEE binary16 -> binary32, branch-free so it vectorises (normals, subnormals, inf and NaN).
TSDI_ALWAYS_INLINE float load_as_float(Float16Bits h) {
  const uint32_t sign = (static_cast<uint32_t>(h.bits) & 0x8000u) << 16;
  const uint32_t em = static_cast<uint32_t>(h.bits) & 0x7fffu;
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  const uint32_t inf_nan = (em << 13) | 0x7f800000u;
  const uint32_t subnormal = float_to_bits(static_cast<float>(em) * 5.9604644775390625e-08f);
  uint32_t bits = em >= 0x7c00u ? inf_nan : normal;
  bits = em < 0x0400u ? subnormal : bits;
  return bits_to_float(bits | sign);
}

// Pass 1: out[i] = logit[i] - alpha * bias[i]; returns the row status and sets `max_out`.
// (`omp simd` lets the compiler reorder the max / or reductions without -ffast-math.)
template <typename In, bool kHasBias>
TSDI_ALWAYS_INLINE int32_t load_debiased(const In* __restrict__ logits,
                                         const float* __restrict__ bias, float alpha, int64_t vocab,
                                         float* __restrict__ out, float& max_out) {
  float row_max = -kInf;
  int32_t bad = 0;
#pragma omp simd reduction(max : row_max) reduction(| : bad)
  for (int64_t i = 0; i < vocab; ++i) {
    float v = load_as_float(logits[i]);
    if (kHasBias) v = v - alpha * bias[i];
    out[i] = v;
    row_max = v > row_max ? v : row_max;
    bad |= !(v < kInf);  // NaN or +inf
  }
  max_out = row_max;
  if (bad) return kRowNonFinite;
  if (row_max == -kInf) return kRowAllMasked;
  return kRowOk;
}

// Pass 2: w[i] = exp((d[i] - max) / T) in place; returns S = sum w, accumulated in float64: the
// nucleus boundary compares cumulative masses whose steps can be as small as 1e-6 of the total, so
// a float32 normaliser (relative error ~1e-7) would move the boundary on flat distributions. 1/T is
// clamped to [FLT_MIN, FLT_MAX] so that no select is needed in the loop: `d == max` still maps to
// exactly 1 and `d == -inf` to exactly 0 when T is infinite (1/T = 0 would give -inf * 0 = NaN) or
// subnormal (1/T = inf would give 0 * inf = NaN).
TSDI_ALWAYS_INLINE float clamp_inverse_temperature(float inv_temperature) {
  constexpr float kFloatMin = 1.17549435e-38f, kFloatMax = 3.40282347e+38f;
  return inv_temperature < kFloatMin   ? kFloatMin
         : inv_temperature > kFloatMax ? kFloatMax
                                       : inv_temperature;
}

// kLanes-wide GCC/Clang vector types: the compiler splits them into the registers of each
// instruction set's build (one zmm, two ymm, four xmm).
typedef float FloatVec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntVec __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef uint32_t UIntVec __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// tsdi::exp_nonpositive (common.h) on kLanes values: the same float32 operations in the same
// order, so the same bits. Written with vector types because GCC's vectoriser turned the scalar
// version's two selects into branches outside AVX-512: the x86-64-v3 build ran it one value at a
// time (190 us for 32000 values on Zen 3, where torch.softmax takes 35).
TSDI_ALWAYS_INLINE FloatVec exp_nonpositive_lanes(FloatVec x) {
  // The comparison and the selects as bit arithmetic: GCC lowers `<` and `mask ? a : b` on
  // 64-byte vectors lane by lane, with branches, without AVX-512. x < -86 exactly when x + 86 is
  // negative (exact near -86 by Sterbenz; -inf stays -inf; x = -86 gives +0): the sign bit,
  // spread over the lane by an arithmetic shift, is the mask.
  const IntVec low = (IntVec)(x - kExpLowest) >> 31;  // all-ones lanes below the cut
  const IntVec lowest = (IntVec)(FloatVec{} + kExpLowest);
  const FloatVec xc = (FloatVec)(((IntVec)x & ~low) | (lowest & low));
  FloatVec n = xc * kExpLog2e + kExpRound;
  const UIntVec n_bits = (UIntVec)n - kExpRoundBits;  // a vector cast reinterprets the bits
  n = n - kExpRound;
  FloatVec r = xc - n * kExpLn2Hi;
  r = r - n * kExpLn2Lo;
  FloatVec y = FloatVec{} + kExpP0;
  y = y * r + kExpP1;
  y = y * r + kExpP2;
  y = y * r + kExpP3;
  y = y * r + kExpP4;
  y = y * r + kExpP5;
  y = ((y * r) * r + r) + 1.0f;
  const FloatVec scaled = (FloatVec)((UIntVec)y + (n_bits << 23));
  return (FloatVec)((IntVec)scaled & ~low);
}

TSDI_ALWAYS_INLINE double exp_in_place(float* __restrict__ w, int64_t vocab, float row_max,
                                       float inv_temperature) {
  const float scale = clamp_inverse_temperature(inv_temperature);
  // kLanes float64 accumulators, one per vector lane: the float -> double widening and the adds
  // vectorise, a scalar double reduction would not.
  double lane_total[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= vocab; i += kLanes) {
    FloatVec v;
    __builtin_memcpy(&v, w + i, sizeof(v));
    const FloatVec e = exp_nonpositive_lanes((v - row_max) * scale);
    __builtin_memcpy(w + i, &e, sizeof(e));
    float lanes[kLanes];
    __builtin_memcpy(lanes, &e, sizeof(lanes));
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) lane_total[j] += static_cast<double>(lanes[j]);
  }
  for (; i < vocab; ++i) {
    w[i] = exp_nonpositive((w[i] - row_max) * scale);
    lane_total[0] += static_cast<double>(w[i]);
  }
  double total = 0.0;
  for (int j = 0; j < kLanes; ++j) total += lane_total[j];
  return total;
}

// Histogram of mass over a bracket of float bit patterns: value v with bits in
// [lo_bits, lo_bits + (buckets << shift)) goes to bucket (bits - lo_bits) >> shift, others are
// discarded (below lo_bits the unsigned difference wraps to >= 2^31, beyond every bucket since
// shift <= 21). Branch-free: discarded values land in one of kDiscard spare buckets, and four
// interleaved sub-histograms keep repeated buckets from serialising on store-to-load forwarding.
// Only the buckets in use are cleared, so narrow brackets cost little beyond the values.
// With kCount each value weighs 1 instead of its value (a histogram of counts, for top-k).
template <bool kCount = false>
TSDI_ALWAYS_INLINE void bracket_histogram(const float* __restrict__ values, int64_t n,
                                          uint32_t lo_bits, int shift, int buckets,
                                          double* hist_mass) {
  constexpr uint32_t kDiscard = 8;
  double sub[4][kHistBuckets + kDiscard];
  const uint32_t used = static_cast<uint32_t>(buckets);
  for (int k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < used + kDiscard; ++b) sub[k][b] = 0.0;
  }
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) {
      const float v = values[i + k];
      const uint32_t discard = used + (static_cast<uint32_t>(i >> 2) & (kDiscard - 1));
      const uint32_t digit = (float_to_bits(v) - lo_bits) >> shift;
      sub[k][digit < used ? digit : discard] += kCount ? 1.0 : v;
    }
  }
  for (; i < n; ++i) {
    const float v = values[i];
    const uint32_t digit = (float_to_bits(v) - lo_bits) >> shift;
    sub[0][digit < used ? digit : used] += kCount ? 1.0 : v;
  }
  for (uint32_t b = 0; b < used; ++b) {
    hist_mass[b] = (sub[0][b] + sub[1][b]) + (sub[2][b] + sub[3][b]);
  }
}

// The smallest shift that maps the bit patterns [lo_bits, hi_bits) onto at most kHistBuckets
// buckets, and how many buckets that makes.
TSDI_ALWAYS_INLINE int bracket_shift(uint32_t lo_bits, uint32_t hi_bits, int& buckets) {
  const uint32_t last = hi_bits - lo_bits - 1u;
  int shift = 0;
  while ((last >> shift) >= static_cast<uint32_t>(kHistBuckets)) ++shift;
  buckets = static_cast<int>(last >> shift) + 1;
  return shift;
}

// Copies the values v with keep(v) to `out`, in order; returns how many. `out` may alias `values`
// (in-place compaction: out[count] is written after values[i], i >= count, is read). Chunks without
// a hit (most of them when the distribution is peaked) are skipped after one vectorised any-of; the
// others are compacted without branches.
template <typename Keep>
TSDI_ALWAYS_INLINE int64_t compact_if(const float* values, int64_t n, float* out, Keep keep) {
  constexpr int64_t kChunk = 16;
  int64_t count = 0;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t stop = start + kChunk < n ? start + kChunk : n;
    int32_t any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t i = start; i < stop; ++i) any |= keep(values[i]);
    if (!any) continue;
    for (int64_t i = start; i < stop; ++i) {
      const float v = values[i];
      out[count] = v;
      count += keep(v);
    }
  }
  return count;
}

// Keeps (in place, in order) the values whose bit patterns lie in [lo_bits, hi_bits); returns how
// many.
TSDI_ALWAYS_INLINE int64_t keep_bits_in(float* values, int64_t n, uint32_t lo_bits,
                                        uint32_t hi_bits) {
  return compact_if(values, n, values, [=](float v) -> int32_t {
    const uint32_t bits = float_to_bits(v);
    return (bits >= lo_bits) & (bits < hi_bits);
  });
}

// Scans the buckets from the top; returns the one in which the mass reaches `target` (adding the
// mass of the buckets above it to `above`), or -1 if rounding left the total short of it (then
// `above` holds the total). Groups of 16 buckets are summed first (independent adds) and skipped
// whole, so the serial chain of dependent adds is about buckets / 16 + 16 long, not `buckets`.
TSDI_ALWAYS_INLINE int crossing_bucket(const double* hist_mass, int buckets, double target,
                                       double& above) {
  constexpr int kGroup = 16;
  for (int begin = (buckets - 1) / kGroup * kGroup; begin >= 0; begin -= kGroup) {
    const int end = begin + kGroup < buckets ? begin + kGroup : buckets;
    double group = 0.0;
    for (int k = begin; k < end; ++k) group += hist_mass[k];
    if (above + group >= target) {
      for (int k = end - 1; k >= begin; --k) {
        if (above + hist_mass[k] >= target) return k;
        above += hist_mass[k];
      }
      continue;  // rounding of the group sum: `above` now holds the group, bucket by bucket
    }
    above += group;
  }
  return -1;
}

inline void sort_descending(float* values, int64_t n) {
  // Insertion sort: n <= kSortCandidates.
  for (int64_t i = 1; i < n; ++i) {
    const float v = values[i];
    int64_t j = i - 1;
    while (j >= 0 && values[j] < v) {
      values[j + 1] = values[j];
      --j;
    }
    values[j + 1] = v;
  }
}

// Float64 sum of the candidates >= tau.
TSDI_ALWAYS_INLINE double candidate_mass_at_least(const float* cand, int64_t n, float tau) {
  double sum = 0.0;
  for (int64_t k = 0; k < n; ++k) sum += cand[k] >= tau ? static_cast<double>(cand[k]) : 0.0;
  return sum;
}

// Exact threshold among candidate values, all with bit patterns in [lo_bits, hi_bits), given the
// exact mass `above` of the values larger than every candidate: a mass-weighted radix select over
// the bracket (each round histograms the candidates over at most kHistBuckets buckets spanning the
// current bracket, keeps the bucket where the mass crosses the target and narrows the bracket to
// it), then a sort once few candidates remain. `cand` is compacted in place. Also sets `kept`, the
// float64 mass of all values >= the threshold (the mass above the remaining candidates plus
// theirs), so that the draw needs no separate pass to measure the nucleus.
TSDI_ALWAYS_INLINE float select_threshold(float* cand, int64_t n, uint32_t lo_bits,
                                          uint32_t hi_bits, double above, double target,
                                          Workspace& ws, double& kept) {
  while (n > kSortCandidates) {
    int buckets = 0;
    const int shift = bracket_shift(lo_bits, hi_bits, buckets);
    bracket_histogram(cand, n, lo_bits, shift, buckets, ws.hist_mass);
    const double above_bracket = above;
    const int bucket = crossing_bucket(ws.hist_mass, buckets, target, above);
    if (bucket < 0) {  // rounding left the candidates short: keep them all
      kept = above_bracket + candidate_mass_at_least(cand, n, bits_to_float(lo_bits));
      return bits_to_float(lo_bits);
    }
    lo_bits += static_cast<uint32_t>(bucket) << shift;
    if (hi_bits - lo_bits > (1u << shift)) hi_bits = lo_bits + (1u << shift);
    n = keep_bits_in(cand, n, lo_bits, hi_bits);
    if (shift == 0) {  // all remaining candidates have identical bits
      kept = above + candidate_mass_at_least(cand, n, cand[0]);
      return cand[0];
    }
  }
  sort_descending(cand, n);
  const double above_candidates = above;
  float tau = n > 0 ? cand[n - 1] : bits_to_float(lo_bits);
  for (int64_t k = 0; k < n; ++k) {
    above += cand[k];
    if (above >= target) {
      tau = cand[k];
      break;
    }
  }
  kept = above_candidates + candidate_mass_at_least(cand, n, tau);
  return tau;
}

// The k-th largest of n candidate values (1 <= k <= n), all with bit patterns in
// [lo_bits, hi_bits), `above` values larger than every candidate having been counted already:
// the radix select of select_threshold with counts for masses. `cand` is compacted in place.
TSDI_ALWAYS_INLINE float kth_largest(float* cand, int64_t n, uint32_t lo_bits, uint32_t hi_bits,
                                     double above, double k, Workspace& ws) {
  while (n > kSortCandidates) {
    int buckets = 0;
    const int shift = bracket_shift(lo_bits, hi_bits, buckets);
    bracket_histogram<true>(cand, n, lo_bits, shift, buckets, ws.hist_mass);
    const int bucket = crossing_bucket(ws.hist_mass, buckets, k, above);
    if (bucket < 0) return bits_to_float(lo_bits);  // fewer than k (not reached: k <= n)
    lo_bits += static_cast<uint32_t>(bucket) << shift;
    if (hi_bits - lo_bits > (1u << shift)) hi_bits = lo_bits + (1u << shift);
    n = keep_bits_in(cand, n, lo_bits, hi_bits);
    if (shift == 0) return cand[0];  // all remaining candidates have identical bits
  }
  sort_descending(cand, n);
  for (int64_t j = 0; j < n; ++j) {
    above += 1.0;
    if (above >= k) return cand[j];
  }
  return n > 0 ? cand[n - 1] : bits_to_float(lo_bits);
}

// Mass of the values >= each of kPivots ascending pivots. Written with GCC/Clang vector types so
// the kPivots accumulators stay in registers (array accumulators were spilled on every chunk);
// float lanes are flushed to float64 every kFlushChunks chunks. These masses only bracket the
// threshold: the exact masses that decide it are recomputed in float64 by collect_bracket.
TSDI_ALWAYS_INLINE void pivot_masses_portable(const float* __restrict__ w, int64_t n,
                                              const float* __restrict__ pivots,
                                              double* __restrict__ mass) {
  constexpr int kFlushChunks = 16;
  FloatVec acc[kPivots];
  FloatVec pivot[kPivots];
  for (int k = 0; k < kPivots; ++k) {
    mass[k] = 0.0;
    acc[k] = FloatVec{};
    pivot[k] = FloatVec{} + pivots[k];
  }
  auto flush = [&]() {
    for (int k = 0; k < kPivots; ++k) {
      float lanes[kLanes];
      __builtin_memcpy(lanes, &acc[k], sizeof(lanes));
      double sum = 0.0;
      for (int j = 0; j < kLanes; ++j) sum += lanes[j];
      mass[k] += sum;
      acc[k] = FloatVec{};
    }
  };
  int chunks = 0;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    FloatVec v;
    __builtin_memcpy(&v, w + i, sizeof(v));
    const IntVec bits = (IntVec)v;  // a vector-type cast reinterprets the bits
    for (int k = 0; k < kPivots; ++k) {
      const IntVec keep = v >= pivot[k];  // all-ones lanes where v >= pivot
      const IntVec kept_bits = bits & keep;
      acc[k] += (FloatVec)kept_bits;
    }
    if (++chunks == kFlushChunks) {
      chunks = 0;
      flush();
    }
  }
  flush();
  for (int k = 0; k < kPivots; ++k) {
    for (int64_t t = i; t < n; ++t) mass[k] += w[t] >= pivots[k] ? w[t] : 0.0f;
  }
}

// Float64 mass of the values >= threshold in w[begin, end). kLanes float64 accumulators, fed from
// a float32 select: the widening and the adds vectorise, a scalar float64 reduction would not.
TSDI_ALWAYS_INLINE double mass_at_least(const float* __restrict__ w, int64_t begin, int64_t end,
                                        float threshold) {
  double lane_sum[kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    float kept[kLanes];
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) kept[j] = w[i + j] >= threshold ? w[i + j] : 0.0f;
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) lane_sum[j] += static_cast<double>(kept[j]);
  }
  for (; i < end; ++i) lane_sum[0] += w[i] >= threshold ? static_cast<double>(w[i]) : 0.0;
  double sum = 0.0;
  for (int j = 0; j < kLanes; ++j) sum += lane_sum[j];
  return sum;
}

// Copies the values in [lo, hi) to `out` (which must not alias `w`) and returns how many; sets
// `above` to the exact (float64) mass of the values >= hi. Portable version: chunks with nothing in
// the bracket are skipped after a vector test, the others compacted without branches.
TSDI_ALWAYS_INLINE int64_t collect_bracket_portable(const float* __restrict__ w, int64_t n,
                                                    float lo, float hi, float* __restrict__ out,
                                                    double& above) {
  above = mass_at_least(w, 0, n, hi);
  return compact_if(w, n, out, [=](float v) -> int32_t { return (v >= lo) & (v < hi); });
}

#if defined(TSDI_AVX512_COLLECT)
// GCC 12's own intrinsic headers build "undefined" vectors as `__m512 __Y = __Y;`, which -Wall
// reports as uninitialised use in every caller: a known false positive, silenced for this block.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// AVX-512 version: vcompressps makes the compaction cost independent of how many values are
// inside the bracket (the portable loop pays per hit). Register-form compress plus a plain store:
// the memory form of vcompressps is microcoded and slow on AMD Zen 4. `out` may receive up to 15
// floats past the returned count, all within [0, n).
__attribute__((target("avx512f,avx512dq"))) inline int64_t collect_bracket_avx512(
    const float* __restrict__ w, int64_t n, float lo, float hi, float* __restrict__ out,
    double& above) {
  const __m512 lo_v = _mm512_set1_ps(lo), hi_v = _mm512_set1_ps(hi);
  __m512d above_lo = _mm512_setzero_pd(), above_hi = _mm512_setzero_pd();
  int64_t count = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(w + i);
    const __mmask16 at_least_lo = _mm512_cmp_ps_mask(v, lo_v, _CMP_GE_OQ);
    const __mmask16 at_least_hi = _mm512_cmp_ps_mask(v, hi_v, _CMP_GE_OQ);
    const __mmask16 inside = at_least_lo & static_cast<__mmask16>(~at_least_hi);
    _mm512_storeu_ps(out + count, _mm512_maskz_compress_ps(inside, v));
    count += __builtin_popcount(static_cast<unsigned>(inside));
    above_lo = _mm512_mask_add_pd(above_lo, static_cast<__mmask8>(at_least_hi), above_lo,
                                  _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    above_hi = _mm512_mask_add_pd(above_hi, static_cast<__mmask8>(at_least_hi >> 8), above_hi,
                                  _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
  }
  double lanes[16];
  _mm512_storeu_pd(lanes, above_lo);
  _mm512_storeu_pd(lanes + 8, above_hi);
  above = 0.0;
  for (int j = 0; j < 16; ++j) above += lanes[j];
  for (; i < n; ++i) {
    const float v = w[i];
    if (v >= hi) above += v;
    if (v >= lo && v < hi) out[count++] = v;
  }
  return count;
}

// AVX-512 pivot masses: compare + masked add is 2 instructions per pivot and vector (the portable
// version needs a compare, a masked move and an add).
__attribute__((target("avx512f,avx512dq"))) inline void pivot_masses_avx512(
    const float* __restrict__ w, int64_t n, const float* __restrict__ pivots,
    double* __restrict__ mass) {
  constexpr int kFlushChunks = 16;
  __m512 acc[kPivots], pivot[kPivots];
  for (int k = 0; k < kPivots; ++k) {
    acc[k] = _mm512_setzero_ps();
    pivot[k] = _mm512_set1_ps(pivots[k]);
    mass[k] = 0.0;
  }
  int chunks = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(w + i);
    for (int k = 0; k < kPivots; ++k) {
      acc[k] = _mm512_mask_add_ps(acc[k], _mm512_cmp_ps_mask(v, pivot[k], _CMP_GE_OQ), acc[k], v);
    }
    if (++chunks == kFlushChunks) {
      chunks = 0;
      for (int k = 0; k < kPivots; ++k) {
        mass[k] += _mm512_reduce_add_ps(acc[k]);
        acc[k] = _mm512_setzero_ps();
      }
    }
  }
  for (int k = 0; k < kPivots; ++k) {
    mass[k] += _mm512_reduce_add_ps(acc[k]);
    for (int64_t t = i; t < n; ++t) mass[k] += w[t] >= pivots[k] ? w[t] : 0.0f;
  }
}

// True when the AVX-512 routines may run. TSDI_EXT_CPU_PORTABLE=1 (read once) forces the portable
// loops, so that tests cover both on an AVX-512 machine; so does TSDI_EXT_CPU_ISA.
inline bool cpu_has_avx512() {
  static const bool has =
      selected_isa() == Isa::kX86_64_V4 && std::getenv("TSDI_EXT_CPU_PORTABLE") == nullptr;
  return has;
}
#pragma GCC diagnostic pop
#endif

TSDI_ALWAYS_INLINE void pivot_masses(const float* __restrict__ w, int64_t n,
                                     const float* __restrict__ pivots, double* __restrict__ mass) {
#if defined(TSDI_AVX512_COLLECT)
  if (cpu_has_avx512()) return pivot_masses_avx512(w, n, pivots, mass);
#endif
  pivot_masses_portable(w, n, pivots, mass);
}

// Pass 2. One loop for every instruction set (compiled into each clone, vectorised by the
// compiler): tsdi::exp_nonpositive is a sequence of rounded float32 operations, so every path gives
// the same bits, which a hand-written FMA version would not (docs/contract.md §5).
TSDI_ALWAYS_INLINE double exp_weights(float* __restrict__ w, int64_t vocab, float row_max,
                                      float inv_temperature) {
  return exp_in_place(w, vocab, row_max, inv_temperature);
}

TSDI_ALWAYS_INLINE int64_t collect_bracket(const float* __restrict__ w, int64_t n, float lo,
                                           float hi, float* __restrict__ out, double& above) {
#if defined(TSDI_AVX512_COLLECT)
  if (cpu_has_avx512()) return collect_bracket_avx512(w, n, lo, hi, out, above);
#endif
  return collect_bracket_portable(w, n, lo, hi, out, above);
}

// A strided sample of kSample weights (one every vocab / kSample), for rows of at least
// kSampleMinVocab values. It guides the threshold search in two ways:
// - how many weights reach the floor (a count, which a sample estimates well on any row): when
//   few do (peaked rows), one pass collects them all and the radix select runs on them alone;
// - where the threshold lies (a mass quantile, which it estimates well only on flat rows; see
//   sampled_bracket).
constexpr int64_t kSample = 1024;
constexpr int64_t kSampleMinVocab = 16384;
constexpr int kSampleMargin = 2;
constexpr int64_t kProbeMinVocab = 4096;
#ifndef TSDI_SAMPLE_ESS
#define TSDI_SAMPLE_ESS 16.0
#endif
// Collect every weight >= floor when the sample says at most 1/kCollectAllShare of them do: the
// select then costs about as much as the collection pass, where the probe and pivot passes would
// read the whole row two or three more times.
#ifndef TSDI_COLLECT_ALL_SHARE
#define TSDI_COLLECT_ALL_SHARE 4
#endif

struct StridedSample {
  const float* values;     // [kSample]
  double total;            // sum of the values
  double squares;          // sum of their squares
  int64_t at_least_floor;  // how many are >= floor
};

TSDI_ALWAYS_INLINE StridedSample draw_strided_sample(const float* w, int64_t vocab, float floor,
                                                     Workspace& ws) {
  const int64_t stride = vocab / kSample;
  float* sample = ws.candidates_next.data();  // free until the bracketing rounds start
  for (int64_t j = 0; j < kSample; ++j) sample[j] = w[j * stride + stride / 2];
  // float64 lane sums (kSample is a multiple of kLanes): one serial float64 chain would cost
  // kSample dependent adds.
  double lane_total[kLanes] = {}, lane_squares[kLanes] = {};
  int32_t lane_count[kLanes] = {};
  for (int64_t j = 0; j < kSample; j += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const double v = sample[j + l];
      lane_total[l] += v;
      lane_squares[l] += v * v;
      lane_count[l] += sample[j + l] >= floor;
    }
  }
  StridedSample s{sample, 0.0, 0.0, 0};
  for (int l = 0; l < kLanes; ++l) {
    s.total += lane_total[l];
    s.squares += lane_squares[l];
    s.at_least_floor += lane_count[l];
  }
  return s;
}

// A guess of the bracket [lo_bits, hi_bits) that holds the threshold, from the sampled values
// below `limit_bits`: their mass histogram by the top 10 bits of the float (8 buckets per octave,
// from the floor's up to the limit), the bucket where their cumulative mass from the top reaches
// `sample_target`, widened by kSampleMargin buckets on each side. Sampled values below the floor
// are discarded (tau >= floor anyway). Only a guess: the caller checks it exactly.
TSDI_ALWAYS_INLINE bool sampled_bracket_below(const StridedSample& sample, double sample_target,
                                              float floor, uint32_t limit_bits, Workspace& ws,
                                              uint32_t& lo_bits, uint32_t& hi_bits) {
  constexpr uint32_t kOctave8 = 1u << 20;
  const uint32_t base = float_to_bits(floor) & ~(kOctave8 - 1u);
  if (limit_bits <= base) return false;
  const int buckets = static_cast<int>((limit_bits - 1u - base) >> 20) + 1;
  bracket_histogram(sample.values, kSample, base, 20, buckets, ws.hist_mass);
  // The last bucket may reach past the limit: values at or above it are not part of this sample.
  double past_limit = 0.0;
  for (int64_t j = 0; j < kSample; ++j) {
    const uint32_t bits = float_to_bits(sample.values[j]);
    if (bits >= limit_bits && bits < base + (static_cast<uint32_t>(buckets) << 20)) {
      past_limit += sample.values[j];
    }
  }
  ws.hist_mass[buckets - 1] -= past_limit;
  double above = 0.0;
  const int bucket = crossing_bucket(ws.hist_mass, buckets, sample_target, above);
  if (bucket < 0) return false;
  const uint32_t lo =
      base + (static_cast<uint32_t>(bucket > kSampleMargin ? bucket - kSampleMargin : 0) << 20);
  const uint32_t hi = base + (static_cast<uint32_t>(bucket + kSampleMargin + 1) << 20);
  lo_bits = lo > float_to_bits(floor) ? lo : float_to_bits(floor);
  hi_bits = hi < limit_bits ? hi : limit_bits;
  return lo_bits < hi_bits;
}

// A bracket for the threshold from the sample (sampled_bracket_below up to 1, for top_p of the
// sample's mass). Returns false when the row's mass is too concentrated for the sample to
// represent it (the sample's scaled total off by more than a third, or too few sampled values
// carrying its mass), i.e. on peaked rows.
TSDI_ALWAYS_INLINE bool sampled_bracket(const StridedSample& sample, int64_t vocab, double total,
                                        float top_p, float floor, Workspace& ws, uint32_t& lo_bits,
                                        uint32_t& hi_bits) {
  const double estimate = sample.total * static_cast<double>(vocab) / static_cast<double>(kSample);
  if (!(estimate > 0.75 * total && estimate < 1.33 * total)) return false;
  // Effective sample size of the mass: when a handful of sampled values carry it, the guess is
  // worthless. (Lenient on purpose: a wrong guess costs one collection pass, a right one saves a
  // pivot pass and most of a second round.)
  if (sample.total * sample.total < TSDI_SAMPLE_ESS * sample.squares) return false;
  return sampled_bracket_below(sample, static_cast<double>(top_p) * sample.total, floor,
                               float_to_bits(1.0f) + 1u, ws, lo_bits, hi_bits);
}

// The head of a row for the threshold search: the weights >= the sample's rank-th largest value,
// about vocab * rank / kSample of them.
constexpr int64_t kHeadRank = kSample / 16;
TSDI_ALWAYS_INLINE float sampled_head_level(const StridedSample& sample, int64_t rank,
                                            Workspace& ws) {
  float* copy = ws.candidates.data();  // free until the first collection pass
  for (int64_t j = 0; j < kSample; ++j) copy[j] = sample.values[j];
  std::nth_element(copy, copy + (rank - 1), copy + kSample, [](float a, float b) { return a > b; });
  return copy[rank - 1];
}

// One collection pass for the bracket [lo_bits, hi_bits): the values of `values` inside it go to
// `out`. `above` is the exact mass of the values >= hi (those of `values` plus `above_before`, the
// mass of the values larger than all of `values`), `inside` that of the collected ones.
struct Collected {
  int64_t count;
  double above;
  double inside;
  // The bracket holds the threshold: the mass above it falls short of the target, with the
  // values inside it it does not.
  bool holds(double target) const { return above < target && above + inside >= target; }
};

TSDI_ALWAYS_INLINE Collected collect_and_weigh(const float* values, int64_t n, uint32_t lo_bits,
                                               uint32_t hi_bits, double above_before, float* out) {
  Collected c{0, 0.0, 0.0};
  c.count =
      collect_bracket(values, n, bits_to_float(lo_bits), bits_to_float(hi_bits), out, c.above);
  c.inside = mass_at_least(out, 0, c.count, 0.0f);  // lane sums: a serial float64 chain is slow
  c.above += above_before;
  return c;
}

// Narrows [lo_bits, hi_bits) to the interval between two adjacent of kPivots pivots spread evenly
// over the bit patterns, the one where the mass above (plus `above`) crosses `target`.
TSDI_ALWAYS_INLINE void narrow_bracket(const float* values, int64_t n, double above, double target,
                                       uint32_t& lo_bits, uint32_t& hi_bits) {
  uint32_t pivot_bits[kPivots];
  float pivots[kPivots];
  double mass[kPivots];
  const uint64_t span = hi_bits - lo_bits;
  for (int k = 0; k < kPivots; ++k) {
    pivot_bits[k] = lo_bits + static_cast<uint32_t>(span * (k + 1) / (kPivots + 1));
    pivots[k] = bits_to_float(pivot_bits[k]);
  }
  pivot_masses(values, n, pivots, mass);
  // The mass decreases with k: tau lies above the last pivot whose mass still reaches the target.
  int k = -1;
  while (k + 1 < kPivots && above + mass[k + 1] >= target) ++k;
  if (k >= 0) lo_bits = pivot_bits[k];
  if (k + 1 < kPivots) hi_bits = pivot_bits[k + 1];
}

// Pass 3: the nucleus threshold tau; the nucleus is {i : w_i >= tau} (see the header comment).
//  1. A floor: the tokens below floor = (1 - top_p) * S / V hold at most (1 - top_p) * S of mass,
//     so tau >= floor, and the bracket [floor, 1] holds tau.
//  2. On rows of at least kSampleMinVocab values, a strided sample picks a shortcut: when few
//     weights reach the floor (peaked rows), one pass collects them all and step 4 runs on them;
//     when the mass is spread thinly, the sample brackets tau and one pass collects the values
//     inside the bracket, checked exactly (a wrong guess falls through to step 3).
//  3. Otherwise a probe at the bracket's midpoint (one collection pass), then rounds of: one
//     vectorised pass measures the mass above kPivots pivots spread evenly over the float bit
//     patterns of the bracket, keeping the sub-interval where the mass crosses top_p * S; one pass
//     collects the values inside it (and the exact float64 mass above it). The first round reads
//     the row, later ones only the shrinking candidate list.
//  4. An exact mass-weighted radix select among the remaining candidates gives tau.
// The pivot masses are float32 sums, so a round checks its bracket exactly before trusting it; if
// rounding misplaced it, the previous candidates (or, in the first round, every value above the
// floor) are selected from instead.
TSDI_ALWAYS_INLINE float top_p_threshold(const float* w, int64_t vocab, double total, float top_p,
                                         Workspace& ws, double& kept) {
  kept = -1.0;          // unknown: the caller measures it
  if (top_p >= 1.0f) {  // everything (w >= 0)
    kept = total;
    return 0.0f;
  }
  if (top_p <= 0.0f) return 1.0f;  // the maximum (and its ties): w == 1 exactly there
  const double target = static_cast<double>(top_p) * total;
  // Shrunk slightly against rounding in S.
  const float floor = static_cast<float>((1.0 - static_cast<double>(top_p)) * total /
                                         static_cast<double>(vocab) * (1.0 - 1e-6));

  // [floor, 1] certainly holds tau (every w <= 1).
  const uint32_t floor_bits = float_to_bits(floor), end_bits = float_to_bits(1.0f) + 1u;
  uint32_t lo_bits = floor_bits;
  uint32_t hi_bits = end_bits;
  double above = 0.0;  // exact mass of the values >= hi
  const float* source = w;
  int64_t n = vocab;
  float* buffers[2] = {ws.candidates.data(), ws.candidates_next.data()};
  int first_round = 0;
  // Every weight >= floor, collected into buffers[0] for a radix select over [floor, 1].
  auto collect_above_floor = [&]() {
    return collect_and_weigh(w, vocab, floor_bits, end_bits, 0.0, buffers[0]);
  };
  if (vocab >= kSampleMinVocab) {
    const StridedSample sample = draw_strided_sample(w, vocab, floor, ws);
    uint32_t sample_lo = 0, sample_hi = 0;
    // The head route: one pass collects the head, the weights >= the sample's head_rank-th
    // largest (about head_rank / kSample of the row), with its exact mass. If the head holds
    // top_p of the mass, the threshold lies in it and the rounds continue on that list.
    // Otherwise every head weight is kept, and the weights below the head are bounded by it, so
    // the sample represents their mass well: it brackets the threshold there, checked exactly by
    // a second pass. Returns false when neither holds (the bracket then ends below the head).
    auto head_route = [&](int64_t head_rank) {
      const float head = sampled_head_level(sample, head_rank, ws);
      const uint32_t head_bits =
          float_to_bits(head) > floor_bits ? float_to_bits(head) : floor_bits;
      const Collected c = collect_and_weigh(w, vocab, head_bits, end_bits, 0.0, buffers[0]);
      if (c.holds(target)) {
        lo_bits = head_bits;
        source = buffers[0];
        n = c.count;
        return true;
      }
      hi_bits = head_bits;  // tau < head
      const double head_mass = c.above + c.inside;
      double sample_head = 0.0;
      for (int64_t j = 0; j < kSample; ++j) {
        sample_head += float_to_bits(sample.values[j]) >= head_bits ? sample.values[j] : 0.0f;
      }
      const double sample_rest = sample.total - sample_head;
      const double rest = total - head_mass;
      if (!(rest > 0.0 && sample_rest > 0.0 &&
            sampled_bracket_below(sample, (target - head_mass) / rest * sample_rest, floor,
                                  head_bits, ws, sample_lo, sample_hi))) {
        return false;
      }
      const Collected b = collect_and_weigh(w, vocab, sample_lo, sample_hi, 0.0, buffers[0]);
      if (!b.holds(target)) return false;
      lo_bits = sample_lo;
      hi_bits = sample_hi;
      above = b.above;
      source = buffers[0];
      n = b.count;
      return true;
    };
    if (sample.at_least_floor * TSDI_COLLECT_ALL_SHARE <= kSample) {
      // Few weights reach the floor (peaked rows): collect them all and select among them (a
      // smaller head, the sample's 16th largest and up, measured no faster).
      const Collected c = collect_above_floor();
      if (c.holds(target)) {
        return select_threshold(buffers[0], c.count, floor_bits, end_bits, 0.0, target, ws, kept);
      }
    } else if (sampled_bracket(sample, vocab, total, top_p, floor, ws, sample_lo, sample_hi)) {
      // The mass is spread thinly: the sample places the threshold well enough to replace the
      // first (full-row, kPivots-wide) pivot pass; one collection pass checks the sampled bracket
      // exactly. A wrong bracket only costs that pass: round 0 runs as usual.
      const Collected c = collect_and_weigh(w, vocab, sample_lo, sample_hi, 0.0, buffers[0]);
      if (c.holds(target)) {
        lo_bits = sample_lo;
        hi_bits = sample_hi;
        above = c.above;
        source = buffers[0];
        n = c.count;
        first_round = 1;
      }
    } else if (sample.at_least_floor > 0) {
      // Neither peaked nor flat (e.g. N(0, 2^2) logits): a few sampled weights carry most of the
      // sample's mass, so it cannot place the threshold, but it estimates counts well.
      if (head_route(kHeadRank)) first_round = 1;
    }
  }
  // Otherwise, a probe at the middle of the bracket (in bit patterns: the geometric middle): on
  // peaked rows the few weights above it already hold top_p of the mass, so one collection pass
  // yields a short candidate list, where a pivot pass (kPivots masses per value) costs 4x more.
  // If they do not, the pivot passes search the lower half of the bracket.
  if (first_round == 0 && vocab >= kProbeMinVocab) {
    const uint32_t mid = lo_bits + (hi_bits - lo_bits) / 2;
    const Collected c = collect_and_weigh(w, vocab, mid, hi_bits, 0.0, buffers[0]);
    if (c.holds(target)) {
      lo_bits = mid;
      above = c.above;
      source = buffers[0];
      n = c.count;
      first_round = 1;
    } else if (c.above + c.inside < target) {
      hi_bits = mid;  // tau < mid; the full-row pivot masses include the values above mid
    }
  }
  for (int round = first_round; round < kMaxRounds; ++round) {
    if (round > 0 && (n <= kSelectCandidates || hi_bits - lo_bits <= kPivots + 1u)) break;
    uint32_t new_lo = lo_bits, new_hi = hi_bits;
    narrow_bracket(source, n, above, target, new_lo, new_hi);
    float* dest = buffers[round & 1];
    const Collected c = collect_and_weigh(source, n, new_lo, new_hi, above, dest);
    if (!c.holds(target)) {
      if (round > 0) break;  // select among the previous round's candidates
      // First round misplaced by rounding (rare): radix select over all values above the floor.
      const Collected c = collect_above_floor();
      return select_threshold(buffers[0], c.count, floor_bits, end_bits, 0.0, target, ws, kept);
    }
    lo_bits = new_lo;
    hi_bits = new_hi;
    above = c.above;
    source = dest;
    n = c.count;
  }
  // `source` is one of the candidate buffers here (round 0 always runs and succeeds or returns).
  return select_threshold(const_cast<float*>(source), n, lo_bits, hi_bits, above, target, ws, kept);
}

// Pass 4a, only where the threshold search did not measure it (top_p <= 0, rounding fallbacks):
// the kept mass.
TSDI_ALWAYS_INLINE double kept_mass(const float* __restrict__ w, int64_t vocab, float tau) {
  return mass_at_least(w, 0, vocab, tau);
}

// Pass 3 with every filter of docs/contract.md §6: top-k, top-p on the top-k set, min-p. Returns
// the final threshold (the kept set is {w >= tau}) and sets `kept` to its mass.
//  - top-k (0 < k < V): a count histogram of the whole row over 1/8-octave buckets of the bit
//    patterns finds the bucket of the k-th largest weight, one pass collects every weight from that
//    bucket up (k plus that bucket's population), and a count radix select among them gives
//    tau_k; the top-k set, its mass S_k and then the nucleus within it come from that short list.
//  - top-p alone: top_p_threshold over the row.
//  - min-p: tau = max(tau, min_p) (w is p / p_max), the kept mass measured again if that moved it.
TSDI_ALWAYS_INLINE float filter_threshold(float* w, int64_t vocab, double total,
                                          const RowParams& rp, Workspace& ws, double& kept) {
  float tau = 0.0f;
  kept = -1.0;
  if (rp.top_k > 0 && rp.top_k < vocab) {
    const uint32_t end_bits = float_to_bits(1.0f) + 1u;
    int buckets = 0;
    const int shift = bracket_shift(0u, end_bits, buckets);
    bracket_histogram<true>(w, vocab, 0u, shift, buckets, ws.hist_mass);
    double count_above = 0.0;
    const double k = static_cast<double>(rp.top_k);
    const int bucket = crossing_bucket(ws.hist_mass, buckets, k, count_above);
    const uint32_t lo_bits = bucket < 0 ? 0u : static_cast<uint32_t>(bucket) << shift;
    float* cand = ws.candidates.data();
    double unused_above = 0.0;
    const int64_t n = collect_bracket(w, vocab, bits_to_float(lo_bits), bits_to_float(end_bits),
                                      cand, unused_above);
    // The select compacts its input: it works on a copy, the top-k list stays in `cand`.
    float* scratch = ws.candidates_next.data();
    for (int64_t j = 0; j < n; ++j) scratch[j] = cand[j];
    const float tau_k = kth_largest(scratch, n, lo_bits, end_bits, 0.0, k, ws);
    const uint32_t tau_k_bits = float_to_bits(tau_k);
    const int64_t n_k = keep_bits_in(cand, n, tau_k_bits, end_bits);
    const double total_k = mass_at_least(cand, 0, n_k, 0.0f);
    tau = tau_k;
    kept = total_k;
    if (rp.top_p < 1.0f) {
      if (rp.top_p <= 0.0f) {
        tau = 1.0f;
        kept = -1.0;
      } else {
        const double target = static_cast<double>(rp.top_p) * total_k;
        // On a copy again: min-p below may need the top-k list's mass once more.
        for (int64_t j = 0; j < n_k; ++j) scratch[j] = cand[j];
        tau = select_threshold(scratch, n_k, tau_k_bits, end_bits, 0.0, target, ws, kept);
        if (tau < tau_k) {  // rounding of S_k against the select's sums: the top-k set
          tau = tau_k;
          kept = total_k;
        }
      }
    }
    if (rp.min_p > tau) {
      tau = rp.min_p;
      kept = -1.0;
    }
    if (kept < 0.0) kept = mass_at_least(cand, 0, n_k, tau);  // the short list holds the kept set
    return tau;
  }
  tau = top_p_threshold(w, vocab, total, rp.top_p, ws, kept);
  if (rp.min_p > tau) {
    tau = rp.min_p;
    kept = -1.0;
  }
  if (kept < 0.0) kept = kept_mass(w, vocab, tau);
  return tau;
}

// Pass 4b: inverse CDF in vocabulary order: the first kept i whose running kept mass exceeds
// u * kept_total; the last kept token of non-zero weight if rounding leaves the running mass short.
// Whole blocks that end at or below the target are skipped by their kept mass, measured on the way
// (on average half the row is read).
TSDI_ALWAYS_INLINE int64_t draw_token(const float* w, int64_t vocab, float tau, double kept_total,
                                      double u) {
  const double target = u * kept_total;
  double running = 0.0;
  int64_t start = 0;
  for (; start < vocab; start += kBlock) {
    const int64_t stop = start + kBlock < vocab ? start + kBlock : vocab;
    const double block_mass = mass_at_least(w, start, stop, tau);
    if (running + block_mass > target) break;
    running += block_mass;
  }
  for (int64_t i = start; i < vocab; ++i) {
    if (w[i] >= tau) {
      running += w[i];
      if (running > target) return i;
    }
  }
  for (int64_t i = vocab - 1; i >= 0; --i) {
    if (w[i] >= tau && w[i] > 0.0f) return i;
  }
  return 0;
}

// Greedy rows (contract §4): pass 1 without its stores, in one read of the logits (and bias row):
// the status and the first index of max d. The maximum is reduced per block of kBlock values
// (vectorised, as in pass 1), remembering the first block that raised it; only that block is
// scanned again for the index. (A scan for the first index of the maximum after pass 1 would read
// the row a second time, all of it when the maximum is last; per-lane indices in the vector loop
// cost twice the maximum alone.)
template <typename In, bool kHasBias>
TSDI_ALWAYS_INLINE int32_t first_argmax(const In* __restrict__ logits,
                                        const float* __restrict__ bias, float alpha, int64_t vocab,
                                        int64_t& argmax) {
  float row_max = -kInf;
  int64_t best_block = 0;
  int32_t bad = 0;
  auto debiased = [&](int64_t i) {
    float v = load_as_float(logits[i]);
    if (kHasBias) v = v - alpha * bias[i];
    return v;
  };
  for (int64_t start = 0; start < vocab; start += kBlock) {
    const int64_t stop = start + kBlock < vocab ? start + kBlock : vocab;
    float block_max = -kInf;
#pragma omp simd reduction(max : block_max) reduction(| : bad)
    for (int64_t i = start; i < stop; ++i) {
      const float v = debiased(i);
      block_max = v > block_max ? v : block_max;
      bad |= !(v < kInf);  // NaN or +inf
    }
    if (block_max > row_max) {
      row_max = block_max;
      best_block = start;
    }
  }
  if (bad) return kRowNonFinite;
  if (row_max == -kInf) return kRowAllMasked;
  argmax = best_block;
  while (debiased(argmax) != row_max) ++argmax;  // the block holds it: no bound needed
  return kRowOk;
}

// Pass 1 for one sampled row; returns the status. `work` receives d.
template <typename In>
TSDI_ALWAYS_INLINE int32_t debias_row(const SamplingParams& p, int64_t b, const RowParams& rp,
                                      float* work, float& row_max) {
  const In* logits = static_cast<const In*>(p.logits) + b * p.logits_row_stride;
  if (rp.bias != nullptr) {
    return load_debiased<In, true>(logits, rp.bias, rp.alpha, p.vocab, work, row_max);
  }
  return load_debiased<In, false>(logits, nullptr, 0.0f, p.vocab, work, row_max);
}

// The status and first argmax of a greedy row (first_argmax over its logits and bias row).
template <typename In>
TSDI_ALWAYS_INLINE int32_t greedy_row(const SamplingParams& p, int64_t b, const RowParams& rp,
                                      int64_t& argmax) {
  const In* logits = static_cast<const In*>(p.logits) + b * p.logits_row_stride;
  if (rp.bias != nullptr) {
    return first_argmax<In, true>(logits, rp.bias, rp.alpha, p.vocab, argmax);
  }
  return first_argmax<In, false>(logits, nullptr, 0.0f, p.vocab, argmax);
}

template <typename In>
TSDI_ALWAYS_INLINE void sample_row(const SamplingParams& p, int64_t b, Workspace& ws) {
  const RowParams rp = resolve_row(p, b);
  float* work = ws.values.data();
  float row_max = 0.0f;
  const bool greedy = rp.temperature == 0.0f;
  int64_t argmax = 0;
  int32_t status = rp.status;
  if (status == kRowOk) {
    status = greedy ? greedy_row<In>(p, b, rp, argmax) : debias_row<In>(p, b, rp, work, row_max);
  }
  float* logprobs = p.logprobs != nullptr ? p.logprobs + 2 * b : nullptr;
  if (status != kRowOk) {
    p.tokens[b] = 0;
    p.valid[b] = false;
    if (logprobs != nullptr) logprobs[0] = logprobs[1] = __builtin_nanf("");
    return;
  }
  p.valid[b] = true;
  if (greedy) {
    p.tokens[b] = argmax;
    if (logprobs != nullptr) logprobs[0] = logprobs[1] = 0.0f;
    return;
  }
  const double total = exp_weights(work, p.vocab, row_max, 1.0f / rp.temperature);
  double kept = 0.0;
  const float tau = filter_threshold(work, p.vocab, total, rp, ws, kept);
  const double u = uniform_from_seed_offset(rp.seed, rp.offset);
  const int64_t token = draw_token(work, p.vocab, tau, kept, u);
  p.tokens[b] = token;
  if (logprobs != nullptr) {  // from the sums already made: no pass over the row
    const double log_w = std::log(static_cast<double>(work[token]));
    logprobs[0] = static_cast<float>(log_w - std::log(kept));
    logprobs[1] = static_cast<float>(log_w - std::log(total));
  }
}

template <typename In>
TSDI_ALWAYS_INLINE void probs_row(const SamplingParams& p, int64_t b, Workspace& ws) {
  const RowParams rp = resolve_row(p, b);
  float* out = p.probs + b * p.vocab;
  float row_max = 0.0f;
  const bool greedy = rp.temperature == 0.0f;
  int64_t argmax = 0;
  int32_t status = rp.status;
  if (status == kRowOk) {
    status = greedy ? greedy_row<In>(p, b, rp, argmax) : debias_row<In>(p, b, rp, out, row_max);
  }
  if (status != kRowOk) {
    for (int64_t i = 0; i < p.vocab; ++i) out[i] = 0.0f;
    return;
  }
  if (greedy) {
    for (int64_t i = 0; i < p.vocab; ++i) out[i] = 0.0f;
    out[argmax] = 1.0f;
    return;
  }
  const double total = exp_weights(out, p.vocab, row_max, 1.0f / rp.temperature);
  double kept = 0.0;
  const float tau = filter_threshold(out, p.vocab, total, rp, ws, kept);
  const float scale = static_cast<float>(1.0 / kept);
  for (int64_t i = 0; i < p.vocab; ++i) out[i] = out[i] >= tau ? out[i] * scale : 0.0f;
}

}  // namespace detail
}  // namespace cpu
}  // namespace tsdi
