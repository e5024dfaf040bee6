"""CUDA microbenchmark of the fused sampling kernel (a benchmark, not a test; needs a GPU).

For V in {32000, 128256, 151936, 262144}, B in {1, 8, 32, 64, 128, 256}, float32 and bfloat16:
median µs per call (CUDA events, warm-up, inputs rotated over a pool larger than L2) of the fused
kernel, the pure-PyTorch path, the Hugging Face path (bias subtraction + TemperatureLogitsWarper +
TopPLogitsWarper + softmax + multinomial), and the memory floor: the bytes of logits read once
over the device-to-device copy bandwidth measured in the same run. Also the CUDA-graph-replayed
time at B=1, V=128256. Prints one table, writes benchmarks/results/cuda_sampling.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
from pathlib import Path

import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

import tsdi_ext

RESULTS = Path(__file__).resolve().parent / "results"
L2_ROTATION_BYTES = 256 * 2**20  # rotate inputs over >= 256 MiB so L2 (50 MiB on H100) is cold


def cuda_median_us(fn, pool_size: int, repeats: int = 50) -> float:
    for i in range(5):
        fn(i % pool_size)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for i in range(repeats):
        starts[i].record()
        fn(i % pool_size)
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))
    return times[len(times) // 2]


def copy_bandwidth_gbps() -> float:
    src = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = cuda_median_us(lambda _: dst.copy_(src), 1, repeats=20)
    return 2 * src.numel() / (us * 1e-6) / 1e9  # read + write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256, 151936, 262144])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=RESULTS / "cuda_sampling.json")
    args = parser.parse_args(argv)

    props = torch.cuda.get_device_properties(0)
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    bandwidth = copy_bandwidth_gbps()
    machine = {"gpu": props.name, "driver": driver, "torch": torch.__version__, "cuda": torch.version.cuda,
               "tsdi_ext": tsdi_ext.__version__, "d2d_copy_gbps": bandwidth,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    print(f"# {props.name} | driver {driver} | torch {torch.__version__} CUDA {torch.version.cuda} | "
          f"d2d copy {bandwidth:.0f} GB/s")
    print(f"{'dtype':8s} {'B':>4s} {'V':>7s} {'fused us':>9s} {'torch us':>9s} {'hf us':>9s} {'floor us':>9s} "
          f"{'x torch':>8s} {'x hf':>7s} {'/floor':>7s} {'GB/s':>7s}")
    rows = []
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        for vocab in args.vocab:
            bias = torch.randn(8, vocab, device="cuda") * 0.5
            for batch in args.batch:
                nbytes = batch * vocab * dtype.itemsize
                pool = [torch.randn(batch, vocab, device="cuda").to(dtype) * 3
                        for _ in range(max(2, min(64, L2_ROTATION_BYTES // max(nbytes, 1))))]
                positions = torch.arange(batch, device="cuda") % 10
                seeds = torch.arange(batch, device="cuda")
                kw = dict(bias=bias, positions=positions, alpha=1.0, temperature=0.8, top_p=0.9, seed=seeds, offset=seeds)
                fused = cuda_median_us(lambda i: tsdi_ext.sample(pool[i], **kw), len(pool))
                reps = 5 if batch * vocab > 8_000_000 else 20
                ref = cuda_median_us(lambda i: tsdi_ext.sample(pool[i], backend="torch", **kw), len(pool), reps)
                ids = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
                warpers = [TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.9)]

                def hf(i):
                    scores = pool[i].float() - bias[positions.clamp(max=7)]
                    for w in warpers:
                        scores = w(ids, scores)
                    return torch.multinomial(torch.softmax(scores, -1), 1)

                hf_us = cuda_median_us(hf, len(pool), reps)
                floor = nbytes / (bandwidth * 1e9 / 2) * 1e6  # one read at half the read+write copy rate
                row = {"dtype": dtype_name, "batch": batch, "vocab": vocab, "fused_us": fused, "torch_us": ref,
                       "hf_us": hf_us, "floor_us": floor, "fused_gbps": nbytes / (fused * 1e-6) / 1e9}
                rows.append(row)
                print(f"{dtype_name:8s} {batch:4d} {vocab:7d} {fused:9.1f} {ref:9.1f} {hf_us:9.1f} {floor:9.1f} "
                      f"{ref / fused:8.1f} {hf_us / fused:7.1f} {fused / floor:7.2f} {row['fused_gbps']:7.0f}", flush=True)
    # B=1, V=128256 replayed from a CUDA graph (the per-token latency a decoding loop sees).
    logits = torch.randn(1, 128256, device="cuda") * 3
    offset = torch.zeros(1, dtype=torch.int64, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, offset=offset)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(100):
            tsdi_ext.sample(logits, temperature=0.8, top_p=0.9, offset=offset)
    graph_us = cuda_median_us(lambda _: graph.replay(), 1, 20) / 100
    print(f"graph-replayed B=1 V=128256 fp32: {graph_us:.2f} us per call")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows, "graph_b1_v128256_us": graph_us}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
