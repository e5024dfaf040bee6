// The CUDA sampling kernel, run on the CPU by tests/simt, against the fused CPU kernel (itself
// checked against the PyTorch reference by the Python suite): same valid flags, same tokens for the
// same (seed, offset), probabilities bit-identical to the CPU's (every instruction-set path of it:
// TSDI_EXT_CPU_ISA picks one), over dtypes, odd and large V, batch sizes that select every
// cluster size, per-row parameters, bias vector and table, strided and misaligned rows, and every
// invalid-row kind. Every case runs with threads in order, shuffled and run-ahead (see
// simt::Schedule); launch-time errors, kernel attributes set once per device (and again after a
// context loses them) and the barriers per row are checked too.
//
// Built by CMake with the simt headers first on the include path (never nvcc): CI has no GPU, so
// this is where the kernel's control flow, barriers, cluster exchanges and index arithmetic run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "simt.h"
#include "tsdi/common.h"
#include "tsdi/cpu/sampling_kernel.h"
#include "tsdi/cuda/sampling_kernel.cuh"
#include "tsdi/cuda/sampling_split_kernel.cuh"

namespace {

using tsdi::cpu::LogitsDType;

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    ++failures;
  }
}

uint16_t to_bfloat16_bits(float f) {  // round to nearest even (inputs are never NaN here)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
uint16_t to_half_bits(float f) {
  const _Float16 h = static_cast<_Float16>(f);  // round to nearest even
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

// A buffer whose last byte touches an inaccessible page (simt::GuardedBuffer), filled from a
// host vector.
template <typename T>
struct Device {
  explicit Device(const std::vector<T>& host) : buffer(host.size() * sizeof(T)) {
    if (!host.empty()) std::memcpy(buffer.data(), host.data(), host.size() * sizeof(T));
  }
  T* get() const { return static_cast<T*>(buffer.data()); }
  std::vector<T> read() const {
    std::vector<T> out(buffer.size() / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), buffer.data(), buffer.size());
    return out;
  }
  simt::GuardedBuffer buffer;
};

// One call's inputs. Per-row vectors left empty mean "use the scalar".
struct Call {
  std::string name;
  LogitsDType dtype = LogitsDType::kFloat32;
  int64_t batch = 1, vocab = 1, row_stride = 0, element_offset = 0;
  std::vector<float> logits;  // [batch, vocab] values (rounded to dtype on upload)
  std::vector<float> bias;    // [vocab] or [bias_rows, vocab]
  int64_t bias_rows = 0;
  tsdi::BiasMode bias_mode = tsdi::BiasMode::kNone;
  std::vector<int64_t> positions;
  std::vector<float> alpha, temperature, top_p, min_p;
  std::vector<int64_t> top_k, seed, offset;
  float alpha_value = 1.0f, temperature_value = 1.0f, top_p_value = 1.0f, min_p_value = 0.0f;
  int64_t top_k_value = 0, seed_value = 0, offset_value = 0;
};

struct Outputs {
  std::vector<int64_t> tokens;
  std::vector<uint8_t> valid;
  std::vector<float> probs;
  std::vector<float> logprobs;  // [batch, 2]
  int sample_error = 0, probs_error = 0;
};

// Uploads `call`, runs `run(params)` for tokens and for probabilities, returns what it wrote.
template <typename Run>
Outputs execute(const Call& c, Run run) {
  const int64_t stride = c.row_stride > 0 ? c.row_stride : c.vocab;
  const int64_t elements = c.batch > 0 ? c.element_offset + (c.batch - 1) * stride + c.vocab : 0;
  std::vector<float> laid_out(static_cast<size_t>(elements), -3.0e38f);  // gaps: never read
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < c.vocab; ++i) {
      laid_out[c.element_offset + b * stride + i] = c.logits[b * c.vocab + i];
    }
  }
  // Rows start where the layout puts them; the buffer ends on a guard page, so the last row's last
  // element is the last readable byte.
  std::vector<uint16_t> narrow(laid_out.size());
  for (size_t i = 0; i < laid_out.size(); ++i) {
    narrow[i] = c.dtype == LogitsDType::kFloat16 ? to_half_bits(laid_out[i])
                                                 : to_bfloat16_bits(laid_out[i]);
  }
  Device<float> logits32(c.dtype == LogitsDType::kFloat32 ? laid_out : std::vector<float>());
  Device<uint16_t> logits16(c.dtype == LogitsDType::kFloat32 ? std::vector<uint16_t>() : narrow);
  Device<float> bias(c.bias);
  Device<int64_t> positions(c.positions);
  Device<float> alpha(c.alpha), temperature(c.temperature), top_p(c.top_p), min_p(c.min_p);
  Device<int64_t> top_k(c.top_k), seed(c.seed), offset(c.offset);
  // Outputs start poisoned, so an unwritten row shows.
  Device<int64_t> tokens(std::vector<int64_t>(c.batch, -7));
  Device<uint8_t> valid(std::vector<uint8_t>(c.batch, 0x5a));
  Device<float> probs(std::vector<float>(c.batch * c.vocab, NAN));
  Device<float> logprobs(std::vector<float>(c.batch * 2, -7.0f));

  tsdi::SamplingParams p;
  p.logits = c.dtype == LogitsDType::kFloat32
                 ? static_cast<const void*>(logits32.get() + c.element_offset)
                 : static_cast<const void*>(logits16.get() + c.element_offset);
  p.batch = c.batch;
  p.vocab = c.vocab;
  p.logits_row_stride = stride;
  p.bias = c.bias.empty() ? nullptr : bias.get();
  p.bias_rows = c.bias_rows;
  p.bias_mode = c.bias_mode;
  p.positions = c.positions.empty() ? nullptr : positions.get();
  p.alpha = {c.alpha.empty() ? nullptr : alpha.get(), c.alpha_value};
  p.temperature = {c.temperature.empty() ? nullptr : temperature.get(), c.temperature_value};
  p.top_p = {c.top_p.empty() ? nullptr : top_p.get(), c.top_p_value};
  p.top_k = {c.top_k.empty() ? nullptr : top_k.get(), c.top_k_value};
  p.min_p = {c.min_p.empty() ? nullptr : min_p.get(), c.min_p_value};
  p.seed = {c.seed.empty() ? nullptr : seed.get(), c.seed_value};
  p.offset = {c.offset.empty() ? nullptr : offset.get(), c.offset_value};

  Outputs out;
  tsdi::SamplingParams sample = p;
  sample.tokens = tokens.get();
  sample.valid = reinterpret_cast<bool*>(valid.get());
  sample.logprobs = logprobs.get();
  out.sample_error = run(sample, false);
  tsdi::SamplingParams with_probs = p;
  with_probs.probs = probs.get();
  out.probs_error = run(with_probs, true);
  out.tokens = tokens.read();
  out.valid = valid.read();
  out.probs = probs.read();
  out.logprobs = logprobs.read();
  return out;
}

