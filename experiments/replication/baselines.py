"""Baselines for the same trade-off, decoded on the same prompts and judged by the same judge.

* **Helpful system prompt** (:func:`render_with_system`): the aligned model told to answer
  benign requests in full; the prompts are rendered through the chat template with that system
  message and decoded with ``generate(..., chat_template=False)``.
* **Self-contrastive decoding** (Self-CD; Shi et al., 2024, "Navigating the OverKill in Large
  Language Models"), :func:`contrastive_generate`: the next-token logits without a system
  prompt, minus ``gamma`` times how much a safety-emphasising system prompt moves them,
  ``l = l_plain - gamma * (l_safety - l_plain)``: the refusal tendency the safety prompt
  amplifies is subtracted, greedily, one context per variant (two KV caches).
* **Refusal-direction ablation** (Arditi et al., 2024, "Refusal in Language Models Is Mediated by
  a Single Direction"), :func:`select_refusal_direction` and :func:`ablate_direction`, as the
  paper does it: candidate directions are the differences of the mean residual-stream
  activations (the input of each decoder layer) on harmful and harmless training prompts at
  each of the last ``positions`` prompt tokens (the template tokens after the instruction);
  each candidate is scored on held-out prompts by the refusal margin it leaves on harmful ones
  when ablated (``bypass``, lower is better), the refusal margin it induces on harmless ones when
  added at its layer (``induce``), and the KL divergence ablation causes on harmless next-token
  distributions (``kl``); the kept candidates have ``induce > 0``, ``kl < 0.1`` and a layer below
  ``0.8 L``, and the one with the lowest ``bypass`` is chosen. Ablation projects the unit
  direction out of everything that writes to the residual stream (the embeddings, every
  attention and every MLP output: ``x - (x . r) r``), so no layer ever reads it.

  Why the selection matters: a direction taken blindly from the middle layer (what this study
  first did) also carries the attention-sink token's massive activation (norm about 25,000
  against about 150 for other tokens on SmolLM2) and a common-mode part of every token's state;
  ablating it emptied every answer (the model emitted only newlines).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from tsdi_ext.generation import prepare_prompts

__all__ = [
    "HELPFUL_SYSTEM_PROMPT",
    "SAFETY_SYSTEM_PROMPT",
    "render_with_system",
    "contrastive_generate",
    "candidate_directions",
    "refusal_direction",
    "DirectionChoice",
    "select_refusal_direction",
    "ablate_direction",
    "hooked",
]

HELPFUL_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer every safe request fully and directly, including "
    "questions on medical, legal, security or other sensitive-sounding topics; decline only "
    "requests that would cause real harm."
)
SAFETY_SYSTEM_PROMPT = (
    "You are a responsible assistant. Your first priority is safety: refuse any request that "
    "could be harmful, unethical or dangerous."
)


def render_with_system(tokenizer, prompts: Sequence[str], system: str) -> list[str]:
    """The chat-template text of each prompt with ``system`` as the system message and the
    generation prompt appended (decode with ``chat_template=False``)."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": p}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts
    ]


def _encode(tokenizer, texts: Sequence[str]):
    return prepare_prompts(tokenizer, texts, chat_template=False)


