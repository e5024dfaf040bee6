"""TSDI end to end on tiny random models: estimation maths, bias sign, the bias file, the decoding
loop, the Hugging Face integration, data-parallel estimation and the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessorList, TextIteratorStreamer

import tsdi_ext
from tsdi_ext.bias import (
    BiasFileError,
    BiasTable,
    estimate_bias,
    random_prompt_sequences,
    tokenizer_hash,
)
from tsdi_ext.generation import decode, generate, prepare_prompts
from tsdi_ext.hf import TSDILogitsProcessor, tsdi_generate

from tiny_models import prefer_token, tiny_gpt2, tiny_llama, tiny_tokenizer

TESTS = Path(__file__).resolve().parent
PROMPTS = ["the river rises in", "how to grow wheat", "sorry i cannot", "water"]


@pytest.fixture(scope="module")
def models(tokenizer):
    aligned, reference = tiny_llama(0), tiny_llama(1)
    prefer_token(aligned, tokenizer.convert_tokens_to_ids("sorry"), 3.0)
    return aligned, reference


def direct_bias(aligned, reference, tokenizer, *, score="logprob", **settings):
    """The estimator's definition computed the slow way: one sequence at a time."""
    vocab = aligned.config.vocab_size
    sequences, start = random_prompt_sequences(tokenizer, vocab, **settings)
    length = settings["length"]
    rows = []
    with torch.no_grad():
        for seq in sequences:

            def scores(model):
                logits = (
                    model(input_ids=seq[None]).logits[0, start - 1 : start - 1 + length].double()
                )
                return (
                    torch.log_softmax(logits, -1)
                    if score == "logprob"
                    else torch.softmax(logits, -1)
                )

            a = scores(aligned)
            rows.append(
                a - (scores(reference) if reference is not None else a.mean(-1, keepdim=True))
            )
    bias = torch.stack(rows).mean(0)
    return bias.clamp(min=0) if reference is None else bias


SETTINGS = dict(
    num_prompts=11, prompt_length=6, length=4, pool="corpus", chat_template=True, seed=3
)


@pytest.mark.parametrize("score", ["logprob", "prob"])
@pytest.mark.parametrize("with_reference", [True, False])
def test_estimate_matches_direct_computation(models, tokenizer, score, with_reference):
    aligned, reference = models
    reference = reference if with_reference else None
    table = estimate_bias(
        aligned, reference, tokenizer, batch_size=4, score=score, progress=False, **SETTINGS
    )
    assert table.bias.shape == (SETTINGS["length"], aligned.config.vocab_size)
    assert table.bias.dtype == torch.float32
    want = direct_bias(aligned, reference, tokenizer, score=score, **SETTINGS).float()
    torch.testing.assert_close(table.bias, want, atol=2e-5, rtol=1e-4)
    assert table.metadata["variant"] == (
        "aligned-minus-reference" if with_reference else "reference-free"
    )
    assert table.metadata["settings"]["num_prompts"] == 11


@pytest.mark.parametrize("pool", ["vocab", "corpus"])
def test_estimate_is_seeded_and_batch_size_free(models, tokenizer, pool):
    aligned, reference = models
    kwargs = dict(num_prompts=9, length=3, pool=pool, progress=False)
    a = estimate_bias(aligned, reference, tokenizer, batch_size=2, seed=1, **kwargs)
    b = estimate_bias(aligned, reference, tokenizer, batch_size=9, seed=1, **kwargs)
    c = estimate_bias(aligned, reference, tokenizer, batch_size=9, seed=2, **kwargs)
    torch.testing.assert_close(a.bias, b.bias, atol=1e-6, rtol=0)
    assert not torch.allclose(a.bias, c.bias)


def test_bias_sign_pushes_down_the_preferred_token(models, tokenizer):
    aligned, reference = models
    sorry = tokenizer.convert_tokens_to_ids("sorry")
    table = estimate_bias(aligned, reference, tokenizer, num_prompts=32, length=4, progress=False)
    assert (table.bias.argmax(dim=1) == sorry).all()
    assert (table.bias[:, sorry] > 2.5).all()  # boost 3.0 minus the log-normaliser shift
    # Debiasing removes the preference: "sorry" is no longer generated at the first positions.
    plain = generate(aligned, tokenizer, PROMPTS, max_new_tokens=4)
    debiased = generate(aligned, tokenizer, PROMPTS, bias=table, alpha=1.0, max_new_tokens=4)
    assert (plain.tokens == sorry).float().mean() > 0.5
    assert (debiased.tokens == sorry).float().mean() < (plain.tokens == sorry).float().mean()


