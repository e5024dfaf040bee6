import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The paper experiment (experiments/replication) is not part of the package: it is imported as
# `replication` from experiments/, appended so that the installed tsdi_ext keeps precedence over
# the source tree.
sys.path.append(str(Path(__file__).resolve().parents[1] / "experiments"))

import pytest  # noqa: E402
import torch  # noqa: E402

import tsdi_ext  # noqa: E402,F401  (registers the ops)
from tsdi_ext.ops import _native  # noqa: E402

HAS_CUDA = torch.cuda.is_available() and _native.cuda_available()
FUSED_DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(
                not HAS_CUDA, reason="no CUDA device or tsdi_ext built without CUDA"
            ),
        ],
    ),
]


@pytest.fixture(params=FUSED_DEVICES)
def device(request):
    """Each device with a fused kernel: CPU always, CUDA when present (skipped with a reason)."""
    return request.param


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny word-level tokenizer of tiny_models.py (the pipeline and replication tests)."""
    from tiny_models import tiny_tokenizer

    return tiny_tokenizer()


# --------------------------------------------------------------------------- the tiny sweep
# (python_tests/eval and python_tests/experiments)

from sweep_data import BOOST, RESCORE_CONFIGS, SETS, starts_with_sorry  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pair(tokenizer):
    """Reference and aligned share weights; the aligned one adds BOOST to the "sorry" logit."""
    from tiny_models import prefer_token, tiny_llama

    reference, aligned = tiny_llama(0), tiny_llama(0)
    prefer_token(aligned, tokenizer.convert_tokens_to_ids("sorry"), BOOST)
    return {"reference": (reference, tokenizer), "aligned": (aligned, tokenizer)}


@pytest.fixture(scope="module")
def sorry_bias(tokenizer, tiny_pair):
    """[2, V]: +BOOST on "sorry" at response position 0, zero elsewhere (row 1 included)."""
    vocab = tiny_pair["aligned"][0].config.vocab_size
    bias = torch.zeros(2, vocab)
    bias[0, tokenizer.convert_tokens_to_ids("sorry")] = BOOST
    return bias


@pytest.fixture(scope="module")
def sweep_source(tmp_path_factory, tiny_pair, sorry_bias):
    """A pristine sweep directory (responses.jsonl, sweep.csv, sweep.json) and its rows; tests copy it."""
    from tsdi_ext.eval import run_sweep, write_table

    directory = tmp_path_factory.mktemp("sweep_source")
    rows = run_sweep(
        tiny_pair,
        sorry_bias,
        RESCORE_CONFIGS,
        SETS,
        scorer=starts_with_sorry,
        max_new_tokens=2,
        batch_size=3,
        progress=False,
        responses_path=directory / "responses.jsonl",
        fluency=tiny_pair["reference"],
    )
    write_table(rows, directory)
    return directory, rows


@pytest.fixture
def sweep_dir(tmp_path, sweep_source):
    import shutil

    directory = tmp_path / "sweep"
    shutil.copytree(sweep_source[0], directory)
    return directory