@torch.inference_mode()
def contrastive_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    gamma: float,
    safety_system: str = SAFETY_SYSTEM_PROMPT,
    max_new_tokens: int = 40,
) -> list[str]:
    """Greedy self-contrastive decoding (module docstring); ``gamma = 0`` is plain greedy
    decoding of the prompts without a system message."""
    plain_texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    contexts = [_encode(tokenizer, plain_texts)]
    if gamma != 0:
        contexts.append(_encode(tokenizer, render_with_system(tokenizer, prompts, safety_system)))
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if getattr(model.generation_config, "eos_token_id", None) is not None:
        configured = model.generation_config.eos_token_id
        eos |= set(configured if isinstance(configured, list) else [configured])
    states = []
    for ids, mask in contexts:
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        states.append([out.past_key_values, mask, positions[:, -1:], out.logits[:, -1].float()])
    batch = len(prompts)
    done = torch.zeros(batch, dtype=torch.bool)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(max_new_tokens):
        logits = states[0][3]
        if gamma != 0:
            logits = logits - gamma * (states[1][3] - logits)
        chosen = logits.argmax(dim=-1)
        for row in range(batch):
            if not done[row]:
                if int(chosen[row]) in eos:
                    done[row] = True
                else:
                    tokens[row].append(int(chosen[row]))
        if bool(done.all()):
            break
        step = chosen.unsqueeze(-1)
        for state in states:
            cache, mask, last, _ = state
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], dim=1)
            last = last + 1
            out = model(
                input_ids=step,
                attention_mask=mask,
                position_ids=last,
                past_key_values=cache,
                use_cache=True,
            )
            state[:] = [out.past_key_values, mask, last, out.logits[:, -1].float()]
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]


def _layers(model):
    return model.model.layers


def _last_position_states(model, tokenizer, prompts: Sequence[str], positions: int) -> torch.Tensor:
    """``[layers, positions, hidden]``: the mean over ``prompts`` of the input of each decoder
    layer at each of the last ``positions`` prompt tokens (left padding aligns the ends)."""
    ids, mask = prepare_prompts(tokenizer, prompts)
    positions_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    hidden = model(
        input_ids=ids, attention_mask=mask, position_ids=positions_ids, output_hidden_states=True
    ).hidden_states  # [0] is the embedding output = the input of layer 0; [-1] is normed
    layers = len(_layers(model))
    return torch.stack([hidden[i][:, -positions:].float().mean(dim=0) for i in range(layers)])


@torch.inference_mode()
def candidate_directions(
    model, tokenizer, harmful: Sequence[str], harmless: Sequence[str], *, positions: int = 5
) -> torch.Tensor:
    """``[layers, positions, hidden]`` differences of mean layer inputs, harmful minus harmless,
    at the last ``positions`` prompt tokens (through the chat template); not normalised."""
    return _last_position_states(model, tokenizer, harmful, positions) - _last_position_states(
        model, tokenizer, harmless, positions
    )


def refusal_direction(
    model,
    tokenizer,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    layer: int,
    position: int = -1,
) -> torch.Tensor:
    """The unit candidate direction at the input of decoder ``layer`` and prompt token
    ``position`` (negative: from the end)."""
    positions = -position if position < 0 else position + 1
    raw = candidate_directions(model, tokenizer, harmful, harmless, positions=positions)
    direction = raw[layer, position if position < 0 else -positions]
    return direction / direction.norm()


@dataclass
class DirectionChoice:
    """The chosen candidate (module docstring) and every candidate's scores."""

    direction: torch.Tensor  # unit
    layer: int
    position: int  # negative: from the end of the prompt
    filters_met: str  # the filters the chosen one met, e.g. "induce > 0, kl < 0.5, layer"
    scores: list[dict] = field(default_factory=list)


def _last_logprobs(model, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    ids, mask = prepare_prompts(tokenizer, prompts)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    # The LM head at the last position only (a fifth of SmolLM2's forward pass at every position).
    hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=positions)
    logits = model.lm_head(hidden.last_hidden_state[:, -1])
    return torch.log_softmax(logits.float(), dim=-1)


@contextmanager
def hooked(handles):
    """Keeps the hooks ``handles`` (as :func:`ablate_direction` returns them) for a ``with``
    block and removes them after it, also on error."""
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _add_at_layer(model, layer: int, vector: torch.Tensor):
    """Adds ``vector`` to the input of decoder ``layer`` at every position (a pre-hook)."""

    def hook(module, args, kwargs):
        if args:
            hidden = args[0]
            return (hidden + vector.to(hidden.dtype), *args[1:]), kwargs
        hidden = kwargs["hidden_states"]
        return args, {**kwargs, "hidden_states": hidden + vector.to(hidden.dtype)}

    return [_layers(model)[layer].register_forward_pre_hook(hook, with_kwargs=True)]


