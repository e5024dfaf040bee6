// Glue shared by the CPU and CUDA implementations: checks the tensors of one call (a safety net
// behind the Python front end's friendlier errors; torch.ops.tsdi_ext.* can be called directly)
// and turns them into the torch-free tsdi::SamplingParams the kernels take.
//
// Every op takes the same arguments (csrc/bindings.cpp):
//   logits, bias, positions, row_tensors, row_floats, row_ints
// where the per-row parameters of tsdi/common.h's TSDI_ROW_PARAMS travel as one RowArgs: a tensor
// or None per parameter, in list order, and the scalars used where the tensor is None (the float
// parameters' in row_floats, the integer ones' in row_ints, each in list order). Nothing here
// names a per-row parameter except the scalar checks in make_params, which are its semantics.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>
#include <string>
#include <type_traits>

#include "tsdi/common.h"

namespace tsdi_ext {

using OptionalTensorList = c10::List<std::optional<at::Tensor>>;

// The per-row arguments of one call, as the schema carries them.
struct RowArgs {
  const OptionalTensorList& tensors;
  c10::ArrayRef<double> floats;
  c10::ArrayRef<int64_t> ints;
};

namespace detail {

// Which scalar list a parameter of element type T reads, and the tensor dtype it takes.
template <typename T>
struct RowScalar;
template <>
struct RowScalar<float> {
  static constexpr at::ScalarType kDType = at::kFloat;
  static float take(const RowArgs& args, size_t& next_float, size_t&) {
    // Rounded to float32 as every backend reads it (IEEE conversion: out of range gives +-inf).
    return static_cast<float>(args.floats[next_float++]);
  }
};
template <>
struct RowScalar<int64_t> {
  static constexpr at::ScalarType kDType = at::kLong;
  static int64_t take(const RowArgs& args, size_t&, size_t& next_int) {
    return args.ints[next_int++];
  }
};

inline void check_per_row(const at::Tensor& t, const at::Tensor& logits, at::ScalarType dtype,
                          const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == logits.size(0), "tsdi_ext: ", name,
                    " must be a Python scalar or a [B] tensor with B = ", logits.size(0),
                    ", got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "tsdi_ext: ", name, " must have dtype ", dtype,
                   ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == logits.device(), "tsdi_ext: ", name, " is on ", t.device(),
                    " but logits are on ", logits.device());
  TORCH_CHECK_VALUE(t.is_contiguous(), "tsdi_ext: ", name, " must be contiguous");
}

template <typename T>
void fill_row_arg(tsdi::RowArg<T>& arg, const char* name, const RowArgs& args,
                  const at::Tensor& logits, size_t index, size_t& next_float, size_t& next_int) {
  arg.scalar = RowScalar<T>::take(args, next_float, next_int);
  const std::optional<at::Tensor> tensor = args.tensors.get(index);
  arg.values = nullptr;
  if (tensor.has_value()) {
    check_per_row(*tensor, logits, RowScalar<T>::kDType, name);
    arg.values = tensor->const_data_ptr<T>();
  }
}

// "alpha, temperature, ..." (float) and (int) counts, for the list-length check's message.
struct RowParamCounts {
  size_t tensors = 0, floats = 0, ints = 0;
  std::string names;
};

inline const RowParamCounts& row_param_counts() {
  static const RowParamCounts counts = [] {
    RowParamCounts c;
#define TSDI_COUNT_ROW_PARAM(name, type, default_value)        \
  ++c.tensors;                                                 \
  (std::is_same<type, float>::value ? c.floats : c.ints) += 1; \
  c.names += (c.names.empty() ? "" : ", ") + std::string(#name);
    TSDI_ROW_PARAMS(TSDI_COUNT_ROW_PARAM)
#undef TSDI_COUNT_ROW_PARAM
    return c;
  }();
  return counts;
}

}  // namespace detail

// Checks the per-row arguments against TSDI_ROW_PARAMS and copies them into `p`.
inline void fill_row_args(tsdi::SamplingParams& p, const at::Tensor& logits, const RowArgs& args) {
  const detail::RowParamCounts& counts = detail::row_param_counts();
  TORCH_CHECK_VALUE(args.tensors.size() == counts.tensors && args.floats.size() == counts.floats &&
                        args.ints.size() == counts.ints,
                    "tsdi_ext: the per-row arguments are (", counts.names, "): expected ",
                    counts.tensors, " tensors, ", counts.floats, " floats and ", counts.ints,
                    " ints, got ", args.tensors.size(), ", ", args.floats.size(), " and ",
                    args.ints.size(), " (a tsdi_ext front end of another version?)");
  size_t index = 0, next_float = 0, next_int = 0;
#define TSDI_FILL_ROW_PARAM(name, type, default_value) \
  detail::fill_row_arg(p.name, #name, args, logits, index++, next_float, next_int);
  TSDI_ROW_PARAMS(TSDI_FILL_ROW_PARAM)
#undef TSDI_FILL_ROW_PARAM
}

// Fills everything but the outputs. `logits` must already have unit stride along the vocabulary.
inline tsdi::SamplingParams make_params(const at::Tensor& logits,
                                        const std::optional<at::Tensor>& bias,
                                        const std::optional<at::Tensor>& positions,
                                        const RowArgs& row_args) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "tsdi_ext: logits must be [B, V], got shape ",
                    logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "tsdi_ext: logits must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(logits.size(1) > 0, "tsdi_ext: logits have an empty vocabulary (V == 0)");
  TORCH_CHECK_VALUE(logits.size(1) == 1 || logits.stride(1) == 1,
                    "tsdi_ext: logits must have unit stride along the vocabulary");

  tsdi::SamplingParams p;
  p.logits = logits.const_data_ptr();
  p.batch = logits.size(0);
  p.vocab = logits.size(1);
  p.logits_row_stride = logits.size(0) > 1 ? logits.stride(0) : logits.size(1);
  fill_row_args(p, logits, row_args);
  // The scalar parameters' checks (per-row tensors are checked per row by the kernels: an
  // invalid value makes its row invalid, see docs/contract.md).
  TORCH_CHECK_VALUE(p.temperature.scalar >= 0.0f, "tsdi_ext: temperature must be >= 0, got ",
                    p.temperature.scalar);
  TORCH_CHECK_VALUE(p.top_p.scalar >= 0.0f && p.top_p.scalar <= 1.0f,
                    "tsdi_ext: top_p must be in [0, 1], got ", p.top_p.scalar);
  TORCH_CHECK_VALUE(p.top_k.scalar >= 0, "tsdi_ext: top_k must be >= 0 (0: off), got ",
                    p.top_k.scalar);
  TORCH_CHECK_VALUE(p.min_p.scalar >= 0.0f && p.min_p.scalar <= 1.0f,
                    "tsdi_ext: min_p must be in [0, 1] (0: off), got ", p.min_p.scalar);
  TORCH_CHECK_VALUE(std::isfinite(p.alpha.scalar),
                    "tsdi_ext: alpha must be finite (in float32), got ", p.alpha.scalar);

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
    detail::check_per_row(*positions, logits, at::kLong, "positions");
    p.positions = positions->const_data_ptr<int64_t>();
  }
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
  at::Tensor logprobs;  // [B, 2] float32, with_logprobs only
};

