"""The fused kernels against the pure-PyTorch reference: same nucleus, probabilities within float32
tolerance, same tokens for the same (seed, offset) but for boundary rounding."""

import math

import pytest
import torch

import tsdi_ext
from tsdi_ext.ops import reference

from helpers import make_logits

# Reference probabilities below this are float32 subnormals: the fused kernels flush exp() results
# under e^-86 to zero, so such tokens are excluded from the kept-set comparison (they carry no mass).
NEGLIGIBLE = 1e-30
# Boundary rounding: the two sides compute the same masses in a different order, so when the
# cumulative mass at the nucleus boundary lies within ~1e-9 of top_p they can disagree about the
# last token. Allowed only for the boundary token(s) and in at most this fraction of rows.
MAX_BOUNDARY_ROWS = 0.02


def assert_same_nucleus(got, want):
    differs = ((got > 0) != (want > 0)) & ~((want < NEGLIGIBLE) & (got < NEGLIGIBLE))
    rows = differs.any(dim=1).nonzero().flatten().tolist()
    assert len(rows) <= max(1, MAX_BOUNDARY_ROWS * got.shape[0]), f"kept sets differ in rows {rows}"
    for row in rows:
        for side in (got[row], want[row]):
            # Every token that only one side keeps must be that side's smallest kept token.
            extra = side[differs[row] & (side > 0)]
            if extra.numel():
                smallest = side[side > 0].min()
                assert (extra <= smallest * (1 + 1e-4)).all(), (
                    f"row {row}: not a boundary difference"
                )
    return differs


