"""Log-probabilities in the decoding loop and ``tsdi generate --logprobs``: each step's values are
what ``sample(..., return_logprobs=True)`` gives on the logits the loop sampled from (after its
logits hook), and a float64 log-softmax / the reference's sampling_probs computed independently on
those logits; greedy steps and the steps after a row stopped give 0, an invalid step NaN."""

import math

import pytest
import torch

import tsdi_ext
from tsdi_ext.generation import decode, generate, prepare_prompts

from tiny_models import tiny_llama

PROMPTS = ["the river rises in", "how to grow wheat", "sorry i cannot", "water"]
MASKED = 7  # the logits hook masks this token: the log-probabilities are those of the hooked logits


def recording_hook(captured, *, nan_row=None, nan_step=None):
    """A logits hook that masks token MASKED (and makes one row NaN at one step) and records the
    logits it hands to the fused step."""

    def hook(ids, logits):
        logits = logits.clone()
        logits[:, MASKED] = -math.inf
        if nan_step is not None and len(captured) == nan_step:
            logits[nan_row] = math.nan
        captured.append(logits.clone())
        return logits

    return hook


def row_seeds(seed):
    """The per-row seeds an int seed gives the loop (row b: seed + b)."""
    return torch.arange(len(PROMPTS), dtype=torch.int64) + seed


@pytest.fixture(scope="module")
def model():
    return tiny_llama(3)


def test_loop_logprobs_are_the_fused_steps(model, tokenizer):
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    bias = torch.randn(3, vocab, generator=g)
    temperature = torch.tensor([0.9, 0.0, 1.3, 0.7])  # row 1 greedy
    top_p = torch.tensor([0.8, 1.0, 0.6, 0.95])
    # The tiny model's distributions are flat: min_p binds on rows 0 and 3, top_k on row 2.
    top_k = torch.tensor([0, 3, 10, 0])
    min_p = torch.tensor([0.8, 0.0, 0.0, 0.85])
    filters = dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p)
    ids, mask = prepare_prompts(tokenizer, PROMPTS)
    settings = dict(bias=bias, alpha=0.6, seed=11, **filters)
    free = decode(model, ids, mask, max_new_tokens=6, logits_hook=recording_hook([]), **settings)
    # A stop token that row 0 draws within two steps and row 3 not before the step its logits
    # turn NaN (4): row 0 pads from step 2 at the latest, row 3 is invalid at step 4.
    stop = next(t for t in free.tokens[0, :2].tolist() if t not in free.tokens[3, :5].tolist())
    captured = []
    result = decode(
        model,
        ids,
        mask,
        max_new_tokens=6,
        eos_token_ids=[stop],
        logits_hook=recording_hook(captured, nan_row=3, nan_step=4),
        return_logprobs=True,
        **settings,
    )
    steps = result.tokens.shape[1]
    assert result.logprobs.shape == result.unfiltered_logprobs.shape == (4, steps)
    assert result.logprobs.dtype == result.unfiltered_logprobs.dtype == torch.float32
    assert len(captured) == steps
    lengths = result.lengths.tolist()
    assert lengths[0] <= 2 and lengths[3] == 5 and result.invalid.tolist() == [0, 0, 0, 1]
    for step, logits in enumerate(captured):
        positions = torch.full((4,), step, dtype=torch.int64)
        params = dict(bias=bias, positions=positions, alpha=0.6, **filters)
        want = tsdi_ext.sample(
            logits, seed=row_seeds(11), offset=step, return_logprobs=True, backend="torch", **params
        )
        probs = tsdi_ext.sampling_probs(logits, backend="torch", **params)
        d = (logits - 0.6 * bias[step] if step < 3 else logits).double()
        for row in range(4):
            got = float(result.logprobs[row, step]), float(result.unfiltered_logprobs[row, step])
            if step >= lengths[row]:  # the row had stopped: padding
                assert got == (0.0, 0.0) and int(result.tokens[row, step]) == 0
                continue
            token = int(result.tokens[row, step])
            assert token == int(want.tokens[row]) and token != MASKED
            if row == 3 and step == 4:  # the NaN logits: invalid
                assert math.isnan(got[0]) and math.isnan(got[1]) and not want.valid[row]
                continue
            for value, ref in zip(got, (want.logprob[row], want.unfiltered_logprob[row])):
                assert value == pytest.approx(float(ref), abs=1e-6, rel=1e-6)
            if row == 1:  # greedy
                assert got == (0.0, 0.0)
                continue
            final = math.log(float(probs[row, token]))
            unfiltered = float(torch.log_softmax(d[row] / float(temperature[row]), dim=0)[token])
            assert got[0] == pytest.approx(final, abs=1e-5, rel=1e-5)
            assert got[1] == pytest.approx(unfiltered, abs=1e-5, rel=1e-5)
            assert got[1] <= got[0] <= 0.0
    # the filters removed mass on a sampled row: the two log-probabilities differ there
    assert (result.logprobs[2, : lengths[2]] > result.unfiltered_logprobs[2, : lengths[2]]).any()


