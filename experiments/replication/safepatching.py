"""SafePatching (Zhao et al., 2024, "Towards Comprehensive and Efficient Post Safety Alignment of
Large Language Models via Safety Patching"), scaled to a 2-core CPU: a competing post-alignment
method for the same safety/over-safety trade-off, run on the same backbone as TSDI.

1. **Two patches from the backbone**, both on the same harmful data (harmful prompts with the
   reference's own compliant answers, response tokens only):
   the *safety patch* by gradient **ascent** (unlearning the harmful answers) and the
   *over-safety patch* by gradient **descent** (learning to answer them: it pulls the model away
   from refusing, the paper's remedy for over-safety). :func:`train_patch`.
2. **Importance** (SNIP, ``|w * dL/dw|``) of every weight for each patch. At the backbone the
   two objectives' gradients differ only in sign, so their SNIP scores would be identical and the
   difference sets empty; the scores are therefore computed **on each patched model** with the
   loss it was trained on (ascent's loss for the safety patch, descent's for the other), where
   the gradients differ. :func:`snip_importance`.
3. **Difference sets**: per tensor, the top-``k`` fraction of weights by each patch's importance;
   the safety patch keeps the weights in its top set and not the other's, and vice versa
   (:func:`difference_masks`), so each patch's edit lands where it matters to it alone.
4. **DARE-style retention**: inside its set, each delta is kept with probability ``retain`` and
   rescaled by ``1 / retain`` (:func:`dare`); both are merged into the backbone,
   ``W = W_b + M_s * D_s + M_o * D_o`` (:func:`merge_patches`).

Choices (documented, not tuned on the evaluation sets): the backbone is the SFT-aligned model
(SafePatching is a post-alignment method); patches are full fine-tunes of the decoder's linear
layers with AdamW; ``k`` and ``retain`` are per-call parameters.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "patch_batches",
    "answer_loss",
    "train_patch",
    "snip_importance",
    "difference_masks",
    "dare",
    "merge_patches",
]


def patch_batches(tokenizer, examples: Sequence[tuple[str, str]], batch_size: int):
    """``(input_ids, attention_mask, labels)`` batches of (prompt, answer) pairs through the chat
    template, labels -100 outside the answer (the loss is on the answer's tokens only)."""
    batches = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(examples), batch_size):
        rows = []
        for prompt, answer in examples[start : start + batch_size]:
            prefix = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
            a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.int64)
        labels = torch.full((len(rows), width), -100, dtype=torch.int64)
        mask = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, (row, label) in enumerate(rows):  # right padding: positions need no care
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(row)] = torch.tensor(label)
            mask[i, : len(row)] = 1
        batches.append((ids, mask, labels))
    return batches


def answer_loss(model, batch) -> torch.Tensor:
    """Mean NLL per answer token of a :func:`patch_batches` batch."""
    ids, mask, labels = batch
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    """The weights the patches edit: the decoder's linear layers (not embeddings or norms)."""
    return {
        name: p
        for name, p in model.named_parameters()
        if p.ndim == 2 and "embed" not in name and "lm_head" not in name
    }


