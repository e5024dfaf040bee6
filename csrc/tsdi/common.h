// Torch-free definitions shared by the CPU and CUDA sampling kernels: the parameter block of one
// call, per-row parameter resolution, and the counter-based random number generator.
//
// Nothing in this header includes torch, ATen or c10, so it compiles with a bare host compiler and
// with nvcc on machines whose torch has no CUDA headers.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TSDI_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TSDI_HOST_DEVICE inline
#endif

namespace tsdi {

// How the bias table is indexed.
enum class BiasMode : int32_t {
  kNone = 0,    // no bias
  kVector = 1,  // bias is [V]: the same row for every batch row
  kTable = 2,   // bias is [L, V]: row positions[b] for batch row b, none when positions[b] >= L
};

// Why a row could not be sampled (0 = it could). Kept as a small code so a strict caller can name
// the reason; the public API returns only `valid = (status == 0)`.
enum RowStatus : int32_t {
  kRowOk = 0,
  kRowNonFinite = 1,       // a debiased logit is NaN or +inf
  kRowAllMasked = 2,       // every debiased logit is -inf
  kRowBadTemperature = 3,  // per-row temperature is negative or NaN
  kRowBadTopP = 4,         // per-row top_p is NaN or outside [0, 1]
  kRowBadPosition = 5,     // per-row position is negative (bias table mode)
  kRowBadTopK = 6,         // per-row top_k is negative
  kRowBadMinP = 7,         // per-row min_p is NaN or outside [0, 1]
};

// A per-row parameter: `values[b]` when the caller passed a [batch] array, else `scalar`, so a
// Python scalar never needs a [B] tensor.
template <typename T>
struct RowArg {
  const T* values = nullptr;
  T scalar;
  TSDI_HOST_DEVICE T at(int64_t b) const { return values != nullptr ? values[b] : scalar; }
};

// The per-row parameters, in the order the ops take them: X(name, element type, default). This
// list is their one definition: SamplingParams gets a RowArg member per line, the glue checks and
// fills them from the op's (row_tensors, row_floats, row_ints) lists in this order
// (csrc/sampling_args.h), and tsdi_ext/ops/params.py lists the same names (compared at import).
// What a parameter means is in docs/contract.md; a new one costs a line here, its reading in
// resolve_row, and its use in the kernels.
#define TSDI_ROW_PARAMS(X)    \
  X(alpha, float, 1.0f)       \
  X(temperature, float, 1.0f) \
  X(top_p, float, 1.0f)       \
  X(top_k, int64_t, 0)        \
  X(min_p, float, 0.0f)       \
  X(seed, int64_t, 0)         \
  X(offset, int64_t, 0)

// Every argument of one sampling call as raw pointers and scalars.
struct SamplingParams {
  const void* logits = nullptr;  // [batch, vocab], element (b, i) at logits[b * row_stride + i]
  int64_t batch = 0;
  int64_t vocab = 0;
  int64_t logits_row_stride = 0;  // in elements

  const float* bias = nullptr;  // [vocab] or [bias_rows, vocab], contiguous
  int64_t bias_rows = 0;
  BiasMode bias_mode = BiasMode::kNone;
  const int64_t* positions = nullptr;  // [batch], required in kTable mode

#define TSDI_ROW_PARAM_MEMBER(name, type, default_value) RowArg<type> name{nullptr, default_value};
  TSDI_ROW_PARAMS(TSDI_ROW_PARAM_MEMBER)
#undef TSDI_ROW_PARAM_MEMBER

