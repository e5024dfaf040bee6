"""TSDI for llama.cpp through llama-cpp-python (docs/engines.md).

* :class:`TSDILogitsProcessor`: a ``logits_processor`` for ``Llama.create_completion`` /
  ``create_chat_completion`` / ``generate``: subtracts ``alpha * bias[t]`` at response position
  ``t < L``; llama.cpp's own samplers do the rest.
* :class:`TSDISampler`: a llama.cpp sampler (``llama_sampler``) whose ``apply`` runs the whole
  fused :func:`tsdi_ext.sample` step (debias, temperature, top-p, the seeded draw) on the raw
  logits of the context, so a token is the one ``tsdi_ext.sample`` gives for those logits and
  ``(seed, offset)``; :func:`generate` is the decoding loop that uses it.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
import numpy as np
import torch

from ..bias import BiasTable
from ..ops import sample

__all__ = ["TSDILogitsProcessor", "TSDISampler", "generate"]


def _table(bias, vocab_size: int, length: int | None) -> torch.Tensor:
    if isinstance(bias, (str, Path)):
        bias = BiasTable.load(bias, vocab_size=vocab_size)
    if isinstance(bias, BiasTable):
        bias.check_compatible(vocab_size=vocab_size)
        bias = bias.bias
    if not isinstance(bias, torch.Tensor) or bias.dim() != 2 or bias.shape[1] != vocab_size:
        raise ValueError(
            f"tsdi_ext: bias is a bias file, a BiasTable or a [L, {vocab_size}] tensor, got "
            f"{tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__}"
        )
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"tsdi_ext: length is an integer >= 0, got {length!r}")
        bias = bias[:length]
    return bias.detach().to(dtype=torch.float32, device="cpu").contiguous()


class TSDILogitsProcessor:
    """``logits_processor`` for ``llama_cpp.Llama`` generation: debiasing only.

    Parameters
    ----------
    bias : str, Path, BiasTable or torch.Tensor
        The ``[L, V]`` table or its file.
    vocab_size : int
        The model's vocabulary (``llm.n_vocab()``).
    alpha : float
        Debiasing strength.
    length : int, optional
        Debias the first ``length`` response positions only (default: the table's L).
    prompt_length : int, optional
        Prompt tokens of the generation. By default the first call's ``input_ids`` are the
        prompt, and a call whose ``input_ids`` did not grow by one token starts a new generation
        (so one processor serves consecutive completions); :meth:`reset` starts one explicitly.

    llama-cpp-python hands the scores as a strided view of its candidate array (12-byte stride);
    they are copied into a contiguous buffer, debiased there and returned, and llama-cpp-python
    copies them back: much faster than arithmetic on the strided view.
    """

    def __init__(
        self,
        bias,
        vocab_size: int,
        alpha: float = 1.0,
        *,
        length: int | None = None,
        prompt_length: int | None = None,
    ):
        table = _table(bias, vocab_size, length)
        # alpha * bias rounded once to float32, as docs/contract.md §2 has it.
        self._shift = (torch.tensor(float(alpha), dtype=torch.float32) * table).numpy()
        self._buffer = np.empty(vocab_size, dtype=np.float32)
        self._given_prompt_length = prompt_length
        self.reset()

    def reset(self) -> None:
        """The next call starts a new generation."""
        self._prompt_length = self._given_prompt_length
        self._last = None

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        n = len(input_ids)
        starts = self._last is None or n != self._last + 1
        if starts and self._given_prompt_length is None:
            self._prompt_length = n
        self._last = n
        position = n - self._prompt_length
        if not 0 <= position < self._shift.shape[0]:
            return scores
        if scores.shape != self._buffer.shape:
            raise ValueError(
                f"tsdi_ext: expected the {self._buffer.shape[0]} scores of the whole vocabulary, "
                f"got {scores.shape} (put the TSDI processor first)"
            )
        np.copyto(self._buffer, scores)
        np.subtract(self._buffer, self._shift[position], out=self._buffer)
        return self._buffer


class TSDISampler:
    """A llama.cpp sampler that runs the fused :func:`tsdi_ext.sample` step.

    ``apply`` reads the context's raw logits in place (``llama_get_logits_ith``, no copy), calls
    ``tsdi_ext.sample`` with the bias row of the response position (the number of tokens accepted
    since the last reset), ``alpha``, ``temperature``, ``top_p``, ``seed`` and ``offset =``
    that position, and selects the token in llama.cpp's candidate array. Use it on its own, not
    behind other samplers of a chain: it reads the raw logits, not the candidates.

    Parameters
    ----------
    llm : llama_cpp.Llama
        The model whose context is sampled.
    bias : str, Path, BiasTable or torch.Tensor, optional
        The ``[L, V]`` table or its file; None: no debiasing.
    alpha, temperature, top_p, seed
        As in :func:`tsdi_ext.sample` (``temperature=0``: greedy).
    length : int, optional
        Debias the first ``length`` response positions only.

    Attributes
    ----------
    sampler : llama_cpp.llama_sampler_p
        The sampler for ``llama_cpp.llama_sampler_sample(sampler, ctx, -1)``.
    """

    def __init__(
        self,
        llm,
        bias=None,
        *,
        alpha: float = 1.0,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        length: int | None = None,
    ):
        self.llm = llm
        self.vocab_size = llm.n_vocab()
        self.bias = None if bias is None else _table(bias, self.vocab_size, length)
        self.alpha, self.temperature, self.top_p, self.seed = alpha, temperature, top_p, seed
        self.position = 0
        self.last_valid = True
        # The callbacks and the interface must outlive the C sampler that points at them.
        self._callbacks = (
            llama_cpp.llama_sampler_i_name(lambda _: b"tsdi"),
            llama_cpp.llama_sampler_i_accept(self._accept),
            llama_cpp.llama_sampler_i_apply(self._apply),
            llama_cpp.llama_sampler_i_reset(self._reset),
        )
        self._iface = llama_cpp.llama_sampler_i()
        self._iface.name, self._iface.accept, self._iface.apply, self._iface.reset = self._callbacks
        # clone and free stay NULL: the sampler has no C-side context to copy or release.
        self.sampler = llama_cpp.llama_sampler_init(ctypes.pointer(self._iface), None)

    def close(self) -> None:
        """Frees the C sampler (also done when the object is collected)."""
        if getattr(self, "sampler", None) is not None:  # None too when __init__ raised
            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None

    def __del__(self):
        self.close()

    def reset(self) -> None:
        """Starts a new response: position (and draw offset) 0."""
        self.position = 0

    def _reset(self, _sampler) -> None:
        self.reset()

    def _accept(self, _sampler, _token) -> None:
        self.position += 1

    def logits(self) -> torch.Tensor:
        """``[1, V]`` view of the context's last logits (valid until the next decode)."""
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(1, self.vocab_size)))

    def step(self, logits: torch.Tensor) -> tuple[int, bool]:
        """The fused step on ``[1, V]`` logits at the current position: ``(token, valid)``."""
        table = self.bias
        positions = None
        if table is not None:
            positions = torch.full((1,), self.position, dtype=torch.int64)
        tokens, valid = sample(
            logits,
            bias=table,
            positions=positions,
            alpha=self.alpha,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            offset=self.position,
        )
        return int(tokens[0]), bool(valid[0])

    def _apply(self, _sampler, candidates) -> None:
        token, self.last_valid = self.step(self.logits())
        array = candidates.contents
        # llama.cpp fills the candidates in token order; look the token up if they were reordered.
        index = token
        if not (index < array.size and array.data[index].id == token):
            index = next(i for i in range(array.size) if array.data[i].id == token)
        array.selected = index


def generate(llm, prompt_tokens, sampler: TSDISampler, max_tokens: int = 64) -> list[int]:
    """Decodes up to ``max_tokens`` after ``prompt_tokens`` with ``sampler``; stops after an
    end-of-generation token (included) or a row the op flags invalid (its token excluded)."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    sampler.reset()
    llm.eval(list(prompt_tokens))
    tokens: list[int] = []
    for _ in range(max_tokens):
        token = llama_cpp.llama_sampler_sample(sampler.sampler, llm.ctx, -1)
        if not sampler.last_valid:
            break
        tokens.append(token)
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            break
        llm.eval([token])
    return tokens
