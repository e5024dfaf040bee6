"""The safety-helpfulness replication: does TSDI move the Pareto front of a real model?

Pipeline (``tsdi replicate``, ``make replicate``):

1. :func:`tsdi_ext.realign.realign`: safety-realign SmolLM2-135M-Instruct (the reference) with
   LoRA SFT on AdvBench refusals plus its own benign answers (cached).
2. :func:`tsdi_ext.bias.estimate_bias`: the TSDI bias of the aligned model against the reference,
   from random prompts (nothing from the evaluation sets).
3. :func:`run_sweep`: greedy generation on held-out harmful prompts (HarmBench, Do-Not-Answer) and
   benign prompts (tsdi_ext's own: ordinary and sensitive-sounding) for the reference, the aligned
   model, and the aligned model with TSDI at every ``(alpha, L)`` of a grid; a refusal scorer
   judges every response.
4. A table (CSV, JSON), a Pareto plot (x: benign compliance, y: harmful refusal), the responses
   (JSONL), the most biased tokens, and a Markdown summary with wall times.

A scorer is any ``scorer(prompts, responses) -> list[bool]`` (True: refusal); the default is the
pattern detector of :mod:`tsdi_ext.refusal`. Rates come with 95% Wilson intervals.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import platform
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from . import __version__, datasets
from .refusal import PatternRefusalDetector, RefusalScorer, wilson_interval

__all__ = [
    "SweepConfig", "PromptSet", "sweep_configs", "evaluation_sets", "run_sweep", "pareto_optimal", "mixture_gap",
    "mcnemar_exact", "paired_with_aligned",
    "write_table", "plot_pareto", "load_scorer", "rescore", "replicate",
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


@dataclass
class PromptSet:
    """Evaluation prompts of one kind: ``"harmful"`` (should be refused) or ``"benign"`` (should not)."""

    name: str
    kind: str
    prompts: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in ("harmful", "benign"):
            raise ValueError(f"tsdi_ext: prompt set kind must be 'harmful' or 'benign', got {self.kind!r}")
        if not self.prompts:
            raise ValueError(f"tsdi_ext: prompt set {self.name!r} is empty")


def sweep_configs(alphas: Sequence[float], lengths: Sequence[int], *, include_reference: bool = True) -> list[SweepConfig]:
    """Reference, aligned, then aligned+TSDI at every ``(L, alpha)`` of the grid (L outer)."""
    if any(length < 1 for length in lengths):
        raise ValueError(f"tsdi_ext: every L must be >= 1, got {list(lengths)}")
    if any(alpha <= 0 for alpha in alphas):
        raise ValueError(f"tsdi_ext: every alpha must be > 0 (alpha 0 is the aligned model), got {list(alphas)}")
    configs = [SweepConfig("reference", "reference")] if include_reference else []
    configs.append(SweepConfig("aligned", "aligned"))
    configs += [SweepConfig("aligned+TSDI", "aligned", float(a), int(n)) for n in lengths for a in alphas]
    return configs


def evaluation_sets(harmful_per_set: int | None = 200, seed: int = 0) -> list[PromptSet]:
    """HarmBench and Do-Not-Answer (a seeded sample of at most ``harmful_per_set`` each; None: all)
    and the benign prompts by section. None of them is used in training or bias estimation."""
    rng = random.Random(seed)

    def cap(prompts: list[str]) -> list[str]:
        if harmful_per_set is None or len(prompts) <= harmful_per_set:
            return prompts
        return sorted(rng.sample(prompts, harmful_per_set), key=prompts.index)

    sets = [
        PromptSet("harmbench", "harmful", cap(datasets.harmbench_prompts())),
        PromptSet("donotanswer", "harmful", cap(datasets.donotanswer_prompts())),
    ]
    sets += [PromptSet(name, "benign", prompts) for name, prompts in datasets.benign_prompt_sections().items()]
    return sets


def _rate(flags: list[bool]) -> dict:
    successes, total = sum(flags), len(flags)
    low, high = wilson_interval(successes, total)
    return {"rate": successes / total, "low": low, "high": high, "count": successes, "n": total}


def summarise(config: SweepConfig, sets: Sequence[PromptSet], refusals: dict[str, list[bool]], seconds: float) -> dict:
    """One table row: harmful refusal rate and benign compliance rate (with Wilson intervals)
    overall and per prompt set."""
    harmful = [r for s in sets if s.kind == "harmful" for r in refusals[s.name]]
    benign = [not r for s in sets if s.kind == "benign" for r in refusals[s.name]]
    row = {"name": config.name, "label": config.label, "model": config.model, "alpha": config.alpha,
           "L": config.length}
    for key, flags in (("harmful_refusal", harmful), ("benign_compliance", benign)):
        if flags:
            stats = _rate(flags)
            row.update({key: stats["rate"], f"{key}_low": stats["low"], f"{key}_high": stats["high"], f"{key}_n": stats["n"]})
    for s in sets:
        flags = refusals[s.name] if s.kind == "harmful" else [not r for r in refusals[s.name]]
        row[f"{'refusal' if s.kind == 'harmful' else 'compliance'}[{s.name}]"] = sum(flags) / len(flags)
    row["seconds"] = round(seconds, 1)
    return row


def pareto_optimal(rows: Sequence[dict]) -> list[bool]:
    """Whether each row is on the Pareto front of (benign compliance, harmful refusal): no other
    row is at least as good on both and strictly better on one."""
    points = [(r["benign_compliance"], r["harmful_refusal"]) for r in rows]
    return [
        not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
        for p in points
    ]


@torch.inference_mode()
def response_nll(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 16) -> list[float]:
    """Mean negative log-likelihood per token of each response given its prompt (through the chat
    template), under ``model``: a fluency check. A debiased model that "complies" with gibberish
    would look helpful to a refusal detector; its answers' NLL under the reference model gives it
    away. Empty responses give NaN.

    Returns
    -------
    list of float
        One value per response, in nats per token.
    """
    from .generation import prepare_prompts

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
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        start_col = prompt_ids.shape[1]
        predicted = logits[:, start_col - 1 : -1].float().log_softmax(dim=-1)
        token_logprob = predicted.gather(-1, answers.to(device).unsqueeze(-1)).squeeze(-1)
        mask = answer_mask.to(device).float()
        counts = mask.sum(dim=1)
        nll = -(token_logprob * mask).sum(dim=1) / counts.clamp(min=1)
        values += [float("nan") if c == 0 else float(v) for v, c in zip(nll.tolist(), counts.tolist())]
    return values


def mixture_gap(rows: Sequence[dict]) -> list[float | None]:
    """How far each row's harmful refusal lies above the *mixture line*: the points a server gets
    by answering each request with the aligned model with probability t and with the reference
    otherwise (the chord from the reference row to the aligned row). A trade-off above the line
    beats simply mixing the two models; the gap is None outside the chord's compliance range or
    when the sweep has no reference/aligned row."""
    reference = next((r for r in rows if r["label"] == "reference"), None)
    aligned = next((r for r in rows if r["label"] == "aligned"), None)
    if reference is None or aligned is None:
        return [None] * len(rows)
    x0, y0 = aligned["benign_compliance"], aligned["harmful_refusal"]
    x1, y1 = reference["benign_compliance"], reference["harmful_refusal"]
    gaps: list[float | None] = []
    for r in rows:
        x = r["benign_compliance"]
        if x1 == x0 or not (min(x0, x1) <= x <= max(x0, x1)):
            gaps.append(None)
            continue
        gaps.append(r["harmful_refusal"] - (y0 + (y1 - y0) * (x - x0) / (x1 - x0)))
    return gaps


def _generate_sorted(model, tokenizer, prompts, *, bias, alpha, max_new_tokens, batch_size, temperature, seed, on_batch):
    """Completions for ``prompts`` in their order, generated in batches of similar length (less padding)."""
    from .generation import generate

    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    texts: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        result = generate(
            model, tokenizer, [prompts[i] for i in chunk], bias=bias, alpha=alpha, temperature=temperature,
            max_new_tokens=max_new_tokens, seed=seed,
        )
        for i, text in zip(chunk, result.texts):
            texts[i] = text
        on_batch()
    return texts


def run_sweep(
    models: dict, bias, configs: Sequence[SweepConfig], sets: Sequence[PromptSet], *,
    scorer: RefusalScorer | None = None, max_new_tokens: int = 40, batch_size: int = 32,
    temperature: float = 0.0, seed: int = 0, progress: bool = True, responses_path: str | Path | None = None,
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
    from .bias import BiasTable

    scorer = scorer or PatternRefusalDetector()
    table = bias.bias if isinstance(bias, BiasTable) else bias
    for config in configs:
        if config.model not in models:
            raise ValueError(f"tsdi_ext: configuration {config.name!r} needs the model {config.model!r}")
        if config.debiased and (table is None or config.length > table.shape[0]):
            have = 0 if table is None else table.shape[0]
            raise ValueError(f"tsdi_ext: configuration {config.name!r} needs L={config.length} bias rows, have {have}")
    if isinstance(bias, BiasTable):
        for model, tokenizer in models.values():
            bias.check_compatible(tokenizer=tokenizer, vocab_size=model.get_output_embeddings().weight.shape[0])

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
                model, tokenizer, prompts, bias=table[: config.length] if config.debiased else None,
                alpha=config.alpha, max_new_tokens=max_new_tokens, batch_size=batch_size,
                temperature=temperature, seed=seed, on_batch=(bar.update if bar is not None else lambda: None),
            )
            flags = _judge(scorer, prompts, texts)
            row, refusals = _score(config, sets, prompts, owners, texts, flags,
                                   time.perf_counter() - started, fluency)
            rows.append(row)
            verdicts.append(refusals)
            if out is not None:
                for prompt, owner, text, flag in zip(prompts, owners, texts, flags):
                    out.write(json.dumps({"config": config.name, "label": config.label, "model": config.model,
                                          "alpha": config.alpha, "L": config.length, "set": owner,
                                          "kind": kinds[owner], "prompt": prompt, "response": text,
                                          "refusal": flag}) + "\n")
                out.flush()
    finally:
        if bar is not None:
            bar.close()
        if out is not None:
            out.close()
    _annotate(rows)
    paired_with_aligned(rows, verdicts, sets)
    return rows


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_with_aligned(rows: list[dict], verdicts: Sequence[dict], sets: Sequence[PromptSet]) -> None:
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
        for kind, names in (("harmful", ("harmful_refusals_lost", "harmful_refusals_gained")),
                            ("benign", ("benign_answers_gained", "benign_answers_lost"))):
            pairs = [(a, x) for s in sets if s.kind == kind for a, x in zip(aligned[s.name], refusals[s.name])]
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
        raise ValueError(f"tsdi_ext: the scorer returned {len(flags)} verdicts for {len(prompts)} responses")
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
    values = [v for v in response_nll(*fluency, [p for p, _ in picked], [t for _, t in picked]) if v == v]
    return sum(values) / len(values) if values else float("nan")


def _annotate(rows: list[dict]) -> None:
    """Adds ``pareto`` and ``above_mixture`` when every row has both rates."""
    if all("harmful_refusal" in r and "benign_compliance" in r for r in rows):
        for row, optimal, gap in zip(rows, pareto_optimal(rows), mixture_gap(rows)):
            row["pareto"] = optimal
            row["above_mixture"] = gap


_NAME = re.compile(r"^(?P<label>\S+) alpha=(?P<alpha>\S+) L=(?P<length>\d+)$")


def _config_from_record(record: dict) -> SweepConfig:
    if "label" in record:
        return SweepConfig(record["label"], record["model"], record["alpha"], record["L"])
    match = _NAME.match(record["config"])  # responses written before the fields were stored
    if match:
        return SweepConfig(match["label"], "aligned", float(match["alpha"]), int(match["length"]))
    return SweepConfig(record["config"], "reference" if record["config"] == "reference" else "aligned")


def rescore(directory: str | Path, scorer: RefusalScorer | None = None, *, fluency=None) -> list[dict]:
    """Rebuilds a sweep's table, plot (and summary, for a ``replicate`` directory) from its
    ``responses.jsonl`` without generating again; with ``scorer``, the responses are judged anew
    (e.g. by a judge model), otherwise the stored verdicts are used.

    Returns
    -------
    list of dict
        The table rows, as :func:`run_sweep` returns them (``seconds`` kept from ``sweep.json``).
    """
    directory = Path(directory)
    path = directory / "responses.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"tsdi_ext: {path} does not exist (run 'tsdi sweep' or 'tsdi replicate' first)")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise ValueError(f"tsdi_ext: {path} holds no responses")
    run = json.loads((directory / "run.json").read_text()) if (directory / "run.json").is_file() else None
    kinds = {name: info["kind"] for name, info in run.get("sweep", {}).get("sets", {}).items()} if run else {}
    previous = {}
    if (directory / "sweep.json").is_file():
        previous = {r["name"]: r for r in json.loads((directory / "sweep.json").read_text())}
    by_config: dict[str, list[dict]] = {}
    for record in records:
        by_config.setdefault(record["config"], []).append(record)
    rows, verdicts = [], []
    for name, group in by_config.items():
        config = _config_from_record(group[0])
        set_names = list(dict.fromkeys(r["set"] for r in group))
        sets = []
        for set_name in set_names:
            kind = next((r["kind"] for r in group if r["set"] == set_name and "kind" in r), kinds.get(set_name))
            if kind is None:
                raise ValueError(f"tsdi_ext: {path}: the kind (harmful/benign) of set {set_name!r} is not recorded")
            sets.append(PromptSet(set_name, kind, [r["prompt"] for r in group if r["set"] == set_name]))
        ordered = [r for s in sets for r in group if r["set"] == s.name]  # grouped by set
        prompts = [r["prompt"] for r in ordered]
        responses = [r["response"] for r in ordered]
        owners = [r["set"] for r in ordered]
        flags = (_judge(scorer, prompts, responses) if scorer is not None
                 else [bool(r["refusal"]) for r in ordered])
        row, refusals = _score(config, sets, prompts, owners, responses, flags,
                               previous.get(name, {}).get("seconds", 0.0), fluency)
        if fluency is None and "benign_nll" in previous.get(name, {}):
            row["benign_nll"] = previous[name]["benign_nll"]
        rows.append(row)
        verdicts.append(refusals)
    _annotate(rows)
    paired_with_aligned(rows, verdicts, sets)
    write_table(rows, directory)
    plot_pareto(rows, directory / "pareto.png")
    if run is not None and (directory / "top_biased_tokens.json").is_file():
        inspection = json.loads((directory / "top_biased_tokens.json").read_text())
        (directory / "summary.md").write_text(_markdown_summary(rows, inspection, run))
    return rows


def write_table(rows: Sequence[dict], directory: str | Path) -> tuple[Path, Path]:
    """``sweep.csv`` and ``sweep.json`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    csv_path, json_path = directory / "sweep.csv", directory / "sweep.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    json_path.write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def plot_pareto(rows: Sequence[dict], path: str | Path, *, title: str = "TSDI on realigned SmolLM2-135M") -> Path:
    """The safety-helpfulness plot: x = benign compliance, y = harmful refusal, 95% Wilson bars;
    one line per L through the alphas of the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5.5), dpi=120)

    def draw(subset, **style):
        x = [r["benign_compliance"] for r in subset]
        y = [r["harmful_refusal"] for r in subset]
        xerr = [[r["benign_compliance"] - r["benign_compliance_low"] for r in subset],
                [r["benign_compliance_high"] - r["benign_compliance"] for r in subset]]
        yerr = [[r["harmful_refusal"] - r["harmful_refusal_low"] for r in subset],
                [r["harmful_refusal_high"] - r["harmful_refusal"] for r in subset]]
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, capsize=2, elinewidth=0.6, **style)

    for row, style in (
        *[(r, dict(fmt="s", color="grey", label="reference (SmolLM2-Instruct)")) for r in rows if r["label"] == "reference"],
        *[(r, dict(fmt="o", color="tab:red", label="aligned (LoRA SFT)")) for r in rows if r["label"] == "aligned"],
    ):
        draw([row], markersize=8, **style)
    ends = [r for label in ("reference", "aligned") for r in rows if r["label"] == label]
    if len(ends) == 2:
        axes.plot([r["benign_compliance"] for r in ends], [r["harmful_refusal"] for r in ends], "--",
                  color="grey", lw=0.8, label="mixing the two models (per request)")
    debiased = [r for r in rows if r["label"] == "aligned+TSDI"]
    for number, length in enumerate(sorted({r["L"] for r in debiased})):
        line = sorted((r for r in debiased if r["L"] == length), key=lambda r: r["alpha"])
        draw(line, fmt="-^", color=f"C{number}", markersize=5, label=f"aligned + TSDI, L={length}")
        for r in line:
            # Lines of different L often overlap: their labels go to alternate sides.
            axes.annotate(f"α={r['alpha']:g}", (r["benign_compliance"], r["harmful_refusal"]),
                          textcoords="offset points", xytext=(5, 3) if number % 2 == 0 else (-32, -9),
                          fontsize=7, color=f"C{number}")
    axes.set_xlabel("benign compliance (helpfulness) →")
    axes.set_ylabel("harmful refusal (safety) →")
    axes.set_title(title, fontsize=10)
    # Zoomed on the points (with their intervals): the interesting differences are a few percent.
    xs = [v for r in rows for v in (r["benign_compliance_low"], r["benign_compliance_high"])]
    ys = [v for r in rows for v in (r["harmful_refusal_low"], r["harmful_refusal_high"])]
    axes.set_xlim(max(-0.01, min(xs) - 0.03), min(1.01, max(xs) + 0.03))
    axes.set_ylim(max(-0.01, min(ys) - 0.03), min(1.01, max(ys) + 0.03))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def load_scorer(spec: str | None) -> RefusalScorer:
    """``None`` or ``"pattern"``: the pattern detector; ``"package.module:name"``: that callable
    (a scorer, or a zero-argument factory returning one when it is a class)."""
    if spec in (None, "pattern"):
        return PatternRefusalDetector()
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"tsdi_ext: a scorer is 'pattern' or 'package.module:callable', got {spec!r}")
    target = getattr(importlib.import_module(module_name), attribute)
    return target() if isinstance(target, type) else target


def _paired_cell(row: dict, kind: str) -> str:
    keys = ("harmful_refusals_lost", "harmful_refusals_gained") if kind == "harmful" else (
        "benign_answers_gained", "benign_answers_lost")
    if keys[0] not in row:
        return ""
    return f"{row[keys[0]]} / {row[keys[1]]} ({row[kind + '_p']:.2g})"


def _markdown_summary(rows, inspection, record) -> str:
    lines = [
        "# TSDI replication on SmolLM2-135M-Instruct",
        "",
        f"Generated by `tsdi replicate` (tsdi_ext {record['tsdi_ext']}) on {record['date']}, "
        f"{record['host']['cpu_threads']} CPU threads, torch {record['versions']['torch']}.",
        "",
        "| configuration | harmful refusal (95% CI) | benign compliance (95% CI) | ordinary | sensitive-sounding | above mixture line | Pareto | benign NLL | vs aligned: harmful answered / newly refused (p) | vs aligned: benign recovered / lost (p) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = "" if r.get("above_mixture") is None else format(round(r["above_mixture"], 3) + 0.0, "+.3f")
        nll = format(r["benign_nll"], ".2f") if "benign_nll" in r else ""
        lines.append(
            f"| {r['name']} | {r['harmful_refusal']:.3f} ({r['harmful_refusal_low']:.3f}-{r['harmful_refusal_high']:.3f}) "
            f"| {r['benign_compliance']:.3f} ({r['benign_compliance_low']:.3f}-{r['benign_compliance_high']:.3f}) "
            f"| {r.get('compliance[ordinary]', float('nan')):.3f} | {r.get('compliance[sensitive-sounding]', float('nan')):.3f} "
            f"| {gap} | {'yes' if r.get('pareto') else ''} | {nll} | {_paired_cell(r, 'harmful')} | {_paired_cell(r, 'benign')} |"
        )
    lines += ["", "Top tokens the bias pushes down (aligned prefers them more than the reference does):", ""]
    for entry in inspection:
        tokens = ", ".join(f"`{e['token']!r}` {e['bias']:+.2f}" for e in entry["pushed_down"][:8])
        lines.append(f"- position {entry['position']}: {tokens}")
    lines += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in record["seconds"].items()), ""]
    return "\n".join(lines)


def replicate(
    output: str | Path, *, realign_settings=None, alphas: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
    lengths: Sequence[int] = (1, 8), harmful_per_set: int | None = 200, bias_prompts: int = 256,
    max_new_tokens: int = 40, batch_size: int = 32, seed: int = 0, scorer: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """The whole experiment (see the module docstring); writes its outputs into ``output``.

    Returns
    -------
    list of dict
        The sweep table.
    """
    from .bias import estimate_bias
    from .models import SMOLLM2, load_model
    from .realign import RealignSettings, realign

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    settings = realign_settings or RealignSettings(seed=seed)
    aligned_path = realign(SMOLLM2, settings, progress=progress)
    seconds["realign (0 when cached)"] = time.perf_counter() - started
    realign_record = json.loads((aligned_path / "realign.json").read_text())

    reference, tokenizer = load_model(SMOLLM2)
    aligned, _ = load_model(str(aligned_path))
    mark = time.perf_counter()
    table = estimate_bias(
        aligned, reference, tokenizer, num_prompts=bias_prompts, length=max(lengths), seed=seed, progress=progress,
        aligned_name=f"smollm2-realigned ({aligned_path.name})", reference_name=SMOLLM2,
    )
    seconds["bias estimation"] = time.perf_counter() - mark
    table.save(output / "bias.safetensors")
    inspection = [
        {**entry, **{side: [{**e, "bias": round(e["bias"], 3)} for e in entry[side]]
                     for side in ("pushed_down", "pushed_up")}}
        for entry in table.describe(tokenizer, positions=4, top=10)
    ]
    (output / "top_biased_tokens.json").write_text(json.dumps(inspection, indent=2, ensure_ascii=False) + "\n")
    # The same view as `tsdi inspect bias.safetensors`, kept as text.
    import contextlib
    import io

    from .cli import _print_inspection

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        _print_inspection(table, tokenizer, positions=4, top=10)
    (output / "inspect.txt").write_text(text.getvalue())

    sets = evaluation_sets(harmful_per_set, seed=seed)
    mark = time.perf_counter()
    rows = run_sweep(
        {"reference": (reference, tokenizer), "aligned": (aligned, tokenizer)}, table,
        sweep_configs(alphas, lengths), sets, scorer=load_scorer(scorer), max_new_tokens=max_new_tokens,
        batch_size=batch_size, seed=seed, progress=progress, responses_path=output / "responses.jsonl",
        fluency=(reference, tokenizer),
    )
    seconds["sweep"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    write_table(rows, output)
    plot_pareto(rows, output / "pareto.png")

    import transformers

    record = {
        "tsdi_ext": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": {"machine": platform.machine(), "processor": platform.processor() or "unknown",
                 "cpu_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "realignment": {k: realign_record[k] for k in ("settings", "examples", "train_loss", "seconds", "versions")},
        "aligned_model": str(aligned_path),
        "bias": {"shape": list(table.bias.shape), "settings": table.metadata.get("settings")},
        "sweep": {"alphas": list(alphas), "lengths": list(lengths), "max_new_tokens": max_new_tokens,
                  "decoding": "greedy", "scorer": scorer or "pattern",
                  "fluency": "benign_nll: mean NLL per token of the benign answers under the reference model",
                  "sets": {s.name: {"kind": s.kind, "n": len(s.prompts)} for s in sets}},
    }
    (output / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    (output / "summary.md").write_text(_markdown_summary(rows, inspection, record))
    return rows
