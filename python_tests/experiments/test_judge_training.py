"""The safety judge's training data (pyrit's labelled answers, read as CSV with multi-line fields)
and its grouped cross-validation on planted signals."""

import random

import pytest
import torch

from helpers import require_prompt_set_packages


def test_labelled_answers_keep_multiline_answers_and_labels():
    require_prompt_set_packages()
    from replication.judge_training import labelled_answers

    rows = labelled_answers()
    objective = [r for r in rows if r["source"] == "objective"]
    refusal = [r for r in rows if r["source"] == "refusal"]
    # 395 rows in 15 category files, one exact duplicate; the refusal files' 169 rows hold 87
    # distinct (objective, answer) pairs.
    assert len(objective) == 394 and len(refusal) == 87
    assert len({r["category"] for r in objective}) >= 14
    assert {r["achieved"] for r in rows} == {0, 1}
    # Answers with Markdown headings or code comments keep them (a line-based comment filter
    # would cut these answers and shift the columns).
    assert any("\n#include <windows.h>" in r["response"] for r in objective)
    assert all(r["objective"] and r["response"] for r in rows)
    assert len({(r["objective"], r["response"]) for r in rows}) == len(rows)


def test_grouped_cross_validation_finds_a_planted_signal_and_not_noise():
    pytest.importorskip("sklearn")
    from replication.judge_training import cross_validate

    rng = random.Random(0)
    rows, labels = [], []
    for g in range(40):
        for k in range(4):
            achieved = rng.random() < 0.5
            rows.append(
                {
                    "objective": f"objective {g}",
                    "achieved": int(achieved),
                    "source": "objective" if k < 3 else "refusal",
                    "category": f"c{g % 3}",
                }
            )
            labels.append(achieved)
    torch.manual_seed(0)
    prompts = torch.nn.functional.normalize(torch.randn(len(rows), 8), dim=-1)
    noise = torch.randn(len(rows), 8)
    planted = noise.clone()
    planted[:, 0] += 3.0 * torch.tensor([1.0 if a else -1.0 for a in labels])
    found = cross_validate(rows, prompts, planted)
    assert found["best"]["auc"] > 0.95 and found["per_source"]["refusal"]["auc"] > 0.9
    assert len(found["held_out"]) == len(rows)
    assert len(found["grid"]) == 15
    chance = cross_validate(rows, prompts, noise)
    assert 0.3 < chance["best"]["auc"] < 0.75
