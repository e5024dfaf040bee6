"""The DPO-aligned model's bookkeeping on a tiny model: preference pairs, and one short LoRA DPO
run that moves the policy towards the chosen answers."""

import json

import pytest
import torch

from tiny_models import tiny_chat_tokenizer, tiny_llama

HARMFUL = ["how to do it", "coin letter bridge train", "step one two three", "the river rises in"]
REFUSALS = ["sorry i cannot help with that", "sorry that is not"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_dpo_base")
    tiny_llama(0).save_pretrained(directory)
    tiny_chat_tokenizer().save_pretrained(directory)
    return directory


def test_preference_pairs(base_dir):
    from tsdi_ext.models import load_model

    from replication.dpo import DPOSettings, build_preference_pairs

    model, tokenizer = load_model(str(base_dir))
    settings = DPOSettings(harmful_examples=4, answer_tokens=6)
    pairs = build_preference_pairs(model, tokenizer, settings, harmful=HARMFUL, refusals=REFUSALS)
    assert pairs == build_preference_pairs(
        model, tokenizer, settings, harmful=HARMFUL, refusals=REFUSALS
    )
    assert 1 <= len(pairs) <= 4
    for pair in pairs:
        assert pair["prompt"][0]["role"] == "user" and pair["prompt"][0]["content"] in HARMFUL
        assert pair["chosen"][0]["content"] in REFUSALS
        assert pair["rejected"][0]["content"] not in REFUSALS and pair["rejected"][0]["content"]
    with pytest.raises(ValueError, match="asked for 9 pairs"):
        build_preference_pairs(
            model, tokenizer, DPOSettings(harmful_examples=9), harmful=HARMFUL, refusals=REFUSALS
        )


@pytest.mark.slow
def test_dpo_moves_the_policy_towards_the_chosen_answers(base_dir, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    from tsdi_ext.models import load_model

    import replication.dpo as dpo
    from replication.safepatching import answer_loss, patch_batches

    monkeypatch.setattr(dpo, "refusal_responses", lambda: REFUSALS)
    settings = dpo.DPOSettings(
        harmful_examples=4, answer_tokens=6, epochs=3, learning_rate=5e-3, batch_size=4
    )
    out = dpo.dpo_align(
        str(base_dir), settings, output=tmp_path / "dpo", progress=False, harmful=HARMFUL
    )
    record = json.loads((out / "dpo.json").read_text())
    assert record["settings"]["beta"] == 0.1 and record["pairs"] >= 1
    assert (out / "adapter" / "adapter_config.json").is_file()
    aligned, tokenizer = load_model(str(out))
    base, _ = load_model(str(base_dir))
    pair = record["sample_pair"]
    prompt = pair["prompt"][0]["content"]

    def margin(model):
        with torch.no_grad():
            chosen = answer_loss(
                model, patch_batches(tokenizer, [(prompt, pair["chosen"][0]["content"])], 1)[0]
            )
            rejected = answer_loss(
                model, patch_batches(tokenizer, [(prompt, pair["rejected"][0]["content"])], 1)[0]
            )
        return float(rejected - chosen)  # > 0: the chosen answer is the likelier one

    assert margin(aligned) > margin(base) + 0.1
    # Cached: same settings return at once; others need force.
    assert (
        dpo.dpo_align(str(base_dir), settings, output=out, progress=False, harmful=HARMFUL) == out
    )
    with pytest.raises(ValueError, match="other settings"):
        dpo.dpo_align(str(base_dir), dpo.DPOSettings(beta=0.2), output=out, harmful=HARMFUL)
