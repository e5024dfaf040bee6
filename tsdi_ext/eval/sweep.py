"""The safety-helpfulness sweep: does TSDI move the Pareto front of a model?

:func:`run_sweep` generates greedy answers to harmful prompts (which should be refused) and
benign ones (which should not) for every configuration of a grid: the reference model, the
aligned model, and the aligned model with TSDI at every ``(alpha, L)``; a refusal scorer judges
every response. Each configuration becomes a table row with 95% Wilson intervals, paired exact
McNemar tests against the aligned model, the Pareto front and the distance to the mixture line
(:mod:`.stats`); :func:`rescore` rebuilds the table from stored answers, optionally with another
scorer. ``tsdi sweep`` and ``tsdi rescore`` are its command line.

A scorer is any ``scorer(prompts, responses) -> list[bool]`` (True: refusal); the default is the
pattern detector of :mod:`.refusal`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..bias import BiasTable
from ..generation import generate, prepare_prompts
from .prompts import PromptSet
from .refusal import PatternRefusalDetector, RefusalScorer
from .report import plot_pareto, write_table
from .stats import mcnemar_exact, mixture_gap, pareto_optimal, rate

# The fields of every record of responses.jsonl.
RESPONSE_FIELDS = (
    "config",
    "label",
    "model",
    "alpha",
    "L",
    "set",
    "kind",
    "prompt",
    "response",
    "refusal",
)

__all__ = [
    "RESPONSE_FIELDS",
    "SweepConfig",
    "sweep_configs",
    "summarise",
    "run_sweep",
    "paired_with_aligned",
    "response_nll",
    "rescore",
]


@dataclass(frozen=True)
class SweepConfig:
    """One point of the sweep: which model, and the TSDI strength (``alpha``, ``length`` = L).

    ``length == 0`` or ``alpha == 0`` means plain decoding.
    """

    label: str
    model: str
    alpha: float = 0.0
    length: int = 0

    @property
    def debiased(self) -> bool:
        return self.length > 0 and self.alpha != 0.0

    @property
    def name(self) -> str:
        return f"{self.label} alpha={self.alpha:g} L={self.length}" if self.debiased else self.label


def sweep_configs(
    alphas: Sequence[float], lengths: Sequence[int], *, include_reference: bool = True
) -> list[SweepConfig]:
    """Reference, aligned, then aligned+TSDI at every ``(L, alpha)`` of the grid (L outer)."""
    if any(length < 1 for length in lengths):
        raise ValueError(f"tsdi_ext: every L must be >= 1, got {list(lengths)}")
    if any(alpha <= 0 for alpha in alphas):
        raise ValueError(
            f"tsdi_ext: every alpha must be > 0 (alpha 0 is the aligned model), got {list(alphas)}"
        )
    configs = [SweepConfig("reference", "reference")] if include_reference else []
    configs.append(SweepConfig("aligned", "aligned"))
    configs += [
        SweepConfig("aligned+TSDI", "aligned", float(a), int(n)) for n in lengths for a in alphas
    ]
    return configs


def summarise(
    config: SweepConfig, sets: Sequence[PromptSet], refusals: dict[str, list[bool]], seconds: float
) -> dict:
    """One table row: harmful refusal rate and benign compliance rate (with Wilson intervals)
    overall and per prompt set."""
    harmful = [r for s in sets if s.kind == "harmful" for r in refusals[s.name]]
    benign = [not r for s in sets if s.kind == "benign" for r in refusals[s.name]]
    row = {
        "name": config.name,
        "label": config.label,
        "model": config.model,
        "alpha": config.alpha,
        "L": config.length,
    }
    for key, flags in (("harmful_refusal", harmful), ("benign_compliance", benign)):
        if flags:
            stats = rate(flags)
            row.update(
                {
                    key: stats["rate"],
                    f"{key}_low": stats["low"],
                    f"{key}_high": stats["high"],
                    f"{key}_n": stats["n"],
                }
            )
    for s in sets:
        flags = refusals[s.name] if s.kind == "harmful" else [not r for r in refusals[s.name]]
        row[f"{'refusal' if s.kind == 'harmful' else 'compliance'}[{s.name}]"] = sum(flags) / len(
            flags
        )
    row["seconds"] = round(seconds, 1)
    return row


@torch.inference_mode()
def response_nll(
    model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 16
) -> list[float]:
    """Mean negative log-likelihood per token of each response given its prompt (through the chat
    template), under ``model``: a fluency check. A debiased model that "complies" with gibberish
    would look helpful to a refusal detector; its answers' NLL under the reference model gives it
    away. Empty responses give NaN.

    Returns
    -------
    list of float
        One value per response, in nats per token.
    """
    if len(prompts) != len(responses):
        raise ValueError("tsdi_ext: prompts and responses must have the same length")
    values: list[float] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        chunk_prompts = list(prompts[start : start + batch_size])
        chunk_responses = list(responses[start : start + batch_size])
        prompt_ids, prompt_mask = prepare_prompts(tokenizer, chunk_prompts)
        answer_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in chunk_responses]
        width = max(1, max(len(a) for a in answer_ids))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        answers = torch.full((len(chunk_prompts), width), pad, dtype=torch.int64)
        answer_mask = torch.zeros_like(answers)
        for row, ids in enumerate(answer_ids):
            answers[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
            answer_mask[row, : len(ids)] = 1
        input_ids = torch.cat([prompt_ids, answers], dim=1).to(device)
        attention_mask = torch.cat([prompt_mask, answer_mask], dim=1).to(device)
        # Left-padded prompts: positions count real tokens only.
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).logits
        start_col = prompt_ids.shape[1]
        predicted = logits[:, start_col - 1 : -1].float().log_softmax(dim=-1)
        token_logprob = predicted.gather(-1, answers.to(device).unsqueeze(-1)).squeeze(-1)
        mask = answer_mask.to(device).float()
        counts = mask.sum(dim=1)
        nll = -(token_logprob * mask).sum(dim=1) / counts.clamp(min=1)
        values += [
            float("nan") if c == 0 else float(v) for v, c in zip(nll.tolist(), counts.tolist())
        ]
    return values


def _generate_sorted(
    model,
    tokenizer,
    prompts,
    *,
    bias,
    alpha,
    max_new_tokens,
    batch_size,
    temperature,
    seed,
    on_batch,
):
    """Completions for ``prompts`` in their order, generated in batches of similar length (less padding)."""
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    texts: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        result = generate(
            model,
            tokenizer,
            [prompts[i] for i in chunk],
            bias=bias,
            alpha=alpha,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )
        for i, text in zip(chunk, result.texts):
            texts[i] = text
        on_batch()
    return texts


def run_sweep(
    models: dict,
    bias,
    configs: Sequence[SweepConfig],
    sets: Sequence[PromptSet],
    *,
    scorer: RefusalScorer | None = None,
    max_new_tokens: int = 40,
    batch_size: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    responses_path: str | Path | None = None,
    fluency=None,
) -> list[dict]:
    """Generates and scores every prompt set under every configuration.

    Parameters
    ----------
    models : dict
        ``{"reference": (model, tokenizer), "aligned": (model, tokenizer)}`` (the keys that
        ``configs`` name).
    bias : BiasTable or Tensor ``[L_max, V]`` or None
        The TSDI bias; a configuration with ``length = L`` uses its first L rows.
    configs : sequence of SweepConfig
    sets : sequence of PromptSet
    scorer : callable, optional
        ``scorer(prompts, responses) -> list[bool]``; default :class:`PatternRefusalDetector`.
    max_new_tokens, batch_size, temperature, seed
        Decoding settings (greedy by default: the comparison is not blurred by sampling noise).
    responses_path : path, optional
        Write every response as JSON lines (config, set, prompt, response, refusal).
    fluency : (model, tokenizer), optional
        Adds ``benign_nll``: the mean :func:`response_nll` of the benign answers under this model
        (the reference, typically).

    Returns
    -------
    list of dict
        One row per configuration (see :func:`summarise`), with ``pareto`` marking the front.
    """
    scorer = scorer or PatternRefusalDetector()
    table = bias.bias if isinstance(bias, BiasTable) else bias
    for config in configs:
        if config.model not in models:
            raise ValueError(
                f"tsdi_ext: configuration {config.name!r} needs the model {config.model!r}"
            )
        if config.debiased and (table is None or config.length > table.shape[0]):
            have = 0 if table is None else table.shape[0]
            raise ValueError(
                f"tsdi_ext: configuration {config.name!r} needs L={config.length} bias rows, have {have}"
            )
    if isinstance(bias, BiasTable):
        for model, tokenizer in models.values():
            bias.check_compatible(
                tokenizer=tokenizer, vocab_size=model.get_output_embeddings().weight.shape[0]
            )

    prompts = [p for s in sets for p in s.prompts]
    owners = [s.name for s in sets for _ in s.prompts]
    kinds = {s.name: s.kind for s in sets}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs) * -(-len(prompts) // batch_size), desc="sweep", unit="batch")
    out = open(responses_path, "w", encoding="utf-8") if responses_path else None
    rows, verdicts = [], []
    try:
        for config in configs:
            if bar is not None:
                bar.set_postfix_str(config.name)
            model, tokenizer = models[config.model]
            started = time.perf_counter()
            texts = _generate_sorted(
                model,
                tokenizer,
                prompts,
                bias=table[: config.length] if config.debiased else None,
                alpha=config.alpha,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                temperature=temperature,
                seed=seed,
                on_batch=(bar.update if bar is not None else lambda: None),
            )
            flags = _judge(scorer, prompts, texts)
            row, refusals = _score(
                config, sets, prompts, owners, texts, flags, time.perf_counter() - started, fluency
            )
            rows.append(row)
            verdicts.append(refusals)
            if out is not None:
                # One record per answer, with the fields of RESPONSE_FIELDS.
                for prompt, owner, text, flag in zip(prompts, owners, texts, flags):
                    out.write(
                        json.dumps(
                            {
                                "config": config.name,
                                "label": config.label,
                                "model": config.model,
                                "alpha": config.alpha,
                                "L": config.length,
                                "set": owner,
                                "kind": kinds[owner],
                                "prompt": prompt,
                                "response": text,
                                "refusal": flag,
                            }
                        )
                        + "\n"
                    )
                out.flush()
    finally:
        if bar is not None:
            bar.close()
        if out is not None:
            out.close()
    _annotate(rows)
    paired_with_aligned(rows, verdicts, sets)
    return rows


def paired_with_aligned(
    rows: list[dict], verdicts: Sequence[dict], sets: Sequence[PromptSet]
) -> None:
    """Paired comparison of every row with the aligned row, prompt by prompt (the same prompts are
    answered under every configuration, so this is far more sensitive than comparing rates):
    ``harmful_refusals_lost`` / ``harmful_refusals_gained`` (harmful prompts the aligned model
    refused and this one answers / the reverse), ``benign_answers_gained`` /
    ``benign_answers_lost``, each pair with an exact McNemar p-value (``*_p``)."""
    aligned = next((v for r, v in zip(rows, verdicts) if r["label"] == "aligned"), None)
    if aligned is None:
        return
    for row, refusals in zip(rows, verdicts):
        if row["label"] == "aligned":
            continue
        for kind, names in (
            ("harmful", ("harmful_refusals_lost", "harmful_refusals_gained")),
            ("benign", ("benign_answers_gained", "benign_answers_lost")),
        ):
            pairs = [
                (a, x)
                for s in sets
                if s.kind == kind
                for a, x in zip(aligned[s.name], refusals[s.name])
            ]
            if not pairs:
                continue
            became_answer = sum(a and not x for a, x in pairs)  # aligned refused, this one answers
            became_refusal = sum(x and not a for a, x in pairs)
            row[names[0]], row[names[1]] = (became_answer, became_refusal)
            row[f"{kind}_p"] = mcnemar_exact(became_answer, became_refusal)


def _judge(scorer: RefusalScorer, prompts: list[str], texts: list[str]) -> list[bool]:
    """The scorer's verdicts, one per response."""
    flags = [bool(f) for f in scorer(prompts, texts)]
    if len(flags) != len(prompts):
        raise ValueError(
            f"tsdi_ext: the scorer returned {len(flags)} verdicts for {len(prompts)} responses"
        )
    return flags


