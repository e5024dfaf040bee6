// Torch-free checks of the CPU kernel: Philox known answers, a hand-checked nucleus, greedy ties
// and invalid rows. Built and run by CMake/ctest (no torch, no Python).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "tsdi/common.h"
#include "tsdi/cpu/sampling_kernel.h"
#include "tsdi/cuda/vector_split.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

void philox_known_answers() {
  // Random123's published vectors for Philox4x32-10.
  const tsdi::Philox4x32 zero = tsdi::philox4x32_10({{0, 0, 0, 0}}, 0, 0);
  expect(zero.v[0] == 0x6627e8d5u && zero.v[1] == 0xe169c58du && zero.v[2] == 0xbc57ac4cu &&
             zero.v[3] == 0x9b00dbd8u,
         "philox zero vector");
  const tsdi::Philox4x32 pi = tsdi::philox4x32_10(
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
  expect(pi.v[0] == 0xd16cfe09u && pi.v[1] == 0x94fdccebu && pi.v[2] == 0x5001e420u &&
             pi.v[3] == 0x24126ea1u,
         "philox pi vector");
}

void nucleus_and_probs() {
  // p = [0.4, 0.2, 0.2, 0.2], top_p = 0.5: the crossing token ties with two others; all stay.
  std::vector<float> logits = {std::log(0.4f), std::log(0.2f), std::log(0.2f), std::log(0.2f),
                               1.0f,           3.0f,           3.0f,           2.0f};
  std::vector<float> probs(8);
  tsdi::SamplingParams p;
  p.logits = logits.data();
  p.batch = 2;
  p.vocab = 4;
  p.logits_row_stride = 4;
  p.top_p.scalar = 0.5f;
  p.probs = probs.data();
  tsdi::cpu::Workspace ws;
  tsdi::cpu::probs_rows(tsdi::cpu::LogitsDType::kFloat32, p, 0, 2, ws);
  expect(std::fabs(probs[0] - 0.4f) < 1e-6f && std::fabs(probs[3] - 0.2f) < 1e-6f,
         "ties at the threshold are kept");
  // Row 2 at top_p = 0.5: p ~ [0.04, 0.42, 0.42, 0.12]; the first 0.42 alone is short of 0.5, so
  // its tie joins it and the nucleus is {1, 2}.
  expect(probs[4] == 0.0f && probs[7] == 0.0f && std::fabs(probs[5] - 0.5f) < 1e-6f,
         "nucleus of the second row");

  std::vector<int64_t> tokens(2);
  bool valid[2];
  p.probs = nullptr;
  p.tokens = tokens.data();
  p.valid = valid;
  p.temperature.scalar = 0.0f;
  tsdi::cpu::sample_rows(tsdi::cpu::LogitsDType::kFloat32, p, 0, 2, ws);
  expect(tokens[0] == 0 && tokens[1] == 1 && valid[0] && valid[1], "greedy takes the first argmax");

  logits[2] = NAN;
  p.temperature.scalar = 1.0f;
  tsdi::cpu::sample_rows(tsdi::cpu::LogitsDType::kFloat32, p, 0, 2, ws);
  expect(!valid[0] && tokens[0] == 0 && valid[1], "a NaN row is invalid with token 0");
}

namespace detail = tsdi::cpu::detail;

// The nucleus threshold by definition: the largest w whose "at least w" mass reaches the target
// (descending sort, float64 running mass), and the mass kept at it.
float brute_force_threshold(std::vector<float> w, double target, double& kept) {
  std::sort(w.begin(), w.end(), std::greater<float>());
  double running = 0.0;
  float tau = w.back();
  for (float v : w) {
    running += v;
    if (running >= target) {
      tau = v;
      break;
    }
  }
  kept = 0.0;
  for (float v : w) kept += v >= tau ? v : 0.0;
  return tau;
}

// top_p_threshold against the definition on rows built to take each of its paths: collect-all
// (peaked, V >= 16384), the sampled bracket (flat, V >= 16384), the probe and pivot passes
// (in between, and 4096 <= V < 16384), pivots only (small V), and heavy ties (the radix select's
// last, identical-bits round).
void threshold_matches_definition() {
  struct Case {
    int64_t vocab;
    float scale;  // standard deviation of the logits (0: all equal; < 0: 3 distinct values)
  };
  const Case cases[] = {{20000, 4.0f}, {20000, 1.0f}, {20000, 2.0f}, {40000, 3.0f}, {5000, 1.0f},
                        {5000, 5.0f},  {1000, 1.0f},  {300, 2.0f},   {20000, 0.0f}, {20000, -1.0f}};
  const float top_ps[] = {0.05f, 0.5f, 0.9f, 0.999f};
  std::mt19937 gen(7);
  tsdi::cpu::Workspace ws;
  int mismatches = 0, checked = 0;
  for (const Case& c : cases) {
    ws.values.resize(c.vocab);
    ws.candidates.resize(c.vocab);
    ws.candidates_next.resize(c.vocab);
    for (int trial = 0; trial < 3; ++trial) {
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> w(c.vocab);
      for (float& x : w) {
        x = c.scale > 0.0f   ? normal(gen) * c.scale
            : c.scale == 0.f ? 0.5f
                             : static_cast<float>(gen() % 3);
      }
      const float row_max = *std::max_element(w.begin(), w.end());
      const double total = detail::exp_weights(w.data(), c.vocab, row_max, 1.25f);
      for (float top_p : top_ps) {
        double kept = 0.0, expected_kept = 0.0;
        const float tau = detail::top_p_threshold(w.data(), c.vocab, total, top_p, ws, kept);
        if (kept < 0.0) kept = detail::kept_mass(w.data(), c.vocab, tau);
        const float expected =
            brute_force_threshold(w, static_cast<double>(top_p) * total, expected_kept);
        ++checked;
        if (tau != expected || std::fabs(kept - expected_kept) > 1e-9 * total) {
          ++mismatches;
          std::fprintf(
              stderr, "  V=%lld scale=%g top_p=%g: tau %.9g (kept %.12g), expected %.9g (%.12g)\n",
              static_cast<long long>(c.vocab), c.scale, top_p, tau, kept, expected, expected_kept);
        }
      }
    }
  }
  expect(mismatches == 0, "top_p_threshold matches the definition on every path");
  expect(checked == 120, "threshold cases ran");
}

// The radix select when rounding leaves the candidates short of the target: it keeps them all and
// reports the kept mass once (the mass above plus the candidates', not the candidates twice).
void select_keeps_all_when_short() {
  tsdi::cpu::Workspace ws;
  std::vector<float> cand(200);
  for (size_t i = 0; i < cand.size(); ++i) cand[i] = 0.25f + 0.001f * static_cast<float>(i);
  double sum = 0.0;
  for (float v : cand) sum += v;
  const uint32_t lo = detail::float_to_bits(0.25f), hi = detail::float_to_bits(0.5f);
  double kept = 0.0;
  const float tau = detail::select_threshold(cand.data(), static_cast<int64_t>(cand.size()), lo, hi,
                                             3.0, 3.0 + sum * 1.5, ws, kept);
  expect(tau == 0.25f, "short candidates: the threshold is the bracket's low end");
  expect(std::fabs(kept - (3.0 + sum)) < 1e-9, "short candidates: kept = above + candidates");
}

// The two-level crossing scan agrees with a bucket-by-bucket scan, for bucket counts that are and
// are not multiples of its group size.
void crossing_bucket_matches_serial_scan() {
  std::mt19937 gen(3);
  std::uniform_real_distribution<double> mass(0.0, 1.0);
  double hist[1024];
  int mismatches = 0;
  for (int buckets : {1, 5, 16, 17, 640, 1024}) {
    for (int trial = 0; trial < 50; ++trial) {
      double total = 0.0;
      for (int b = 0; b < buckets; ++b) {
        hist[b] = gen() % 4 == 0 ? 0.0 : mass(gen);
        total += hist[b];
      }
      const double target = total * mass(gen);
      double above = 0.25, serial_above = 0.25;
      int serial = -1;
      for (int b = buckets - 1; b >= 0; --b) {
        if (serial_above + hist[b] >= target + 0.25) {
          serial = b;
          break;
        }
        serial_above += hist[b];
      }
      const int got = detail::crossing_bucket(hist, buckets, target + 0.25, above);
      if (got != serial || std::fabs(above - serial_above) > 1e-9) ++mismatches;
    }
  }
  expect(mismatches == 0, "two-level crossing scan = serial scan");
}

// The bracket histogram counts exactly the values inside its buckets, [lo, lo + buckets << shift)
// (which covers [lo, hi) and may reach a little beyond hi), and discards the others.
void bracket_histogram_discards_outside() {
  const std::vector<float> values = {0.1f, 0.2f, 0.25f, 0.3f,  0.49f,
                                     0.5f, 0.9f, 0.0f,  0.26f, 0.19f};
  const uint32_t lo = detail::float_to_bits(0.2f), hi = detail::float_to_bits(0.5f);
  int buckets = 0;
  const int shift = detail::bracket_shift(lo, hi, buckets);
  double hist[1024];
  detail::bracket_histogram(values.data(), static_cast<int64_t>(values.size()), lo, shift, buckets,
                            hist);
  double inside = 0.0, expected = 0.0;
  for (int b = 0; b < buckets; ++b) inside += hist[b];
  const uint64_t end = static_cast<uint64_t>(lo) + (static_cast<uint64_t>(buckets) << shift);
  for (float v : values) {
    const uint32_t bits = detail::float_to_bits(v);
    if (bits >= lo && bits < end) expected += v;
  }
  expect(buckets <= 1024 && end >= hi && expected > 1.49, "bracket buckets cover [lo, hi)");
  expect(std::fabs(inside - expected) < 1e-6, "histogram counts its buckets' values only");
  expect(std::fabs(hist[0] - 0.2) < 1e-7, "the low end lands in bucket 0");
}

// The CUDA kernel's split of a slice into a scalar head, 16-byte vectors and a scalar tail: every
// element exactly once, vector loads and their 4-float shared-memory stores aligned.
void vector_split_covers_and_aligns() {
  bool ok = true;
  for (int64_t element_bytes : {2, 4}) {
    const int64_t per_vector = 16 / element_bytes;
    for (uint64_t address = 4096; address < 4096 + 32; ++address) {
      for (int64_t n : {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1019, 32000}) {
        const tsdi::cuda::VectorSplit split =
            tsdi::cuda::split_for_vectors(address, n, element_bytes);
        const int64_t covered = split.head + split.vectors * per_vector;
        ok &= split.head >= 0 && split.vectors >= 0 && covered <= n;
        if (address % element_bytes != 0) {
          ok &= split.head == n && split.vectors == 0;  // loaded one by one
          continue;
        }
        ok &= split.head < per_vector || split.head == n;
        ok &= n - covered < per_vector || split.vectors == 0;  // a tail shorter than one vector
        if (split.vectors > 0) ok &= (address + split.head * element_bytes) % 16 == 0;
        ok &= split.pad >= 0 && split.pad < 4 && split.pad <= tsdi::cuda::kSlicePadFloats;
        ok &= (split.pad + split.head) % 4 == 0;  // float4 stores of each vector's floats
      }
    }
  }
  expect(ok, "vector split: coverage and alignment");
}

}  // namespace

int main() {
  philox_known_answers();
  nucleus_and_probs();
  threshold_matches_definition();
  select_keeps_all_when_short();
  crossing_bucket_matches_serial_scan();
  bracket_histogram_discards_outside();
  vector_split_covers_and_aligns();
  if (failures == 0) std::printf("tsdi_kernel_test: all checks passed\n");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