// Which CUDA path the checks run: the cluster kernel (sm_90+) or the split chain (sm_80+).
enum class Path { kCluster, kSplit };
Path path = Path::kCluster;
const char* path_name() { return path == Path::kCluster ? "cluster kernel" : "split chain"; }

// The split chain's plan for `p` on the emulated device.
tsdi::cuda::SplitPlan split_plan(const tsdi::SamplingParams& p, bool probs) {
  tsdi::cuda::SplitPlan plan;
  if (tsdi::cuda::plan_split(p, probs, simt::device().multiprocessors, plan) != cudaSuccess) {
    plan.blocks_per_row = -1;
  }
  return plan;
}

// Launches the split chain with a fresh workspace whose bytes are poisoned (0xFF: NaN, -1), so a
// launch that reads a field the launch before it did not write shows; checks the chain's length.
template <typename T, bool kProbs>
int run_split(const tsdi::SamplingParams& p) {
  if (p.batch == 0) return tsdi::cuda::launch_sampling_split<T, kProbs>(p, {}, nullptr, 0, nullptr);
  const tsdi::cuda::SplitPlan plan = split_plan(p, kProbs);
  if (plan.blocks_per_row < 0) return cudaErrorInvalidValue;
  simt::GuardedBuffer workspace(plan.workspace_bytes);
  std::memset(workspace.data(), 0xFF, workspace.size());
  const int64_t before = simt::launch_count();
  const int err = tsdi::cuda::launch_sampling_split<T, kProbs>(p, plan, workspace.data(),
                                                               workspace.size(), nullptr);
  expect(err != cudaSuccess || simt::launch_count() - before == plan.launches,
         "the split chain makes the launches it plans");
  return err;
}

int run_cuda(LogitsDType dtype, const tsdi::SamplingParams& p, bool probs) {
  namespace k = tsdi::cuda;
  if (path == Path::kSplit) {
    switch (dtype) {
      case LogitsDType::kFloat32:
        return probs ? run_split<float, true>(p) : run_split<float, false>(p);
      case LogitsDType::kFloat16:
        return probs ? run_split<__half, true>(p) : run_split<__half, false>(p);
      case LogitsDType::kBFloat16:
        return probs ? run_split<__nv_bfloat16, true>(p) : run_split<__nv_bfloat16, false>(p);
    }
    return -1;
  }
  switch (dtype) {
    case LogitsDType::kFloat32:
      return probs ? k::launch_sampling<float, true>(p, nullptr)
                   : k::launch_sampling<float, false>(p, nullptr);
    case LogitsDType::kFloat16:
      return probs ? k::launch_sampling<__half, true>(p, nullptr)
                   : k::launch_sampling<__half, false>(p, nullptr);
    case LogitsDType::kBFloat16:
      return probs ? k::launch_sampling<__nv_bfloat16, true>(p, nullptr)
                   : k::launch_sampling<__nv_bfloat16, false>(p, nullptr);
  }
  return -1;
}

Outputs cuda_outputs(const Call& c) {
  return execute(
      c, [&](const tsdi::SamplingParams& p, bool probs) { return run_cuda(c.dtype, p, probs); });
}

Outputs cpu_outputs(const Call& c) {
  return execute(c, [&](const tsdi::SamplingParams& p, bool probs) {
    tsdi::cpu::Workspace workspace;
    if (probs) {
      tsdi::cpu::probs_rows(c.dtype, p, 0, p.batch, workspace);
    } else {
      tsdi::cpu::sample_rows(c.dtype, p, 0, p.batch, workspace);
    }
    return 0;
  });
}

