#!/usr/bin/env bash
# One sdist, both flavours of wheel built from it, on a machine without a GPU. Run by CI after
# `make test`, which leaves .venv (Python 3.11, torch 2.13 CPU).
#
#   1. the sdist, built from the checkout with .venv's Python;
#   2. the CPU wheel from that sdist with .venv's CPU torch (no CUDA: setup.py must detect that and
#      build the CPU extension only) by tools/build_wheels.sh, as a release is built: repaired to
#      a manylinux tag and checked by tools/check_wheel.py (torch pin matching the label, tag, no
#      vendored torch library); installed into a fresh target directory: `python -m
#      tsdi_ext.info` must list no cuda backend, and a sample call must run;
#   3. the CUDA wheel from the same sdist (tools/build_cuda_wheel.sh: nvcc for the default
#      architectures, linked against libtorch_cuda, repaired and checked the same way) with
#      Python 3.12 and torch 2.11 from PyPI, whose Linux build carries CUDA 13.0 (what the GPU
#      machines run);
#   4. that wheel installed, not editable, into a fresh Python 3.12 virtual environment: `python -m
#      tsdi_ext.info` must report the cuda backend and a build that matches torch;
#   5. the Python suite against it, but for the slow tests (the CUDA tests skip: no GPU here).
# So CI covers both corners of the support matrix: Python 3.11 + torch 2.13 (make test) and
# Python 3.12 + torch 2.11 (here). The cp312 cu130 wheel stays in $CUDA_WHEEL_VENV/dist for
# tools/gpu_session.sh.
#
# Environment: CPU_PYTHON (default .venv/bin/python), CUDA_WHEEL_VENV (default .venv-cuda-wheel;
# recreated) and the others of tools/build_cuda_wheel.sh.
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

CPU_PY="$(cd "$(dirname "${CPU_PYTHON:-.venv/bin/python}")" && pwd)/$(basename "${CPU_PYTHON:-.venv/bin/python}")"
VENV="${CUDA_WHEEL_VENV:-.venv-cuda-wheel}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sdist_dir="$work/sdist"
say "sdist"
"$CPU_PY" -m build --sdist --no-isolation --outdir "$sdist_dir" . > /dev/null
sdist="$(ls "$sdist_dir"/tsdi_ext-*.tar.gz)"

tar -xzf "$sdist" -C "$work"
src="$(ls -d "$work"/tsdi_ext-*/)"
# The sdist names no torch series (it compiles against whatever is installed).
grep -q "^Requires-Dist: torch>=2.11$" "$src/PKG-INFO" || { say "the sdist's torch requirement is not torch>=2.11" >&2; exit 1; }

say "CPU wheel from the sdist, against $("$CPU_PY" -c 'import torch; print(torch.__version__)')"
(cd "$src" && PYTHON="$CPU_PY" WHEEL_DIR="$work/cpu" tools/build_wheels.sh cpu)
"$CPU_PY" -m pip install -q --no-deps --target "$work/cpu-site" "$work"/cpu/tsdi_ext-*.whl
info="$(cd "$work" && PYTHONPATH="$work/cpu-site" "$CPU_PY" -P -m tsdi_ext.info)"
echo "$info"
require_in_report "$info" "backends *cpu (fused C++ kernel), torch (reference)" "build_matches_torch *yes"
(cd "$work" && PYTHONPATH="$work/cpu-site" "$CPU_PY" -P -c "
import torch, tsdi_ext
tokens, valid = tsdi_ext.sample(torch.randn(3, 1000), temperature=0.7, top_p=0.9, seed=0, offset=0)
assert tokens.shape == (3,) and bool(valid.all()), (tokens, valid)
print('CPU wheel from the sdist: sample ok')")

status=0
tools/build_cuda_wheel.sh "$src" || status=$?
if ((status == 3)); then say "skipping the CUDA wheel (above: why)"; exit 0; fi
((status == 0)) || exit "$status"
PY="$(cd "$VENV/bin" && pwd)/python"
wheel="$(ls "$VENV"/dist/tsdi_ext-*+cu*.whl)"

# Outside the checkout and with -P, so that only the installed package can be imported.
info="$(cd "$work" && "$PY" -P -m tsdi_ext.info)"
echo "$info"
require_in_report "$info" "backends .*cuda (CUDA" "build_matches_torch *yes"
# Not the slow tests: they exercise no more of the wheel, and make test has just run them.
HF_HUB_OFFLINE=1 "$PY" -P -m pytest python_tests -q -p no:cacheprovider -m "not slow"
say "ok: $(basename "$wheel")"
