// Glue shared by the CPU and CUDA implementations: checks the tensors of one call (a safety net
// behind the Python front end's friendlier errors; torch.ops.tsdi_ext.* can be called directly)
// and turns them into the torch-free tsdi::SamplingParams the kernels take.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "tsdi/common.h"

namespace tsdi_ext {

inline void check_per_row(const std::optional<at::Tensor>& t, const at::Tensor& logits,
                          at::ScalarType dtype, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == logits.size(0), "tsdi_ext: ", name,
                    " must be a Python scalar or a [B] tensor with B = ", logits.size(0),
                    ", got shape ", t->sizes());
  TORCH_CHECK_TYPE(t->scalar_type() == dtype, "tsdi_ext: ", name, " must have dtype ", dtype,
                   ", got ", t->scalar_type());
  TORCH_CHECK_VALUE(t->device() == logits.device(), "tsdi_ext: ", name, " is on ", t->device(),
                    " but logits are on ", logits.device());
  TORCH_CHECK_VALUE(t->is_contiguous(), "tsdi_ext: ", name, " must be contiguous");
}

template <typename T>
inline const T* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

// Fills everything but the outputs. `logits` must already have unit stride along the vocabulary.
inline tsdi::SamplingParams make_params(
    const at::Tensor& logits, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& positions, const std::optional<at::Tensor>& alpha,
    double alpha_value, const std::optional<at::Tensor>& temperature, double temperature_value,
    const std::optional<at::Tensor>& top_p, double top_p_value,
    const std::optional<at::Tensor>& seed, int64_t seed_value,
    const std::optional<at::Tensor>& offset, int64_t offset_value) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "tsdi_ext: logits must be [B, V], got shape ",
                    logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "tsdi_ext: logits must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(logits.size(1) > 0, "tsdi_ext: logits have an empty vocabulary (V == 0)");
  TORCH_CHECK_VALUE(logits.size(1) == 1 || logits.stride(1) == 1,
                    "tsdi_ext: logits must have unit stride along the vocabulary");
  TORCH_CHECK_VALUE(temperature_value >= 0.0, "tsdi_ext: temperature must be >= 0, got ",
                    temperature_value);
  TORCH_CHECK_VALUE(top_p_value == top_p_value, "tsdi_ext: top_p is NaN");
  TORCH_CHECK_VALUE(std::isfinite(alpha_value) && std::fabs(alpha_value) <= 3.4028234663852886e38,
                    "tsdi_ext: alpha must be finite (in float32), got ", alpha_value);

  tsdi::SamplingParams p;
  p.logits = logits.const_data_ptr();
  p.batch = logits.size(0);
  p.vocab = logits.size(1);
  p.logits_row_stride = logits.size(0) > 1 ? logits.stride(0) : logits.size(1);

  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK_TYPE(b.scalar_type() == at::kFloat, "tsdi_ext: bias must be float32, got ",
                     b.scalar_type());
    TORCH_CHECK_VALUE(b.dim() == 1 || b.dim() == 2, "tsdi_ext: bias must be [V] or [L, V], got ",
                      "shape ", b.sizes());
    TORCH_CHECK_VALUE(b.size(-1) == p.vocab, "tsdi_ext: bias has vocabulary size ", b.size(-1),
                      " but logits have ", p.vocab);
    TORCH_CHECK_VALUE(b.device() == logits.device(), "tsdi_ext: bias is on ", b.device(),
                      " but logits are on ", logits.device());
    TORCH_CHECK_VALUE(b.is_contiguous(), "tsdi_ext: bias must be contiguous");
    p.bias = b.const_data_ptr<float>();
    if (b.dim() == 1) {
      p.bias_mode = tsdi::BiasMode::kVector;
      p.bias_rows = 1;
    } else {
      TORCH_CHECK_VALUE(positions.has_value(),
                        "tsdi_ext: positions ([B] int64) are required with an [L, V] bias");
      p.bias_mode = tsdi::BiasMode::kTable;
      p.bias_rows = b.size(0);
    }
  }
  if (positions.has_value()) {
    check_per_row(positions, logits, at::kLong, "positions");
    p.positions = positions->const_data_ptr<int64_t>();
  }
  check_per_row(alpha, logits, at::kFloat, "alpha");
  check_per_row(temperature, logits, at::kFloat, "temperature");
  check_per_row(top_p, logits, at::kFloat, "top_p");
  check_per_row(seed, logits, at::kLong, "seed");
  check_per_row(offset, logits, at::kLong, "offset");
  p.alpha = optional_ptr<float>(alpha);
  p.alpha_value = static_cast<float>(alpha_value);
  p.temperature = optional_ptr<float>(temperature);
  p.temperature_value = static_cast<float>(temperature_value);
  p.top_p = optional_ptr<float>(top_p);
  p.top_p_value = static_cast<float>(top_p_value);
  p.seed = optional_ptr<int64_t>(seed);
  p.seed_value = seed_value;
  p.offset = optional_ptr<int64_t>(offset);
  p.offset_value = offset_value;
  return p;
}

// Logits with unit stride along the vocabulary (a copy only when they do not have it).
inline at::Tensor vocab_contiguous(const at::Tensor& logits) {
  return (logits.dim() == 2 && logits.size(1) > 1 && logits.stride(1) != 1) ? logits.contiguous()
                                                                            : logits;
}

// Everything one sample() call needs besides its kernel: unit-stride logits, the parameter block
// and the allocated outputs (wired into the parameter block).
struct SampleCall {
  at::Tensor logits;
  tsdi::SamplingParams params;
  at::Tensor tokens;
  at::Tensor valid;
};

inline SampleCall prepare_sample(
    const at::Tensor& logits_in, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& positions, const std::optional<at::Tensor>& alpha,
    double alpha_value, const std::optional<at::Tensor>& temperature, double temperature_value,
    const std::optional<at::Tensor>& top_p, double top_p_value,
    const std::optional<at::Tensor>& seed, int64_t seed_value,
    const std::optional<at::Tensor>& offset, int64_t offset_value) {
  SampleCall call;
  call.logits = vocab_contiguous(logits_in);
  call.params = make_params(call.logits, bias, positions, alpha, alpha_value, temperature,
                            temperature_value, top_p, top_p_value, seed, seed_value, offset,
                            offset_value);
  call.tokens = at::empty({call.params.batch}, call.logits.options().dtype(at::kLong));
  call.valid = at::empty({call.params.batch}, call.logits.options().dtype(at::kBool));
  call.params.tokens = call.tokens.mutable_data_ptr<int64_t>();
  call.params.valid = call.valid.mutable_data_ptr<bool>();
  return call;
}

// The same for one sampling_probs() call.
struct ProbsCall {
  at::Tensor logits;
  tsdi::SamplingParams params;
  at::Tensor probs;
};

inline ProbsCall prepare_probs(
    const at::Tensor& logits_in, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& positions, const std::optional<at::Tensor>& alpha,
    double alpha_value, const std::optional<at::Tensor>& temperature, double temperature_value,
    const std::optional<at::Tensor>& top_p, double top_p_value) {
  ProbsCall call;
  call.logits = vocab_contiguous(logits_in);
  call.params = make_params(call.logits, bias, positions, alpha, alpha_value, temperature,
                            temperature_value, top_p, top_p_value, std::nullopt, 0, std::nullopt, 0);
  call.probs = at::empty({call.params.batch, call.params.vocab},
                         call.logits.options().dtype(at::kFloat));
  call.params.probs = call.probs.mutable_data_ptr<float>();
  return call;
}

}  // namespace tsdi_ext
