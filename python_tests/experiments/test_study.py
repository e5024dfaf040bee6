"""The whole study on tiny models: every stage runs, every configuration is answered and judged,
the table has its front and paired columns, and a second run reuses every cached stage."""

import importlib.util
import json

import pytest

from tsdi_ext.eval import PromptSet

from sweep_data import BENIGN, HARMFUL
from tiny_models import tiny_llama


def test_front_gap():
    from replication.study import front_gap

    def point(x, y, high=None):
        return {
            "benign_compliance": x,
            "judged_safety": y,
            "judged_safety_low": y - 0.05,
            "judged_safety_high": high if high is not None else y + 0.05,
        }

    front = [point(1.0, 0.5), point(0.5, 0.9)]
    gap, separated = front_gap(point(0.75, 0.8), front)
    assert gap == pytest.approx(0.1) and not separated
    gap, separated = front_gap(point(0.75, 0.95), front)
    assert gap == pytest.approx(0.25) and separated
    assert front_gap(point(0.2, 0.9), front) == (None, False)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None, reason="needs the MiniLM package"
)
def test_study_on_tiny_models(tmp_path, tokenizer, monkeypatch):
    from replication.study import StudySettings, run_study, study_configs

    def models():
        return {"reference": tiny_llama(0), "sft": tiny_llama(1), "dpo": tiny_llama(2)}, tokenizer

    settings = StudySettings(
        scales=(0.5,),
        alphas_logprob=(0.5,),
        alphas_prob=(2.0,),
        bias_prompts=8,
        patch_examples=4,
        patch_steps=2,
        max_new_tokens=4,
        batch_size=4,
        reduced=True,
    )
    sets = [PromptSet("harmbench", "harmful", HARMFUL), PromptSet("ordinary", "benign", BENIGN)]
    rows = run_study(
        tmp_path / "out",
        settings,
        load_models=models,
        sets=sets,
        patch_prompts=HARMFUL,
        progress=False,
    )
    names = [c.name for c in study_configs(settings)]
    assert [r["name"] for r in rows] == names and len(names) == 1 + 2 * 4 + 4
    record = json.loads((tmp_path / "out" / "study.json").read_text())
    assert record["configuration"] == "reduced"
    by = {r["name"]: r for r in rows}
    assert by["sft+TSDI[logprob] alpha=0.5"]["vs"] == "sft"
    assert by["dpo+TSDI[prob] alpha=2"]["vs"] == "dpo"
    assert "front_gap" in by["sft+SafePatching"] and "equal_safety_point" in by["sft+SafePatching"]
    assert all(r["n_harmful"] == len(HARMFUL) and r["n_benign"] == len(BENIGN) for r in rows)
    assert set(record["premise"]["models"]) == {"reference", "sft", "dpo"}
    assert "the faithful test" in (tmp_path / "out" / "study.md").read_text().lower()
    assert (tmp_path / "out" / "study.png").read_bytes()[:4] == b"\x89PNG"

    # Second run: every stage cached (the judge is not asked again).
    class NoJudge:
        def probabilities(self, prompts, responses):
            raise AssertionError("a cached stage ran again")

    again = run_study(
        tmp_path / "out",
        settings,
        load_models=models,
        sets=sets,
        patch_prompts=HARMFUL,
        judge=NoJudge(),
        progress=False,
    )
    assert again == rows


def test_configuration_label_names_what_differs_from_the_full_run():
    from replication.study import StudySettings, _configuration

    assert _configuration(StudySettings()) == "full"
    assert _configuration(StudySettings(batch_size=64, seed=3)) == "full"
    assert _configuration(StudySettings(reduced=True)) == "reduced"
    # A record's settings come back from JSON with lists for tuples.
    assert _configuration(StudySettings(scales=[0.25, 0.5, 0.75])) == "full"
    assert (
        _configuration(StudySettings(harmful_per_set=200, max_new_tokens=40))
        == "changed: harmful_per_set=200, max_new_tokens=40"
    )
