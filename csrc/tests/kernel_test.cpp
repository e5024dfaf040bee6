// Torch-free checks of the CPU kernel: Philox known answers, a hand-checked nucleus, greedy ties
// and invalid rows. Built and run by CMake/ctest (no torch, no Python).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tsdi/common.h"
#include "tsdi/cpu/sampling_kernel.h"

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
                               1.0f, 3.0f, 3.0f, 2.0f};
  std::vector<float> probs(8);
  tsdi::SamplingParams p;
  p.logits = logits.data();
  p.batch = 2;
  p.vocab = 4;
  p.logits_row_stride = 4;
  p.top_p_value = 0.5f;
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
  p.temperature_value = 0.0f;
  tsdi::cpu::sample_rows(tsdi::cpu::LogitsDType::kFloat32, p, 0, 2, ws);
  expect(tokens[0] == 0 && tokens[1] == 1 && valid[0] && valid[1], "greedy takes the first argmax");

  logits[2] = NAN;
  p.temperature_value = 1.0f;
  tsdi::cpu::sample_rows(tsdi::cpu::LogitsDType::kFloat32, p, 0, 2, ws);
  expect(!valid[0] && tokens[0] == 0 && valid[1], "a NaN row is invalid with token 0");
}

}  // namespace

int main() {
  philox_known_answers();
  nucleus_and_probs();
  if (failures == 0) std::printf("tsdi_kernel_test: all checks passed\n");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
