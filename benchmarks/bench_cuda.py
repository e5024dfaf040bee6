"""CUDA microbenchmark of the fused sampling kernel (a benchmark, not a test; needs a GPU).

For V in {128256, 32000, 151936, 262144}, B in {1, 8, 32, 64, 128, 256}, float32 and bfloat16
(the target shapes first): median µs per call (CUDA events, warm-up, L2 overwritten before each
timed call, 8 inputs rotated) of the fused kernel, the pure-PyTorch path, the Hugging Face path (bias
subtraction + TemperatureLogitsWarper + TopPLogitsWarper + softmax + multinomial), and the memory
floor: the bytes of logits read once over the device-to-device copy bandwidth measured in the same
run, counted as bytes read plus bytes written (what the memory system moves per second; a kernel
that only reads cannot stream faster). The bias rows (8 x V float32, shared by the batch) are left
out of the floor. Also the CUDA-graph-replayed time per call at B=1 for every V (100 calls in one
graph; the logits stay in L2, as a decoding loop's freshly written logits would).

--paths times the CUDA kernel paths side by side (docs/cuda_kernel.md): the first in this process,
each further one in a child process with TSDI_EXT_CUDA_PATH set (the extension reads it once), its
table printed and its JSON kept under "other_paths" in the same file; the budget is shared.

Prints one table and the three targets (docs/benchmarks.md); the JSON (--out) is rewritten after every row,
so a run stopped by --budget-s or killed still leaves what it measured; a shape that fails is
recorded with its error and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.monotonic()  # --budget-s counts from here, imports included

import torch  # noqa: E402
from transformers import TemperatureLogitsWarper, TopPLogitsWarper  # noqa: E402

import tsdi_ext  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
L2_ROTATION_BYTES = 256 * 2**20  # several times the L2 (50 MiB H100, 60 MiB H200)
GRAPH_CALLS = 100
_l2_flush = None


def cuda_median_us(fn, pool_size: int, repeats: int = 50, flush_l2: bool = True) -> float:
    """Median µs of fn(i) (i rotating over the input pool) between CUDA events, after 5 warm-up
    calls. flush_l2: overwrite L2_ROTATION_BYTES before each timed call (outside the events), so
    that no call finds its inputs in L2, however small the pool (the pool's own creation would
    leave small inputs there)."""
    global _l2_flush
    if flush_l2 and _l2_flush is None:
        _l2_flush = torch.empty(L2_ROTATION_BYTES, dtype=torch.uint8, device="cuda")
    for i in range(5):
        fn(i % pool_size)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for i in range(repeats):
        if flush_l2:
            _l2_flush.fill_(i & 0xFF)
        starts[i].record()
        fn(i % pool_size)
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))
    return times[len(times) // 2]


def copy_bandwidth_gbps() -> float:
    """Bytes read plus bytes written per second by a 512 MiB device-to-device copy, in GB/s."""
    src = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = cuda_median_us(
        lambda _: dst.copy_(src), 1, repeats=20, flush_l2=False
    )  # 1 GiB moved: L2 is no help
    return 2 * src.numel() / (us * 1e-6) / 1e9


def graph_replayed_us(vocab: int, dtype: torch.dtype) -> float:
    """µs per call of B=1 sampling replayed from a CUDA graph of GRAPH_CALLS calls."""
    logits = (torch.randn(1, vocab, device="cuda") * 3).to(dtype)
    offset = torch.zeros(1, dtype=torch.int64, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, offset=offset)  # sets kernel attributes
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(GRAPH_CALLS):
            tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, offset=offset)
    return cuda_median_us(lambda _: graph.replay(), 1, 20, flush_l2=False) / GRAPH_CALLS


def memory_floor_us(nbytes: int, copy_gbps: float) -> float:
    """µs to read nbytes at the copy's bytes-read-plus-written rate (copy_gbps, GB/s)."""
    return nbytes / (copy_gbps * 1e9) * 1e6


def hf_path(logits, bias, positions, warpers, ids):
    # Rows at positions >= L get no bias, as in tsdi_ext.sample.
    in_table = (positions < bias.shape[0]).unsqueeze(1)
    scores = logits.float() - bias[positions.clamp(max=bias.shape[0] - 1)] * in_table
    for warper in warpers:
        scores = warper(ids, scores)
    return torch.multinomial(torch.softmax(scores, -1), 1)