// The split chain's blocks per row for this call on the emulated device.
int split_blocks_for(const Call& c) {
  tsdi::SamplingParams p;
  p.batch = c.batch;
  p.vocab = c.vocab;
  return split_plan(p, false).blocks_per_row;
}

// The CUDA kernel's cluster size for this call on the emulated device (for the log).
int cluster_for(const Call& c) {
  int64_t budget = 0;
  if (tsdi::cuda::slice_smem_budget(0, budget) != cudaSuccess) return -1;
  tsdi::cuda::LaunchPlan plan;
  if (tsdi::cuda::plan_launch(c.batch, c.vocab, budget, plan) != cudaSuccess) return -1;
  return plan.cluster;
}

// The CUDA kernel and every path of the CPU kernel compute their weights with the same exp
// (tsdi::exp_nonpositive, no FMA), so every probability must be bit-identical on every path (a
// one-ulp change to a coefficient, or an FMA, shows).
bool exact_probs() { return true; }

// CUDA (emulated) against the CPU kernel's outputs for the same call; returns the CUDA outputs
// for further checks.
Outputs check_against(const Call& c, const Outputs& cpu) {
  // The name first, so that an abort (simt reports deadlocks and faults that way) names its case.
  std::printf("  %-44s B=%-4lld V=%-7lld %s %2d", c.name.c_str(), static_cast<long long>(c.batch),
              static_cast<long long>(c.vocab), path == Path::kCluster ? "cluster" : "blocks ",
              path == Path::kCluster ? cluster_for(c) : split_blocks_for(c));
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  const Outputs cuda = cuda_outputs(c);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string where = c.name + ": ";
  expect(cuda.sample_error == 0 && cuda.probs_error == 0,
         where + "launch failed (" + std::to_string(cuda.sample_error) + ", " +
             std::to_string(cuda.probs_error) + ")");
  const bool exact = exact_probs();
  int token_mismatches = 0, valid_mismatches = 0, out_of_range = 0, prob_rows_off = 0;
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t token = cuda.tokens[b];
    out_of_range += (token < 0 || token >= c.vocab) ? 1 : 0;
    valid_mismatches += (cuda.valid[b] != cpu.valid[b] || cuda.valid[b] > 1) ? 1 : 0;
    token_mismatches += token != cpu.tokens[b] ? 1 : 0;
    if (token != cpu.tokens[b] && token_mismatches <= 3) {
      std::fprintf(stderr, "  %s row %lld: CUDA token %lld, CPU token %lld\n", c.name.c_str(),
                   static_cast<long long>(b), static_cast<long long>(token),
                   static_cast<long long>(cpu.tokens[b]));
    }
    for (int k = 0; k < 2; ++k) {  // log-probabilities: the same sums up to their order
      const float got = cuda.logprobs[2 * b + k], want = cpu.logprobs[2 * b + k];
      const bool same = std::isnan(want) ? std::isnan(got) && !cpu.valid[b]
                                         : std::fabs(got - want) <= 1e-6f + 1e-6f * std::fabs(want);
      expect(same && (std::isnan(want) || want <= 0.0f),
             where + "row " + std::to_string(b) + " log-probability " + std::to_string(k) +
                 ": CUDA " + std::to_string(got) + ", CPU " + std::to_string(want));
    }
    bool row_ok = true;
    double row_sum = 0.0;
    for (int64_t i = 0; i < c.vocab; ++i) {
      const float got = cuda.probs[b * c.vocab + i], want = cpu.probs[b * c.vocab + i];
      row_ok &= std::isfinite(got) && (exact ? got == want
                                             : (got == 0.0f) == (want == 0.0f) &&
                                                   std::fabs(got - want) <= 1e-6f + 1e-5f * want);
      row_sum += got;
    }
    if (cpu.valid[b]) row_ok &= std::fabs(row_sum - 1.0) < 1e-4;
    if (!row_ok && prob_rows_off < 3) {
      std::fprintf(stderr, "  %s row %lld: probabilities differ from the CPU's\n", c.name.c_str(),
                   static_cast<long long>(b));
    }
    prob_rows_off += row_ok ? 0 : 1;
  }
  expect(out_of_range == 0, where + "tokens in [0, V)");
  expect(valid_mismatches == 0, where + "valid flags equal the CPU's");
  expect(token_mismatches == 0,
         where + std::to_string(token_mismatches) + " tokens differ from the CPU's");
  expect(prob_rows_off == 0,
         where + std::to_string(prob_rows_off) + " probability rows differ from the CPU's");
  std::printf("  %6.2f s\n", seconds);
  return cuda;
}

Outputs check_against_cpu(const Call& c) { return check_against(c, cpu_outputs(c)); }

std::vector<float> normal_logits(int64_t batch, int64_t vocab, float scale, std::mt19937& gen) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(batch * vocab);
  for (float& v : x) v = normal(gen) * scale;
  return x;
}

Call basic(std::string name, LogitsDType dtype, int64_t batch, int64_t vocab, float scale,
           std::mt19937& gen) {
  Call c;
  c.name = std::move(name);
  c.dtype = dtype;
  c.batch = batch;
  c.vocab = vocab;
  c.logits = normal_logits(batch, vocab, scale, gen);
  c.top_p_value = 0.9f;
  c.seed_value = 1234;
  c.offset_value = 5;
  return c;
}

