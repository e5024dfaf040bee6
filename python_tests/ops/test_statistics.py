"""Statistical tests of the draws: the tokens that ``tsdi_ext.sample`` returns follow the
distribution that ``tsdi_ext.sampling_probs`` reports (chi-square goodness of fit), never fall
outside the nucleus, and greedy rows return the first argmax.

Every draw is a pure function of (seed, offset), so with fixed seeds these tests are deterministic:
the p-value threshold below only says how unlikely a false failure would be for a fresh seed.
"""

import pytest
import torch

import tsdi_ext
from tsdi_ext.ops import reference

from helpers import MIN_P_VALUE, chi_square_p_value, make_logits

SEED = 20240607


def draw_tokens(logits_row, n, *, chunk, seed=SEED, **params):
    """n draws from the single row ``logits_row`` ([1, V]): batches of ``chunk`` rows that share
    the logits (``expand``, no copy) and differ only in their per-row offset (0, 1, ..., n - 1).
    Per-row parameters given as [1] tensors are repeated the same way."""
    device = logits_row.device
    vocab = logits_row.shape[1]
    tokens = []
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        offsets = torch.arange(start, start + rows, dtype=torch.int64, device=device)
        row_params = {
            k: (v.expand(rows).contiguous() if isinstance(v, torch.Tensor) and k != "bias" else v)
            for k, v in params.items()
        }
        got, valid = tsdi_ext.sample(
            logits_row.expand(rows, vocab), seed=seed, offset=offsets, **row_params
        )
        assert got.dtype == torch.int64 and valid.dtype == torch.bool and got.shape == (rows,)
        assert bool(valid.all()), "a valid row was reported invalid"
        tokens.append(got)
    return torch.cat(tokens).cpu()


def nontrivial_case(vocab, bias_kind, device):
    """[1, V] logits and the bias keyword arguments: randn * 2 plus a bias, so that the debiasing
    changes the distribution (a bug that ignored the bias would fail the fit)."""
    g = torch.Generator().manual_seed(vocab)
    logits = (torch.randn(1, vocab, generator=g) * 2).to(device)
    if bias_kind == "vector":
        bias = torch.randn(vocab, generator=g) * 2
        extra = dict(bias=bias.to(device), alpha=0.75)
    else:
        # [L, V] table; the row's position selects table row 2.
        bias = torch.randn(3, vocab, generator=g) * 2
        extra = dict(
            bias=bias.to(device),
            positions=torch.tensor([2], dtype=torch.int64, device=device),
            alpha=torch.tensor([0.75], device=device),
        )
    return logits, extra


@pytest.mark.parametrize("bias_kind", ["vector", "table"])
@pytest.mark.parametrize("vocab", [17, 1019])
def test_chi_square_fused(device, vocab, bias_kind):
    n, chunk = 200_000, 20_000
    logits, extra = nontrivial_case(vocab, bias_kind, device)
    params = dict(temperature=0.8, top_p=0.8)
    probs = tsdi_ext.sampling_probs(logits, **extra, **params)[0]
    kept = int((probs > 0).sum())
    assert 2 <= kept < vocab, "the case must have a non-trivial nucleus"

    tokens = draw_tokens(logits, n, chunk=chunk, **extra, **params)
    p_value = chi_square_p_value(tokens, probs)
    assert p_value > MIN_P_VALUE, f"chi-square p-value {p_value:.3g} (V={vocab}, kept={kept})"

    # The test has power: the same draws are rejected against a different distribution on the
    # same support (temperature 1 instead of 0.8, restricted to the same nucleus).
    other = tsdi_ext.sampling_probs(logits, **extra, temperature=1.0)[0].cpu()
    other = torch.where(probs.cpu() > 0, other, torch.zeros_like(other))
    assert chi_square_p_value(tokens, other) < MIN_P_VALUE