def test_bias_file_round_trip_and_errors(tmp_path, models, tokenizer):
    aligned, reference = models
    table = estimate_bias(aligned, reference, tokenizer, num_prompts=4, length=2, progress=False)
    path = tmp_path / "bias.safetensors"
    table.save(path)
    loaded = BiasTable.load(path, tokenizer=tokenizer, vocab_size=aligned.config.vocab_size)
    assert torch.equal(loaded.bias, table.bias)
    assert loaded.metadata["tokenizer_hash"] == tokenizer_hash(tokenizer)
    assert loaded.metadata["settings"]["length"] == 2
    assert loaded.metadata["tsdi_ext_version"] == tsdi_ext.__version__

    with pytest.raises(BiasFileError, match="vocabulary size 56 but the model has 57"):
        BiasTable.load(path, vocab_size=57)
    other = tiny_tokenizer()
    other.add_tokens(["zebra"])
    with pytest.raises(BiasFileError, match="different tokenizer"):
        BiasTable.load(path, tokenizer=other)
    with pytest.raises(BiasFileError, match="does not exist"):
        BiasTable.load(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BiasFileError, match="not a readable bias file"):
        BiasTable.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(300))
    with pytest.raises(BiasFileError, match="not a readable bias file"):
        BiasTable.load(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"bias": torch.zeros(2, 3)}, str(foreign))
    with pytest.raises(BiasFileError, match="not a tsdi_ext bias file"):
        BiasTable.load(foreign)
    # generate() refuses a table estimated with another tokenizer.
    with pytest.raises(BiasFileError, match="different tokenizer"):
        generate(aligned, other, PROMPTS[:1], bias=loaded, max_new_tokens=1)


def manual_decode(model, tokenizer, prompts, bias, *, alpha, temperature, top_p, steps, seed):
    """Step-by-step reference: full forward pass every step (no cache), one sample() per row."""
    ids, mask = prepare_prompts(tokenizer, prompts)
    out = []
    for row in range(len(prompts)):
        seq = ids[row][mask[row].bool()][None]
        tokens = []
        for step in range(steps):
            logits = model(input_ids=seq).logits[:, -1].float()
            token, _ = tsdi_ext.sample(
                logits,
                bias=bias,
                positions=torch.tensor([step]),
                alpha=alpha,
                temperature=temperature,
                top_p=top_p,
                seed=seed + row,
                offset=step,
            )
            tokens.append(int(token))
            if int(token) == tokenizer.eos_token_id:
                break
            seq = torch.cat([seq, token[:, None]], dim=1)
        out.append(tokens)
    return out


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (0.9, 0.8)])
def test_generate_equals_step_by_step_decoding(tokenizer, make_model, temperature, top_p):
    model = make_model(0)
    bias = torch.randn(3, model.config.vocab_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = manual_decode(
            model,
            tokenizer,
            PROMPTS,
            bias,
            alpha=0.8,
            temperature=temperature,
            top_p=top_p,
            steps=6,
            seed=5,
        )
        got = generate(
            model,
            tokenizer,
            PROMPTS,
            bias=bias,
            alpha=0.8,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=6,
            seed=5,
        )
    for row, tokens in enumerate(want):
        assert got.tokens[row, : len(tokens)].tolist() == tokens
        assert got.lengths[row] == len(tokens)


def test_rows_stop_independently_and_stream(tokenizer):
    model = tiny_llama(2)
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    free = decode(model, ids, mask, max_new_tokens=6)
    stop_token = int(free.tokens[0, 2])  # row 0 ends at its third token
    streamed = []
    result = decode(
        model,
        ids,
        mask,
        max_new_tokens=6,
        eos_token_ids=[stop_token],
        pad_token_id=0,
        on_tokens=streamed.append,
    )
    assert result.lengths[0] <= 3 and (result.tokens[0, result.lengths[0] :] == 0).all()
    for row in range(len(PROMPTS)):
        n = int(result.lengths[row])
        assert result.tokens[row, :n].tolist() == free.tokens[row, :n].tolist()
    assert torch.equal(torch.stack(streamed, dim=1), result.tokens)


def test_logits_processor_matches_fused_path(models, tokenizer):
    aligned, reference = models
    table = estimate_bias(aligned, reference, tokenizer, num_prompts=16, length=4, progress=False)
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    processor = TSDILogitsProcessor(table, prompt_length=ids.shape[1], alpha=1.0)
    hf = aligned.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=6,
        logits_processor=LogitsProcessorList([processor]),
        pad_token_id=0,
        eos_token_id=2,
    )
    ours = decode(aligned, ids, mask, bias=table, alpha=1.0, max_new_tokens=6, eos_token_ids=[2])
    assert torch.equal(hf[:, ids.shape[1] :], ours.tokens[:, : hf.shape[1] - ids.shape[1]])


