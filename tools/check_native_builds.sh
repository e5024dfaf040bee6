#!/usr/bin/env bash
# Compile checks that need no GPU and no CUDA torch installed:
#   * the CUDA glue (csrc/sampling_cuda.cu) with nvcc for sm_90, and
#   * the CPU glue and bindings with the host compiler,
# both against the headers of the torch 2.11 wheel (what the GPU machines carry; the CPU wheel here
# lacks ATen/c10's CUDA headers). The wheel is fetched once from PyPI into build/ (about 530 MB).
# Exits 0 with a notice, checking nothing, when nvcc is missing or the wheel cannot be fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="$(command -v "${PYTHON:-python3}")"
# Absolute (the extraction below runs in another directory) but not symlink-resolved: a venv's
# python must stay the venv's.
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
TORCH_SPEC="${TORCH_HEADERS_SPEC:-torch==2.11.0}"
cache="build/torch-headers/${TORCH_SPEC//=/}"
if ! command -v nvcc >/dev/null; then
  echo "check_native_builds: nvcc not found, skipping"; exit 0
fi
if [[ ! -d "$cache/torch/include" ]]; then
  mkdir -p "$cache"
  if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 "$TORCH_SPEC" -d "$cache" 2>/dev/null; then
    echo "check_native_builds: could not fetch $TORCH_SPEC from the package index, skipping"; exit 0
  fi
  (cd "$cache" && "$PYTHON" -m zipfile -e torch-*.whl . && rm -f torch-*.whl && rm -rf torch/lib torch/bin functorch torchgen)
  [[ -f "$cache/torch/include/ATen/ops/empty.h" ]] || { echo "check_native_builds: extraction failed" >&2; exit 1; }
fi
inc=(-Icsrc "-I$cache/torch/include" "-I$cache/torch/include/torch/csrc/api/include"
     "-I$("$PYTHON" -c 'import pybind11; print(pybind11.get_include())')"
     "-I$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')")
defs=(-D_GLIBCXX_USE_CXX11_ABI=1 -DTORCH_EXTENSION_NAME=_C '-DTSDI_TORCH_VERSION="2.11"' -DTSDI_WITH_CUDA
      '-DTSDI_CUDA_VERSION="13.0"' '-DTSDI_CUDA_ARCHS="9.0"')
config() { "$PYTHON" -c "import json; c = json.load(open('csrc/build_config.json')); print(' '.join($1))"; }
read -r -a nvflags <<< "$(config 'c["nvcc_flags"]')"
read -r -a cxxflags <<< "$(config 'c["cxx_flags"]')"
out=$(mktemp -d)
for source in $(config 'c["glue_sources_cuda"]'); do
  echo "check_native_builds: nvcc sm_90 $source against $TORCH_SPEC headers"
  nvcc -std=c++17 -arch=sm_90 "${nvflags[@]}" "${inc[@]}" "${defs[@]}" -c "$source" -o "$out/cuda.o"
done
for source in $(config 'c["glue_sources_cpu"] + c["kernel_sources_cpu"]'); do
  echo "check_native_builds: c++ $source against $TORCH_SPEC headers"
  g++ -std=c++17 "${cxxflags[@]}" "${inc[@]}" "${defs[@]}" -c "$source" -o "$out/cpu.o"
done
rm -rf "$out"
echo "check_native_builds: all compiled"