inline SampleCall prepare_sample(const at::Tensor& logits_in, const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& positions,
                                 const RowArgs& row_args, bool with_logprobs = false) {
  SampleCall call;
  call.logits = vocab_contiguous(logits_in);
  call.params = make_params(call.logits, bias, positions, row_args);
  call.tokens = at::empty({call.params.batch}, call.logits.options().dtype(at::kLong));
  call.valid = at::empty({call.params.batch}, call.logits.options().dtype(at::kBool));
  call.params.tokens = call.tokens.mutable_data_ptr<int64_t>();
  call.params.valid = call.valid.mutable_data_ptr<bool>();
  if (with_logprobs) {
    call.logprobs = at::empty({call.params.batch, 2}, call.logits.options().dtype(at::kFloat));
    call.params.logprobs = call.logprobs.mutable_data_ptr<float>();
  }
  return call;
}

// The same for one sampling_probs() call.
struct ProbsCall {
  at::Tensor logits;
  tsdi::SamplingParams params;
  at::Tensor probs;
};

inline ProbsCall prepare_probs(const at::Tensor& logits_in, const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& positions,
                               const RowArgs& row_args) {
  ProbsCall call;
  call.logits = vocab_contiguous(logits_in);
  call.params = make_params(call.logits, bias, positions, row_args);
  call.probs =
      at::empty({call.params.batch, call.params.vocab}, call.logits.options().dtype(at::kFloat));
  call.params.probs = call.probs.mutable_data_ptr<float>();
  return call;
}

}  // namespace tsdi_ext
