// Every op of tsdi_ext, in one place. The schemas are registered with the PyTorch dispatcher
// (so the ops work under torch.compile and in TorchScript); each device's implementation
// registers itself beside its kernel (sampling_cpu.cpp, sampling_cuda.cu). The pybind11 module
// carries build information and the random number generator for tests.
//
// Per-row parameters come in pairs: an optional [B] tensor and a scalar used when the tensor is
// absent, so a Python scalar never costs a tensor allocation.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <array>
#include <string>

#include "tsdi/common.h"

TORCH_LIBRARY(tsdi_ext, m) {
  m.def(
      "sample(Tensor logits, Tensor? bias, Tensor? positions, Tensor? alpha, float alpha_value, "
      "Tensor? temperature, float temperature_value, Tensor? top_p, float top_p_value, "
      "Tensor? seed, int seed_value, Tensor? offset, int offset_value) -> (Tensor, Tensor)");
  m.def(
      "sampling_probs(Tensor logits, Tensor? bias, Tensor? positions, Tensor? alpha, "
      "float alpha_value, Tensor? temperature, float temperature_value, Tensor? top_p, "
      "float top_p_value) -> Tensor");
}

namespace {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
  tsdi::Philox4x32 ctr{{counter[0], counter[1], counter[2], counter[3]}};
  const tsdi::Philox4x32 out = tsdi::philox4x32_10(ctr, key[0], key[1]);
  return {out.v[0], out.v[1], out.v[2], out.v[3]};
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
}
