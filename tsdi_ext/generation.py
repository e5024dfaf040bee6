"""The TSDI decoding loop: batched prefill, then one fused debias + sample step per token.

``decode`` is the loop on token ids; ``generate`` wraps it with chat templates and text. Each step
passes every row's response position to :func:`tsdi_ext.sample`, which subtracts
``alpha * bias[position]`` only while the position is inside the table. The only host-device
synchronisation per token is the stop check (and the streaming callback, when one is given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .bias import BiasTable
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
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    invalid: torch.Tensor
    texts: list[str] | None = None


def _bias_tensor(bias, vocab_size: int, device) -> torch.Tensor | None:
    if bias is None:
        return None
    if isinstance(bias, BiasTable):
        bias.check_compatible(vocab_size=vocab_size)
        return bias.to(device)
    return bias.to(device=device, dtype=torch.float32)


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
    max_new_tokens: int = 64,
    seed: int = 0,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    logits_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    stop_hook: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_tokens: Callable[[torch.Tensor], None] | None = None,
    backend: str = "auto",
) -> Generation:
    """Decodes up to ``max_new_tokens`` tokens after left-padded prompts.

    Parameters
    ----------
    model
        A transformers causal LM.
    input_ids, attention_mask : torch.Tensor
        ``[B, P]`` left-padded prompts and their mask.
    bias : BiasTable or torch.Tensor, optional
        ``[L, V]`` TSDI bias; response position t < L is debiased by ``alpha * bias[t]``.
    alpha, temperature, top_p
        As in :func:`tsdi_ext.sample`. ``temperature=0`` is greedy decoding.
    seed : int
        Row b draws with ``(seed + b, step)``: rerunning a prompt at the same batch index
        reproduces its tokens.
    eos_token_ids, pad_token_id
        Tokens that end a row; the filler after a row ended.
    logits_hook : callable, optional
        ``(ids_so_far [B, P + t], logits [B, V]) -> logits`` applied before the fused step (e.g. a
        transformers LogitsProcessorList).
    stop_hook : callable, optional
        ``(ids_so_far, logits) -> [B] bool`` extra per-row stop condition.
    on_tokens : callable, optional
        Called with each step's ``[B]`` tokens (copied to the host: one sync per token).
    """
    device = input_ids.device
    batch = input_ids.shape[0]
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

    seeds = seed + torch.arange(batch, device=device)
    eos = torch.tensor(list(eos_token_ids), dtype=torch.int64, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    invalid = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=device)
    next_position = position_ids[:, -1:] + 1
    ids_so_far = input_ids
    steps: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        if logits_hook is not None:
            logits = logits_hook(ids_so_far, logits)
        positions = torch.full((batch,), step, dtype=torch.int64, device=device)
        tokens, valid = sample(
            logits,
            bias=table,
            positions=positions if table is not None else None,
            alpha=alpha,
            temperature=temperature,
            top_p=top_p,
            seed=seeds,
            offset=step,
            backend=backend,
        )
        tokens = torch.where(finished, torch.full_like(tokens, pad_token_id), tokens)
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
    return Generation(tokens=generated, lengths=lengths, invalid=invalid)


def prepare_prompts(tokenizer, prompts: Sequence[str], *, chat_template: bool = True, device="cpu"):
    """Left-padded ``(input_ids, attention_mask)`` for text prompts, through the chat template."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        add_special_tokens = False  # the template already holds them
    else:
        texts, add_special_tokens = list(prompts), True
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
        )
    finally:
        tokenizer.padding_side = side
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    bias: BiasTable | torch.Tensor | None = None,
    alpha: float = 1.0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 0,
    chat_template: bool = True,
    stream: Callable[[int, str], None] | None = None,
    backend: str = "auto",
) -> Generation:
    """Generates completions for text prompts with TSDI debiasing.

    Parameters
    ----------
    model, tokenizer
        A transformers causal LM and its tokenizer.
    prompts : sequence of str
        User messages (wrapped in the chat template unless ``chat_template=False``).
    bias, alpha, temperature, top_p, max_new_tokens, seed, backend
        See :func:`decode`.
    stream : callable, optional
        ``stream(row, text_piece)`` for every new token of every unfinished row.

    Returns
    -------
    Generation
        With ``texts``: the decoded completions (special tokens removed).
    """
    if isinstance(bias, BiasTable):
        bias.check_compatible(tokenizer=tokenizer)
    device = next(model.parameters()).device
    input_ids, attention_mask = prepare_prompts(
        tokenizer, prompts, chat_template=chat_template, device=device
    )
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)

    on_tokens = None
    if stream is not None:
        done = [False] * len(prompts)

        def on_tokens(tokens):
            for row, token in enumerate(tokens.tolist()):
                if not done[row]:
                    stream(row, tokenizer.decode([token], skip_special_tokens=True))
                    done[row] = token in eos

    result = decode(
        model,
        input_ids,
        attention_mask,
        bias=bias,
        alpha=alpha,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        eos_token_ids=eos,
        pad_token_id=pad,
        on_tokens=on_tokens,
        backend=backend,
    )
    result.texts = [
        tokenizer.decode(row[:length], skip_special_tokens=True).strip()
        for row, length in zip(result.tokens.tolist(), result.lengths.tolist())
    ]
    return result