def _param(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def check_against_reference(logits, *, seeds=range(4), token_mismatch_budget=0.002, **params):
    device = logits.device
    params = {k: _param(v, device) for k, v in params.items()}
    got = tsdi_ext.sampling_probs(logits, **params)
    want = reference.sampling_probs(logits, **params)
    assert got.shape == want.shape and got.dtype == torch.float32
    differs = assert_same_nucleus(got, want)
    torch.testing.assert_close(got[~differs], want[~differs], atol=2e-6, rtol=2e-4)

    batch = logits.shape[0]
    mismatches, total = 0, 0
    for seed in seeds:
        offsets = torch.arange(batch, device=device) * 7919 + seed
        tokens, valid = tsdi_ext.sample(logits, seed=seed, offset=offsets, **params)
        ref_tokens, ref_valid = reference.sample(logits, seed=seed, offset=offsets, **params)
        assert tokens.dtype == torch.int64 and valid.dtype == torch.bool
        assert torch.equal(valid, ref_valid)
        assert ((tokens >= 0) & (tokens < logits.shape[1])).all()
        mismatches += int((tokens != ref_tokens).sum())
        total += batch
    assert mismatches <= token_mismatch_budget * total, f"{mismatches} of {total} tokens differ"
    return got


SHAPES = [(b, v) for v in (1, 17, 1019, 32000, 128256, 262144) for b in (0, 1, 7, 64)]


@pytest.mark.parametrize("batch,vocab", SHAPES, ids=[f"B{b}-V{v}" for b, v in SHAPES])
def test_shapes_with_bias_table(device, batch, vocab):
    logits = make_logits(batch, vocab, kind="normal", device=device, seed=vocab + batch)
    table_rows = 3
    bias = torch.randn(table_rows, vocab, generator=torch.Generator().manual_seed(1)).to(device)
    positions = torch.arange(batch, dtype=torch.int64, device=device) % (table_rows + 2)
    seeds = range(4) if batch * vocab <= 2_000_000 else range(2)
    check_against_reference(
        logits, bias=bias, positions=positions, alpha=0.7, temperature=0.9, top_p=0.9, seeds=seeds
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vocab", [17, 1019, 32000])
def test_dtypes(device, dtype, vocab):
    logits = make_logits(7, vocab, kind="peaked", dtype=dtype, device=device, seed=3)
    bias = torch.randn(vocab).to(device)
    check_against_reference(logits, bias=bias, alpha=0.5, top_p=0.8)


@pytest.mark.parametrize("kind", ["normal", "peaked", "ties", "masked"])
@pytest.mark.parametrize("top_p", [0.0, 1e-6, 0.3, 0.9, 0.99, 1.0])
def test_distributions_and_top_p(device, kind, top_p):
    logits = make_logits(16, 1019, kind=kind, device=device, seed=5)
    check_against_reference(logits, top_p=top_p)


@pytest.mark.parametrize("temperature", [0.0, 0.25, 1.0, 3.0, math.inf])
def test_temperatures(device, temperature):
    logits = make_logits(9, 4099, kind="peaked", device=device, seed=11)
    check_against_reference(logits, temperature=temperature, top_p=0.95)


def test_per_row_parameters(device):
    batch, vocab = 33, 5003
    g = torch.Generator().manual_seed(0)
    logits = make_logits(batch, vocab, kind="peaked", device=device, seed=2)
    bias = torch.randn(4, vocab, generator=g)
    positions = torch.randint(0, 7, (batch,), generator=g)
    alpha = torch.rand(batch, generator=g) * 2
    temperature = torch.rand(batch, generator=g) * 2
    temperature[::5] = 0.0  # some greedy rows
    top_p = torch.rand(batch, generator=g)
    top_p[::4] = 1.0
    check_against_reference(
        logits,
        bias=bias.to(device),
        positions=positions,
        alpha=alpha,
        temperature=temperature,
        top_p=top_p,
    )


def test_scalar_and_per_row_parameters_agree(device):
    batch, vocab = 12, 3001
    logits = make_logits(batch, vocab, kind="normal", device=device, seed=8)
    bias = torch.randn(vocab).to(device)
    scalar = dict(alpha=0.3, temperature=0.8, top_p=0.7)
    per_row = {k: torch.full((batch,), v, device=device) for k, v in scalar.items()}
    assert torch.equal(
        tsdi_ext.sampling_probs(logits, bias=bias, **scalar),
        tsdi_ext.sampling_probs(logits, bias=bias, **per_row),
    )
    seeds = torch.full((batch,), 42, device=device)
    offsets = torch.arange(batch, device=device)
    t1, _ = tsdi_ext.sample(logits, bias=bias, seed=42, offset=offsets, **scalar)
    t2, _ = tsdi_ext.sample(logits, bias=bias, seed=seeds, offset=offsets, **per_row)
    assert torch.equal(t1, t2)


def test_invalid_rows_mixed_in_batch(device):
    logits = make_logits(6, 1000, kind="peaked", device=device, seed=4)
    logits[1, 10] = math.nan
    logits[2, 20] = math.inf
    logits[3] = -math.inf
    temperature = torch.tensor([1.0, 1.0, 1.0, 1.0, -2.0, 1.0])
    tokens, valid = tsdi_ext.sample(logits, temperature=temperature.to(device), top_p=0.9)
    assert valid.tolist() == [True, False, False, False, False, True]
    assert tokens[1:5].tolist() == [0, 0, 0, 0]
    check_against_reference(logits, temperature=temperature, top_p=0.9)


def test_bias_inf_and_negative_positions(device):
    logits = make_logits(4, 300, kind="normal", device=device, seed=6)
    bias = torch.zeros(2, 300)
    bias[0, 5] = -math.inf  # subtracting -inf makes +inf: row invalid
    bias[1, 7] = math.inf  # masks token 7
    positions = torch.tensor([0, 1, -1, 9])
    tokens, valid = tsdi_ext.sample(logits, bias=bias.to(device), positions=positions.to(device))
    assert valid.tolist() == [False, True, False, True]
    check_against_reference(logits, bias=bias, positions=positions)


def test_non_contiguous_logits(device):
    base = make_logits(10, 2 * 777, kind="peaked", device=device, seed=9)
    strided_rows = base[::2, :777]  # row stride 2 * 1554, unit stride along V
    transposed = make_logits(777, 5, kind="peaked", device=device, seed=9).t()  # stride(1) != 1
    for logits in (strided_rows, transposed):
        got = tsdi_ext.sampling_probs(logits, top_p=0.9)
        assert torch.equal(got, tsdi_ext.sampling_probs(logits.contiguous(), top_p=0.9))
        check_against_reference(logits, top_p=0.9)


def test_tokens_independent_of_batch_composition(device):
    logits = make_logits(20, 2000, kind="normal", device=device, seed=12)
    offsets = torch.arange(20, device=device) + 100
    tokens, _ = tsdi_ext.sample(logits, seed=5, offset=offsets, top_p=0.9)
    permutation = torch.randperm(20, generator=torch.Generator().manual_seed(0)).to(device)
    shuffled, _ = tsdi_ext.sample(
        logits[permutation], seed=5, offset=offsets[permutation], top_p=0.9
    )
    assert torch.equal(shuffled, tokens[permutation])
    single, _ = tsdi_ext.sample(logits[3:4], seed=5, offset=int(offsets[3]), top_p=0.9)
    assert single.item() == tokens[3].item()


def test_cpu_backend_equals_auto_on_cpu():
    logits = make_logits(5, 999, kind="normal")
    assert torch.equal(
        tsdi_ext.sample(logits, backend="cpu", seed=3)[0], tsdi_ext.sample(logits, seed=3)[0]
    )


# The fused CPU kernel brackets the threshold of flat rows (V >= 16384) from a strided sample of
# 1024 weights and checks that bracket exactly. These rows go through that path (scale <= 1.25),
# its refusal on concentrated mass (scale 2), and a sample that misses the nucleus entirely.
@pytest.mark.parametrize("scale", [0.3, 1.0, 1.25, 2.0])
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_flat_rows_large_vocab(device, scale, top_p):
    logits = make_logits(6, 32768, kind="normal", device=device, seed=13) * scale
    check_against_reference(logits, top_p=top_p)


@pytest.mark.parametrize("top_p", [0.05, 0.1, 0.5, 0.9])
def test_nucleus_hidden_between_sample_points(device, top_p):
    # The kernel samples indices j * stride + stride // 2 (stride = V / 1024). 2000 heavy tokens
    # (w ~ 1) placed elsewhere are invisible to the sample, which sees a uniform background
    # (w = 0.3) whose scaled total still looks plausible: for small top_p the sampled bracket is
    # wrong, the exact check rejects it and the pivot passes must find the threshold.
    vocab, stride = 32768, 32
    g = torch.Generator().manual_seed(3)
    logits = torch.full((3, vocab), math.log(0.3))
    unsampled = (torch.arange(vocab) % stride != stride // 2).nonzero().flatten()
    heavy = unsampled[torch.randperm(len(unsampled), generator=g)[:2000]]
    logits[:, heavy] = -torch.rand(3, 2000, generator=g) * 0.05
    check_against_reference(logits.to(device), top_p=top_p)