def measure_row(
    dtype: torch.dtype, vocab: int, batch: int, bias: torch.Tensor, bandwidth: float
) -> dict:
    nbytes = batch * vocab * dtype.itemsize
    pool = [
        (torch.randn(batch, vocab, device="cuda") * 3).to(dtype) for _ in range(8)
    ]  # nuclei vary
    positions = torch.arange(batch, device="cuda") % 10  # rows at positions 8 and 9 get no bias
    seeds = torch.arange(batch, device="cuda")
    kw = dict(
        bias=bias,
        positions=positions,
        alpha=1.0,
        temperature=0.8,
        top_p=0.9,
        seed=seeds,
        offset=seeds,
    )
    fused = cuda_median_us(lambda i: tsdi_ext.sample(pool[i], **kw), len(pool))
    reps = 5 if batch * vocab > 8_000_000 else 20
    ref = cuda_median_us(lambda i: tsdi_ext.sample(pool[i], backend="torch", **kw), len(pool), reps)
    ids = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
    warpers = [TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.9)]
    hf_us = cuda_median_us(
        lambda i: hf_path(pool[i], bias, positions, warpers, ids), len(pool), reps
    )
    floor = memory_floor_us(nbytes, bandwidth)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "batch": batch,
        "vocab": vocab,
        "fused_us": fused,
        "torch_us": ref,
        "hf_us": hf_us,
        "floor_us": floor,
        "fused_gbps": nbytes / (fused * 1e-6) / 1e9,
    }