@pytest.mark.parametrize("vocab", [17, 1019])
def test_chi_square_reference_backend(vocab):
    """The pure-PyTorch reference passes the same test (smaller sample: it is slow)."""
    n = 20_000
    logits, extra = nontrivial_case(vocab, "vector", "cpu")
    params = dict(temperature=0.8, top_p=0.8, backend="torch")
    probs = tsdi_ext.sampling_probs(logits, **extra, **params)[0]
    assert 2 <= int((probs > 0).sum()) < vocab
    tokens = draw_tokens(logits, n, chunk=5_000, **extra, **params)
    p_value = chi_square_p_value(tokens, probs)
    assert p_value > MIN_P_VALUE, f"chi-square p-value {p_value:.3g} (V={vocab})"


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.95])
@pytest.mark.parametrize("kind", ["normal", "peaked", "ties", "masked"])
def test_draws_stay_in_nucleus(device, kind, top_p):
    rows, vocab, draws_per_row = 16, 1019, 2_000
    logits = make_logits(rows, vocab, kind=kind, device=device, seed=31)
    # Integer bias times alpha = 0.5: d stays on a half-integer grid, so "ties" keeps its ties.
    bias = torch.randint(0, 3, (vocab,), generator=torch.Generator().manual_seed(7)).float()
    bias = bias.to(device)
    params = dict(bias=bias, alpha=0.5, temperature=0.7, top_p=top_p)
    probs = tsdi_ext.sampling_probs(logits, **params).cpu()
    for row in range(rows):
        tokens = draw_tokens(
            logits[row : row + 1], draws_per_row, chunk=draws_per_row, seed=SEED + row, **params
        )
        assert ((tokens >= 0) & (tokens < vocab)).all()
        outside = tokens[probs[row, tokens] <= 0]
        assert outside.numel() == 0, (
            f"row {row}: tokens {outside.unique().tolist()} outside nucleus"
        )
        kept = probs[row] > 0
        if kind == "ties" and float(probs[row][kept].min()) * draws_per_row >= 20:
            # Ties at the threshold are kept, and the draw reaches all of them (each kept token is
            # expected at least 20 times: a miss has probability below e^-20).
            assert set(tokens.unique().tolist()) == set(kept.nonzero().flatten().tolist())


def test_draws_stay_in_nucleus_per_row_batch(device):
    """A batch of different rows with per-row parameters: each row's token is in its own nucleus."""
    rows, vocab = 4_096, 257
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(rows, vocab, generator=g) * 3).to(device)
    params = dict(
        temperature=(torch.rand(rows, generator=g) * 2 + 0.05).to(device),
        top_p=torch.rand(rows, generator=g).to(device),
    )
    probs = tsdi_ext.sampling_probs(logits, **params)
    for seed in range(5):
        tokens, valid = tsdi_ext.sample(
            logits, seed=seed, offset=torch.arange(rows, device=device), **params
        )
        assert bool(valid.all())
        assert bool((probs.gather(1, tokens[:, None]) > 0).all())


def first_argmax(d):
    vocab = d.shape[1]
    index = torch.arange(vocab, device=d.device).expand_as(d)
    is_max = d == d.max(dim=1, keepdim=True).values
    return torch.where(is_max, index, vocab).min(dim=1).values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["ties", "normal", "masked"])
def test_greedy_returns_first_argmax(device, kind, dtype):
    rows, vocab = 64, 1019
    logits = make_logits(rows, vocab, kind=kind, dtype=dtype, device=device, seed=17)
    if kind == "ties":
        # Integers in [0, 4): the maximum is tied many times; make the first copy land anywhere.
        logits[:, :5] = 0
        bias_args = {}
    else:
        # A bias whose values are integers keeps exact ties in d; the maximum is planted twice.
        logits[:, 100] = 0
        logits[:, 700] = 0
        bias = torch.zeros(vocab)
        bias[100] = -50.0
        bias[700] = -50.0
        bias_args = dict(bias=bias.to(device), alpha=1.0)
    d, _ = reference.debiased_logits(logits, bias_args.get("bias"), None, 1.0)
    want = first_argmax(d)
    if kind != "ties":
        assert bool((want == 100).all())
    else:
        assert int((d == d.max(dim=1, keepdim=True).values).sum(dim=1).min()) > 1
    for seed in (0, 1, 2**63 + 5):
        tokens, valid = tsdi_ext.sample(
            logits,
            temperature=0.0,
            top_p=0.3,
            seed=seed,
            offset=torch.arange(rows, device=device),
            **bias_args,
        )
        assert bool(valid.all())
        assert torch.equal(tokens, want)
    probs = tsdi_ext.sampling_probs(logits, temperature=0.0, **bias_args)
    assert torch.equal(probs, torch.nn.functional.one_hot(want, vocab).float())


def test_greedy_per_row_temperature(device):
    """Per-row temperature 0 makes only those rows greedy."""
    rows, vocab = 32, 300
    logits = make_logits(rows, vocab, kind="ties", device=device, seed=23)
    temperature = torch.where(torch.arange(rows) % 2 == 0, 0.0, 1.0).to(device)
    want = first_argmax(logits.float())
    for offset in range(20):
        tokens, valid = tsdi_ext.sample(logits, temperature=temperature, seed=9, offset=offset)
        assert bool(valid.all())
        assert torch.equal(tokens[::2], want[::2])
