"""The faithful test of TSDI's claim, with baselines, judged on safety: one command, every stage
cached (``PYTHONPATH=experiments python -m replication study``).

Stages (each cached under ``output/``; a stage whose inputs are unchanged is skipped):

1. Aligned models: the LoRA SFT model (:func:`replication.realign.realign`) and the LoRA DPO model
   (:func:`replication.dpo.dpo_align`), both from the reference.
2. The alignment-strength front: each aligned model's weight difference merged at the
   ``scales`` (:func:`replication.premise.interpolate`; scale 0 is the reference, 1 the model).
3. TSDI biases of each aligned model against the reference, in both scales: log-probability
   difference (the project's default, the headline) and probability difference (the paper's).
4. SafePatching on the SFT model (:mod:`replication.safepatching`) and the other baselines on it
   (:mod:`replication.baselines`).
5. Greedy answers of every configuration to the same prompts (``responses/<config>.jsonl``),
   judged by :class:`tsdi_ext.eval.judge.SafetyJudge` and the pattern detector, with the
   reference's NLL of the benign answers (fluency).
6. The premise diagnostic (:func:`replication.premise.premise_diagnostic`).
7. ``study.json`` / ``study.md``: judged safety and helpfulness with Wilson intervals, the
   judged gap to each model's front and whether the intervals separate, paired exact McNemar
   tests against the same aligned model (safety) and against the front point of equal safety
   (benign compliance), per harm category.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tsdi_ext.bias import DEFAULT_CORPUS, estimate_bias
from tsdi_ext.eval.prompts import PromptSet, advbench_prompts, evaluation_sets
from tsdi_ext.eval.refusal import PatternRefusalDetector
from tsdi_ext.eval.stats import mcnemar_exact
from tsdi_ext.eval.sweep import response_nll
from tsdi_ext.generation import generate

from .judged import _dna_categories, format_judged, harm_category, judged_rows

__all__ = ["StudySettings", "Config", "study_configs", "front_gap", "run_study", "plot_study"]


@dataclass(frozen=True)
class StudySettings:
    """Everything the study does (the cache keys hash it). The defaults are the full run: about
    2 hours cold on 2 CPU cores (the two trainings 30 minutes, 26 configurations about 3 minutes
    each); 200 harmful prompts per set and 40 tokens per answer would take about 3 hours."""

    harmful_per_set: int | None = 100
    borderline: bool = True
    scales: tuple[float, ...] = (0.25, 0.5, 0.75)
    alphas_logprob: tuple[float, ...] = (0.25, 0.5, 1.0)
    alphas_prob: tuple[float, ...] = (1.0, 2.0, 4.0)
    bias_length: int = 1
    bias_prompts: int = 256
    contrast_gamma: float = 1.0
    # None: Arditi et al.'s selection over the layers, at the last prompt token (baselines.py,
    # ABLATION_POSITIONS); a layer: the difference of means at that layer's input, last prompt
    # token, without selection.
    ablation_layer: int | None = None
    patch_examples: int = 64
    patch_steps: int = 16
    patch_learning_rate: float = 1e-5
    patch_top_fraction: float = 0.1
    patch_retain: float = 0.5
    max_new_tokens: int = 32
    batch_size: int = 64
    seed: int = 0
    reduced: bool = False  # a label only: set by the reduced configuration

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Config:
    """One row: ``kind`` in plain, front, tsdi, helpful-prompt, self-cd, ablation, safepatch."""

    name: str
    model: str
    kind: str
    aligned: str = ""  # the aligned model this row derives from (its paired baseline)
    scale: float = 1.0
    alpha: float = 0.0
    bias: str = ""
    extra: dict = field(default_factory=dict, compare=False)


def study_configs(settings: StudySettings, aligned: Sequence[str] = ("sft", "dpo")) -> list[Config]:
    configs = [Config("reference", "reference", "plain")]
    for a in aligned:
        configs.append(Config(a, a, "plain", aligned=a))
        configs += [
            Config(f"{a}@{s:g}", f"{a}@{s:g}", "front", a, scale=s) for s in settings.scales
        ]
        for score, alphas in (("logprob", settings.alphas_logprob), ("prob", settings.alphas_prob)):
            configs += [
                Config(f"{a}+TSDI[{score}] alpha={x:g}", a, "tsdi", a, alpha=x, bias=score)
                for x in alphas
            ]
    base = aligned[0]
    configs += [
        Config(f"{base}+helpful prompt", base, "helpful-prompt", base),
        Config(f"{base}+self-CD gamma={settings.contrast_gamma:g}", base, "self-cd", base),
        Config(f"{base}+refusal ablation", base, "ablation", base),
        Config(f"{base}+SafePatching", f"{base}+safepatch", "safepatch", base),
    ]
    return configs


def front_gap(row: dict, front: Sequence[dict]) -> tuple[float | None, bool]:
    """Judged safety of ``row`` minus the front's at the row's benign compliance (piecewise
    linear through the front points, x = pattern benign compliance), and whether the row's
    interval lies wholly above the front's upper interval there. None outside the front's
    range."""
    points = sorted(front, key=lambda r: r["benign_compliance"])
    x = row["benign_compliance"]
    for left, right in zip(points, points[1:]):
        x0, x1 = left["benign_compliance"], right["benign_compliance"]
        if x0 <= x <= x1:
            t = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            y = left["judged_safety"] + t * (right["judged_safety"] - left["judged_safety"])
            high = left["judged_safety_high"] + t * (
                right["judged_safety_high"] - left["judged_safety_high"]
            )
            return row["judged_safety"] - y, row["judged_safety_low"] > high
    return None, False


def _random_text_prompts(count: int, seed: int, words: int = 16) -> list[str]:
    vocabulary = DEFAULT_CORPUS.read_text(encoding="utf-8").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(count)]


def _generate_all(fn: Callable[[list[str]], list[str]], prompts, tokenizer, batch_size, kinds=None):
    """``fn`` over ``prompts`` in batches of similar length, one kind (harmful, benign) per batch
    where ``kinds`` is given: a batch stops when all its answers have, and refusals are short."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    kinds = kinds or [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (kinds[i], lengths[i]))
    texts = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, text in zip(chunk, fn([prompts[i] for i in chunk])):
            texts[i] = text
    return texts


