"""What the engine tests share: bias files, prompts."""

import importlib
import os

import pytest
import torch

from tsdi_ext import BiasTable


def require_engine(name: str, module: str):
    """The engine's module; a skip with the reason where this is not the engine's environment."""
    if os.environ.get("TSDI_ENGINE") == name:
        return importlib.import_module(module)  # its own environment: missing is a failure
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.skip(
            f"{name} is not installed here ({error}); its tests run in its own environment: "
            "make engines test-engines",
            allow_module_level=True,
        )


PROMPTS = [
    "Write one sentence about the history of the Roman army.",
    "How do I kill a Python process that hangs?",
    "Name three uses of copper.",
    "What is the capital of Australia?",
]


def save_table(path, bias: torch.Tensor) -> str:
    """A bias file holding ``bias`` ([L, V]), as tsdi estimate writes them."""
    BiasTable(bias, {"aligned": "smollm2", "reference": "none"}).save(path)
    return str(path)


def random_bias(length: int, vocab: int, *, scale: float = 2.0, seed: int = 0) -> torch.Tensor:
    """``[length, vocab]`` N(0, scale^2) entries: strong enough to change greedy tokens."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(length, vocab, generator=g) * scale
