"""The TSDI decoding loop: batched prefill, then one fused debias + sample step per token.

``decode`` is the loop on token ids; ``generate`` wraps it with chat templates and text. Each step
passes every row's response position to :func:`tsdi_ext.sample`, which subtracts
``alpha * bias[position]`` only while the position is inside the table. The only host-device
synchronisation per token is the stop check (and the streaming callback, when one is given).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .bias import BiasTable, as_bias
from .ops import sample

__all__ = ["Generation", "decode", "generate", "prepare_prompts"]


@dataclass
class Generation:
    """Output of :func:`decode` / :func:`generate`.

    Attributes
    ----------
    tokens : torch.Tensor
        ``[B, T]`` int64 generated tokens (``T <= max_new_tokens``), ``pad_token_id`` after a row
        stopped.
    lengths : torch.Tensor
        ``[B]`` number of generated tokens per row, the stop token included.
    invalid : torch.Tensor
        ``[B]`` bool: the row stopped because its logits could not be sampled (NaN / inf).
    texts : list of str
        Decoded completions (``generate`` only).
    logprobs, unfiltered_logprobs : torch.Tensor or None
        With ``return_logprobs=True``: ``[B, T]`` float32, aligned with ``tokens``, the drawn
        token's log-probability under the distribution it was drawn from (debiased, tempered,
        filtered) and under the debiased, tempered, unfiltered one (docs/contract.md §7).
        ``0`` for greedy steps and after a row stopped (so ``logprobs.sum(dim=1)`` is each
        completion's log-probability), NaN at the step where a row turned invalid. None otherwise.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    invalid: torch.Tensor
    texts: list[str] | None = None
    logprobs: torch.Tensor | None = None
    unfiltered_logprobs: torch.Tensor | None = None


def _bias_tensor(bias, vocab_size: int, device) -> torch.Tensor | None:
    bias = as_bias(bias, vocab_size=vocab_size)
    if bias is None:
        return None
    if isinstance(bias, BiasTable):
        return bias.to(device)
    return bias.to(device=device, dtype=torch.float32)


def _model_vocab_size(model) -> int | None:
    embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return embeddings.weight.shape[0] if embeddings is not None else None


def _check_float(name: str, value):
    """A scalar strength / temperature / top-p that float32 can hold, else a ValueError (a
    ``[B]`` tensor passes through: :func:`tsdi_ext.sample` checks it)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"tsdi_ext: {name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > 3.4e38:
        raise ValueError(f"tsdi_ext: {name} must be a finite number (float32), got {value!r}")
    return number


def _check_max_new_tokens(value) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"tsdi_ext: max_new_tokens must be an int, got {type(value).__name__}"
        ) from None
    if value < 0:
        raise ValueError(f"tsdi_ext: max_new_tokens must be >= 0, got {value}")
    return value


_SEED_END = 2**64


def _to_int64(value: int) -> int:
    """A seed in [0, 2**64) as the int64 the op reads back as uint64."""
    return value - _SEED_END if value >= 2**63 else value


def row_seeds(seed, batch: int, device="cpu") -> torch.Tensor:
    """The ``[B]`` int64 seeds of a batch: an int ``s`` gives row b the seed ``s + b`` (so a
    prompt's tokens depend on its batch position); a list of B ints or a ``[B]`` int64 tensor
    gives each request its own seed, and its tokens then depend on that seed alone. Seeds are in
    ``[0, 2**64)``."""
    if isinstance(seed, torch.Tensor):
        if seed.dim() != 1 or seed.shape[0] != batch or seed.dtype != torch.int64:
            raise ValueError(
                f"tsdi_ext: a seed tensor must be [B] int64 with B = {batch}, got "
                f"{tuple(seed.shape)} {seed.dtype}"
            )
        return seed.to(device)
    if isinstance(seed, bool):
        raise TypeError("tsdi_ext: seed must be an int, a list of ints or a [B] tensor, got bool")
    try:
        values = [operator.index(seed) + b for b in range(batch)]
    except TypeError:
        if not isinstance(seed, Sequence) or isinstance(seed, str):
            raise TypeError(
                "tsdi_ext: seed must be an int, a list of ints or a [B] int64 tensor, got "
                f"{type(seed).__name__}"
            ) from None
        if len(seed) != batch:
            raise ValueError(
                f"tsdi_ext: {len(seed)} seeds given for a batch of {batch} prompts"
            ) from None
        try:
            values = [operator.index(s) for s in seed]
        except TypeError:
            raise TypeError("tsdi_ext: every per-request seed must be an int") from None
    for value in values:
        if not 0 <= value < _SEED_END:
            raise ValueError(
                f"tsdi_ext: seeds must be in [0, 2**64), got {value}"
                + (" (an int seed s gives row b the seed s + b)" if batch > 1 else "")
            )
    return torch.tensor([_to_int64(v) for v in values], dtype=torch.int64, device=device)


@torch.inference_mode()
def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    bias: BiasTable | torch.Tensor | None = None,
    alpha: float = 1.0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float = 0.0,
    max_new_tokens: int = 64,
    seed: int | Sequence[int] | torch.Tensor = 0,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    logits_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    stop_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_tokens: Callable[[torch.Tensor], None] | None = None,
    backend: str = "auto",
    return_logprobs: bool = False,
) -> Generation:
    """Decodes up to ``max_new_tokens`` tokens after left-padded prompts.

    Parameters
    ----------
    model
        A transformers causal LM.
    input_ids, attention_mask : torch.Tensor
        ``[B, P]`` left-padded prompts and their mask.
    bias : BiasTable, str or torch.Tensor, optional
        ``[L, V]`` TSDI bias (or a bias file's path); response position t < L is debiased by
        ``alpha * bias[t]``.
    alpha, temperature, top_p, top_k, min_p
        As in :func:`tsdi_ext.sample` (scalars or ``[B]`` tensors). ``temperature=0`` is greedy
        decoding; ``top_k=0`` and ``min_p=0`` are off.
    max_new_tokens : int
        At most this many tokens per row (>= 0).
    seed : int, list of int or torch.Tensor
        Row b draws its step-t token with ``(seed_b, t)``. An int ``s`` gives ``seed_b = s + b``:
        rerunning a prompt at the same batch index reproduces its tokens. A list of B ints (or a
        ``[B]`` int64 tensor) gives every request its own seed: its tokens then depend on that
        seed and not on its batch position. Seeds are in ``[0, 2**64)``.
    eos_token_ids, pad_token_id
        Tokens that end a row; the filler after a row ended.
    logits_hook : callable, optional
        ``(ids_so_far [B, P + t], logits [B, V]) -> logits`` applied before the fused step (e.g. a
        transformers LogitsProcessorList).
    stop_hook : callable, optional
        ``(ids_so_far, logits) -> [B] bool`` extra per-row stop condition.
    on_tokens : callable, optional
        Called with each step's ``[B]`` tokens (copied to the host: one sync per token).
    return_logprobs : bool
        Also fill :attr:`Generation.logprobs` / ``unfiltered_logprobs``, from the sums the fused
        step makes anyway (``sample(..., return_logprobs=True)``): no extra pass, no extra sync.
    """
    device = input_ids.device
    batch = input_ids.shape[0]
    max_new_tokens = _check_max_new_tokens(max_new_tokens)
    alpha = _check_float("alpha", alpha)
    temperature = _check_float("temperature", temperature)
    top_p = _check_float("top_p", top_p)
    min_p = _check_float("min_p", min_p)
    seeds = row_seeds(seed, batch, device)
    bias = as_bias(bias, vocab_size=_model_vocab_size(model))
    if input_ids.shape[1] == 0:
        raise ValueError("tsdi_ext: the prompts are empty (input_ids has no columns)")
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
    )
    logits = outputs.logits[:, -1].float()
    cache = outputs.past_key_values
    table = _bias_tensor(bias, logits.shape[-1], device)

    eos = torch.tensor(list(eos_token_ids), dtype=torch.int64, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    invalid = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=device)
    next_position = position_ids[:, -1:] + 1
    ids_so_far = input_ids
    steps: list[torch.Tensor] = []
    step_logprobs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (final, unfiltered) per step
    for step in range(max_new_tokens):
        if logits_hook is not None:
            logits = logits_hook(ids_so_far, logits)
        positions = torch.full((batch,), step, dtype=torch.int64, device=device)
        out = sample(
            logits,
            bias=table,
            positions=positions if table is not None else None,
            alpha=alpha,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            seed=seeds,
            offset=step,
            backend=backend,
            return_logprobs=return_logprobs,
        )
        tokens, valid = out[0], out[1]
        tokens = torch.where(finished, torch.full_like(tokens, pad_token_id), tokens)
        if return_logprobs:
            step_logprobs.append(
                (
                    out.logprob.masked_fill(finished, 0.0),
                    out.unfiltered_logprob.masked_fill(finished, 0.0),
                )
            )
        lengths += (~finished).long()
        invalid |= ~valid & ~finished
        steps.append(tokens)
        ids_so_far = torch.cat([ids_so_far, tokens[:, None]], dim=1)
        done_now = ~valid | torch.isin(tokens, eos)
        if stop_hook is not None:
            done_now |= stop_hook(ids_so_far, logits)
        finished |= done_now
        if on_tokens is not None:
            on_tokens(tokens.cpu())
        if step + 1 == max_new_tokens or bool(finished.all()):  # the one sync per token
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
        outputs = model(
            input_ids=tokens[:, None],
            attention_mask=attention_mask,
            position_ids=next_position,
            past_key_values=cache,
            use_cache=True,
        )
        next_position = next_position + 1
        logits = outputs.logits[:, -1].float()
        cache = outputs.past_key_values
    generated = torch.stack(steps, dim=1) if steps else input_ids.new_zeros(batch, 0)
    result = Generation(tokens=generated, lengths=lengths, invalid=invalid)
    if return_logprobs:
        final, unfiltered = zip(*step_logprobs) if step_logprobs else ((), ())
        empty = torch.zeros(batch, 0, dtype=torch.float32, device=device)
        result.logprobs = torch.stack(final, dim=1) if final else empty
        result.unfiltered_logprobs = torch.stack(unfiltered, dim=1) if unfiltered else empty.clone()
    return result


def _prompt_list(prompts) -> list[str]:
    """``prompts`` as a non-empty list of str (a single str is one prompt)."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence):
        raise TypeError(
            f"tsdi_ext: prompts must be a str or a sequence of str, got {type(prompts).__name__}"
        )
    prompts = list(prompts)
    if not prompts:
        raise ValueError("tsdi_ext: no prompts given (an empty list)")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"tsdi_ext: prompt {i} is a {type(prompt).__name__}, not a str")
    return prompts


def prepare_prompts(tokenizer, prompts: Sequence[str], *, chat_template: bool = True, device="cpu"):
    """Left-padded ``(input_ids, attention_mask)`` for text prompts, through the chat template.

    Without a chat template, an empty prompt is the tokenizer's BOS token alone (a model needs one
    token to predict from); a tokenizer with neither is refused with a ValueError.
    """
    prompts = _prompt_list(prompts)
    if chat_template and getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        add_special_tokens = False  # the template already holds them
    else:
        texts, add_special_tokens = prompts, True
    ids = tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    for i, row in enumerate(ids):
        if not row:
            if tokenizer.bos_token_id is None:
                raise ValueError(
                    f"tsdi_ext: prompt {i} is empty, and the tokenizer has no chat template and "
                    "no BOS token: there is no token to generate from"
                )
            ids[i] = [tokenizer.bos_token_id]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


def _row_streamers(tokenizer, batch: int, stream: Callable[[int, str], None]):
    """One transformers TextStreamer per row, handing ``stream(row, text)`` only complete words
    (and never half a multi-byte character), as transformers' own streamers print."""
    from transformers import TextStreamer

    class RowStreamer(TextStreamer):
        def __init__(self, row: int):
            super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
            self.row = row

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                stream(self.row, text)

    return [RowStreamer(row) for row in range(batch)]


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate(
    model,
    tokenizer,
    prompts: str | Sequence[str],
    *,
    bias: BiasTable | str | torch.Tensor | None = None,
    alpha: float = 1.0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float = 0.0,
    max_new_tokens: int = 64,
    seed: int | Sequence[int] | torch.Tensor = 0,
    chat_template: bool = True,
    stream: Callable[[int, str], None] | None = None,
    backend: str = "auto",
    return_logprobs: bool = False,
) -> Generation:
    """Generates completions for text prompts with TSDI debiasing.

    Parameters
    ----------
    model, tokenizer
        A transformers causal LM and its tokenizer.
    prompts : str or sequence of str
        User messages (wrapped in the chat template unless ``chat_template=False``); a str is one
        prompt.
    bias, alpha, temperature, top_p, top_k, min_p, max_new_tokens, seed, backend, return_logprobs
        See :func:`decode` (``seed``: an int, or one per prompt). A bias path is loaded and
        checked against the tokenizer.
    stream : callable, optional
        ``stream(row, text)`` as each row's text grows, in complete words (transformers'
        TextStreamer logic: a piece ends at a space or newline, never inside a character).

    Returns
    -------
    Generation
        With ``texts``: the decoded completions (special tokens removed); with
        ``return_logprobs=True`` also ``logprobs`` and ``unfiltered_logprobs``, one per token of
        ``tokens``.
    """
    prompts = _prompt_list(prompts)
    bias = as_bias(bias, tokenizer=tokenizer, vocab_size=_model_vocab_size(model))
    device = next(model.parameters()).device
    seeds = row_seeds(seed, len(prompts), device)  # checked before any model work
    max_new_tokens = _check_max_new_tokens(max_new_tokens)
    input_ids, attention_mask = prepare_prompts(
        tokenizer, prompts, chat_template=chat_template, device=device
    )
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)

    on_tokens = None
    streamers = []
    if stream is not None:
        streamers = _row_streamers(tokenizer, len(prompts), stream)
        done = [False] * len(prompts)

        def on_tokens(tokens):
            for row, token in enumerate(tokens.tolist()):
                if not done[row]:
                    done[row] = token in eos
                    if not done[row]:
                        streamers[row].put(torch.tensor([token]))

    result = decode(
        model,
        input_ids,
        attention_mask,
        bias=bias,
        alpha=alpha,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        max_new_tokens=max_new_tokens,
        seed=seeds,
        eos_token_ids=eos,
        pad_token_id=pad,
        on_tokens=on_tokens,
        backend=backend,
        return_logprobs=return_logprobs,
    )
    for streamer in streamers:
        streamer.end()  # the last, unfinished word
    result.texts = [
        tokenizer.decode(row[:length], skip_special_tokens=True).strip()
        for row, length in zip(result.tokens.tolist(), result.lengths.tolist())
    ]
    return result