def test_generate_logprobs_off_by_default_and_aligned(model, tokenizer):
    plain = generate(model, tokenizer, PROMPTS, temperature=0.8, top_p=0.9, max_new_tokens=5)
    assert plain.logprobs is None and plain.unfiltered_logprobs is None
    out = generate(
        model,
        tokenizer,
        PROMPTS,
        temperature=0.8,
        top_p=0.9,
        max_new_tokens=5,
        return_logprobs=True,
    )
    assert torch.equal(out.tokens, plain.tokens) and out.texts == plain.texts
    assert out.logprobs.shape == out.tokens.shape == out.unfiltered_logprobs.shape
    assert bool((out.logprobs <= 0).all()) and bool((out.logprobs < 0).any())
    empty = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=0, return_logprobs=True)
    assert empty.logprobs.shape == (2, 0) == empty.unfiltered_logprobs.shape


def parse_logprob_blocks(text):
    """The (logprob, unfiltered, token id) rows of each --logprobs block, in order."""
    blocks, current = [], None
    for line in text.splitlines():
        fields = line.split()
        if fields[:3] == ["logprob", "unfiltered", "id"]:
            current = []
            blocks.append(current)
        elif current is not None and len(fields) >= 3 and fields[2] != "sum":
            current.append((float(fields[0]), float(fields[1]), int(fields[2])))
        elif current is not None and fields[2:3] == ["sum"]:
            assert float(fields[0]) == pytest.approx(sum(r[0] for r in current), abs=1e-3)
            current = None
    return blocks


# Each mode with one filter that binds on the tiny model's flat distributions.
@pytest.mark.parametrize(
    "stream,filters", [("--stream", dict(top_k=4)), ("--no-stream", dict(min_p=0.85))]
)
def test_cli_generate_prints_logprobs(tmp_path, capsys, model, tokenizer, stream, filters):
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    from tsdi_ext.cli import main

    prompts = PROMPTS[:2]
    argv = ["generate", "--model", str(model_dir), "--temperature", "0.8", "--top-p", "0.9"]
    for name, value in filters.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    argv += ["--max-new-tokens", "4", "--seed", "3"]
    argv += [stream, "--logprobs"]
    for prompt in prompts:
        argv += ["--prompt", prompt]
    assert main(argv) == 0
    blocks = parse_logprob_blocks(capsys.readouterr().out)
    assert len(blocks) == len(prompts)
    for i, (prompt, block) in enumerate(zip(prompts, blocks)):
        want = generate(
            model,
            tokenizer,
            [prompt],
            temperature=0.8,
            top_p=0.9,
            max_new_tokens=4,
            seed=[3 + i],
            return_logprobs=True,
            **filters,
        )
        n = int(want.lengths[0])
        assert [r[2] for r in block] == want.tokens[0, :n].tolist()
        for (lp, up, _), wlp, wup in zip(
            block, want.logprobs[0, :n].tolist(), want.unfiltered_logprobs[0, :n].tolist()
        ):
            assert lp == pytest.approx(wlp, abs=1e-4) and up == pytest.approx(wup, abs=1e-4)
    assert main([a for a in argv if a != "--logprobs"]) == 0
    assert parse_logprob_blocks(capsys.readouterr().out) == []
