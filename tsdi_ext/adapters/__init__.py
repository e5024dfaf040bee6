"""TSDI inside serving engines (docs/engines.md).

* :mod:`tsdi_ext.adapters.vllm`: logits processors for vLLM, one per model-runner interface;
  requests opt in with ``SamplingParams(extra_args={"tsdi_bias": path, ...})``.
* :mod:`tsdi_ext.adapters.llama_cpp`: a ``logits_processor`` for ``llama_cpp.Llama`` (debiasing
  only) and a llama.cpp sampler that runs the whole fused :func:`tsdi_ext.sample` step.

Each submodule imports its engine; this package imports neither.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..bias import BiasTable

__all__ = ["BiasCache", "tsdi_request_args"]

# The per-request arguments, one spelling for every engine.
BIAS_KEY, ALPHA_KEY, LENGTH_KEY = "tsdi_bias", "tsdi_alpha", "tsdi_length"


def tsdi_request_args(extra: dict | None) -> tuple[str, float, int | None] | None:
    """``(bias_path, alpha, length)`` from a request's extra arguments, None without ``tsdi_bias``.

    ``tsdi_alpha`` defaults to 1.0; ``tsdi_length`` (L, the number of response positions
    debiased) defaults to the table's length and is capped by it.

    Raises
    ------
    ValueError
        For arguments of the wrong type or range, naming what was given (a ValueError, which
        vLLM turns into HTTP 400, whatever was wrong).
    """
    if not extra or extra.get(BIAS_KEY) is None:
        return None
    path = extra[BIAS_KEY]
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"tsdi_ext: {BIAS_KEY} is a bias file path, got {type(path).__name__}")
    alpha = extra.get(ALPHA_KEY, 1.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"tsdi_ext: {ALPHA_KEY} is a finite number, got {alpha!r}")
    length = extra.get(LENGTH_KEY)
    if length is not None and (
        isinstance(length, bool) or not isinstance(length, int) or length < 0
    ):
        raise ValueError(f"tsdi_ext: {LENGTH_KEY} is an integer >= 0, got {length!r}")
    if not Path(path).is_file():
        raise ValueError(f"tsdi_ext: {BIAS_KEY} {str(path)!r} is not a file")
    return str(path), float(alpha), length


class BiasCache:
    """Bias tables stacked into one ``[sum of L, V]`` tensor on ``device``, each file read once.

    A file is keyed by its resolved path, size and modification time, so an overwritten file is
    read again and requests naming the same file share one copy. ``lookup`` gives the table's
    first row in the stack and its length: a request's row for response position ``t`` is
    ``offset + t``, so every request of a batch is debiased by one gather from one tensor.
    """

    def __init__(self, vocab_size: int, device):
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        self.stack = torch.empty(0, vocab_size, dtype=torch.float32, device=self.device)
        self._rows: dict[tuple, tuple[int, int]] = {}

    def lookup(self, path: str) -> tuple[int, int]:
        """``(offset, length)`` of the table in ``path``, loaded on first use."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
        if key not in self._rows:
            table = BiasTable.load(resolved, vocab_size=self.vocab_size)
            self._rows[key] = (self.stack.shape[0], table.length)
            self.stack = torch.cat([self.stack, table.to(self.device)])
        return self._rows[key]