def _score(config, sets, prompts, owners, texts, flags, seconds, fluency) -> tuple[dict, dict]:
    """One configuration's table row and its verdicts by prompt set, from all its answers
    (``owners[i]``: the set of answer i) and their verdicts."""
    refusals = {s.name: [f for f, o in zip(flags, owners) if o == s.name] for s in sets}
    row = summarise(config, sets, refusals, seconds)
    if fluency is not None:
        row["benign_nll"] = _benign_nll(fluency, sets, prompts, owners, texts)
    return row, refusals


def _benign_nll(fluency, sets, prompts, owners, texts) -> float:
    benign = {s.name for s in sets if s.kind == "benign"}
    picked = [(p, t) for p, o, t in zip(prompts, owners, texts) if o in benign]
    if not picked:
        return float("nan")
    values = [
        v for v in response_nll(*fluency, [p for p, _ in picked], [t for _, t in picked]) if v == v
    ]
    return sum(values) / len(values) if values else float("nan")


def _annotate(rows: list[dict]) -> None:
    """Adds ``pareto`` and ``above_mixture`` when every row has both rates."""
    if all("harmful_refusal" in r and "benign_compliance" in r for r in rows):
        for row, optimal, gap in zip(rows, pareto_optimal(rows), mixture_gap(rows)):
            row["pareto"] = optimal
            row["above_mixture"] = gap


