#!/usr/bin/env bash
# The GPU checks of a session that has a GPU lent, one step per device call (each stays under the
# device tool's 10 minutes). Runs on the device machine, in the repository root. Its python3
# already holds torch 2.11 + CUDA 13.0 and most test dependencies, and nothing can be fetched
# there. Bring the cu130 wheel that CI builds (tools/check_sdist_wheels.sh writes it for Python 3.12,
# the device's Python) as a carried path:
#
#   run(command="tools/gpu_session.sh tests", carry=[".venv-cuda-wheel/dist"])
#   run(command="tools/gpu_session.sh sanitizer")   # the next steps reuse the installed wheel
#   run(command="tools/gpu_session.sh bench")
#
# Steps (each writes its raw output to $OUT/<step>.log, or benchmarks/results/gpu/ without $OUT):
#   tests      env report; the carried wheel installed (not editable) into a fresh target
#              directory; python -m tsdi_ext.info; the whole python_tests/ suite, CUDA included
#   sanitizer  compute-sanitizer memcheck, then racecheck, on python_tests/test_cuda.py
#   bench      benchmarks/bench_cuda.py (JSON beside the log), then ncu on the kernel at
#              B=1 and B=256, V=128256
# Without a carried wheel, `tests` builds one there first (tools/build_wheels.sh cuda).
set -uo pipefail
cd "$(dirname "$0")/.."
step="${1:?usage: tools/gpu_session.sh tests|sanitizer|bench}"
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
SITE=/tmp/tsdi_ext_site  # the installed wheel; survives between calls while the machine is warm
log="$OUT/$step.log"
exec > >(tee "$log") 2>&1

echo "# tools/gpu_session.sh $step | $(date -u +%Y-%m-%dT%H:%M:%SZ) | git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
nvcc --version | tail -1

# With python -P, the installed package is the only tsdi_ext: the checkout is not on sys.path.
export PYTHONPATH="$SITE" HF_HUB_OFFLINE=1
installed() { [[ -d "$SITE/tsdi_ext" ]]; }

case "$step" in
  tests)
    wheel="$(ls .venv-cuda-wheel/dist/tsdi_ext-*+cu*-cp"$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"-*.whl 2>/dev/null | head -1)"
    if [[ -z "$wheel" ]]; then
      echo "no carried wheel for this Python: building one"
      TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" WHEEL_DIR=/tmp/tsdi_dist PYTHON="$PY" tools/build_wheels.sh cuda || exit 1
      wheel="$(ls /tmp/tsdi_dist/tsdi_ext-*+cu*.whl | head -1)"
    fi
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-deps --no-index --target "$SITE" "$wheel" || exit 1
    echo "installed $(basename "$wheel")"
    "$PY" -P -m tsdi_ext.info
    # -rs: every skip with its reason (a CUDA test must not skip here).
    "$PY" -P -m pytest python_tests -q -rs -p no:cacheprovider
    ;;
  sanitizer)
    installed || { echo "run the tests step first"; exit 1; }
    # Only the tsdi_ext kernels are instrumented (kns: kernel-name substring), the rest of torch
    # runs at full speed; each tool gets 4.5 minutes so that both fit in one device call. The
    # millions-of-draws and torch.compile tests add launches, not coverage.
    for tool in memcheck racecheck; do
      echo "## compute-sanitizer --tool $tool"
      timeout 270 compute-sanitizer --tool "$tool" \
        --kernel-name kns=sampling_kernel --error-exitcode 9 --target-processes all \
        "$PY" -P -m pytest python_tests/test_cuda.py -q -p no:cacheprovider -k "not millions and not compile"
      echo "## $tool exit code: $? (9: errors found, 124: timed out)"
    done
    ;;
  bench)
    installed || { echo "run the tests step first"; exit 1; }
    "$PY" -P benchmarks/bench_cuda.py --out "$OUT/cuda_sampling.json"
    cat > /tmp/tsdi_ncu.py <<'EOF'
import torch, tsdi_ext
for batch in (1, 256):
    logits = torch.randn(batch, 128256, device="cuda") * 3
    for _ in range(3):
        tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, seed=0, offset=0)
torch.cuda.synchronize()
EOF
    ncu --kernel-name regex:sampling_kernel --launch-skip 2 --launch-count 2 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section LaunchStats --section WarpStateStats "$PY" -P /tmp/tsdi_ncu.py
    ;;
  *)
    echo "unknown step $step"; exit 2 ;;
esac
