// Every op of tsdi_ext, in one place. The schemas are registered with the PyTorch dispatcher
// (so the ops work under torch.compile and in TorchScript); each device's implementation
// registers itself beside its kernel (sampling_cpu.cpp, sampling_cuda.cu). The pybind11 module
// carries build information and the random number generator for tests.
//
// Both ops take the same arguments. The per-row parameters (tsdi/common.h's TSDI_ROW_PARAMS, in
// that order) come as a tensor or None each, plus the scalars used where the tensor is None: the
// float parameters' in row_floats, the integer ones' in row_ints. A Python scalar therefore never
// costs a tensor allocation, and a new per-row parameter does not change these schemas.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <array>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tsdi/common.h"
#include "tsdi/cpu/sampling_kernel.h"

TORCH_LIBRARY(tsdi_ext, m) {
  m.def(
      "sample(Tensor logits, Tensor? bias, Tensor? positions, Tensor?[] row_tensors, "
      "float[] row_floats, int[] row_ints) -> (Tensor, Tensor)");
  m.def(
      "sample_logprobs(Tensor logits, Tensor? bias, Tensor? positions, Tensor?[] row_tensors, "
      "float[] row_floats, int[] row_ints) -> (Tensor, Tensor, Tensor)");
  m.def(
      "sampling_probs(Tensor logits, Tensor? bias, Tensor? positions, Tensor?[] row_tensors, "
      "float[] row_floats, int[] row_ints) -> Tensor");
}

namespace {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter,
                                      std::array<uint32_t, 2> key) {
  tsdi::Philox4x32 ctr{{counter[0], counter[1], counter[2], counter[3]}};
  const tsdi::Philox4x32 out = tsdi::philox4x32_10(ctr, key[0], key[1]);
  return {out.v[0], out.v[1], out.v[2], out.v[3]};
}

// [(name, "float" | "int")] of TSDI_ROW_PARAMS: the Python front end checks its own list against
// it.
std::vector<std::pair<std::string, std::string>> row_params() {
  std::vector<std::pair<std::string, std::string>> params;
#define TSDI_LIST_ROW_PARAM(name, type, default_value) \
  params.emplace_back(#name, std::is_same<type, float>::value ? "float" : "int");
  TSDI_ROW_PARAMS(TSDI_LIST_ROW_PARAM)
#undef TSDI_LIST_ROW_PARAM
  return params;
}

// The CPU kernel's pass 2 on float32 values x <= 0 (native byte order): exp(x) as the selected
// instruction set's build computes it, for the tests that compare its bits with the reference's.
pybind11::bytes exp_weights(const std::string& values) {
  std::vector<float> w(values.size() / sizeof(float));
  std::memcpy(w.data(), values.data(), w.size() * sizeof(float));
  tsdi::cpu::exp_weights_in_place(w.data(), static_cast<int64_t>(w.size()));
  return pybind11::bytes(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
}

// The instruction set the CPU kernel runs with: "x86-64-v4", "x86-64-v3" or "baseline".
std::string cpu_isa() {
  switch (tsdi::cpu::selected_isa()) {
    case tsdi::cpu::Isa::kX86_64_V4: return "x86-64-v4";
    case tsdi::cpu::Isa::kX86_64_V3: return "x86-64-v3";
    default: return "baseline";
  }
}

pybind11::dict build_info() {
  pybind11::dict info;
#if defined(TSDI_WITH_CUDA)
  info["cuda"] = true;
  info["cuda_version"] = std::string(TSDI_CUDA_VERSION);
  info["cuda_archs"] = std::string(TSDI_CUDA_ARCHS);
#else
  info["cuda"] = false;
#endif
#if defined(TSDI_TORCH_VERSION)
  info["torch_version"] = std::string(TSDI_TORCH_VERSION);
#endif
  info["compiler"] = std::string(__VERSION__);
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "tsdi_ext native extension: registers the tsdi_ext.* dispatcher ops";
  module.def("philox4x32_10", &philox4x32_10, pybind11::arg("counter"), pybind11::arg("key"),
             "Philox4x32-10 of a 4-word counter and a 2-word key (the kernels' generator).");
  module.def("uniform", &tsdi::uniform_from_seed_offset, pybind11::arg("seed"),
             pybind11::arg("offset"),
             "The uniform in [0, 1) that every backend draws for (seed, offset) (uint64 each).");
  module.def("build_info", &build_info, "How this extension was built.");
  module.def("exp_weights", &exp_weights, pybind11::arg("values"),
             "The CPU kernel's exp of float32 values <= 0 (bytes in, bytes out), for tests.");
  module.def("cpu_isa", &cpu_isa, "The instruction set the CPU kernel runs with.");
  module.def("row_params", &row_params,
             "The per-row parameters of the ops, in order: [(name, 'float' | 'int')].");
}