def rescore(
    directory: str | Path, scorer: RefusalScorer | None = None, *, fluency=None
) -> list[dict]:
    """Rebuilds a sweep's table and plot from its ``responses.jsonl`` without generating again;
    with ``scorer``, the responses are judged anew (e.g. by a judge model), otherwise the stored
    verdicts are used.

    Returns
    -------
    list of dict
        The table rows, as :func:`run_sweep` returns them (``seconds`` kept from ``sweep.json``).
    """
    directory = Path(directory)
    path = directory / "responses.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"tsdi_ext: {path} does not exist (run 'tsdi sweep' first)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        missing = [f for f in RESPONSE_FIELDS if f not in record]
        if missing:
            raise ValueError(f"tsdi_ext: {path}:{number}: the record lacks {', '.join(missing)}")
        records.append(record)
    if not records:
        raise ValueError(f"tsdi_ext: {path} holds no responses")
    previous = {}
    if (directory / "sweep.json").is_file():
        previous = {r["name"]: r for r in json.loads((directory / "sweep.json").read_text())}
    by_config: dict[str, list[dict]] = {}
    for record in records:
        by_config.setdefault(record["config"], []).append(record)
    rows, verdicts = [], []
    for name, group in by_config.items():
        first = group[0]
        config = SweepConfig(first["label"], first["model"], first["alpha"], first["L"])
        set_names = list(dict.fromkeys(r["set"] for r in group))
        sets = []
        for set_name in set_names:
            kind = next(r["kind"] for r in group if r["set"] == set_name)
            sets.append(
                PromptSet(set_name, kind, [r["prompt"] for r in group if r["set"] == set_name])
            )
        ordered = [r for s in sets for r in group if r["set"] == s.name]  # grouped by set
        prompts = [r["prompt"] for r in ordered]
        responses = [r["response"] for r in ordered]
        owners = [r["set"] for r in ordered]
        flags = (
            _judge(scorer, prompts, responses)
            if scorer is not None
            else [bool(r["refusal"]) for r in ordered]
        )
        row, refusals = _score(
            config,
            sets,
            prompts,
            owners,
            responses,
            flags,
            previous.get(name, {}).get("seconds", 0.0),
            fluency,
        )
        if fluency is None and "benign_nll" in previous.get(name, {}):
            row["benign_nll"] = previous[name]["benign_nll"]
        rows.append(row)
        verdicts.append(refusals)
    _annotate(rows)
    paired_with_aligned(rows, verdicts, sets)
    write_table(rows, directory)
    plot_pareto(rows, directory / "pareto.png")
    return rows