std::vector<Call> agreement_cases() {
  std::mt19937 gen(11);
  std::vector<Call> calls;
  {  // tiny V, per-row temperatures (greedy included) and top_p (0 and 1 included), bias vector
    Call c = basic("f32 V=17 per-row params, bias vector", LogitsDType::kFloat32, 6, 17, 2.0f, gen);
    c.temperature = {1.0f, 0.0f, 0.7f, 1.5f, 1e-3f, 1e30f};
    c.top_p = {0.9f, 0.5f, 0.0f, 1.0f, 0.3f, 0.999f};
    c.alpha = {1.0f, 0.5f, -1.0f, 2.0f, 0.0f, 1.0f};
    c.bias = normal_logits(1, 17, 1.0f, gen);
    c.bias_mode = tsdi::BiasMode::kVector;
    c.seed = {1, 2, 3, 4, 5, -6};
    c.offset = {0, 1, 2, 3, 4, 1LL << 40};
    calls.push_back(c);
  }
  {  // V = 1
    Call c = basic("f32 V=1", LogitsDType::kFloat32, 3, 1, 1.0f, gen);
    c.temperature = {1.0f, 0.0f, 2.0f};
    calls.push_back(c);
  }
  {  // odd V in half precision, bias table with positions past its end
    Call c = basic("f16 V=1019 bias table", LogitsDType::kFloat16, 7, 1019, 3.0f, gen);
    c.bias_rows = 3;
    c.bias = normal_logits(3, 1019, 1.5f, gen);
    c.bias_mode = tsdi::BiasMode::kTable;
    c.positions = {0, 1, 2, 3, 100, 0, 2};
    c.offset = {0, 1, 2, 3, 4, 5, 6};
    calls.push_back(c);
  }
  {  // strided rows whose first element is not 16-byte aligned: scalar heads and tails
    Call c = basic("bf16 V=32000 strided, misaligned", LogitsDType::kBFloat16, 3, 32000, 2.0f, gen);
    c.row_stride = 32003;
    c.element_offset = 1;
    c.top_p = {0.95f, 0.5f, 0.1f};
    calls.push_back(c);
  }
  {  // the cumulative mass meets top_p * S exactly: w = [1, 0.5, 0.5] (exp(-ln 2) is exactly 0.5
     // in the kernels' polynomial), S = 2, top_p = 0.5: the nucleus is {0}; a hair more takes all.
    Call c;
    c.name = "f32 V=3 exact boundary";
    c.batch = 2;
    c.vocab = 3;
    const float minus_ln2 = -0.693147182464599609375f;
    c.logits = {0.0f, minus_ln2, minus_ln2, 0.0f, minus_ln2, minus_ln2};
    c.top_p = {0.5f, 0.50000006f};
    calls.push_back(c);
  }
  {  // rows on a 0.05 lattice (V <= 20, zeros as -inf) with top_p on the lattice too, so a
     // nucleus often meets top_p exactly in real arithmetic, and transformers' top-p example
     // ([0.3, 0.1, 0.1, 0.5], top_p 0.8: two tokens kept) as row 0. Every float64 sum is exact
     // on such rows, so everything must equal the CPU's whatever the summation order.
    Call c;
    c.name = "f32 V=20 0.05-lattice rows";
    c.batch = 300;
    c.vocab = 20;
    c.logits.assign(c.batch * c.vocab, -INFINITY);
    std::uniform_int_distribution<int> width_of(2, 20), cut(0, 20), lattice(1, 19), t_pick(0, 2);
    const float temperatures[3] = {1.0f, 0.5f, 2.0f};
    for (int64_t b = 0; b < c.batch; ++b) {
      std::vector<int> units;
      if (b == 0) {
        units = {6, 2, 2, 10};
      } else {
        const int width = width_of(gen);
        std::vector<int> cuts(width - 1);
        for (int& k : cuts) k = cut(gen);
        std::sort(cuts.begin(), cuts.end());
        int last = 0;
        for (int k : cuts) {
          units.push_back(k - last);
          last = k;
        }
        units.push_back(20 - last);
      }
      for (size_t i = 0; i < units.size(); ++i) {
        c.logits[b * c.vocab + i] = static_cast<float>(std::log(units[i] * 0.05));
      }
      c.top_p.push_back(b == 0 ? 0.8f : static_cast<float>(lattice(gen) * 0.05));
      c.temperature.push_back(b == 0 ? 1.0f : temperatures[t_pick(gen)]);
      c.seed.push_back(b);
      c.offset.push_back(b * 7919);
    }
    calls.push_back(c);
  }
  {  // top-k (per row: off, 1, small, ties at the k-th value, >= V, invalid), with top-p and min-p
    Call c = basic("f32 V=3001 top-k, min-p, top-p", LogitsDType::kFloat32, 8, 3001, 2.0f, gen);
    for (int64_t i = 0; i < 3001; ++i) c.logits[3 * 3001 + i] = static_cast<float>(i % 7);
    c.top_k = {0, 1, 50, 900, 3001, 5000, 50, -1};
    c.top_p = {1.0f, 0.9f, 0.8f, 0.5f, 1.0f, 0.95f, 0.0f, 0.9f};
    c.min_p = {0.05f, 0.0f, 0.0f, 0.3f, 0.2f, 0.0f, 0.0f, 0.0f};
    c.seed = {1, 2, 3, 4, 5, 6, 7, 8};
    calls.push_back(c);
  }
  {  // a long top-k list (radix rounds, not only the sort) with min-p above the nucleus threshold
    Call c =
        basic("f32 V=20000 top-k 2000, min-p binding", LogitsDType::kFloat32, 2, 20000, 1.0f, gen);
    c.top_k_value = 2000;
    c.top_p = {0.99f, 1.0f};
    c.min_p_value = 0.1f;
    calls.push_back(c);
  }
  {  // top-k and min-p scalars on a row long enough for a cluster of 8
    Call c = basic("bf16 V=50000 top-k 50 min-p 0.05", LogitsDType::kBFloat16, 3, 50000, 3.0f, gen);
    c.top_k_value = 50;
    c.min_p_value = 0.05f;
    c.top_p_value = 0.9f;
    calls.push_back(c);
  }
  {  // ties at the maximum: greedy takes the first; sampling keeps every tie in the nucleus
    Call c = basic("f32 V=5000 ties", LogitsDType::kFloat32, 4, 5000, 1.0f, gen);
    for (int64_t b = 0; b < 4; ++b) {
      for (int64_t i = 0; i < 5000; ++i)
        c.logits[b * 5000 + i] = static_cast<float>((i * 7 + b) % 5);
    }
    c.temperature = {0.0f, 1.0f, 0.5f, 0.0f};
    c.top_p = {0.5f, 0.5f, 0.25f, 1.0f};
    calls.push_back(c);
  }
  {  // every kind of invalid row next to valid ones
    Call c = basic("f32 V=4099 invalid rows", LogitsDType::kFloat32, 9, 4099, 1.0f, gen);
    const int64_t v = 4099;
    c.logits[0 * v + 17] = NAN;
    c.logits[1 * v + 4098] = INFINITY;
    for (int64_t i = 0; i < v; ++i) c.logits[2 * v + i] = -INFINITY;
    for (int64_t i = 0; i < v; ++i) c.logits[3 * v + i] = i == 4000 ? 0.0f : -INFINITY;  // valid
    c.temperature = {1.0f, 1.0f, 1.0f, 1.0f, -1.0f, NAN, 1.0f, 1.0f, 0.0f};
    c.top_p = {0.9f, 0.9f, 0.9f, 0.9f, 0.9f, 0.9f, NAN, 0.9f, 0.9f};
    c.bias_rows = 1;
    c.bias = normal_logits(1, v, 1.0f, gen);
    c.bias_mode = tsdi::BiasMode::kTable;
    c.positions = {0, 0, 0, 0, 0, 0, 0, -1, 0};
    c.bias[5] = INFINITY;  // +inf bias with alpha 0 gives NaN (0 * inf): invalid
    c.alpha = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f};
    calls.push_back(c);
  }
  {  // cluster 8 (B <= 16), the largest benchmark vocabulary that is not Gemma's
    Call c = basic("f32 V=128256 peaked and flat", LogitsDType::kFloat32, 2, 128256, 1.0f, gen);
    for (int64_t i = 0; i < 128256; ++i) c.logits[i] *= 6.0f;  // row 0 peaked, row 1 flat
    c.top_p = {0.9f, 0.99f};
    calls.push_back(c);
  }
  {  // Gemma's vocabulary in bfloat16
    Call c = basic("bf16 V=262144", LogitsDType::kBFloat16, 1, 262144, 3.0f, gen);
    calls.push_back(c);
  }
  {  // cluster 4 (16 < B <= 64)
    Call c = basic("f16 V=16384 B=17", LogitsDType::kFloat16, 17, 16384, 2.5f, gen);
    for (int64_t b = 0; b < 17; ++b) c.offset.push_back(b * 3);
    calls.push_back(c);
  }
  {  // cluster 1 (B > 128), many draws from one distribution
    Call c = basic("f32 V=1019 B=129 draws", LogitsDType::kFloat32, 129, 1019, 1.0f, gen);
    for (int64_t b = 1; b < 129; ++b) {
      std::copy(c.logits.begin(), c.logits.begin() + 1019, c.logits.begin() + b * 1019);
    }
    for (int64_t b = 0; b < 129; ++b) c.offset.push_back(b);
    c.top_p_value = 0.8f;
    calls.push_back(c);
  }
  return calls;
}

