import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import tsdi_ext  # noqa: E402,F401  (registers the ops)
from tsdi_ext import _ops  # noqa: E402

HAS_CUDA = torch.cuda.is_available() and _ops.cuda_available()
FUSED_DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or tsdi_ext built without CUDA"),
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
