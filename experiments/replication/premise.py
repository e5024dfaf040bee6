"""The premise diagnostic (forward passes only) and the alignment-strength front.

TSDI subtracts ``alpha * b``, a context-independent estimate of the alignment's preference, from
the logits. It can keep a harmful refusal and recover an over-refused benign prompt only where
the two sets' first-token *refusal margins* are separated by more than what it subtracts.
:func:`premise_diagnostic` measures, per model and prompt set,

* the first-token refusal margin ``m = log P(refusal opening) - log P(anything else)`` at the
  first response position, where the refusal openings are the first tokens of the refusal
  targets (:func:`refusal_opening_ids`); its quantiles and the share of prompts with ``m > 0``,
  plain and after debiasing at each alpha (``m`` recomputed on ``logits - alpha * b[0]``);
* how the aligned-minus-reference margin shift splits into a context-independent part (its mean
  on random prompts, the part a bias estimated from random prompts can see) and a
  prompt-dependent rest (:func:`shift_decomposition`).

If harmful and over-refused benign margins overlap after the shift, no alpha can separate them:
a negative TSDI result is then about the model, not the method.

:func:`interpolate` gives the alignment-strength front: ``W_ref + s * (W_aligned - W_ref)``,
which for a LoRA adapter merged into ``W_ref`` is exactly the adapter merged at scale ``s``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from tsdi_ext.generation import prepare_prompts

__all__ = [
    "interpolate",
    "first_token_logprobs",
    "refusal_opening_ids",
    "refusal_margins",
    "shift_decomposition",
    "premise_diagnostic",
]


@torch.no_grad()
def interpolate(reference, aligned, scale: float, *, into=None):
    """``reference + scale * (aligned - reference)`` for every parameter and buffer (same
    architecture required), written into ``into`` (default: a deep copy of ``aligned``)."""
    import copy

    reference_state, aligned_state = reference.state_dict(), aligned.state_dict()
    if set(reference_state) != set(aligned_state):
        raise ValueError("tsdi_ext: the models to interpolate have different parameters")
    model = into if into is not None else copy.deepcopy(aligned)
    state = model.state_dict()
    for name, value in aligned_state.items():
        base = reference_state[name]
        if value.shape != base.shape:
            raise ValueError(
                f"tsdi_ext: {name} has shape {tuple(value.shape)} in the aligned model and "
                f"{tuple(base.shape)} in the reference"
            )
        if value.is_floating_point():
            state[name].copy_(base + scale * (value - base))
        else:
            state[name].copy_(value)
    return model.eval()


@torch.inference_mode()
def first_token_logprobs(model, tokenizer, prompts: Sequence[str], *, batch_size: int = 32):
    """``[len(prompts), V]`` float32 log-probabilities of the first response token (greedy
    decoding's first choice), through the chat template, left-padded."""
    rows = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        ids, mask = prepare_prompts(tokenizer, list(prompts[start : start + batch_size]))
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
        ).logits[:, -1]
        rows.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(rows)


def refusal_opening_ids(tokenizer, refusals: Sequence[str]) -> list[int]:
    """The distinct first tokens of the refusal texts (how the aligned model opens a refusal)."""
    ids = {tokenizer(r, add_special_tokens=False)["input_ids"][0] for r in refusals if r.strip()}
    return sorted(ids)


def refusal_margins(logprobs: torch.Tensor, opening_ids: Sequence[int]) -> torch.Tensor:
    """``log P(openings) - log P(rest)`` per row of a ``[N, V]`` log-probability tensor (or of
    logits: the margin is invariant to the normalising constant)."""
    logprobs = torch.log_softmax(logprobs.float(), dim=-1)
    inside = torch.zeros(logprobs.shape[-1], dtype=torch.bool)
    inside[list(opening_ids)] = True
    refusal = torch.logsumexp(logprobs[:, inside], dim=-1)
    rest = torch.logsumexp(logprobs[:, ~inside], dim=-1)
    return refusal - rest


def shift_decomposition(
    aligned: torch.Tensor,
    reference: torch.Tensor,
    aligned_random: torch.Tensor,
    reference_random: torch.Tensor,
) -> dict:
    """Splits the per-prompt margin shift ``aligned - reference`` on a prompt set into the
    context-independent part (the mean shift on random prompts, what TSDI's bias sees) and the
    prompt-dependent rest. ``share`` is the context-independent part over the mean shift."""
    shift = aligned - reference
    constant = float((aligned_random - reference_random).mean())
    mean = float(shift.mean())
    return {
        "mean_shift": mean,
        "context_independent": constant,
        "prompt_dependent": mean - constant,
        "share_context_independent": constant / mean if mean != 0 else float("nan"),
        "shift_std": float(shift.std()) if shift.numel() > 1 else 0.0,
    }


def _summary(margins: torch.Tensor) -> dict:
    q = torch.quantile(margins, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9]))
    return {
        "n": margins.numel(),
        "refuses_first": float((margins > 0).float().mean()),
        "quantiles_10_25_50_75_90": [round(float(v), 3) for v in q],
    }


def premise_diagnostic(
    models: Mapping[str, object],
    tokenizer,
    sets: Mapping[str, Sequence[str]],
    *,
    reference: str,
    opening_ids: Sequence[int],
    random_prompts: Sequence[str],
    biases: Mapping[str, torch.Tensor] | None = None,
    alphas: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
    batch_size: int = 32,
) -> dict:
    """The diagnostic of the module docstring.

    Parameters
    ----------
    models : {name: model}
        The reference and the aligned models (one tokenizer).
    sets : {name: prompts}
        e.g. harmful prompts and over-refused benign prompts.
    reference : str
        Which of ``models`` is the reference.
    opening_ids : list of int
        :func:`refusal_opening_ids`.
    random_prompts : list of str
        Prompts unrelated to either set (the context-independent baseline).
    biases : {model name: [L, V] tensor}, optional
        The TSDI bias of each aligned model; its first row is subtracted at each alpha.

    Returns
    -------
    dict
        ``{model: {set: summary, ...}, "shift": {model: {set: decomposition}}}``.
    """
    margins: dict[str, dict[str, torch.Tensor]] = {}
    logprobs: dict[str, dict[str, torch.Tensor]] = {}
    for name, model in models.items():
        logprobs[name] = {
            s: first_token_logprobs(model, tokenizer, prompts, batch_size=batch_size)
            for s, prompts in {**sets, "random": random_prompts}.items()
        }
        margins[name] = {s: refusal_margins(lp, opening_ids) for s, lp in logprobs[name].items()}
    result: dict = {"opening_ids": list(opening_ids), "models": {}, "shift": {}}
    for name in models:
        entry = {s: _summary(m) for s, m in margins[name].items()}
        bias = (biases or {}).get(name)
        if bias is not None:
            for s in sets:
                entry[s]["debiased_refuses_first"] = {
                    f"{a:g}": float(
                        (refusal_margins(logprobs[name][s] - a * bias[0], opening_ids) > 0)
                        .float()
                        .mean()
                    )
                    for a in alphas
                }
        result["models"][name] = entry
        if name != reference:
            result["shift"][name] = {
                s: shift_decomposition(
                    margins[name][s],
                    margins[reference][s],
                    margins[name]["random"],
                    margins[reference]["random"],
                )
                for s in sets
            }
    return result