def targets(rows: list[dict], graph_us: dict) -> list[tuple[str, str, bool | None]]:
    """The CUDA targets as (what, measured, met); met is None when the shape was not measured:
    B=256 V=128256 float32 within 2x of the memory floor, B=1 V=128256 under 10 µs
    graph-replayed, at least 20x the PyTorch path at B=64."""

    def find(dtype, batch, vocab):
        return next(
            (r for r in rows if (r["dtype"], r["batch"], r["vocab"]) == (dtype, batch, vocab)), None
        )

    out = []
    r = find("float32", 256, 128256)
    out.append(
        (
            "B=256 V=128256 fp32 within 2x of the memory floor",
            f"{r['fused_us'] / r['floor_us']:.2f}x" if r else "not measured",
            r["fused_us"] <= 2 * r["floor_us"] if r else None,
        )
    )
    g = graph_us.get("float32/128256")
    out.append(
        (
            "B=1 V=128256 fp32 under 10 us per call, graph-replayed",
            f"{g:.2f} us" if g is not None else "not measured",
            g < 10 if g is not None else None,
        )
    )
    r = find("float32", 64, 128256)
    out.append(
        (
            "B=64 V=128256 fp32 at least 20x the pure-PyTorch path",
            f"{r['torch_us'] / r['fused_us']:.1f}x" if r else "not measured",
            r["torch_us"] >= 20 * r["fused_us"] if r else None,
        )
    )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, nargs="+", default=[128256, 32000, 151936, 262144])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu" / "cuda_sampling.json")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no new row after this many seconds (the JSON says what was left out)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["auto", "cluster", "split"],
        default=["auto"],
        help="CUDA kernel paths to time (TSDI_EXT_CUDA_PATH): the first here, the others in child "
        "processes, in that order",
    )
    args = parser.parse_args(argv)
    # Before the first CUDA call of tsdi_ext, which reads it once.
    os.environ["TSDI_EXT_CUDA_PATH"] = args.paths[0]
    share = None if args.budget_s is None else args.budget_s / len(args.paths)  # per path

    props = torch.cuda.get_device_properties(0)
    driver = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    bandwidth = copy_bandwidth_gbps()
    machine = {
        "gpu": props.name,
        "sms": props.multi_processor_count,
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tsdi_ext": tsdi_ext.__version__,
        "cuda_path": args.paths[0],
        "d2d_copy_gbps_read_plus_write": bandwidth,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(
        f"# {props.name} ({props.multi_processor_count} SMs) | driver {driver} | torch {torch.__version__} "
        f"CUDA {torch.version.cuda} | d2d copy {bandwidth:.0f} GB/s (read + write) | {machine['date']}"
    )
    result = {
        "machine": machine,
        "rows": [],
        "graph_b1_us": {},
        "errors": [],
        "complete": False,
        "skipped": [],
        "other_paths": {},
    }

    def save():  # after every measurement: a run that is stopped keeps what it measured
        result["targets"] = [
            {"target": t, "measured": m, "met": met}
            for t, m, met in targets(result["rows"], result["graph_b1_us"])
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))

    def failed(what: str, error: Exception):  # one failing shape must not cost the others
        result["errors"].append({"what": what, "error": f"{type(error).__name__}: {error}"})
        print(f"{what}: FAILED: {type(error).__name__}: {error}", flush=True)
        save()

    for dtype_name in args.dtype:  # cheap, and one of the targets: first
        for vocab in args.vocab:
            try:
                us = graph_replayed_us(vocab, getattr(torch, dtype_name))
            except Exception as error:  # noqa: BLE001
                failed(f"graph-replayed B=1 V={vocab} {dtype_name}", error)
                continue
            result["graph_b1_us"][f"{dtype_name}/{vocab}"] = us
            print(f"graph-replayed B=1 V={vocab} {dtype_name}: {us:.2f} us per call", flush=True)
    save()
    print(
        f"{'dtype':8s} {'B':>4s} {'V':>7s} {'fused us':>9s} {'torch us':>9s} {'hf us':>9s} {'floor us':>9s} "
        f"{'x torch':>8s} {'x hf':>7s} {'/floor':>7s} {'GB/s':>7s}"
    )
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        for vocab in args.vocab:
            bias = torch.randn(8, vocab, device="cuda") * 0.5
            for batch in args.batch:
                if share is not None and time.monotonic() - STARTED > share:
                    result["skipped"].append({"dtype": dtype_name, "batch": batch, "vocab": vocab})
                    continue
                try:
                    row = measure_row(dtype, vocab, batch, bias, bandwidth)
                except Exception as error:  # noqa: BLE001
                    failed(f"{dtype_name} B={batch} V={vocab}", error)
                    continue
                result["rows"].append(row)
                save()
                print(
                    f"{dtype_name:8s} {batch:4d} {vocab:7d} {row['fused_us']:9.1f} {row['torch_us']:9.1f} "
                    f"{row['hf_us']:9.1f} {row['floor_us']:9.1f} {row['torch_us'] / row['fused_us']:8.1f} "
                    f"{row['hf_us'] / row['fused_us']:7.1f} {row['fused_us'] / row['floor_us']:7.2f} "
                    f"{row['fused_gbps']:7.0f}",
                    flush=True,
                )
    for k, path in enumerate(args.paths[1:], start=2):  # the other paths, each in a fresh process
        left = None if share is None else max(share * k - (time.monotonic() - STARTED), 1.0)
        with tempfile.TemporaryDirectory() as tmp:
            child_out = Path(tmp) / "child.json"
            command = [sys.executable, "-P", __file__, "--paths", path, "--out", str(child_out)]
            command += ["--vocab", *map(str, args.vocab), "--batch", *map(str, args.batch)]
            command += ["--dtype", *args.dtype]
            if left is not None:
                command += ["--budget-s", str(left)]
            print(f"# path {path} (child process)", flush=True)
            code = subprocess.run(
                command, env={**os.environ, "TSDI_EXT_CUDA_PATH": path}
            ).returncode
            if child_out.exists():
                result["other_paths"][path] = json.loads(child_out.read_text())
            if code != 0:
                result["errors"].append({"what": f"path {path}", "error": f"exit status {code}"})
        save()
    result["complete"] = (
        not result["skipped"]
        and not result["errors"]
        and all(r.get("complete") for r in result["other_paths"].values())
        and len(result["other_paths"]) == len(args.paths) - 1
    )
    save()
    if result["skipped"]:
        print(f"budget reached: {len(result['skipped'])} rows not measured (listed in the JSON)")
    for t, m, met in targets(result["rows"], result["graph_b1_us"]):
        print(
            f"target: {t}: {m} -> {'met' if met else 'NOT met' if met is not None else 'not measured'}"
        )
    print(f"wrote {args.out}")
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
