"""top-k and min-p (docs/contract.md §6): transformers' warper chain as the oracle, the fused CPU
kernel against the reference, the tie rule, draw statistics, opcheck and torch.compile."""

import numpy as np
import pytest
import scipy.stats
import torch

import tsdi_ext
from tsdi_ext.ops import _native, reference

from helpers import MIN_P_VALUE

transformers = pytest.importorskip("transformers")
from test_hf_oracle import assert_same_kept, distinct_grid_logits  # noqa: E402
from transformers import (  # noqa: E402
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

native = pytest.mark.skipif(not _native.native_available(), reason="no native extension")
BACKENDS = ["torch", pytest.param("cpu", marks=native)]


def hf_chain_kept(scores, temperature, top_k, top_p, min_p):
    """Tokens transformers keeps: temperature, top-k, top-p, min-p (its generation order)."""
    input_ids = torch.zeros(scores.shape[0], 1, dtype=torch.long)
    scores = TemperatureLogitsWarper(temperature)(input_ids, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(input_ids, scores)
    if top_p < 1.0:
        # float32-rounded, as tsdi_ext reads it (see test_hf_oracle's docstring)
        scores = TopPLogitsWarper(float(np.float32(top_p)))(input_ids, scores)
    if min_p:
        scores = MinPLogitsWarper(float(np.float32(min_p)))(input_ids, scores)
    return scores != float("-inf")


CHAINS = [
    dict(top_k=50, top_p=1.0, min_p=0.0),
    dict(top_k=0, top_p=1.0, min_p=0.05),
    dict(top_k=50, top_p=0.9, min_p=0.0),
    dict(top_k=0, top_p=0.9, min_p=0.05),
    dict(top_k=50, top_p=0.9, min_p=0.05),
    dict(top_k=1, top_p=0.9, min_p=0.0),
    dict(top_k=700, top_p=0.5, min_p=0.01),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vocab", [1019, 32000])
@pytest.mark.parametrize("temperature", [0.7, 1.5])
@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "k{top_k}-p{top_p}-m{min_p}".format(**c))
def test_transformers_chain(backend, vocab, temperature, chain):
    logits = distinct_grid_logits(16, vocab, vocab + int(temperature * 10) + chain["top_k"])
    want = hf_chain_kept(logits, temperature, **chain)
    got = tsdi_ext.sampling_probs(logits, temperature=temperature, backend=backend, **chain)
    assert_same_kept(got, want)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(16), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_k_keeps_every_tie_at_the_kth_value(backend):
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
    probs = tsdi_ext.sampling_probs(logits, top_k=2, backend=backend)
    assert (probs[0] > 0).tolist() == [True, False, True, True, True, False]
    # k >= V and k = 0 are off; k = 1 keeps the maximum and its ties
    for k in (0, 6, 100):
        assert (tsdi_ext.sampling_probs(logits, top_k=k, backend=backend) > 0).all()
    ties = torch.tensor([[1.0, 5.0, 5.0, 0.0]])
    assert (tsdi_ext.sampling_probs(ties, top_k=1, backend=backend)[0] > 0).tolist() == [
        False,
        True,
        True,
        False,
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_min_p_is_relative_to_the_maximum(backend):
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.04, 0.01]])
    got = tsdi_ext.sampling_probs(probs.log(), min_p=0.15, backend=backend)
    # kept: p >= 0.15 * 0.5 = 0.075
    assert (got[0] > 0).tolist() == [True, True, True, False, False, False]
    torch.testing.assert_close(got[0, :3], torch.tensor([0.5, 0.3, 0.1]) / 0.9)
    assert ((tsdi_ext.sampling_probs(probs.log(), min_p=1.0, backend=backend) > 0).sum()) == 1


@native
@pytest.mark.parametrize("kind", ["normal", "peaked", "ties", "masked"])
@pytest.mark.parametrize("vocab", [257, 4099, 50000])
def test_fused_matches_reference(kind, vocab):
    from helpers import make_logits

    logits = make_logits(12, vocab, kind=kind, seed=vocab)
    top_k = torch.tensor([0, 1, 2, 5, 50, 50, 50, vocab - 1, vocab, vocab + 7, 1000, 3])
    top_p = torch.tensor([1.0, 0.9, 0.5, 1.0, 0.9, 0.0, 0.95, 0.8, 0.7, 1.0, 0.99, 0.6])
    min_p = torch.tensor([0.05, 0.0, 0.0, 0.2, 0.05, 0.0, 0.0, 0.01, 0.1, 0.0, 0.001, 1.0])
    params = dict(top_k=top_k, top_p=top_p, min_p=min_p, temperature=0.8)
    got = tsdi_ext.sampling_probs(logits, backend="cpu", **params)
    want = tsdi_ext.sampling_probs(logits, backend="torch", **params)
    assert torch.equal(got > 0, want > 0)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-4)
    for scalar in (dict(top_k=50), dict(min_p=0.05), dict(top_k=50, top_p=0.9, min_p=0.05)):
        got = tsdi_ext.sampling_probs(logits, backend="cpu", **scalar)
        want = tsdi_ext.sampling_probs(logits, backend="torch", **scalar)
        assert torch.equal(got > 0, want > 0), scalar
    offsets = torch.arange(12) * 31
    tokens, valid = tsdi_ext.sample(logits, seed=5, offset=offsets, backend="cpu", **params)
    ref_tokens, ref_valid = tsdi_ext.sample(
        logits, seed=5, offset=offsets, backend="torch", **params
    )
    assert torch.equal(valid, ref_valid) and torch.equal(tokens, ref_tokens)