# The KL limit is relaxed step by step, least first, where no candidate meets it: on SmolLM2-135M
# no candidate reaches Arditi et al.'s 0.1 (the lowest, 0.13, at a layer that does not bypass).
_KL_LADDER = (1, 2.5, 5, 10, 20, 50, 100)


@torch.inference_mode()
def select_refusal_direction(
    model,
    tokenizer,
    harmful_train: Sequence[str],
    harmless_train: Sequence[str],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    opening_ids: Sequence[int],
    positions: int = 5,
    max_layer_fraction: float = 0.8,
    kl_limit: float = 0.1,
) -> DirectionChoice:
    """Arditi et al.'s selection (module docstring). ``opening_ids``: the tokens a refusal opens
    with (the refusal margin is ``log P(openings) - log P(rest)`` at the first answer token).
    When no candidate passes every filter, the KL limit is raised step by step (``_KL_LADDER``
    times ``kl_limit``), then the same without the ``induce`` filter, then the candidate with the
    lowest KL is taken; ``filters_met`` says which filters the chosen one met."""
    from .premise import refusal_margins

    def margin(prompts) -> float:
        return float(refusal_margins(_last_logprobs(model, tokenizer, prompts), opening_ids).mean())

    harmful_mean = _last_position_states(model, tokenizer, harmful_train, positions)
    raw = harmful_mean - _last_position_states(model, tokenizer, harmless_train, positions)
    layers = raw.shape[0]
    plain = _last_logprobs(model, tokenizer, harmless_val)
    scores = []
    for layer in range(layers):
        if layer >= max_layer_fraction * layers:
            break
        for index in range(positions):
            vector = raw[layer, index]
            # Equal states up to rounding (e.g. the embedding of a template token): no direction.
            if float(vector.norm()) <= 1e-5 * float(harmful_mean[layer, index].norm()):
                continue
            unit = vector / vector.norm()
            with hooked(ablate_direction(model, unit)):
                bypass = margin(harmful_val)
                ablated = _last_logprobs(model, tokenizer, harmless_val)
            kl = float((plain.exp() * (plain - ablated)).sum(dim=-1).mean())
            with hooked(_add_at_layer(model, layer, vector)):
                induce = margin(harmless_val)
            scores.append(
                {
                    "layer": layer,
                    "position": index - positions,
                    "bypass": round(bypass, 4),
                    "induce": round(induce, 4),
                    "kl": round(kl, 5),
                }
            )
    if not scores:
        raise ValueError(
            "tsdi_ext: no candidate refusal direction (harmful and harmless states agree)"
        )
    best, name = None, ""
    for require_induce in (True, False):
        for factor in _KL_LADDER:
            limit = kl_limit * factor
            kept = [
                s for s in scores if s["kl"] < limit and (s["induce"] > 0 or not require_induce)
            ]
            if kept:
                best = min(kept, key=lambda s: s["bypass"])
                name = ("induce > 0, " if require_induce else "") + f"kl < {limit:g}, layer"
                break
        if best is not None:
            break
    if best is None:
        name, best = "layer only (lowest kl)", min(scores, key=lambda s: s["kl"])
    vector = raw[best["layer"], best["position"]]
    return DirectionChoice(
        direction=vector / vector.norm(),
        layer=best["layer"],
        position=best["position"],
        filters_met=name,
        scores=scores,
    )


def ablate_direction(model, direction: torch.Tensor):
    """Projects the unit ``direction`` out of the embeddings and out of every attention and MLP
    output (forward hooks), so the residual stream never holds it; returns the handles
    (``handle.remove()`` undoes it)."""
    unit = (direction / direction.norm()).float()

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        r = unit.to(hidden.dtype)
        projected = hidden - (hidden @ r).unsqueeze(-1) * r
        return (projected, *output[1:]) if isinstance(output, tuple) else projected

    writers = [model.model.embed_tokens]
    for layer in _layers(model):
        writers += [layer.self_attn, layer.mlp]
    return [module.register_forward_hook(hook) for module in writers]