def train_patch(
    backbone,
    batches,
    *,
    direction: str,
    steps: int,
    learning_rate: float = 1e-5,
    seed: int = 0,
):
    """A copy of ``backbone`` after ``steps`` AdamW steps of gradient ``"ascent"`` or
    ``"descent"`` on :func:`answer_loss` over ``batches`` (cycled in a seeded order)."""
    if direction not in ("ascent", "descent"):
        raise ValueError(f"tsdi_ext: direction must be 'ascent' or 'descent', got {direction!r}")
    if steps < 1 or not batches:
        raise ValueError("tsdi_ext: a patch needs at least one step and one batch")
    torch.manual_seed(seed)
    order = random.Random(seed)
    model = copy.deepcopy(backbone).train()
    weights = _trainable(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in weights)
    optimizer = torch.optim.AdamW(list(weights.values()), lr=learning_rate, weight_decay=0.0)
    sign = -1.0 if direction == "ascent" else 1.0
    schedule = []
    for _ in range(steps):
        if not schedule:
            schedule = list(range(len(batches)))
            order.shuffle(schedule)
        loss = sign * answer_loss(model, batches[schedule.pop()])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def snip_importance(model, batches, *, direction: str) -> dict[str, torch.Tensor]:
    """``|w * dL/dw|`` for every patched weight of ``model``, with ``L`` the loss of ``direction``
    (minus the answer NLL for ascent, the NLL for descent) summed over ``batches``. The sign of
    ``L`` does not change the score at a given model; the patched models differ, which is why the
    scores are taken on them (module docstring)."""
    if direction not in ("ascent", "descent"):
        raise ValueError(f"tsdi_ext: direction must be 'ascent' or 'descent', got {direction!r}")
    weights = _trainable(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in weights)
    model.zero_grad()
    sign = -1.0 if direction == "ascent" else 1.0
    for batch in batches:
        (sign * answer_loss(model, batch)).backward()
    scores = {name: (p.detach() * p.grad).abs() for name, p in weights.items()}
    for p in model.parameters():
        p.grad = None
        p.requires_grad_(False)
    return scores


def _top_mask(score: torch.Tensor, fraction: float) -> torch.Tensor:
    k = max(1, int(round(fraction * score.numel())))
    flat = torch.zeros(score.numel(), dtype=torch.bool)
    flat[torch.topk(score.flatten(), k).indices] = True
    return flat.reshape(score.shape)


def difference_masks(
    safety: Mapping[str, torch.Tensor], over: Mapping[str, torch.Tensor], top_fraction: float
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per tensor: (top set of ``safety`` minus top set of ``over``, and the reverse), each top
    set the ``top_fraction`` of weights with the largest score."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f"tsdi_ext: top_fraction must be in (0, 1], got {top_fraction}")
    if set(safety) != set(over):
        raise ValueError("tsdi_ext: the importance maps cover different weights")
    safety_only, over_only = {}, {}
    for name in safety:
        a, b = _top_mask(safety[name], top_fraction), _top_mask(over[name], top_fraction)
        safety_only[name], over_only[name] = a & ~b, b & ~a
    return safety_only, over_only


def dare(
    delta: torch.Tensor, mask: torch.Tensor, retain: float, generator: torch.Generator
) -> torch.Tensor:
    """``delta`` inside ``mask``, each entry kept with probability ``retain`` and rescaled by
    ``1 / retain`` (DARE's drop-and-rescale), zero elsewhere."""
    if not 0 < retain <= 1:
        raise ValueError(f"tsdi_ext: retain must be in (0, 1], got {retain}")
    keep = torch.rand(delta.shape, generator=generator) < retain
    return torch.where(mask & keep, delta / retain, torch.zeros_like(delta))


@torch.no_grad()
def merge_patches(
    backbone,
    safety_patch,
    over_patch,
    safety_mask: Mapping[str, torch.Tensor],
    over_mask: Mapping[str, torch.Tensor],
    *,
    retain: float = 1.0,
    scales: tuple[float, float] = (1.0, 1.0),
    seed: int = 0,
):
    """A copy of ``backbone`` with both patches' masked, DARE-retained deltas added."""
    generator = torch.Generator().manual_seed(seed)
    merged = copy.deepcopy(backbone).eval()
    base = dict(backbone.named_parameters())
    safe, over = dict(safety_patch.named_parameters()), dict(over_patch.named_parameters())
    for name, p in merged.named_parameters():
        if name not in safety_mask:
            continue
        p += scales[0] * dare(safe[name] - base[name], safety_mask[name], retain, generator)
        p += scales[1] * dare(over[name] - base[name], over_mask[name], retain, generator)
    return merged
