"""Exact agreement between backends (docs/contract.md §5, §8): one exp, the same bits on the
reference and on every instruction-set build of the fused CPU kernel; identical kept sets,
probabilities and tokens where the row's float64 sums are exact (the 0.05-lattice rows, the
transformers example). The CUDA kernel is held to the CPU kernel's bits by the emulated test
(csrc/tests/cuda_kernel_emulated_test.cpp), which runs the same lattice rows.

Each test runs with the CPU kernel's default build; test_every_cpu_build reruns this file under
TSDI_EXT_CPU_ISA for every build the machine can run (baseline, x86-64-v3, x86-64-v4)."""

import math
import os
import subprocess
import sys

import pytest
import torch

import tsdi_ext
from tsdi_ext.ops import _native, reference

pytestmark = pytest.mark.skipif(not _native.native_available(), reason="no native extension")


def kernel_exp(x: torch.Tensor) -> torch.Tensor:
    """The CPU kernel's pass 2 on float32 values <= 0 (exp, through the selected build)."""
    from tsdi_ext import _C

    out = _C.exp_weights(x.contiguous().numpy().tobytes())
    return torch.frombuffer(bytearray(out), dtype=torch.float32)


def dense_sweep() -> torch.Tensor:
    """Every 389th float32 bit pattern of [-86.5, 0] (2.8 million values, all exponents), the
    flush boundary's neighbours and the special values."""
    # negative floats' bit patterns, as uint32, run from -0.0 (0x80000000) up to -86.5's
    top = torch.tensor(-86.5, dtype=torch.float32).view(torch.int32).item() + 2**32
    patterns = torch.arange(0x80000000, top + 1, 389, dtype=torch.int64)
    values = (patterns - 2**32).to(torch.int32).view(torch.float32)
    edge = torch.tensor(-86.0, dtype=torch.float32)
    specials = torch.tensor(
        [0.0, -0.0, -math.inf, -86.0, -1e-45, -1e-38, -0.5, -1.0, -math.log(2.0)],
        dtype=torch.float32,
    )
    near = torch.stack(
        [torch.nextafter(edge, torch.tensor(-math.inf)), torch.nextafter(edge, torch.tensor(0.0))]
    )
    return torch.cat([values, specials, near])


def test_exp_bits_identical_on_a_dense_sweep():
    x = dense_sweep()
    assert (x <= 0).all() and x.numel() > 2_500_000
    want = reference.exp_nonpositive(x)
    got = kernel_exp(x)
    differs = (got.view(torch.int32) != want.view(torch.int32)).nonzero().flatten()
    assert differs.numel() == 0, (
        f"{differs.numel()} exp values differ from the reference's bits, e.g. at "
        f"{x[differs[:4]].tolist()}: {got[differs[:4]].tolist()} vs {want[differs[:4]].tolist()}"
    )


def test_exp_accuracy():
    """Within 1 ulp of exp (float64) everywhere it does not flush; exactly 1 at 0 and 0 at and
    below the flush point."""
    x = dense_sweep()
    w = reference.exp_nonpositive(x)
    exact = torch.exp(x.double())
    keep = x >= -86.0
    rounded = exact[keep].float()
    ulp = (torch.nextafter(rounded, torch.tensor(math.inf)) - rounded).double()
    error = ((w[keep].double() - exact[keep]).abs() / ulp).max().item()
    assert error < 1.0, f"max error {error} ulp"
    assert w[x == 0].eq(1.0).all()
    assert w[x < -86.0].eq(0.0).all() and (w[keep] > 0).all()


def test_transformers_top_p_example():
    """transformers' own top-p example: probabilities [0.3, 0.1, 0.1, 0.5] at top_p = 0.8 keep the
    two tokens {0.5, 0.3} ([0.375, 0, 0, 0.625]) on every backend, bit for bit, and every draw
    gives the same token."""
    logits = torch.tensor([[0.3, 0.1, 0.1, 0.5]]).log()
    probs = {b: tsdi_ext.sampling_probs(logits, top_p=0.8, backend=b) for b in ("torch", "cpu")}
    expected = torch.tensor([[0.375, 0.0, 0.0, 0.625]])
    torch.testing.assert_close(probs["cpu"], expected, atol=1e-6, rtol=0)
    assert torch.equal(probs["cpu"].view(torch.int32), probs["torch"].view(torch.int32))
    offsets = torch.arange(10_000)
    rows = logits.expand(10_000, 4)
    tokens = {
        b: tsdi_ext.sample(rows, top_p=0.8, seed=3, offset=offsets, backend=b)[0]
        for b in ("torch", "cpu")
    }
    assert torch.equal(tokens["cpu"], tokens["torch"])
    assert set(tokens["cpu"].unique().tolist()) == {0, 3}


def lattice_rows(count: int, seed: int = 0):
    """Rows whose probabilities are multiples of 0.05 (V in [2, 20], zeros as -inf logits), top_p
    on the same lattice (so a nucleus often meets top_p exactly in real arithmetic) and
    temperatures in {1, 0.5, 2}. Every weight is >= 0.05^2 so every float64 sum is exact."""
    g = torch.Generator().manual_seed(seed)
    vocab = 20
    logits = torch.full((count, vocab), -math.inf)
    for row in range(count):
        width = int(torch.randint(2, vocab + 1, (1,), generator=g))
        cuts = torch.randint(0, 21, (width - 1,), generator=g).sort().values
        units = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([20])]))
        logits[row, :width] = (units.double() * 0.05).log().float()
    top_p = (torch.randint(1, 20, (count,), generator=g).double() * 0.05).float()
    temperature = torch.tensor([1.0, 0.5, 2.0])[torch.randint(0, 3, (count,), generator=g)]
    return logits, top_p, temperature


def test_lattice_rows_identical():
    logits, top_p, temperature = lattice_rows(3000)
    params = dict(top_p=top_p, temperature=temperature)
    got = tsdi_ext.sampling_probs(logits, backend="cpu", **params)
    want = tsdi_ext.sampling_probs(logits, backend="torch", **params)
    kept_differ = ((got > 0) != (want > 0)).any(dim=1).nonzero().flatten().tolist()
    assert not kept_differ, f"kept sets differ in rows {kept_differ[:10]}"
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    for seed in range(4):
        offsets = torch.arange(3000) * 7919 + seed
        tokens = {
            b: tsdi_ext.sample(logits, seed=seed, offset=offsets, backend=b, **params)[0]
            for b in ("torch", "cpu")
        }
        assert torch.equal(tokens["cpu"], tokens["torch"])


BUILDS = ("baseline", "x86-64-v3", "x86-64-v4")


@pytest.mark.slow
@pytest.mark.parametrize("build", BUILDS)
def test_every_cpu_build(build):
    """This file again with the CPU kernel's `build` selected (skipped where the CPU lacks it)."""
    if os.environ.get("TSDI_EXT_CPU_ISA"):
        pytest.skip("already running under a selected build")
    env = dict(os.environ, TSDI_EXT_CPU_ISA=build)
    probe = subprocess.run(
        [sys.executable, "-P", "-c", "from tsdi_ext import _C; print(_C.cpu_isa())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    if probe.stdout.strip() != build:
        pytest.skip(f"this CPU cannot run the {build} build")
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