// Random calls: dtype, B (every cluster size), V (1 to 2^17, log-uniform), row stride and
// misalignment, logit scale, masked (-inf) entries, scalar or per-row parameters, bias modes.
std::vector<Call> fuzz_cases(int count) {
  std::mt19937 gen(29);
  auto uniform = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(gen);
  };
  auto pick = [&](int n) { return static_cast<int>(gen() % static_cast<unsigned>(n)); };
  const int64_t batches[] = {1, 2, 5, 16, 17, 40, 64, 65, 130};
  std::vector<Call> calls;
  for (int k = 0; k < count; ++k) {
    const int64_t vocab =
        std::max<int64_t>(1, static_cast<int64_t>(std::exp(uniform(0.0, std::log(131072.0)))));
    int64_t batch = batches[pick(9)];
    if (vocab > 20000) batch = std::min<int64_t>(batch, 17);
    const LogitsDType dtype = static_cast<LogitsDType>(pick(3));
    Call c = basic("fuzz " + std::to_string(k), dtype, batch, vocab,
                   static_cast<float>(uniform(0.1, 8.0)), gen);
    c.row_stride = vocab + pick(10);
    c.element_offset = pick(8);
    for (float& x : c.logits) {
      if (gen() % 20 == 0) x = -INFINITY;
    }
    if (pick(8) == 0) c.logits[pick(static_cast<int>(batch * vocab))] = NAN;
    auto per_row = [&](std::vector<float>& v, float lo, float hi) {
      if (pick(2) == 0) return;
      for (int64_t b = 0; b < batch; ++b) v.push_back(static_cast<float>(uniform(lo, hi)));
    };
    c.temperature_value = static_cast<float>(uniform(0.2, 2.0));
    c.top_p_value = static_cast<float>(uniform(0.05, 1.0));
    per_row(c.temperature, 0.0f, 2.0f);
    per_row(c.top_p, 0.0f, 1.0f);
    if (!c.temperature.empty()) c.temperature[0] = 0.0f;  // a greedy row
    if (pick(3) == 0) c.top_k_value = 1 + pick(static_cast<int>(std::min<int64_t>(vocab, 300)));
    if (pick(3) == 0) c.min_p_value = static_cast<float>(uniform(0.0, 0.3));
    per_row(c.min_p, 0.0f, 0.2f);
    if (pick(2) == 0) {
      for (int64_t b = 0; b < batch; ++b) c.offset.push_back(static_cast<int64_t>(gen()));
    }
    switch (pick(3)) {
      case 0: break;
      case 1:
        c.bias_mode = tsdi::BiasMode::kVector;
        c.bias = normal_logits(1, vocab, 1.0f, gen);
        per_row(c.alpha, -1.0f, 2.0f);
        break;
      case 2:
        c.bias_mode = tsdi::BiasMode::kTable;
        c.bias_rows = 1 + pick(8);
        c.bias = normal_logits(c.bias_rows, vocab, 1.0f, gen);
        for (int64_t b = 0; b < batch; ++b) c.positions.push_back(pick(10));
        break;
    }
    calls.push_back(c);
  }
  return calls;
}