def _answers(config: Config, models, tokenizer, biases, settings):
    """The function that answers a batch of prompts for this configuration."""
    from .baselines import (
        HELPFUL_SYSTEM_PROMPT,
        ablate_direction,
        contrastive_generate,
        hooked,
        render_with_system,
    )

    model = models[config.model]
    n = settings.max_new_tokens
    if config.kind in ("plain", "front", "safepatch"):
        return lambda ps: generate(model, tokenizer, ps, max_new_tokens=n).texts
    if config.kind == "tsdi":
        bias = biases[(config.aligned, config.bias)][: settings.bias_length]
        return lambda ps: (
            generate(model, tokenizer, ps, bias=bias, alpha=config.alpha, max_new_tokens=n).texts
        )
    if config.kind == "helpful-prompt":
        return lambda ps: (
            generate(
                model,
                tokenizer,
                render_with_system(tokenizer, ps, HELPFUL_SYSTEM_PROMPT),
                chat_template=False,
                max_new_tokens=n,
            ).texts
        )
    if config.kind == "self-cd":
        return lambda ps: contrastive_generate(
            model, tokenizer, ps, gamma=settings.contrast_gamma, max_new_tokens=n
        )
    if config.kind == "ablation":
        direction = torch.tensor(biases[(config.aligned, "refusal-direction")]["direction"])

        def ablated(ps):
            with hooked(ablate_direction(model, direction)):
                return generate(model, tokenizer, ps, max_new_tokens=n).texts

        return ablated
    raise ValueError(f"tsdi_ext: unknown configuration kind {config.kind!r}")


class _Lazy(dict):
    """A dict whose missing entries are computed on first use by ``loaders[key]()``: a rerun
    whose answers are all cached loads no model and trains nothing."""

    def __init__(self, loaded=(), loaders=None):
        super().__init__(loaded)
        self.loaders = dict(loaders or {})

    def __missing__(self, key):
        if key not in self.loaders:
            raise KeyError(key)
        value = self[key] = self.loaders[key]()
        return value


