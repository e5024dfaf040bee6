#!/usr/bin/env bash
# Every GPU check in ONE command with a deadline, for a GPU machine that is available for a short,
# fixed time with no network: install the CUDA wheel, the CUDA tests, the benchmark,
# compute-sanitizer, the rest of the suite, ncu. Runs on the GPU machine, in the repository root;
# its python3 holds torch 2.11 + CUDA 13.0 and most test dependencies. docs/gpu_checks.md says
# how to run it and what it returns.
#
# Before it, on a CPU machine (2.5 minutes, no GPU needed):
#   make cuda-wheel        # the cp312 cu130 wheel, sm_90 only, in .venv-cuda-wheel/dist
# then, on the GPU machine with that directory copied beside the checkout:
#   tools/gpu_session.sh
# and commit the files it writes under benchmarks/results/gpu/.
#
# The stages run in order of importance (the tests first), each under its own time cap and all
# under one deadline (GPU_SESSION_BUDGET_S, default 520 s from the start): a stage that would run
# past the deadline gets what is left, and one with nothing left is skipped, saying so. A hung or
# crashed stage costs only its own cap. Each writes one file under $OUT (8 files at most come
# back; benchmarks/results/gpu/ where $OUT is unset), in stage order:
#   tests.log           machine report, wheel install (or a build there if none was carried or
#                       it does not load), tsdi_ext.info, the CUDA tests (pytest -m cuda -rs),
#                       then the CUDA op tests again on the split chain (TSDI_EXT_CUDA_PATH=split)
#   bench.log, cuda_sampling.json   benchmarks/bench_cuda.py for both kernel paths (the split
#                       chain's rows under "other_paths"), JSON rewritten after every row
#   ncu.log, ncu.ncu-rep  Nsight Compute on the kernel at B=1 and B=256, V=128256
#   sanitizer.log       compute-sanitizer memcheck, racecheck, synccheck on a chosen subset
#   suite.log           the rest of python_tests/ (pytest -m "not cuda")
#   summary.txt         one line per stage: exit code, seconds, last line of its log
# Exit status 1 when setup or any stage failed, hit its cap or was skipped. `tools/gpu_session.sh
# STAGE ...` runs only the named stages (setup is implied).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
BUDGET="${GPU_SESSION_BUDGET_S:-520}"
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
SITE=/tmp/tsdi_ext_site  # the installed wheel
# With python -P, the installed package is the only tsdi_ext: the checkout is not on sys.path.
export PYTHONPATH="$SITE" HF_HUB_OFFLINE=1
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0  # the exit status: 1 when setup failed or any stage failed, hit its cap or was skipped

left() { echo $((BUDGET - (SECONDS - START))); }
granted() { local t; t=$(left); ((t > $1)) && t=$1; echo "$t"; }  # min(cap $1, time left)

# run_stage NAME CAP_S LOG COMMAND...: COMMAND under min(CAP_S, time left), appending to LOG.
run_stage() {
  local name="$1" cap="$2" log="$3"
  shift 3
  local t
  t=$(granted "$cap")
  if ((t < 10)); then
    echo "## $name: skipped, $(left) s of the budget left" | tee -a "$log"
    printf '%-10s skipped (budget spent)\n' "$name" >> "$SUMMARY"
    FAILED=1
    return 0
  fi
  echo "## $name: up to $t s | $(date -u +%H:%M:%S)" | tee -a "$log"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$t" "$@" >> "$log" 2>&1
  rc=$?
  ((rc == 0)) || FAILED=1
  local last
  last="$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-150)"
  echo "## $name: exit $rc after $((SECONDS - t0)) s (124: hit its time cap)" | tee -a "$log"
  printf '%-10s exit %-3s %4s s  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$last" >> "$SUMMARY"
  return 0
}

have_module() { "$PY" -c "import $1" 2>/dev/null; }

