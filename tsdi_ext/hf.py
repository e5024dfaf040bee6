"""Hugging Face transformers integration.

* :class:`TSDILogitsProcessor`: debiasing only, for ``model.generate(logits_processor=[...])``;
  transformers' own warpers and sampler do the rest.
* :func:`tsdi_generate`: a decoding loop for ``model.generate(custom_generate=tsdi_generate, ...)``
  that runs the fused debias + temperature + top-k + top-p + min-p + sample step of tsdi_ext. It
  reads ``temperature`` / ``top_k`` / ``top_p`` / ``min_p`` / ``do_sample`` from the generation
  config (greedy unless ``do_sample=True``), so the filters see the debiased logits, as
  docs/contract.md orders them; the other logits processors (e.g. repetition penalty) run before
  the fused step; stopping criteria and streamers are honoured. Extra arguments: ``tsdi_bias``,
  ``tsdi_alpha``, ``tsdi_seed`` and ``tsdi_streamer``: transformers 5 does not forward
  ``streamer=`` to a callable ``custom_generate`` (it passes only the callable's own extra
  parameters), so pass the streamer as ``tsdi_streamer=``.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .bias import BiasTable, as_bias
from .generation import _model_vocab_size, decode

__all__ = ["TSDILogitsProcessor", "tsdi_generate"]


class TSDILogitsProcessor(LogitsProcessor):
    """Subtracts ``alpha * bias[t]`` from the scores at response position ``t`` (t < L).

    Parameters
    ----------
    bias : BiasTable, str or torch.Tensor
        ``[L, V]`` bias table (or a bias file's path).
    prompt_length : int
        Length of the (left-padded) prompt batch: position ``t = input_ids.shape[1] - prompt_length``.
    alpha : float or torch.Tensor
        Debiasing strength: one for the batch, or a ``[B]`` tensor with one per row (0 leaves a
        row untouched).
    vocab_size : int, optional
        The model's vocabulary size: a bias for another vocabulary is refused here, with both
        sizes (else at the first step).
    """

    def __init__(
        self, bias, prompt_length: int, alpha: float | torch.Tensor = 1.0, *, vocab_size=None
    ):
        bias = as_bias(bias, vocab_size=vocab_size)
        self.bias = bias.bias if isinstance(bias, BiasTable) else bias.float()
        self.prompt_length = prompt_length
        if isinstance(alpha, torch.Tensor):
            if alpha.dim() != 1:
                raise ValueError(
                    f"tsdi_ext: alpha is a float or a [B] tensor, got shape {tuple(alpha.shape)}"
                )
            alpha = alpha.float()[:, None]  # [B, 1]: broadcasts over the vocabulary
        elif not isinstance(alpha, (int, float)):
            raise TypeError(
                f"tsdi_ext: alpha is a float or a [B] tensor, got {type(alpha).__name__}"
            )
        self.alpha = alpha

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        position = input_ids.shape[1] - self.prompt_length
        if position < 0 or position >= self.bias.shape[0]:
            return scores
        if scores.shape[-1] != self.bias.shape[-1]:
            raise ValueError(
                f"tsdi_ext: the bias has vocabulary size {self.bias.shape[-1]} but the model's "
                f"scores have {scores.shape[-1]}"
            )
        row = self.bias[position].to(device=scores.device)
        alpha = self.alpha
        if isinstance(alpha, torch.Tensor):
            if alpha.shape[0] != scores.shape[0]:
                raise ValueError(
                    f"tsdi_ext: alpha has {alpha.shape[0]} rows but the batch has {scores.shape[0]}"
                )
            alpha = alpha.to(scores.device)
        return scores - (alpha * row).to(scores.dtype)


def _dropped_streamer():
    """The ``streamer=`` given to ``model.generate``, which transformers 5 does not hand to a
    callable ``custom_generate`` (``_extract_generation_mode_kwargs`` keeps only the callable's
    own extra parameters): read from ``generate``'s frame, to warn about it; None if not found."""
    frame = inspect.currentframe()
    try:
        for _ in range(5):
            frame = frame.f_back
            if frame is None:
                return None
            names = frame.f_locals
            if frame.f_code.co_name == "generate" and names.get("custom_generate") is tsdi_generate:
                return names.get("streamer")
        return None
    finally:
        del frame


def tsdi_generate(
    model,
    input_ids,
    logits_processor,
    stopping_criteria,
    generation_config,
    synced_gpus=False,
    streamer=None,
    tsdi_bias=None,
    tsdi_alpha: float = 1.0,
    tsdi_seed: int = 0,
    tsdi_streamer=None,
    **model_kwargs,
):
    """``custom_generate`` decoding loop (see module docstring). Returns ``[B, P + T]`` ids."""
    if synced_gpus:
        raise NotImplementedError("tsdi_ext: tsdi_generate does not support synced_gpus")
    if (generation_config.num_beams or 1) > 1:
        raise ValueError(
            f"tsdi_ext: tsdi_generate samples one sequence per prompt; num_beams="
            f"{generation_config.num_beams} (beam search) is not supported"
        )
    if streamer is None and tsdi_streamer is None and _dropped_streamer() is not None:
        warnings.warn(
            "tsdi_ext: transformers does not pass streamer= on to a custom_generate function, so "
            "nothing is streamed: pass the streamer as tsdi_streamer=",
            stacklevel=3,
        )
    streamer = streamer if streamer is not None else tsdi_streamer
    tsdi_bias = as_bias(tsdi_bias, vocab_size=_model_vocab_size(model))
    attention_mask = model_kwargs.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    # The fused step does temperature and the filters itself, after the bias (transformers'
    # warpers would filter the undebiased logits); the other processors run before it.
    fused = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper)
    others = LogitsProcessorList(p for p in (logits_processor or []) if not isinstance(p, fused))
    sample = bool(generation_config.do_sample)
    eos = generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    pad = generation_config.pad_token_id
    pad = int(pad) if pad is not None else (eos[0] if eos else 0)
    max_new = generation_config.max_new_tokens or (
        generation_config.max_length - input_ids.shape[1]
    )
    if streamer is not None:
        streamer.put(input_ids.cpu())

    def stop_hook(ids, scores):
        return (
            stopping_criteria(ids, scores)
            if stopping_criteria
            else torch.zeros_like(ids[:, 0], dtype=torch.bool)
        )

    result = decode(
        model,
        input_ids,
        attention_mask,
        bias=tsdi_bias,
        alpha=tsdi_alpha,
        temperature=float(generation_config.temperature or 1.0) if sample else 0.0,
        top_p=float(generation_config.top_p if generation_config.top_p is not None else 1.0),
        top_k=int(generation_config.top_k or 0) if sample else 0,
        min_p=float(generation_config.min_p or 0.0) if sample else 0.0,
        max_new_tokens=max_new,
        seed=tsdi_seed,
        eos_token_ids=eos,
        pad_token_id=pad,
        logits_hook=others if len(others) else None,
        stop_hook=stop_hook,
        on_tokens=streamer.put if streamer is not None else None,
    )
    if streamer is not None:
        streamer.end()
    return torch.cat([input_ids, result.tokens], dim=1)