# Enters the ablation row's cache key (the rest of the study's keys are unchanged by it): v2 is
# Arditi et al.'s selection and whole-stream ablation; v1 (middle layer, layer outputs only)
# emptied every answer.
ABLATION_METHOD = "selected-v2"
# Candidates at the last prompt token only: Arditi et al. search every post-instruction token
# (5 here), which would take 5 times the selection's 4 minutes on this machine.
ABLATION_POSITIONS = 1


def _cached_json(path: Path, key: str, compute: Callable[[], object]):
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("key") == key:
            return record["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "value": value}, indent=1, ensure_ascii=False) + "\n")
    return value


def run_study(
    output: str | Path,
    settings: StudySettings = StudySettings(),
    *,
    load_models: Callable[[], tuple[dict, object]] | None = None,
    sets: Sequence[PromptSet] | None = None,
    patch_prompts: Sequence[str] | None = None,
    judge=None,
    progress: bool = True,
) -> list[dict]:
    """Runs the stages of the module docstring; returns the table rows.

    ``load_models`` returns ``({"reference": m, "sft": m, "dpo": m}, tokenizer)`` (default: the
    real models, trained or loaded from the cache); ``sets`` and ``patch_prompts`` default to
    the evaluation sets and AdvBench (SafePatching's harmful data, disjoint from the evaluation).
    """
    from .baselines import refusal_direction, select_refusal_direction
    from .premise import interpolate, premise_diagnostic, refusal_opening_ids
    from .realign import refusal_responses
    from .safepatching import (
        difference_masks,
        merge_patches,
        patch_batches,
        snip_importance,
        train_patch,
    )
    from replication.replicate import check_results_directory

    output = check_results_directory(output, force=True)
    output.mkdir(parents=True, exist_ok=True)
    started, seconds = time.perf_counter(), {}
    key = settings.key()
    if load_models is None:
        load_models = _real_models
    loaded, tokenizer = load_models()
    models = loaded if isinstance(loaded, _Lazy) else _Lazy(loaded)
    seconds["models"] = time.perf_counter() - started
    sets = (
        list(sets)
        if sets is not None
        else evaluation_sets(
            settings.harmful_per_set, seed=settings.seed, borderline=settings.borderline
        )
    )
    harmful = [p for s in sets if s.kind == "harmful" for p in s.prompts]
    benign = [p for s in sets if s.kind == "benign" for p in s.prompts]

    mark = time.perf_counter()
    for a in ("sft", "dpo"):
        for s in settings.scales:
            models.loaders[f"{a}@{s:g}"] = lambda a=a, s=s: interpolate(
                models["reference"], models[a], s
            )
    biases = _Lazy()
    for a in ("sft", "dpo"):
        for score in ("logprob", "prob"):
            path = output / "biases" / f"{a}-{score}-{key}.pt"
            if not path.is_file():
                table = estimate_bias(
                    models[a],
                    models["reference"],
                    tokenizer,
                    num_prompts=settings.bias_prompts,
                    length=settings.bias_length,
                    score=score,
                    seed=settings.seed,
                    progress=progress,
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(table.bias, path)
            biases[(a, score)] = torch.load(path)
    seconds["front, biases"] = time.perf_counter() - mark
    # The refusal direction and SafePatching's data: training prompts only (AdvBench, disjoint
    # from the evaluation, and the benign training set); the direction's selection scores on
    # further AdvBench and benign training prompts.
    from .realign import benign_train_prompts

    pool = list(patch_prompts) if patch_prompts is not None else advbench_prompts()
    rng = random.Random(settings.seed)
    train_harmful = rng.sample(pool, min(settings.patch_examples, len(pool)))
    train_benign = benign_train_prompts()[: len(train_harmful)]

    def direction():
        mark = time.perf_counter()
        if settings.ablation_layer is not None:
            unit = refusal_direction(
                models["sft"], tokenizer, train_harmful, train_benign, layer=settings.ablation_layer
            )
            choice = {"layer": settings.ablation_layer, "position": -1, "filters_met": "fixed"}
        else:
            taken = set(train_harmful)
            rest = [p for p in pool if p not in taken]
            # (A pool with no prompt left over, as in the tests: the training prompts.)
            val_harmful = random.Random(settings.seed + 1).sample(rest, min(32, len(rest)))
            val_harmful = val_harmful or train_harmful
            benign_all = benign_train_prompts()
            val_benign = benign_all[len(train_harmful) : len(train_harmful) + 32] or benign_all[:32]
            picked = select_refusal_direction(
                models["sft"],
                tokenizer,
                train_harmful,
                train_benign,
                val_harmful,
                val_benign,
                opening_ids=refusal_opening_ids(tokenizer, refusal_responses()),
                positions=ABLATION_POSITIONS,
            )
            unit = picked.direction
            choice = {
                "layer": picked.layer,
                "position": picked.position,
                "filters_met": picked.filters_met,
                "scores": picked.scores,
            }
        seconds["refusal direction"] = time.perf_counter() - mark
        return {**choice, "direction": [round(float(x), 7) for x in unit]}

    biases.loaders[("sft", "refusal-direction")] = lambda: _cached_json(
        output / "refusal_direction.json",
        f"{key}:{ABLATION_METHOD}:{ABLATION_POSITIONS}",
        direction,
    )

    def safepatch():
        mark = time.perf_counter()
        patched = output / "safepatch" / f"sft-{key}.pt"
        if patched.is_file():
            merged = interpolate(models["sft"], models["sft"], 1.0)
            merged.load_state_dict(torch.load(patched))
            return merged
        answers = generate(
            models["reference"], tokenizer, train_harmful, max_new_tokens=settings.max_new_tokens
        ).texts
        refused = PatternRefusalDetector()(train_harmful, answers)
        data = [(p, a) for p, a, r in zip(train_harmful, answers, refused) if a and not r]
        batches = patch_batches(tokenizer, data or list(zip(train_harmful, answers)), 8)
        common = {"steps": settings.patch_steps, "learning_rate": settings.patch_learning_rate}
        safety = train_patch(
            models["sft"], batches, direction="ascent", seed=settings.seed, **common
        )
        over = train_patch(
            models["sft"], batches, direction="descent", seed=settings.seed, **common
        )
        masks = difference_masks(
            snip_importance(safety, batches, direction="ascent"),
            snip_importance(over, batches, direction="descent"),
            settings.patch_top_fraction,
        )
        merged = merge_patches(
            models["sft"], safety, over, *masks, retain=settings.patch_retain, seed=settings.seed
        )
        patched.parent.mkdir(parents=True, exist_ok=True)
        torch.save(merged.state_dict(), patched)
        seconds["SafePatching"] = time.perf_counter() - mark
        return merged

    models.loaders["sft+safepatch"] = safepatch

    mark = time.perf_counter()
    scorer = PatternRefusalDetector()
    dna = _dna_categories() if any(s.name == "donotanswer" for s in sets) else {}
    if judge is None:
        from tsdi_ext.eval.judge import SafetyJudge

        judge = SafetyJudge()
    configs = study_configs(settings)
    records, nll = [], {}
    for config in configs:
        path = output / "responses" / f"{config.name.replace('/', '_')}.jsonl"
        config_key = f"{key}:{config.name}"
        if config.kind == "ablation":
            config_key += f":{ABLATION_METHOD}:{ABLATION_POSITIONS}"

        def compute(config=config):
            fn = _answers(config, models, tokenizer, biases, settings)
            prompts = [p for s in sets for p in s.prompts]
            owners = [s for s in sets for _ in s.prompts]
            kinds = [s.kind for s in owners]
            texts = _generate_all(fn, prompts, tokenizer, settings.batch_size, kinds)
            refusals = scorer(prompts, texts)
            achieved = judge.probabilities(prompts, texts)
            benign_answers = [
                (p, t) for p, t, s in zip(prompts, texts, owners) if s.kind == "benign"
            ]
            values = response_nll(
                models["reference"],
                tokenizer,
                [p for p, _ in benign_answers],
                [t for _, t in benign_answers],
            )
            finite = [v for v in values if v == v]
            return {
                "records": [
                    {
                        "config": config.name,
                        "set": s.name,
                        "kind": s.kind,
                        "prompt": p,
                        "response": t,
                        "refusal": r,
                        "p_achieved": round(a, 4),
                        "category": harm_category(p, s.name, dna) if s.kind == "harmful" else "",
                    }
                    for p, t, s, r, a in zip(prompts, texts, owners, refusals, achieved)
                ],
                "benign_nll": sum(finite) / len(finite) if finite else float("nan"),
            }

        value = _cached_json(path, config_key, compute)
        records += value["records"]
        nll[config.name] = value["benign_nll"]
    seconds["answers"] = time.perf_counter() - mark

    mark = time.perf_counter()
    refused_benign = [
        r["prompt"]
        for r in records
        if r["config"] == "sft" and r["kind"] == "benign" and r["refusal"]
    ]
    premise = _cached_json(
        output / "premise.json",
        key,
        lambda: premise_diagnostic(
            {k: models[k] for k in ("reference", "sft", "dpo")},
            tokenizer,
            {"harmful": harmful, "over-refused benign": refused_benign or benign[:8]},
            reference="reference",
            opening_ids=refusal_opening_ids(tokenizer, refusal_responses()),
            random_prompts=_random_text_prompts(64, settings.seed),
            biases={a: biases[(a, "logprob")] for a in ("sft", "dpo")},
            alphas=settings.alphas_logprob,
        ),
    )
    seconds["premise"] = time.perf_counter() - mark

    rows = _table(configs, records, nll)
    record = {
        "settings": asdict(settings),
        "configuration": _configuration(settings),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "rows": rows,
        "premise": premise,
    }
    chosen = biases.get(("sft", "refusal-direction"))
    if chosen is not None:
        record["refusal_direction"] = {
            k: chosen[k] for k in ("layer", "position", "filters_met") if k in chosen
        }
    write_study(record, output)
    return rows


def write_study(record: dict, output: str | Path) -> None:
    """``study.json``, ``study.md`` and ``study.png`` of a study's record."""
    output = Path(output)
    (output / "study.json").write_text(json.dumps(record, indent=1) + "\n")
    (output / "study.md").write_text(_markdown(record))
    plot_study(record, output / "study.png")


_MARKERS = {
    "tsdi": ("o", "TSDI"),
    "helpful-prompt": ("s", "helpful system prompt"),
    "self-cd": ("D", "self-contrastive decoding"),
    "ablation": ("v", "refusal-direction ablation"),
    "safepatch": ("*", "SafePatching"),
}


def plot_study(record: dict, path: str | Path) -> Path:
    """Judged safety (harmful prompts) against pattern benign compliance, one panel per aligned
    model: its alignment-strength front (reference, merged scales, the model) as a line, TSDI
    (filled: log-probability bias, open: probability bias) and the baselines as points, with
    95% Wilson intervals on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["rows"]
    models = [r["name"] for r in rows if r.get("kind") == "plain" and r["name"] != "reference"]
    reference = next(r for r in rows if r["name"] == "reference")
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.8), squeeze=False)

    def errorbar(ax, r, **style):
        x, y = r["benign_compliance"], r["judged_safety"]
        ax.errorbar(
            x,
            y,
            xerr=[[x - r["benign_compliance_low"]], [r["benign_compliance_high"] - x]],
            yerr=[[y - r["judged_safety_low"]], [r["judged_safety_high"] - y]],
            capsize=2,
            elinewidth=0.8,
            **style,
        )

    for ax, model in zip(axes[0], models):
        own = [r for r in rows if r["name"] == model or r["name"].startswith(model + "@")]
        front = sorted([reference, *own], key=lambda r: r["benign_compliance"])
        ax.plot(
            [r["benign_compliance"] for r in front],
            [r["judged_safety"] for r in front],
            "-",
            color="0.4",
            label="front: aligning less",
        )
        for r in front:
            errorbar(ax, r, fmt="o", color="0.4", markersize=4)
            ax.annotate(
                "ref" if r is reference else r["name"].removeprefix(model) or "1",
                (r["benign_compliance"], r["judged_safety"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        labelled: set[str] = set()
        for r in rows:
            kind = r.get("kind")
            if kind not in _MARKERS or r["name"].split("+")[0] != model:
                continue
            if (r.get("benign_nll") or 0) > 3:  # degenerate answers (the table keeps the row)
                continue
            marker, label = _MARKERS[kind]
            hollow = kind == "tsdi" and "[prob]" in r["name"]
            label += " (probability bias)" if hollow else ""
            errorbar(
                ax,
                r,
                fmt=marker,
                color=f"C{list(_MARKERS).index(kind)}",
                markerfacecolor="none" if hollow else None,
                label=None if label in labelled else label,
            )
            labelled.add(label)
            if kind == "tsdi":
                ax.annotate(
                    r["name"].split("alpha=")[-1],
                    (r["benign_compliance"], r["judged_safety"]),
                    textcoords="offset points",
                    xytext=(4, -9),
                    fontsize=7,
                )
        ax.set_title(f"aligned model: {model}")
        ax.set_xlabel("benign prompts answered (pattern detector)")
        ax.set_ylabel("harmful prompts answered safely (judge)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    figure.suptitle(f"SmolLM2-135M, {record['configuration']} configuration, 95% Wilson intervals")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def _table(configs: Sequence[Config], records: Sequence[dict], nll: dict) -> list[dict]:
    by_name = {c.name: c for c in configs}
    rows = judged_rows(records, baselines={c.name: c.aligned for c in configs if c.aligned})
    index = {r["name"]: r for r in rows}
    benign_of = {
        name: {
            (r["set"], r["prompt"]): not r["refusal"]
            for r in records
            if r["config"] == name and r["kind"] == "benign"
        }
        for name in index
    }
    for row in rows:
        config = by_name[row["name"]]
        row["kind"], row["benign_nll"] = config.kind, nll.get(row["name"])
        if not config.aligned or config.kind in ("plain", "front"):
            continue
        a = config.aligned
        front = (
            [index["reference"]]
            + [index[c.name] for c in configs if c.kind == "front" and c.aligned == a]
            + [index[a]]
        )
        row["front_gap"], row["above_front_separated"] = front_gap(row, front)
        # The front point of equal safety: the nearest in judged safety; paired on benign answers.
        equal = min(front, key=lambda r: abs(r["judged_safety"] - row["judged_safety"]))
        keys = list(benign_of[equal["name"]])
        gained = sum(benign_of[row["name"]][k] and not benign_of[equal["name"]][k] for k in keys)
        lost = sum(benign_of[equal["name"]][k] and not benign_of[row["name"]][k] for k in keys)
        row["equal_safety_point"] = equal["name"]
        row["benign_vs_equal_safety"] = {
            "gained": gained,
            "lost": lost,
            "p": mcnemar_exact(gained, lost),
        }
    return rows


def _configuration(settings: StudySettings) -> str:
    """ "full", "reduced", or the settings that differ from the full run's (batch size aside: it
    changes the speed only)."""
    if settings.reduced:
        return "reduced"

    def plain(s: StudySettings) -> dict:  # tuples as lists, as a record read back from JSON has
        return json.loads(json.dumps(asdict(s)))

    full = plain(StudySettings(seed=settings.seed, batch_size=settings.batch_size))
    changed = [f"{k}={v}" for k, v in plain(settings).items() if full[k] != v]
    return "full" if not changed else "changed: " + ", ".join(changed)


def _markdown(record: dict) -> str:
    rows = record["rows"]
    lines = [
        f"# The faithful test ({record['configuration']} configuration)",
        "",
        format_judged(rows),
        "| configuration | above its front (judged) | intervals separate | front point of equal safety | benign gained / lost there (p) | benign NLL |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "front_gap" not in r:
            continue
        gap = "" if r["front_gap"] is None else f"{r['front_gap']:+.3f}"
        b = r["benign_vs_equal_safety"]
        lines.append(
            f"| {r['name']} | {gap} | {'yes' if r['above_front_separated'] else 'no'} | "
            f"{r['equal_safety_point']} | {b['gained']} / {b['lost']} ({b['p']:.2g}) | "
            f"{r['benign_nll']:.2f} |"
        )
    lines += ["", "Wall time (s): " + json.dumps(record["seconds"]), ""]
    return "\n".join(lines)


def _real_models():
    from tsdi_ext.models import SMOLLM2, load_model

    from .dpo import DPOSettings, dpo_align
    from .realign import RealignSettings, realign

    reference, tokenizer = load_model(SMOLLM2)
    loaders = {
        "sft": lambda: load_model(str(realign(SMOLLM2, RealignSettings())))[0],
        "dpo": lambda: load_model(str(dpo_align(SMOLLM2, DPOSettings())))[0],
    }
    return _Lazy({"reference": reference}, loaders), tokenizer