setup() {  # -> tests.log; exit status: whether the CUDA build loads and sees the GPU
  local log="$OUT/tests.log"
  {
    echo "# tools/gpu_session.sh | $(date -u +%Y-%m-%dT%H:%M:%SZ) | git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
    nvcc --version | tail -1
  } > "$log" 2>&1
  local abi wheel
  abi="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
  wheel="$(ls .venv-cuda-wheel/dist/tsdi_ext-*+cu*-cp"$abi"-*.whl 2>/dev/null | head -1)"
  cuda_loads() {
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-deps --no-index --target "$SITE" "$1" >> "$log" 2>&1 || return 1
    echo "installed $(basename "$1")" >> "$log"
    (cd /tmp && timeout 60 "$PY" -P -m tsdi_ext.info) >> "$log" 2>&1 || return 1
    (cd /tmp && timeout 120 "$PY" -P -c "
import torch, tsdi_ext
from tsdi_ext.ops import _native
assert torch.cuda.is_available() and _native.cuda_available(), 'no CUDA device or no CUDA build'
t, v = tsdi_ext.sample(torch.randn(2, 1000, device='cuda'), temperature=0.7, top_p=0.9, seed=0, offset=0)
torch.cuda.synchronize()
print('first CUDA call ok:', t.tolist(), v.tolist(), torch.cuda.get_device_name())") >> "$log" 2>&1
  }
  if [[ -n "$wheel" ]] && cuda_loads "$wheel"; then
    return 0
  fi
  echo "## no carried cp$abi wheel, or it does not load here: building one for sm_90 (counts against the budget)" | tee -a "$log"
  TORCH_CUDA_ARCH_LIST=9.0 WHEEL_DIR=/tmp/tsdi_dist PYTHON="$PY" \
    timeout 300 tools/build_wheels.sh cuda >> "$log" 2>&1 || return 1
  cuda_loads "$(ls /tmp/tsdi_dist/tsdi_ext-*+cu*.whl | head -1)"
}

PYTEST=("$PY" -P -m pytest -p no:cacheprovider -q)
have_module pytest_timeout && PYTEST+=(--timeout=120 --timeout-method=thread)

stage_tests() {  # the CUDA tests; -rs lists every skip with its reason (none may skip here)
  run_stage tests 120 "$OUT/tests.log" "${PYTEST[@]}" python_tests -m cuda -rs
  # The same CUDA op tests on the split chain (the path of GPUs without clusters), which the
  # default path does not take on sm_90+ (docs/cuda_kernel.md); the tests that force a path in a
  # child process have run above.
  run_stage tests-split 60 "$OUT/tests.log" env TSDI_EXT_CUDA_PATH=split "${PYTEST[@]}" \
    python_tests/ops/test_cuda.py -k "not forced_path and not unknown_path" -rs
}

stage_bench() {  # the benchmark stops starting rows 20 s before its cap and writes what it has
  # Both kernel paths side by side (the default one, then the split chain in a child process; one
  # JSON): on sm_90+ this decides which path serves which shapes (docs/cuda_kernel.md).
  local t
  t=$(granted 180)
  run_stage bench 180 "$OUT/bench.log" "$PY" -P benchmarks/bench_cuda.py --paths auto split \
    --out "$OUT/cuda_sampling.json" --budget-s $((t > 40 ? t - 20 : 20))
}

stage_sanitizer() {
  # Only the sampling kernel is instrumented (the rest of torch runs at full speed). The tools slow
  # each shared-memory access by orders of magnitude, so: 17 tests, small shapes first, so that a
  # cap cuts off the large ones, not the breadth: cluster sizes 1, 4 and 8, every dtype, V = 1,
  # B = 1024, graph capture and the no-sync path. memcheck runs without torch's caching allocator
  # and with 256 bytes of padding after each allocation, so that an access past a tensor's end hits
  # no other tensor; that allocator cannot capture graphs, so memcheck leaves the graph test out.
  local file=python_tests/test_cuda.py cases=() case tool cap
  for case in 5-1-{float32,bfloat16,float16} 1024-1019-{float32,bfloat16,float16} \
      8-32000-{float32,bfloat16,float16} 33-151936-{float32,bfloat16} 1-128256-{float32,float16} \
      3-262144-{float32,bfloat16}; do
    cases+=("$file::test_cuda_matches_cpu_token_for_token[$case]")
  done
  local sanitizer=(compute-sanitizer --kernel-name kns=sampling_kernel --error-exitcode 9 --print-limit 50
                   --report-api-errors no)
  for tool in memcheck racecheck synccheck; do
    case "$tool" in memcheck) cap=60 ;; racecheck) cap=90 ;; *) cap=40 ;; esac
    # pytest-timeout below the cap: a hung test is named, with its stack, before the cap kills it.
    local timeout_option=()
    have_module pytest_timeout && timeout_option=(--timeout=$((cap - 15)))
    if [[ "$tool" == memcheck ]]; then
      run_stage "$tool" "$cap" "$OUT/sanitizer.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
        "${sanitizer[@]}" --tool memcheck --padding 256 "${PYTEST[@]}" "${timeout_option[@]}" \
        "$file::test_no_host_sync_on_the_sampling_path" "${cases[@]}"
    else
      run_stage "$tool" "$cap" "$OUT/sanitizer.log" "${sanitizer[@]}" --tool "$tool" \
        "${PYTEST[@]}" "${timeout_option[@]}" "$file::test_cuda_graph_capture_and_replay" \
        "$file::test_no_host_sync_on_the_sampling_path" "${cases[@]}"
    fi
  done
}

