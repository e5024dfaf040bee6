#!/usr/bin/env bash
# One sdist, both flavours of wheel built from it, on a machine without a GPU. Run by CI after
# `make test`, which leaves .venv (Python 3.11, torch 2.13 CPU).
#
#   1. the sdist, built from the checkout with .venv's Python;
#   2. the CPU wheel from that sdist with .venv's CPU torch (no CUDA: setup.py must detect that and
#      build the CPU extension only), installed into a fresh target directory: `python -m
#      tsdi_ext.info` must list no cuda backend, and a sample call must run;
#   3. the CUDA wheel from the same sdist (tools/build_wheels.sh cuda: nvcc for the default
#      architectures, linked against libtorch_cuda) with Python 3.12 and torch 2.11 from PyPI,
#      whose Linux build carries CUDA 13.0 (what the GPU machines run);
#   4. that wheel installed, not editable, into a fresh Python 3.12 virtual environment: `python -m
#      tsdi_ext.info` must report the cuda backend and a build that matches torch;
#   5. the whole Python suite against it (the CUDA tests skip: no GPU here).
# So CI covers both corners of the support matrix: Python 3.11 + torch 2.13 (make test) and
# Python 3.12 + torch 2.11 (here). The cp312 cu130 wheel stays in $CUDA_WHEEL_VENV/dist for
# tools/gpu_session.sh.
#
# Environment: CPU_PYTHON (default .venv/bin/python), CUDA_WHEEL_PYTHON (default: python3.12, or
# pyenv's 3.12), CUDA_WHEEL_TORCH (default torch==2.11.0), CUDA_WHEEL_VENV (default
# .venv-cuda-wheel; recreated), CUDA_HOME (default /usr/local/cuda when it exists),
# TORCH_CUDA_ARCH_LIST, MAX_JOBS.
# Steps 3-5 are skipped with a notice when nvcc or Python 3.12 is missing or the index has no
# such torch; any other failure (including a torch install that fails for another reason) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "check_sdist_wheels: $*"; }
# The environment report of an installed wheel must match each pattern given.
require_in_report() {
  local report="$1" pattern
  shift
  for pattern in "$@"; do
    grep -q "$pattern" <<< "$report" || { say "the report lacks '$pattern'" >&2; exit 1; }
  done
}

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

CPU_PY="$(cd "$(dirname "${CPU_PYTHON:-.venv/bin/python}")" && pwd)/$(basename "${CPU_PYTHON:-.venv/bin/python}")"
VENV="${CUDA_WHEEL_VENV:-.venv-cuda-wheel}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sdist_dir="$work/sdist"
say "sdist"
"$CPU_PY" -m build --sdist --no-isolation --outdir "$sdist_dir" . > /dev/null
sdist="$(ls "$sdist_dir"/tsdi_ext-*.tar.gz)"

say "CPU wheel from the sdist, against $("$CPU_PY" -c 'import torch; print(torch.__version__)')"
"$CPU_PY" -m pip wheel -q --no-build-isolation --no-deps -w "$work/cpu" "$sdist"
"$CPU_PY" -m pip install -q --no-deps --target "$work/cpu-site" "$work"/cpu/tsdi_ext-*.whl
info="$(cd "$work" && PYTHONPATH="$work/cpu-site" "$CPU_PY" -P -m tsdi_ext.info)"
echo "$info"
require_in_report "$info" "backends *cpu (fused C++ kernel), torch (reference)" "build_matches_torch *yes"
(cd "$work" && PYTHONPATH="$work/cpu-site" "$CPU_PY" -P -c "
import torch, tsdi_ext
tokens, valid = tsdi_ext.sample(torch.randn(3, 1000), temperature=0.7, top_p=0.9, seed=0, offset=0)
assert tokens.shape == (3,) and bool(valid.all()), (tokens, valid)
print('CPU wheel from the sdist: sample ok')")

command -v nvcc >/dev/null || { say "nvcc not found, skipping the CUDA wheel"; exit 0; }
PYTHON312="$(python_312)" || { say "no Python 3.12 found, skipping the CUDA wheel"; exit 0; }
TORCH_SPEC="${CUDA_WHEEL_TORCH:-torch==2.11.0}"
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then export CUDA_HOME=/usr/local/cuda; fi

rm -rf "$VENV"
"$PYTHON312" -m venv "$VENV"
PY="$(cd "$VENV/bin" && pwd)/python"
"$PY" -m pip install -q --upgrade pip
# Skip only when the index has no such torch; any other install failure (a full disk, a broken
# wheel) is a failure, not a reason to skip: a disk-full CI run once passed here by skipping.
if ! "$PY" -m pip install -q "$TORCH_SPEC" 2> "$work/torch-install.err"; then
  cat "$work/torch-install.err" >&2
  if grep -qE "No matching distribution found|Could not find a version that satisfies" "$work/torch-install.err"; then
    say "$TORCH_SPEC is not in the package index, skipping the CUDA wheel"; exit 0
  fi
  say "installing $TORCH_SPEC failed" >&2; exit 1
fi
"$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'check_sdist_wheels: $TORCH_SPEC has no CUDA')"
"$PY" -m pip install -q -r requirements-dev.txt
"$PY" -m pip install -q --no-deps -r requirements-data.txt
export PATH="$(dirname "$PY"):$PATH"  # the venv's ninja

dist="$(cd "$VENV" && pwd)/dist"
tar -xzf "$sdist" -C "$work"
say "CUDA wheel from the sdist, against $("$PY" -c 'import torch; print(torch.__version__)')"
(cd "$work"/tsdi_ext-*/ && WHEEL_DIR="$dist" PYTHON="$PY" tools/build_wheels.sh cuda)
wheel="$(ls "$dist"/tsdi_ext-*+cu*.whl)"
"$PY" -m pip install -q --no-deps "$wheel"

# Outside the checkout and with -P, so that only the installed package can be imported.
info="$(cd "$work" && "$PY" -P -m tsdi_ext.info)"
echo "$info"
require_in_report "$info" "backends .*cuda (CUDA" "build_matches_torch *yes"
HF_HUB_OFFLINE=1 "$PY" -P -m pytest python_tests -q -p no:cacheprovider
say "ok: $(basename "$wheel")"
