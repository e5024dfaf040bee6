"""Property tests (hypothesis) of the filters together: top_k (int or per-row, 0, 1, >= V), min_p
(float or per-row, 0 and 1), top_p, temperature, alpha, dtypes, vocabularies of 1, 2, 17 and 1000+
tokens and NaN / -inf rows, on the fused CPU kernel against the reference (backend="torch"), held
to docs/contract.md §8: the same valid flags; where every float64 sum of a row is exact, the same
kept set, probabilities and tokens bit for bit; elsewhere kept sets that differ only in boundary
tokens, probabilities within rounding of c = 1/K, and a token only where the running mass meets
u * K within the sums' rounding."""

import math

import pytest
import torch
from test_agreement import lattice_rows
from test_fused_vs_reference import assert_same_nucleus
from test_fuzz import any_float32, per_row_or_scalar, with_specials

import tsdi_ext
from tsdi_ext.ops import _native, reference

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.skipif(not _native.native_available(), reason="no native extension")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
VOCABS = [1, 2, 3, 17, 20, 1000, 1024, 4099]
SPECIALS = [math.nan, math.inf, -math.inf]
# A float64 sum of n non-negative terms is within (n - 1) * 2^-53 of the exact one, relative to it
# (contract §8); the two sides' sums may err in opposite directions.
SUM_ROUNDING = 2.0**-52

FILTER_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def unit_interval(draw, batch, specials):
    """A scalar in [0, 1] (0 and 1 often), or a [B] float32 tensor that may hold invalid values."""
    edges = st.sampled_from([0.0, 1.0, 1e-45, 0.05, 0.5, 0.8, 0.9999])
    inside = st.one_of(edges, st.floats(0.0, 1.0, width=32))
    return per_row_or_scalar(
        draw, batch, inside, st.one_of(inside, any_float32) if specials else inside
    )


@st.composite
def filter_cases(draw):
    batch = draw(st.integers(0, 6))
    vocab = draw(st.one_of(st.sampled_from(VOCABS), st.integers(1, 64)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    generator = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["normal", "ties", "lattice", "masked"]))
    if kind == "lattice":  # probabilities on a 0.05 lattice (test_agreement), fitted to vocab
        x = lattice_rows(batch, seed % 2**31)[0]
        if vocab <= x.shape[1]:
            x = x[:, :vocab].contiguous()
        else:
            x = torch.nn.functional.pad(x, (0, vocab - x.shape[1]), value=-math.inf)
    elif kind == "ties":  # many exact ties, at the k-th weight among others
        x = torch.randint(0, 4, (batch, vocab), generator=generator).float()
    else:
        scale = draw(st.sampled_from([0.0, 1e-3, 0.3, 1.0, 4.0, 30.0]))
        x = torch.randn(batch, vocab, generator=generator) * scale
        if kind == "masked":
            x = x.masked_fill(torch.rand(batch, vocab, generator=generator) < 0.7, -math.inf)
    x = with_specials(draw, x, SPECIALS, max_size=3)
    for row, value in draw(
        st.lists(
            st.tuples(st.integers(0, max(batch - 1, 0)), st.sampled_from(SPECIALS)), max_size=2
        )
    ):
        if batch:
            x[row] = value  # whole rows of NaN, +inf, -inf
    x = x.to(dtype)
    kwargs = {}
    if draw(st.booleans()):
        kwargs["bias"] = torch.randn(vocab, generator=generator) * draw(st.sampled_from([0.5, 3.0]))
        kwargs["alpha"] = per_row_or_scalar(
            draw, batch, st.sampled_from([0.0, 0.5, 1.0, -1.0]), st.floats(-2.0, 2.0, width=32)
        )
    kwargs["temperature"] = per_row_or_scalar(
        draw,
        batch,
        st.one_of(st.sampled_from([0.0, 1e-30, 0.5, 1.0, 2.0, math.inf]), st.floats(0.05, 5.0)),
        st.one_of(st.sampled_from([0.0, 0.7, 1.0, -1.0, math.nan]), st.floats(0.05, 5.0)),
    )
    kwargs["top_p"] = unit_interval(draw, batch, specials=True)
    kwargs["min_p"] = unit_interval(draw, batch, specials=True)
    k_values = st.one_of(
        st.sampled_from([0, 1, 2, vocab - 1, vocab, vocab + 1, 2**40]), st.integers(0, vocab + 3)
    )
    kwargs["top_k"] = per_row_or_scalar(
        draw,
        batch,
        k_values.filter(lambda k: k >= 0),
        st.one_of(k_values, st.just(-1)),
        dtype=torch.int64,
    )
    draw_args = dict(
        seed=draw(st.integers(0, 2**64 - 1)),
        offset=torch.tensor(
            draw(st.lists(st.integers(0, 2**62), min_size=batch, max_size=batch)), dtype=torch.int64
        ).reshape(batch),
    )
    return x, kwargs, draw_args


