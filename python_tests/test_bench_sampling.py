"""The CPU sampling benchmark's own logic, without timing anything (benchmarks/bench_sampling.py):
its transformers and vLLM-style peers keep the contract's tokens, its alternation calls every
candidate once a round in rotated order, its greedy inputs put the maximum where they say, and
its summary names the worst row against the goal."""

from pathlib import Path

import pytest
import torch

import tsdi_ext

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_sampling.py")


def _kept(bench, logits, bias, **filters):
    probs = tsdi_ext.sampling_probs(
        logits, bias=bias, alpha=bench.ALPHA, temperature=bench.TEMPERATURE, backend="torch",
        **filters,
    )  # fmt: skip
    return probs > 0


@pytest.mark.parametrize("name", ["top-p", "top-k", "min-p", "top-k+top-p", "top-k+top-p+min-p"])
def test_peers_keep_the_contracts_tokens(bench, name):
    logits = bench.normal_logits(6, 3000, bench.FILTER_SIGMA, torch.float32)
    bias = bench.bias_for(3000)
    filters = bench.FILTERS[name]
    kept = _kept(bench, logits, bias, **filters)
    assert torch.equal(torch.isfinite(bench.hf_scores(logits, bias, **filters)), kept)
    vllm = torch.isfinite(bench.vllm_scores(logits, bias, **filters))
    if "min-p" in name and "top-p" in name:
        # vLLM applies min-p before top-p (top-p of the min-p set's mass): a subset of the
        # contract's top-k and min-p sets, holding the maximum.
        outer = _kept(bench, logits, bias, top_k=filters["top_k"], min_p=filters["min_p"])
        assert not (vllm & ~outer).any() and vllm.sum(dim=1).min() >= 1
    else:
        assert torch.equal(vllm, kept)
    generator = torch.Generator().manual_seed(0)
    for peer, allowed in ((bench.hf_path, kept), (bench.vllm_style, vllm)):
        tokens = peer(logits, bias, generator, **filters).view(-1, 1)
        assert allowed.gather(1, tokens).all()


def test_alternate_rotates_the_order_each_round(bench):
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timed = bench.alternate(fns, budget_s=0.0, min_rounds=4, max_rounds=4, warmup=1)
    assert timed["calls"] == 4
    assert "".join(calls) == "abc" + "abcbcacababc"  # one warm-up round, then 4 rotated
    assert sorted(timed["us"]) == sorted(timed["window_us"]) == ["a", "b", "c"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_logits_put_the_maximum_where_named(bench, dtype):
    for where, index in (("first", 0), ("middle", 500), ("last", 999)):
        logits = bench.greedy_logits(3, 1000, where, dtype)
        assert logits.dtype == dtype
        assert (logits.argmax(dim=-1) == index).all()
        assert ((logits == logits.amax(dim=-1, keepdim=True)).sum(dim=-1) == 1).all()


def _row(group, case, batch, vocab, ratio, over_top_p=None):
    row = {"group": group, "case": case, "dtype": "float32", "batch": batch, "vocab": vocab}
    row.update(fused_over_base=ratio, base_us=10.0)
    if over_top_p is not None:
        row.update(over_top_p_only=over_top_p, top_p_only_us=10.0 * ratio / over_top_p)
    return row


def test_summary_names_the_worst_row(bench):
    rows = [
        _row("dists", "N(0,1^2)", 1, 32000, 1.9),
        _row("dists", "N(0,1^2)", 1, 128256, 1.6),
        _row("dists", "N(0,6^2)", 8, 32000, 1.2),
        _row("greedy", "max last", 1, 32000, 1.4),
        _row("filters", "top-k", 8, 128256, 1.5, over_top_p=1.1),
        _row("filters", "top-k+top-p+min-p", 8, 128256, 1.6, over_top_p=1.2),
    ]
    lines = bench.summary(rows)
    assert lines[0].startswith("worst fused/softmax: 1.90 (dists N(0,1^2) float32 B=1 V=32000;")
    assert "goal <= 2.0: meets; 3 rows" in lines[0]
    assert lines[1].startswith("worst fused/softmax at B = 1, V >= 128256: 1.60")
    assert "misses; 1 rows" in lines[1]
    assert "worst fused/amax: 1.40" in lines[2] and "meets" in lines[2]
    assert "1.20 (filters top-k+top-p+min-p" in lines[3] and "goal <= 1.15: misses" in lines[3]
