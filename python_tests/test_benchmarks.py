"""The GPU checks' tooling, checked without a GPU: the benchmark's target verdicts and memory
floor (benchmarks/bench_cuda.py), and that every tools/ script parses."""

import subprocess
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_cuda():
    return load_script("benchmarks/bench_cuda.py")  # imports torch and transformers: no GPU needed


def _row(batch, fused_us, torch_us, floor_us, dtype="float32", vocab=128256):
    return {
        "dtype": dtype,
        "batch": batch,
        "vocab": vocab,
        "fused_us": fused_us,
        "torch_us": torch_us,
        "hf_us": 0.0,
        "floor_us": floor_us,
        "fused_gbps": 0.0,
    }


def test_memory_floor_counts_the_copy_rate_as_read_plus_write(bench_cuda):
    # 128 MB of logits at a copy moving 4000 GB/s (read + write): 32 µs, not the 64 µs that half
    # the rate (a "copy bandwidth" of bytes copied) would give.
    assert bench_cuda.memory_floor_us(128_000_000, 4000.0) == pytest.approx(32.0)


def test_targets_met(bench_cuda):
    rows = [
        _row(256, fused_us=60.0, torch_us=900.0, floor_us=31.0),
        _row(64, fused_us=20.0, torch_us=400.0, floor_us=8.0),
    ]
    verdicts = bench_cuda.targets(rows, {"float32/128256": 9.9})
    assert [met for _, _, met in verdicts] == [True, True, True]
    assert [measured for _, measured, _ in verdicts] == ["1.94x", "9.90 us", "20.0x"]


def test_targets_not_met(bench_cuda):
    rows = [
        _row(256, fused_us=63.0, torch_us=900.0, floor_us=31.0),
        _row(64, fused_us=20.0, torch_us=399.0, floor_us=8.0),
    ]
    verdicts = bench_cuda.targets(rows, {"float32/128256": 10.0})
    assert [met for _, _, met in verdicts] == [False, False, False]


def test_targets_not_measured(bench_cuda):
    # bf16 rows and other vocabularies do not stand in for the fp32 V=128256 targets.
    rows = [_row(256, 1.0, 100.0, 1.0, dtype="bfloat16"), _row(64, 1.0, 100.0, 1.0, vocab=32000)]
    verdicts = bench_cuda.targets(rows, {"bfloat16/128256": 1.0})
    assert [(measured, met) for _, measured, met in verdicts] == [("not measured", None)] * 3


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "tools").glob("*.sh")))
def test_tools_script_parses(script):
    result = subprocess.run(
        ["bash", "-n", str(ROOT / "tools" / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
