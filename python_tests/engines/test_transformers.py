"""transformers: per-row alpha in TSDILogitsProcessor, and the Hub's custom_generate layout (hub/)
loaded from a local directory, on SmolLM2-135M-Instruct."""

from pathlib import Path

import pytest
import torch
from engine_helpers import PROMPTS, random_bias, require_engine, save_table

require_engine("transformers", "transformers")

import tsdi_ext
from tsdi_ext.generation import prepare_prompts
from tsdi_ext.hf import TSDILogitsProcessor

HUB_DIR = Path(__file__).resolve().parents[2] / "hub"
STEPS = 10


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return tsdi_ext.load_model(smollm2_dir)


@pytest.fixture(scope="module")
def bias_file(tmp_path_factory, smollm2):
    model, _ = smollm2
    bias = random_bias(3, model.config.vocab_size, seed=3)
    return save_table(tmp_path_factory.mktemp("bias") / "bias.safetensors", bias)


def greedy(model, ids, mask, processor):
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=STEPS,
        do_sample=False,
        logits_processor=[processor],
        pad_token_id=model.generation_config.eos_token_id,
    )
    return out[:, ids.shape[1] :]


def test_per_row_alpha_debiases_each_row_by_its_own_strength(smollm2, bias_file):
    model, tokenizer = smollm2
    table = tsdi_ext.BiasTable.load(bias_file)
    ids, mask = prepare_prompts(tokenizer, PROMPTS[:3])
    alphas = torch.tensor([0.0, 0.5, 1.5])
    scores = torch.randn(3, table.vocab_size)
    processed = TSDILogitsProcessor(table, ids.shape[1], alphas)(ids, scores.clone())
    for row, alpha in enumerate(alphas.tolist()):
        alone = TSDILogitsProcessor(table, ids.shape[1], alpha)(
            ids[row : row + 1], scores[row : row + 1]
        )
        assert torch.equal(processed[row : row + 1], alone), row
    assert torch.equal(processed[0], scores[0])  # alpha 0: untouched

    mixed = greedy(model, ids, mask, TSDILogitsProcessor(table, ids.shape[1], alphas))
    for row, alpha in enumerate(alphas.tolist()):
        uniform = greedy(model, ids, mask, TSDILogitsProcessor(table, ids.shape[1], alpha))
        assert torch.equal(mixed[row], uniform[row]), row
    assert not torch.equal(mixed[0], mixed[2]) or not torch.equal(mixed[0], mixed[1])


def test_per_row_alpha_errors(smollm2, bias_file):
    table = tsdi_ext.BiasTable.load(bias_file)
    with pytest.raises(ValueError, match=r"a float or a \[B\] tensor, got shape \(2, 1\)"):
        TSDILogitsProcessor(table, 4, torch.ones(2, 1))
    with pytest.raises(TypeError, match="a float or a \\[B\\] tensor, got str"):
        TSDILogitsProcessor(table, 4, "0.5")
    processor = TSDILogitsProcessor(table, 4, torch.ones(2))
    with pytest.raises(ValueError, match="alpha has 2 rows but the batch has 3"):
        processor(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, table.vocab_size))


def test_hub_custom_generate_directory_runs_tsdi(smollm2, bias_file):
    model, tokenizer = smollm2
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=STEPS,
        do_sample=False,
        custom_generate=str(HUB_DIR),
        trust_remote_code=True,
        tsdi_bias=bias_file,
        tsdi_alpha=0.5,
    )
    expected = tsdi_ext.generate(
        model,
        tokenizer,
        PROMPTS,
        bias=tsdi_ext.BiasTable.load(bias_file),
        alpha=0.5,
        max_new_tokens=STEPS,
    )
    new = out[:, ids.shape[1] :]
    for row in range(len(PROMPTS)):
        n = int(expected.lengths[row])
        assert new[row, :n].tolist() == expected.tokens[row, :n].tolist(), row
    plain = tsdi_ext.generate(model, tokenizer, PROMPTS, max_new_tokens=STEPS)
    assert not torch.equal(plain.tokens, expected.tokens)  # the bias changes the answers


def test_hub_directory_needs_trust_remote_code(smollm2, bias_file):
    model, tokenizer = smollm2
    ids, mask = prepare_prompts(tokenizer, PROMPTS[:1])
    with pytest.raises(ValueError, match="trust_remote_code"):
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=2,
            custom_generate=str(HUB_DIR),
            tsdi_bias=bias_file,
        )