def test_custom_generate_filters_the_debiased_logits(models, tokenizer):
    """top_k / min_p from the generation config go to the fused step, after the bias: with
    top_k = 1, sampling is greedy decoding of the debiased logits. Left to transformers' warper,
    top_k = 1 would keep the undebiased argmax, which a strong bias on it changes."""
    aligned, _ = models
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    plain = decode(aligned, ids, mask, max_new_tokens=1, eos_token_ids=[2])
    bias = torch.zeros(1, aligned.config.vocab_size)
    bias[0, plain.tokens[:, 0]] = 50.0  # push every prompt's plain first token far down
    common = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0)
    common.update(eos_token_id=2, custom_generate=tsdi_generate, tsdi_bias=bias, tsdi_alpha=1.0)
    greedy = decode(aligned, ids, mask, bias=bias, alpha=1.0, max_new_tokens=4, eos_token_ids=[2])
    assert not (greedy.tokens[:, 0] == plain.tokens[:, 0]).any()
    for filters in (dict(top_k=1), dict(top_k=0, min_p=1.0)):
        out = aligned.generate(do_sample=True, temperature=1.5, top_p=1.0, **filters, **common)
        assert torch.equal(out[:, ids.shape[1] :], greedy.tokens), filters
    out = aligned.generate(do_sample=True, temperature=0.9, top_k=5, min_p=0.1, **common)
    ours = decode(
        aligned,
        ids,
        mask,
        bias=bias,
        alpha=1.0,
        temperature=0.9,
        top_k=5,
        min_p=0.1,
        max_new_tokens=4,
        eos_token_ids=[2],
    )
    assert torch.equal(out[:, ids.shape[1] :], ours.tokens)


def test_custom_generate_runs_fused_step_with_streamer(models, tokenizer):
    aligned, reference = models
    table = estimate_bias(aligned, reference, tokenizer, num_prompts=16, length=4, progress=False)
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    out = aligned.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        temperature=0.8,
        top_p=0.9,
        top_k=0,
        max_new_tokens=5,
        pad_token_id=0,
        eos_token_id=2,
        custom_generate=tsdi_generate,
        tsdi_bias=table,
        tsdi_alpha=1.0,
        tsdi_seed=7,
    )
    ours = decode(
        aligned,
        ids,
        mask,
        bias=table,
        alpha=1.0,
        temperature=0.8,
        top_p=0.9,
        max_new_tokens=5,
        seed=7,
        eos_token_ids=[2],
    )
    assert torch.equal(out[:, ids.shape[1] :], ours.tokens)
    # transformers' streamers take one sequence at a time.
    one_ids, one_mask = prepare_prompts(tokenizer, PROMPTS[:1])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = aligned.generate(
        input_ids=one_ids,
        attention_mask=one_mask,
        max_new_tokens=5,
        pad_token_id=0,
        eos_token_id=2,
        custom_generate=tsdi_generate,
        tsdi_bias=table,
        tsdi_streamer=streamer,
    )
    streamed = "".join(streamer).strip()
    assert (
        streamed == tokenizer.decode(out[0, one_ids.shape[1] :], skip_special_tokens=True).strip()
    )
    # Stopping criteria are honoured: max_length cuts the loop.
    short = aligned.generate(
        input_ids=ids,
        attention_mask=mask,
        max_length=ids.shape[1] + 2,
        pad_token_id=0,
        eos_token_id=2,
        custom_generate=tsdi_generate,
        tsdi_bias=table,
    )
    assert short.shape[1] == ids.shape[1] + 2


def test_two_process_estimation_equals_one_process(tmp_path, tokenizer):
    out = tmp_path / "bias2.safetensors"
    # cwd elsewhere and -P: the workers import the installed tsdi_ext, not the source tree.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            str(TESTS / "distributed_estimate.py"),
            str(out),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    two = BiasTable.load(out, tokenizer=tokenizer)
    aligned, reference = tiny_llama(0), tiny_llama(1)
    prefer_token(aligned, tokenizer.convert_tokens_to_ids("sorry"), 2.0)
    one = estimate_bias(
        aligned, reference, tokenizer, num_prompts=23, length=5, batch_size=4, progress=False
    )
    assert two.metadata["world_size"] == 2
    torch.testing.assert_close(two.bias, one.bias, atol=1e-6, rtol=0)


def test_cli_estimate_inspect_generate(tmp_path, capsys):
    tokenizer = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(0).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    ref_dir = tmp_path / "tiny_ref"
    tiny_llama(1).save_pretrained(ref_dir)
    tokenizer.save_pretrained(ref_dir)
    from tsdi_ext.cli import main

    bias = tmp_path / "b.safetensors"
    assert (
        main(
            [
                "estimate",
                "--aligned",
                str(model_dir),
                "--reference",
                str(ref_dir),
                "--out",
                str(bias),
                "--num-prompts",
                "8",
                "--length",
                "3",
            ]
        )
        == 0
    )
    table = BiasTable.load(bias, tokenizer=tokenizer)
    assert table.bias.shape == (3, 56)
    assert (
        main(["inspect", str(bias), "--model", str(model_dir), "--positions", "2", "--top", "3"])
        == 0
    )
    shown = capsys.readouterr().out
    assert "position 0: pushed down:" in shown and "position 1:" in shown
    assert (
        main(
            [
                "generate",
                "--model",
                str(model_dir),
                "--bias",
                str(bias),
                "--prompt",
                "the river",
                "--compare",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    shown = capsys.readouterr().out
    assert "[plain]" in shown and "[TSDI alpha=1.0]" in shown
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(model_dir)])  # no prompt