@native
@pytest.mark.slow
def test_draws_follow_the_filtered_distribution():
    """2 million draws per backend from a top-k + top-p + min-p row: chi-square against the
    probabilities sampling_probs gives, and never a token outside the kept set."""
    logits = torch.randn(1, 200, generator=torch.Generator().manual_seed(7)) * 2
    params = dict(top_k=40, top_p=0.9, min_p=0.02, temperature=0.8)
    draws = 2_000_000
    for backend in ("cpu", "torch"):
        probs = tsdi_ext.sampling_probs(logits, backend=backend, **params)[0].double()
        counts = torch.zeros(200, dtype=torch.float64)
        for chunk in range(0, draws, 500_000):
            offsets = torch.arange(chunk, chunk + 500_000)
            tokens, _ = tsdi_ext.sample(
                logits.expand(500_000, 200), seed=11, offset=offsets, backend=backend, **params
            )
            counts += torch.bincount(tokens, minlength=200).double()
        assert counts[probs == 0].sum() == 0
        kept = probs > 0
        # float32 probabilities sum to 1 only to ~1e-7; chisquare wants the totals equal.
        expected = probs[kept] / probs[kept].sum() * draws
        _, p_value = scipy.stats.chisquare(counts[kept].numpy(), expected.numpy())
        assert p_value > MIN_P_VALUE, (backend, p_value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_filter_values(backend):
    logits = torch.randn(3, 11)
    with pytest.raises(ValueError, match=r"^tsdi_ext: top_k must be >= 0 \(0: off\), got -1"):
        tsdi_ext.sample(logits, top_k=-1, backend=backend)
    with pytest.raises(ValueError, match=r"^tsdi_ext: min_p must be in \[0, 1\] \(0: off\)"):
        tsdi_ext.sampling_probs(logits, min_p=1.5, backend=backend)
    with pytest.raises(TypeError, match=r"top_k must be an int"):
        tsdi_ext.sample(logits, top_k=2.5, backend=backend)
    # per-row: the row is invalid
    tokens, valid = tsdi_ext.sample(logits, top_k=torch.tensor([1, -3, 0]), backend=backend)
    assert valid.tolist() == [True, False, True]
    probs = tsdi_ext.sampling_probs(
        logits, min_p=torch.tensor([0.1, 0.0, float("nan")]), backend=backend
    )
    assert (probs.sum(dim=1) > 0).tolist() == [True, True, False]
    with pytest.raises(ValueError, match=r"row 2 cannot be sampled: its min_p is NaN"):
        tsdi_ext.sampling_probs(
            logits, min_p=torch.tensor([0.1, 0.0, float("nan")]), backend=backend, strict=True
        )


@native
def test_raw_ops_check_filter_scalars():
    logits = torch.randn(2, 9)
    names = [p.name for p in tsdi_ext.ops.params.ROW_PARAMS]
    floats = [1.0, 1.0, 1.0, 0.0]  # alpha, temperature, top_p, min_p
    ints = [-2, 0, 0]  # top_k, seed, offset
    assert names == ["alpha", "temperature", "top_p", "top_k", "min_p", "seed", "offset"]
    with pytest.raises(ValueError, match=r"^tsdi_ext: top_k must be >= 0"):
        torch.ops.tsdi_ext.sample.default(logits, None, None, [None] * 7, floats, ints)
    with pytest.raises(ValueError, match=r"^tsdi_ext: min_p must be in \[0, 1\]"):
        torch.ops.tsdi_ext.sampling_probs.default(
            logits, None, None, [None] * 7, [1.0, 1.0, 1.0, -0.5], [0, 0, 0]
        )


@native
def test_opcheck_and_compile_with_filters():
    logits = torch.randn(4, 300)
    top_k = torch.tensor([0, 5, 50, 400])
    min_p = torch.tensor([0.0, 0.05, 0.1, 0.0])
    args = tsdi_ext.ops.params.row_args(
        logits, False, dict(top_k=top_k, min_p=min_p, top_p=0.9, seed=3, offset=1)
    )
    torch.library.opcheck(
        torch.ops.tsdi_ext.sample.default, (logits, None, None, *args), raise_exception=True
    )
    torch.library.opcheck(torch.ops.tsdi_ext.sample_logprobs.default, (logits, None, None, *args))
    torch.library.opcheck(torch.ops.tsdi_ext.sampling_probs.default, (logits, None, None, *args))

    @torch.compile(fullgraph=True)
    def step(x, k, m):
        return tsdi_ext.sample(x, top_k=k, min_p=m, top_p=0.9, seed=3, offset=1)

    tokens, valid = step(logits, top_k, min_p)
    want, _ = tsdi_ext.sample(logits, top_k=top_k, min_p=min_p, top_p=0.9, seed=3, offset=1)
    assert torch.equal(tokens, want) and valid.all()

    @torch.compile(fullgraph=True)
    def probs_step(x, k):
        return tsdi_ext.sampling_probs(x, top_k=k, min_p=0.05)

    torch.testing.assert_close(
        probs_step(logits, 20), tsdi_ext.sampling_probs(logits, top_k=20, min_p=0.05)
    )


def test_reference_filters_are_torch_only():
    """The reference takes top_k / min_p by name (no native extension needed)."""
    logits = torch.randn(2, 30)
    probs = reference.sampling_probs(logits, top_k=3, min_p=0.0)
    assert ((probs > 0).sum(dim=1) == 3).all()