def reference_rows(logits, kwargs, filtered):
    """The reference's per-row weights and kept sets for a call's arguments, with its filters or
    (``filtered=False``) with none."""
    filters = (kwargs["top_p"], kwargs["top_k"], kwargs["min_p"]) if filtered else (1.0, 0, 0.0)
    return reference._rows(
        logits, kwargs.get("bias"), None, kwargs.get("alpha", 1.0), kwargs["temperature"], *filters
    )


def exact_rows(logits, kwargs):
    """[B] bool: rows whose float64 sums are exact (contract §8): every non-zero weight is at
    least 2^-e with V <= 2^(29 - e)."""
    batch, vocab = logits.shape
    weights = reference_rows(logits, kwargs, filtered=False).kept  # every weight
    e = 29 - math.ceil(math.log2(vocab)) if vocab > 1 else 29
    smallest = torch.where(weights > 0, weights, torch.ones_like(weights)).amin(dim=1)
    return smallest >= 2.0**-e


def assert_token_differences_are_rounding(rows, logits, kwargs, draw_args, tokens, ref_tokens):
    """Where the tokens differ, the reference's running kept mass between the two tokens meets
    u * K within the float64 sums' rounding (V * 2^-52 * K, contract §8)."""
    if not rows:
        return
    row = reference_rows(logits, kwargs, filtered=True)
    batch, vocab = logits.shape
    seed = draw_args["seed"]  # read as uint64
    seeds = torch.full((batch,), seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64)
    u = reference.uniform(seeds, draw_args["offset"]).double()
    for b in rows:
        running = row.kept[b].double().cumsum(dim=0)
        target = float(u[b] * row.kept_mass[b])
        low, high = sorted((int(tokens[b]), int(ref_tokens[b])))
        gap = (running[low:high] - target).abs().min()
        assert gap <= 2 * vocab * SUM_ROUNDING * float(row.kept_mass[b]), (
            f"row {b}: tokens {int(tokens[b])} vs {int(ref_tokens[b])}, not a rounding difference"
        )


@FILTER_SETTINGS
@given(filter_cases())
def test_fused_filters_match_reference(case):
    logits, kwargs, draw_args = case
    got = tsdi_ext.sampling_probs(logits, backend="cpu", **kwargs)
    want = tsdi_ext.sampling_probs(logits, backend="torch", **kwargs)
    fused = tsdi_ext.sample(logits, backend="cpu", return_logprobs=True, **kwargs, **draw_args)
    ref = tsdi_ext.sample(logits, backend="torch", return_logprobs=True, **kwargs, **draw_args)
    assert torch.equal(fused.valid, ref.valid)
    assert torch.equal((got > 0).any(dim=1), ref.valid), "valid rows are the non-zero rows"
    if logits.shape[0] == 0:
        return
    exact = exact_rows(logits, kwargs) | ~ref.valid
    # Exact rows: identical kept sets, probabilities and tokens.
    assert torch.equal(got[exact].view(torch.int32), want[exact].view(torch.int32))
    assert torch.equal(fused.tokens[exact], ref.tokens[exact])
    # Other rows: boundary differences only (test_fused_vs_reference's rule) ...
    assert_same_nucleus(got, want)
    same_kept = ((got > 0) == (want > 0)).all(dim=1)
    # ... probabilities within the rounding of c = 1/K (one float32 ulp of c, then the product) ...
    close = (got - want).abs() <= 2.0**-22 * want.abs() + 2.0**-149
    assert bool(close[same_kept].all()), "probabilities beyond the rounding of c"
    # ... and a token only where the draw's target meets the running mass within the sums' rounding.
    mismatched = (same_kept & (fused.tokens != ref.tokens)).nonzero().flatten().tolist()
    assert_token_differences_are_rounding(
        mismatched, logits, kwargs, draw_args, fused.tokens, ref.tokens
    )
    # Log-probabilities (§7): within 1e-6 where the kept sets agree; NaN exactly on invalid rows.
    for field in ("logprob", "unfiltered_logprob"):
        a, b = getattr(fused, field), getattr(ref, field)
        assert torch.equal(torch.isnan(a), ~ref.valid) and torch.equal(torch.isnan(b), ~ref.valid)
        rows = same_kept & ref.valid & (fused.tokens == ref.tokens)
        torch.testing.assert_close(a[rows], b[rows], atol=1e-6, rtol=1e-6)