  // Outputs. `tokens` and `valid` are set by the sampling kernels, `probs` ([batch, vocab],
  // contiguous) by the probability kernels; a kernel leaves the outputs it does not own alone.
  int64_t* tokens = nullptr;
  bool* valid = nullptr;
  // Optional, with tokens ([batch, 2], contiguous): per row, the drawn token's log-probability
  // under the final distribution (w / K) and under the unfiltered tempered one (w / S); 0 for
  // greedy rows, NaN for invalid ones (docs/contract.md §7).
  float* logprobs = nullptr;
  float* probs = nullptr;
};

// The parameters of one row, resolved from pointers or scalars.
struct RowParams {
  const float* bias;  // [vocab] bias row to subtract, or nullptr
  float alpha;
  float temperature;
  float top_p;
  int64_t top_k;  // 0: off
  float min_p;    // 0: off
  uint64_t seed;
  uint64_t offset;
  int32_t status;  // kRowOk, or a parameter error code
};

TSDI_HOST_DEVICE RowParams resolve_row(const SamplingParams& p, int64_t b) {
  RowParams r;
  r.alpha = p.alpha.at(b);
  r.temperature = p.temperature.at(b);
  r.top_p = p.top_p.at(b);
  r.top_k = p.top_k.at(b);
  r.min_p = p.min_p.at(b);
  r.seed = static_cast<uint64_t>(p.seed.at(b));
  r.offset = static_cast<uint64_t>(p.offset.at(b));
  r.status = kRowOk;
  r.bias = nullptr;
  if (p.bias_mode == BiasMode::kVector) {
    r.bias = p.bias;
  } else if (p.bias_mode == BiasMode::kTable) {
    const int64_t pos = p.positions[b];
    if (pos < 0) {
      r.status = kRowBadPosition;
    } else if (pos < p.bias_rows) {
      r.bias = p.bias + pos * p.vocab;
    }
  }
  // `!(t >= 0)` is true for negative and NaN temperatures alike.
  if (!(r.temperature >= 0.0f)) r.status = kRowBadTemperature;
  if (r.top_k < 0) r.status = kRowBadTopK;
  if (!(r.min_p >= 0.0f && r.min_p <= 1.0f)) r.status = kRowBadMinP;  // NaN too
  if (!(r.top_p >= 0.0f && r.top_p <= 1.0f)) r.status = kRowBadTopP;  // NaN too
  return r;
}

// ---------------------------------------------------------------------------------------------
// The weights' exponential (docs/contract.md §5), the one definition every backend evaluates:
// the fused CPU kernel's every instruction-set path and the CUDA kernel call this function, and
// the reference (tsdi_ext/ops/reference.py, exp_nonpositive) performs the same float32 operations
// elementwise, so that all of them produce the same bits. Each step is one IEEE float32 operation
// rounded to nearest: Cody-Waite reduction x = n ln2 + r with a two-constant split of ln2 (the
// first has 9 significant bits, so n * kLn2Hi and x - n * kLn2Hi are exact), Cephes' degree-6
// polynomial for exp(r) evaluated by Horner's rule, and 2^n applied by adding n to the exponent
// bits. No fused multiply-add: the host builds pass -ffp-contract=off, CUDA rounds every product
// and sum explicitly (__fmul_rn, __fadd_rn), and torch has no fused elementwise operation to use.
// Accuracy: at most 0.992 ulp from exp over a dense sweep of [-86, 0]
// (python_tests/ops/test_exp.py). Returns exactly 1 at x == 0 and 0 below -86 (also for x = -inf),
// where the true value (< 5e-38) carries no mass float32 can use, so no subnormal is ever built.
// ---------------------------------------------------------------------------------------------
#if defined(__CUDA_ARCH__)
#define TSDI_FMUL(a, b) __fmul_rn(a, b)
#define TSDI_FADD(a, b) __fadd_rn(a, b)
#define TSDI_FSUB(a, b) __fsub_rn(a, b)
#define TSDI_EXP_INLINE __device__ __forceinline__
TSDI_EXP_INLINE uint32_t exp_float_bits(float f) { return __float_as_uint(f); }
TSDI_EXP_INLINE float exp_bits_float(uint32_t u) { return __uint_as_float(u); }
#else
#define TSDI_FMUL(a, b) ((a) * (b))
#define TSDI_FADD(a, b) ((a) + (b))
#define TSDI_FSUB(a, b) ((a) - (b))
#if defined(__CUDACC__)
#define TSDI_EXP_INLINE __host__ __device__ __forceinline__
#else
#define TSDI_EXP_INLINE inline __attribute__((always_inline))
#endif
TSDI_EXP_INLINE uint32_t exp_float_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return u;
}
TSDI_EXP_INLINE float exp_bits_float(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}
#endif

// The constants (scalars, not an array: device code may read a host constexpr scalar only).
constexpr float kExpLowest = -86.0f;
constexpr float kExpLog2e = 1.44269504088896341f;
constexpr float kExpRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
constexpr uint32_t kExpRoundBits = 0x4B400000u;
constexpr float kExpLn2Hi = 0.693359375f;
constexpr float kExpLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;

TSDI_EXP_INLINE float exp_nonpositive(float x) {
  const float xc = x < kExpLowest ? kExpLowest : x;  // -inf too; NaN never reaches here
  float n = TSDI_FADD(TSDI_FMUL(xc, kExpLog2e), kExpRound);
  const int32_t n_int = static_cast<int32_t>(exp_float_bits(n) - kExpRoundBits);
  n = TSDI_FSUB(n, kExpRound);
  float r = TSDI_FSUB(xc, TSDI_FMUL(n, kExpLn2Hi));
  r = TSDI_FSUB(r, TSDI_FMUL(n, kExpLn2Lo));
  float y = kExpP0;
  y = TSDI_FADD(TSDI_FMUL(y, r), kExpP1);
  y = TSDI_FADD(TSDI_FMUL(y, r), kExpP2);
  y = TSDI_FADD(TSDI_FMUL(y, r), kExpP3);
  y = TSDI_FADD(TSDI_FMUL(y, r), kExpP4);
  y = TSDI_FADD(TSDI_FMUL(y, r), kExpP5);
  y = TSDI_FADD(TSDI_FADD(TSDI_FMUL(TSDI_FMUL(y, r), r), r), 1.0f);
  // n in [-124, 0] and y in [0.7, 1.5): the sum of the bits is a normal float's.
  const float scaled = exp_bits_float(exp_float_bits(y) + (static_cast<uint32_t>(n_int) << 23));
  return x < kExpLowest ? 0.0f : scaled;
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11).
// The uniform of a row is a pure function of (seed, offset):
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (offset & 0xffffffff, offset >> 32, 0, 0)
//   u       = philox4x32_10(counter, key)[0] / 2^32          in [0, 1), 2^-32 resolution
// Both seed and offset are read as unsigned 64-bit integers (two's complement for negatives).
// ---------------------------------------------------------------------------------------------
struct Philox4x32 {
  uint32_t v[4];
};

TSDI_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

TSDI_HOST_DEVICE Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, ctr.v[0], hi0, lo0);
    philox_mulhilo(kM1, ctr.v[2], hi1, lo1);
    Philox4x32 next;
    next.v[0] = hi1 ^ ctr.v[1] ^ k0;
    next.v[1] = lo1;
    next.v[2] = hi0 ^ ctr.v[3] ^ k1;
    next.v[3] = lo0;
    ctr = next;
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

TSDI_HOST_DEVICE double uniform_from_seed_offset(uint64_t seed, uint64_t offset) {
  Philox4x32 ctr;
  ctr.v[0] = static_cast<uint32_t>(offset);
  ctr.v[1] = static_cast<uint32_t>(offset >> 32);
  ctr.v[2] = 0u;
  ctr.v[3] = 0u;
  const Philox4x32 out =
      philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return static_cast<double>(out.v[0]) * (1.0 / 4294967296.0);
}

}  // namespace tsdi
