"""CUDA-only properties of the fused kernel: agreement with the fused CPU kernel token for token
(on the default path, and on each path forced by TSDI_EXT_CUDA_PATH in a child process),
capture in a CUDA graph, torch.compile(mode="reduce-overhead", fullgraph=True), no host sync,
and the statistical test on millions of draws. Skipped (with the reason) without a CUDA device
and a CUDA build; the device-parametrised tests elsewhere also run on CUDA when present."""

import os
import subprocess
import sys

import pytest
import torch

import tsdi_ext
from tsdi_ext.ops import _native, reference

from helpers import MIN_P_VALUE, chi_square_p_value, make_logits

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and _native.cuda_available()),
        reason="no CUDA device or tsdi_ext built without CUDA",
    ),
]

SHAPES = [(1, 128256), (8, 32000), (33, 151936), (256, 128256), (3, 262144), (1024, 1019), (5, 1)]


def _inputs(batch, vocab, dtype=torch.float32, seed=0):
    logits = make_logits(batch, vocab, kind="peaked", dtype=dtype, seed=seed)
    bias = torch.randn(4, vocab, generator=torch.Generator().manual_seed(seed + 1))
    positions = torch.arange(batch) % 6
    seeds = torch.arange(batch) + 11
    offsets = torch.arange(batch) * 3
    return logits, bias, positions, seeds, offsets


@pytest.mark.parametrize(
    "dtype",
    [torch.float32, torch.bfloat16, torch.float16],
    ids=lambda d: str(d).removeprefix("torch."),
)
@pytest.mark.parametrize("batch,vocab", SHAPES)
def test_cuda_matches_cpu_token_for_token(batch, vocab, dtype):
    logits, bias, positions, seeds, offsets = _inputs(batch, vocab, dtype)
    kwargs = dict(
        bias=bias,
        positions=positions,
        alpha=0.5,
        temperature=0.9,
        top_p=0.9,
        seed=seeds,
        offset=offsets,
    )
    cpu_tokens, cpu_valid = tsdi_ext.sample(logits, backend="cpu", **kwargs)
    cuda_kwargs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    cuda_tokens, cuda_valid = tsdi_ext.sample(logits.cuda(), backend="cuda", **cuda_kwargs)
    assert torch.equal(cuda_valid.cpu(), cpu_valid)
    mismatches = int((cuda_tokens.cpu() != cpu_tokens).sum())
    assert mismatches <= max(1, batch // 500), f"{mismatches} of {batch} tokens differ"
    probs_kwargs = {k: v for k, v in cuda_kwargs.items() if k not in ("seed", "offset")}
    got = tsdi_ext.sampling_probs(logits.cuda(), **probs_kwargs).cpu()
    want = reference.sampling_probs(
        logits, **{k: v for k, v in kwargs.items() if k not in ("seed", "offset")}
    )
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-4)


def test_cuda_graph_capture_and_replay():
    logits, bias, positions, seeds, offsets = [t.cuda() for t in _inputs(16, 32000)]
    out = {}

    def step():
        out["tokens"], out["valid"] = tsdi_ext.sample(
            logits,
            bias=bias,
            positions=positions,
            alpha=1.0,
            temperature=0.8,
            top_p=0.9,
            seed=seeds,
            offset=offsets,
        )

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm-up outside the graph (sets kernel attributes)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for shift in range(3):
        offsets.copy_(torch.arange(16, device="cuda") * 3 + shift)
        graph.replay()
        eager, _ = tsdi_ext.sample(
            logits,
            bias=bias,
            positions=positions,
            alpha=1.0,
            temperature=0.8,
            top_p=0.9,
            seed=seeds,
            offset=offsets,
        )
        assert torch.equal(out["tokens"], eager)