// Barriers per row at the latency target's shape (B = 1, V = 128256, one cluster of 8): counted,
// and cluster.sync held to its budget (max, sum, <= 6 threshold rounds, kept mass, token, exit).
void barriers_per_row() {
  std::mt19937 gen(17);
  Call c = basic("f32 V=128256 B=1", LogitsDType::kFloat32, 1, 128256, 2.0f, gen);
  const int ranks = cluster_for(c);
  std::printf("synchronisation per row, B=1, V=128256 (cluster %d):\n", ranks);
  const std::pair<const char*, float> settings[] = {
      {"top_p=0.9", 0.9f}, {"top_p=0.5", 0.5f}, {"top_p=1", 1.0f}};
  for (const auto& [label, top_p] : settings) {
    c.top_p_value = top_p;
    simt::LaunchStats st;  // of the token launch (execute also asks for probabilities)
    const Outputs out = execute(c, [&](const tsdi::SamplingParams& p, bool probs) {
      const int err = run_cuda(c.dtype, p, probs);
      if (!probs) st = simt::last_launch_stats();
      return err;
    });
    expect(out.sample_error == 0, std::string(label) + ": B=1 launch");
    std::printf(
        "  %-10s %lld cluster.sync, %lld __syncthreads per CTA, %lld warp collectives per warp\n",
        label, static_cast<long long>(st.cluster_syncs),
        static_cast<long long>(st.block_syncs / ranks),
        static_cast<long long>(st.warp_collectives / (ranks * tsdi::cuda::kWarps)));
    expect(st.clusters == 1 && st.cluster_syncs <= 11,
           std::string(label) + ": at most 11 cluster.sync per row");
  }
}

size_t boundary_case(const std::vector<Call>& calls) {
  for (size_t k = 0; k < calls.size(); ++k) {
    if (calls[k].name == "f32 V=3 exact boundary") return k;
  }
  std::abort();
}

size_t lattice_case(const std::vector<Call>& calls) {
  for (size_t k = 0; k < calls.size(); ++k) {
    if (calls[k].name == "f32 V=20 0.05-lattice rows") return k;
  }
  std::abort();
}