stage_suite() {  # the rest of the suite, as CI runs it on the CPU (on 8 workers where xdist is there)
  local workers=()
  have_module xdist && workers=(-n 8)
  run_stage suite 110 "$OUT/suite.log" "${PYTEST[@]}" "${workers[@]}" python_tests -m "not cuda" -rs
}

stage_ncu() {
  cat > /tmp/tsdi_ncu.py <<'EOF'
import torch, tsdi_ext
for batch in (1, 256):
    logits = torch.randn(batch, 128256, device="cuda") * 3
    for _ in range(3):
        tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, seed=0, offset=0)
torch.cuda.synchronize()
EOF
  # --clock-control none: measure the card as it is, never change its clocks. The third launch at
  # each batch size (per launch configuration) is profiled: warm code, cold caches (ncu flushes
  # them between passes).
  # (regex:sampling_kernel also names the split chain's split_sampling_kernel, for a TSDI_EXT_CUDA_PATH=split run.)
  run_stage ncu 60 "$OUT/ncu.log" ncu --clock-control none --kernel-name regex:sampling_kernel \
    --filter-mode per-launch-config --launch-skip 2 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
    --export "$OUT/ncu" --force-overwrite "$PY" -P /tmp/tsdi_ncu.py
}

stages=("$@")
# ncu before the sanitizers and the suite: it is short, and only a GPU machine can do it.
((${#stages[@]})) || stages=(tests bench ncu sanitizer suite)
t0=$SECONDS
if setup; then
  printf '%-10s ok       %4s s  %s\n' setup "$((SECONDS - t0))" "$(grep '^installed' "$OUT/tests.log" | tail -1)" >> "$SUMMARY"
  for stage in "${stages[@]}"; do
    case "$stage" in
      tests | bench | sanitizer | suite | ncu) "stage_$stage" ;;
      *) echo "unknown stage $stage (tests, bench, sanitizer, suite, ncu)"; exit 2 ;;
    esac
  done
else
  printf '%-10s FAILED   %4s s  the CUDA build does not load or sees no GPU (tests.log)\n' setup "$((SECONDS - t0))" >> "$SUMMARY"
  tail -40 "$OUT/tests.log"
  FAILED=1
fi
echo "# gpu_session: $((SECONDS - START)) s of a $BUDGET s budget"
tail -25 "$OUT/bench.log" 2>/dev/null
cat "$SUMMARY"
exit "$FAILED"
