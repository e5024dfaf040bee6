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
# Environment: PYTHON (default python3), WHEEL_DIR (default dist), MAX_JOBS (default: all cores),
# TORCH_CUDA_ARCH_LIST (CUDA default "8.0;8.6;8.9;9.0+PTX": the kernel itself needs sm_90
# (thread-block clusters); older architectures get a stub so that one wheel loads everywhere and
# refuses with a clear error).
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
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0+PTX}"
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
"$PYTHON" -m pip wheel --no-build-isolation --no-deps -w "$WHEEL_DIR" .
if [[ "${2:-}" == "--sdist" ]]; then
  # The sdist is flavour-neutral (it builds the CPU extension without CUDA, the CUDA one with it):
  # no local version label.
  TSDI_EXT_LOCAL_VERSION=0 "$PYTHON" -m build --sdist --no-isolation --outdir "$WHEEL_DIR" .
fi
ls -l "$WHEEL_DIR"