// Launch-time behaviour: B = 0 is a no-op; V past what 16 CTAs can hold and B past the grid limit
// are refused; cluster 16 (a device with less shared memory per block) runs where the device
// schedules it and is refused where it cannot.
void launch_limits() {
  std::mt19937 gen(5);
  {
    tsdi::SamplingParams p;
    p.batch = 0;
    p.vocab = 10;
    expect(tsdi::cuda::launch_sampling<float, false>(p, nullptr) == cudaSuccess,
           "B = 0 is a no-op");
  }
  int64_t budget = 0;
  expect(tsdi::cuda::slice_smem_budget(0, budget) == cudaSuccess, "shared-memory budget");
  {
    Call c = basic("V past the cluster limit", LogitsDType::kFloat32, 1,
                   tsdi::cuda::max_vocab(budget) + 1, 1.0f, gen);
    const Outputs out = cuda_outputs(c);
    expect(out.sample_error == cudaErrorInvalidValue && out.probs_error == cudaErrorInvalidValue,
           "V past max_vocab is refused");
  }
  {  // the largest V an H100 takes: 16 CTAs with full slices
    Call c = basic("f32 V=max_vocab (H100)", LogitsDType::kFloat32, 1,
                   tsdi::cuda::max_vocab(budget), 2.0f, gen);
    expect(cluster_for(c) == 16, "V = max_vocab takes cluster 16");
    check_against_cpu(c);
  }
  {
    tsdi::SamplingParams p;
    p.batch = 65536;
    p.vocab = 1;
    expect(tsdi::cuda::launch_sampling<float, false>(p, nullptr) == cudaErrorInvalidValue,
           "B past 65535 is refused");
  }
  // A device with 99 KB of shared memory per block (consumer Blackwell): V = 262144 needs 16 CTAs.
  const simt::DeviceModel h100 = simt::device();
  simt::device().optin_shared_bytes = 101376;
  {
    Call c =
        basic("f32 V=262144 on 99 KB: cluster 16", LogitsDType::kFloat32, 1, 262144, 2.0f, gen);
    expect(cluster_for(c) == 16, "99 KB of shared memory per block: cluster 16 for V = 262144");
    check_against_cpu(c);
    simt::device().max_cluster = 8;
    const Outputs out = cuda_outputs(c);
    expect(out.sample_error == cudaErrorInvalidClusterSize,
           "cluster 16 on a device that cannot schedule it is refused");
  }
  simt::device() = h100;
}

// Kernel attributes are set once per device, not on every launch; attributes lost with their
// context (cudaDeviceReset) are set again by a retried launch that leaves no error behind.
void attribute_cache() {
  std::mt19937 gen(23);
  // Cluster 4 with slices of 12500 floats: past the 48 KB a kernel gets without the attribute.
  const Call c =
      basic("f32 V=50000 B=17, attributes cached", LogitsDType::kFloat32, 17, 50000, 2.0f, gen);
  check_against_cpu(c);
  const long long warm = simt::function_attribute_sets();
  check_against_cpu(c);
  expect(simt::function_attribute_sets() == warm, "a warm launch sets no kernel attribute");
  simt::function_attributes().clear();  // as after cudaDeviceReset
  check_against_cpu(c);
  expect(simt::function_attribute_sets() > warm, "lost attributes are set again");
  expect(cudaGetLastError() == cudaSuccess, "the retried launch leaves no error behind");
}

// The split chain's plan: blocks per row from B, V and the SM count.
void split_plans() {
  const simt::DeviceModel h100 = simt::device();
  struct Case {
    int sms;
    int64_t batch, vocab;
    int blocks;
  };
  const Case cases[] = {
      {108, 1, 128256, 32}, {108, 8, 128256, 27}, {108, 64, 128256, 4}, {108, 216, 128256, 1},
      {58, 1, 128256, 32},  {58, 4, 32000, 15},   {108, 1, 5000, 2},    {108, 1, 1000, 1},
      {108, 1, 1, 1},       {132, 1, 262144, 32}, {132, 3, 4099, 2},
  };
  for (const Case& k : cases) {
    simt::device().multiprocessors = k.sms;
    tsdi::SamplingParams p;
    p.batch = k.batch;
    p.vocab = k.vocab;
    const tsdi::cuda::SplitPlan plan = split_plan(p, false);
    const std::string what = std::to_string(k.sms) + " SMs, B=" + std::to_string(k.batch) +
                             ", V=" + std::to_string(k.vocab) + ": " +
                             std::to_string(plan.blocks_per_row) + " blocks per row";
    expect(plan.blocks_per_row == k.blocks, what + ", planned " + std::to_string(k.blocks));
    expect(plan.slice * (plan.blocks_per_row - 1) < k.vocab &&
               plan.slice * plan.blocks_per_row >= k.vocab,
           what + ": every block has a non-empty slice");
  }
  simt::device() = h100;
}

// Launch-time behaviour of the split chain: B = 0 is a no-op; B past the grid limit, a workspace
// too small or misaligned are refused before anything is launched.
void split_launch_limits() {
  tsdi::SamplingParams p;
  p.batch = 0;
  p.vocab = 10;
  expect(run_split<float, false>(p) == cudaSuccess, "split: B = 0 is a no-op");
  p.batch = 65536;
  p.vocab = 1;
  tsdi::cuda::SplitPlan plan;
  expect(tsdi::cuda::plan_split(p, false, 132, plan) == cudaErrorInvalidValue,
         "split: B past 65535 is refused");
  p.batch = 2;
  p.vocab = 100;
  expect(tsdi::cuda::plan_split(p, false, 132, plan) == cudaSuccess, "split: plan");
  simt::GuardedBuffer workspace(plan.workspace_bytes + 16);
  const int64_t before = simt::launch_count();
  expect(
      tsdi::cuda::launch_sampling_split<float, false>(
          p, plan, workspace.data(), plan.workspace_bytes - 16, nullptr) == cudaErrorInvalidValue,
      "split: a workspace too small is refused");
  expect(tsdi::cuda::launch_sampling_split<float, false>(
             p, plan, static_cast<char*>(workspace.data()) + 8, plan.workspace_bytes, nullptr) ==
             cudaErrorInvalidValue,
         "split: a misaligned workspace is refused");
  expect(simt::launch_count() == before, "split: a refused call launches nothing");
}

