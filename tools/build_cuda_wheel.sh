#!/usr/bin/env bash
# The cu130 wheel for Python 3.12 + torch 2.11 (what the GPU checks run on), built on a machine
# without a GPU: PyPI's Linux torch 2.11 is the CUDA 13.0 build and carries its libraries, and the
# machine's nvcc compiles the kernels. Makes a fresh virtual environment ($CUDA_WHEEL_VENV, default
# .venv-cuda-wheel) with Python 3.12, that torch and the dev requirements, builds the wheel from
# SOURCE (default: this checkout; CI passes an unpacked sdist) into $CUDA_WHEEL_VENV/dist and
# installs it there (not editable).
#
#   tools/build_cuda_wheel.sh [SOURCE]
#   make cuda-wheel          # the same for sm_90 only (TORCH_CUDA_ARCH_LIST=9.0): the GPU session's wheel
#
# Environment: CUDA_WHEEL_PYTHON (default: python3.12, or pyenv's 3.12), CUDA_WHEEL_TORCH (default
# torch==2.11.0), CUDA_WHEEL_VENV, CUDA_HOME (default /usr/local/cuda when it exists),
# TORCH_CUDA_ARCH_LIST, MAX_JOBS.
# Exit status 3, with the reason on stderr, when the wheel cannot be built here for want of nvcc,
# Python 3.12 or that torch in the package index; any other failure (a torch install that fails
# for another reason, a full disk) is status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="$(cd "${1:-.}" && pwd)"
say() { echo "build_cuda_wheel: $*" >&2; }

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

command -v nvcc >/dev/null || { say "nvcc not found"; exit 3; }
PYTHON312="$(python_312)" || { say "no Python 3.12 found"; exit 3; }
TORCH_SPEC="${CUDA_WHEEL_TORCH:-torch==2.11.0}"
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then export CUDA_HOME=/usr/local/cuda; fi

VENV="${CUDA_WHEEL_VENV:-.venv-cuda-wheel}"
rm -rf "$VENV"
"$PYTHON312" -m venv "$VENV"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# Skip only when the index has no such torch; any other install failure (a full disk, a broken
# wheel) is a failure, not a reason to skip: a disk-full CI run once passed here by skipping.
err="$(mktemp)"
trap 'rm -f "$err"' EXIT
if ! "$PY" -m pip install -q "$TORCH_SPEC" 2> "$err"; then
  cat "$err" >&2
  if grep -qE "No matching distribution found|Could not find a version that satisfies" "$err"; then
    say "$TORCH_SPEC is not in the package index"; exit 3
  fi
  say "installing $TORCH_SPEC failed"; exit 1
fi
"$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'build_cuda_wheel: $TORCH_SPEC has no CUDA')"
"$PY" -m pip install -q -r requirements-dev.txt
"$PY" -m pip install -q --no-deps -r requirements-data.txt
export PATH="$VENV/bin:$PATH"  # the venv's ninja

say "cu130 wheel from $SOURCE against $("$PY" -c 'import torch; print(torch.__version__)')"
(cd "$SOURCE" && WHEEL_DIR="$VENV/dist" PYTHON="$PY" tools/build_wheels.sh cuda)
"$PY" -m pip install -q --no-deps "$(ls "$VENV"/dist/tsdi_ext-*+cu*.whl)"