def test_compile_reduce_overhead_fullgraph():
    logits, bias, positions, seeds, offsets = [t.cuda() for t in _inputs(8, 32000)]

    def fn(logits, offsets):
        return tsdi_ext.sample(
            logits,
            bias=bias,
            positions=positions,
            alpha=1.0,
            temperature=0.8,
            top_p=0.9,
            seed=seeds,
            offset=offsets,
        )

    compiled = torch.compile(fn, mode="reduce-overhead", fullgraph=True)
    for shift in range(4):
        o = offsets + shift
        assert torch.equal(compiled(logits, o)[0], fn(logits, o)[0])


def test_no_host_sync_on_the_sampling_path():
    logits, bias, positions, seeds, offsets = [t.cuda() for t in _inputs(8, 32000)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        tsdi_ext.sample(
            logits, bias=bias, positions=positions, seed=seeds, offset=offsets, top_p=0.9
        )
        tsdi_ext.sampling_probs(logits, bias=bias, positions=positions, top_p=0.9)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_millions_of_draws_match_the_distribution():
    vocab, draws = 1019, 4_000_000
    # N(0, 2^2) logits at temperature 0.7 and top_p 0.8: a nucleus of a few dozen tokens (a
    # one-token nucleus would leave nothing to test).
    logits = (make_logits(1, vocab, seed=3) * 2).cuda()
    probs = tsdi_ext.sampling_probs(logits, temperature=0.7, top_p=0.8)[0]
    assert int((probs > 0).sum()) >= 10
    tokens = []
    rows = 50_000  # a broadcast [rows, V] view (row stride 0): no copies; B <= 65535 per call
    for chunk in range(0, draws, rows):
        t, _ = tsdi_ext.sample(
            logits.expand(rows, vocab),
            temperature=0.7,
            top_p=0.8,
            seed=9,
            offset=torch.arange(chunk, chunk + rows, device="cuda"),
        )
        assert (probs[t] > 0).all()  # never outside the nucleus
        tokens.append(t)
    assert chi_square_p_value(torch.cat(tokens).cpu(), probs) > MIN_P_VALUE


# Run in a child process: the extension reads TSDI_EXT_CUDA_PATH once, at its first CUDA call.
_PATH_CHECK = """
import torch, tsdi_ext
torch.manual_seed(0)
for batch, vocab in [(1, 128256), (8, 32000), (300, 1019), (3, 5)]:
    logits = torch.randn(batch, vocab) * 3
    kw = dict(temperature=0.9, top_p=0.9, top_k=40, min_p=0.01,
              seed=torch.arange(batch), offset=torch.arange(batch) * 3)
    cpu_tokens, cpu_valid = tsdi_ext.sample(logits, backend="cpu", **kw)
    cuda_kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    tokens, valid = tsdi_ext.sample(logits.cuda(), backend="cuda", **cuda_kw)
    assert torch.equal(valid.cpu(), cpu_valid)
    assert int((tokens.cpu() != cpu_tokens).sum()) <= max(1, batch // 500), (batch, vocab)
    probs_kw = {k: v for k, v in cuda_kw.items() if k not in ("seed", "offset")}
    got = tsdi_ext.sampling_probs(logits.cuda(), **probs_kw).cpu()
    want = tsdi_ext.sampling_probs(logits, backend="cpu", **{k: v for k, v in kw.items() if k not in ("seed", "offset")})
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-4)
print("path check ok")
"""


def _run_with_path(path):
    env = {**os.environ, "TSDI_EXT_CUDA_PATH": path}
    return subprocess.run(
        [sys.executable, "-P", "-c", _PATH_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("path", ["split", "cluster"])
def test_each_forced_path_matches_cpu(path):
    result = _run_with_path(path)
    if path == "cluster" and torch.cuda.get_device_capability()[0] < 9:
        assert result.returncode != 0 and "needs a Hopper GPU" in result.stderr, result.stderr
        return
    assert result.returncode == 0 and "path check ok" in result.stdout, result.stderr[-3000:]


def test_an_unknown_path_is_refused():
    result = _run_with_path("fastest")
    assert result.returncode != 0 and "TSDI_EXT_CUDA_PATH must be" in result.stderr