// Launches per call at the latency target's shape (B = 1, V = 128256: 32 blocks per row).
void split_launches_per_call() {
  std::mt19937 gen(17);
  Call c = basic("f32 V=128256 B=1", LogitsDType::kFloat32, 1, 128256, 2.0f, gen);
  std::printf("split chain, B=1, V=128256 (%d blocks per row):\n", split_blocks_for(c));
  struct Setting {
    const char* label;
    float top_p, temperature;
    int64_t top_k;
    int launches;
  };
  const Setting settings[] = {{"top_p=0.9", 0.9f, 1.0f, 0, 11},
                              {"top_p=1", 1.0f, 1.0f, 0, 5},
                              {"top_k=50 top_p=0.9", 0.9f, 1.0f, 50, 17},
                              {"greedy", 0.9f, 0.0f, 0, 3}};
  for (const Setting& k : settings) {
    c.top_p_value = k.top_p;
    c.temperature_value = k.temperature;
    c.top_k_value = k.top_k;
    int64_t launches = 0;
    const Outputs cpu = cpu_outputs(c);
    const Outputs out = execute(c, [&](const tsdi::SamplingParams& p, bool probs) {
      const int64_t before = simt::launch_count();
      const int err = run_cuda(c.dtype, p, probs);
      if (!probs) launches = simt::launch_count() - before;
      return err;
    });
    std::printf("  %-20s %lld launches\n", k.label, static_cast<long long>(launches));
    expect(out.sample_error == 0 && out.tokens == cpu.tokens && out.probs == cpu.probs,
           std::string(k.label) + ": split chain at B=1 agrees with the CPU");
    expect(launches == k.launches, std::string(k.label) + ": " + std::to_string(k.launches) +
                                       " launches, made " + std::to_string(launches));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  bool quick = false;
  for (int k = 1; k < argc; ++k) {
    const std::string arg = argv[k];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--path=split") {
      path = Path::kSplit;
    } else if (arg != "--path=cluster") {
      std::fprintf(stderr, "usage: %s [--quick] [--path=cluster|split]\n", argv[0]);
      return EXIT_FAILURE;
    }
  }
  std::vector<Call> calls = agreement_cases();
  for (Call& c : fuzz_cases(quick ? 6 : 24)) calls.push_back(std::move(c));
  std::printf(
      "CUDA %s (simt emulation) vs the fused CPU kernel (%s, probabilities bit-identical), "
      "threads in order:\n",
      path_name(),
      tsdi::cpu::selected_isa() == tsdi::cpu::Isa::kX86_64_V4   ? "x86-64-v4 path"
      : tsdi::cpu::selected_isa() == tsdi::cpu::Isa::kX86_64_V3 ? "x86-64-v3 path"
                                                                : "baseline path");
  std::vector<Outputs> cpu, in_order;
  for (const Call& c : calls) {
    cpu.push_back(cpu_outputs(c));
    in_order.push_back(check_against(c, cpu.back()));
  }
  {
    const std::vector<float>& exact = in_order[boundary_case(calls)].probs;
    expect(exact[0] == 1.0f && exact[1] == 0.0f && exact[2] == 0.0f,
           "a nucleus whose mass meets top_p * S exactly stops there");
    expect(std::fabs(exact[3] - 0.5f) < 1e-7f && std::fabs(exact[4] - 0.25f) < 1e-7f,
           "a hair more top_p keeps the next tokens");
  }
  {
    const std::vector<float>& lattice = in_order[lattice_case(calls)].probs;
    expect(lattice[1] == 0.0f && lattice[2] == 0.0f && std::fabs(lattice[0] - 0.375f) < 1e-6f &&
               std::fabs(lattice[3] - 0.625f) < 1e-6f,
           "transformers' top-p example keeps {0.5, 0.3}");
  }
  if (!quick) {
    // Other thread orders between synchronisation points: a read that a missing barrier leaves
    // unordered against a write gives other values. Same tokens and valid flags as in order.
    // The shuffled pass also places shared memory flush against the guard page below it, so an
    // underrun faults there as an overrun does in the others.
    const std::pair<simt::Schedule, const char*> schedules[] = {
        {simt::Schedule::kShuffled, "shuffled (near lockstep), shared memory flush low"},
        {simt::Schedule::kRunAhead, "run-ahead (one CTA or warp far ahead)"}};
    for (const auto& [schedule, name] : schedules) {
      std::printf("again, threads in a %s order:\n", name);
      simt::set_schedule(schedule, 2024);
      simt::set_shared_placement(schedule == simt::Schedule::kShuffled
                                     ? simt::SharedPlacement::kFlushLow
                                     : simt::SharedPlacement::kFlushHigh);
      for (size_t k = 0; k < calls.size(); ++k) {
        const Outputs other = check_against(calls[k], cpu[k]);
        expect(other.tokens == in_order[k].tokens && other.valid == in_order[k].valid,
               calls[k].name + ": the thread order changes no token");
      }
    }
    simt::set_schedule(simt::Schedule::kForward);
    simt::set_shared_placement(simt::SharedPlacement::kFlushHigh);
  }
  if (path == Path::kCluster) {
    launch_limits();
    attribute_cache();
    barriers_per_row();
  } else {
    split_plans();
    split_launch_limits();
    split_launches_per_call();
  }
  if (failures == 0) std::printf("tsdi_cuda_emulated_test: all checks passed\n");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
