#!/usr/bin/env bash
# The full CUDA build and the other corner of the support matrix, on a machine without a GPU.
#
#   1. the sdist, built from the checkout;
#   2. from that sdist, the CUDA wheel (tools/build_wheels.sh cuda: nvcc for the default
#      architectures, linked against libtorch_cuda) with Python 3.12 and torch 2.11 from PyPI,
#      whose Linux build carries CUDA 13.0 (what the GPU machines run);
#   3. the wheel installed, not editable, into that fresh virtual environment; `python -m
#      tsdi_ext.info` must report the cuda backend and a build that matches torch;
#   4. the whole Python suite against the installed wheel (the CUDA tests skip: no GPU here).
# The main job (make test) covers the other corner: Python 3.11, torch 2.13 CPU, the CPU wheel.
#
# Environment: CUDA_WHEEL_PYTHON (default: python3.12, or pyenv's 3.12), CUDA_WHEEL_TORCH
# (default torch==2.11.0), CUDA_WHEEL_VENV (default .venv-cuda-wheel; recreated), CUDA_HOME
# (default /usr/local/cuda when it exists), TORCH_CUDA_ARCH_LIST, MAX_JOBS.
# Exits 0 with a notice, checking nothing, when nvcc or Python 3.12 is missing or torch cannot be
# fetched from the package index; any other failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "check_cuda_wheel: $*"; }

python_312() {
  local candidate
  for candidate in "${CUDA_WHEEL_PYTHON:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if [[ -n "$candidate" ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

command -v nvcc >/dev/null || { say "nvcc not found, skipping"; exit 0; }
PYTHON312="$(python_312)" || { say "no Python 3.12 found, skipping"; exit 0; }
TORCH_SPEC="${CUDA_WHEEL_TORCH:-torch==2.11.0}"
VENV="${CUDA_WHEEL_VENV:-.venv-cuda-wheel}"
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then export CUDA_HOME=/usr/local/cuda; fi

rm -rf "$VENV"
"$PYTHON312" -m venv "$VENV"
PY="$(cd "$VENV/bin" && pwd)/python"
"$PY" -m pip install -q --upgrade pip
if ! "$PY" -m pip install -q "$TORCH_SPEC"; then
  say "could not install $TORCH_SPEC from the package index, skipping"; exit 0
fi
"$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'check_cuda_wheel: $TORCH_SPEC has no CUDA')"
"$PY" -m pip install -q -r requirements-dev.txt
"$PY" -m pip install -q --no-deps -r requirements-data.txt
export PATH="$(dirname "$PY"):$PATH"  # the venv's ninja

dist="$(cd "$VENV" && pwd)/dist"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say "sdist"
"$PY" -m build -q --sdist --no-isolation --outdir "$dist" . > /dev/null
tar -xzf "$dist"/tsdi_ext-*.tar.gz -C "$work"
say "CUDA wheel from the sdist, against $("$PY" -c 'import torch; print(torch.__version__)')"
(cd "$work"/tsdi_ext-*/ && WHEEL_DIR="$dist" PYTHON="$PY" tools/build_wheels.sh cuda)
wheel="$(ls "$dist"/tsdi_ext-*+cu*.whl)"
"$PY" -m pip install -q --no-deps "$wheel"

# Outside the checkout and with -P, so that only the installed package can be imported.
info="$(cd "$work" && "$PY" -P -m tsdi_ext.info)"
echo "$info"
grep -q "backends .*cuda (CUDA" <<< "$info" || { say "the wheel has no cuda backend" >&2; exit 1; }
grep -q "build_matches_torch *yes" <<< "$info" || { say "the wheel does not match torch" >&2; exit 1; }
HF_HUB_OFFLINE=1 "$PY" -P -m pytest python_tests -q -p no:cacheprovider
say "ok: $(basename "$wheel")"
