"""CPU microbenchmark of the debiased sampling step (a benchmark, not a test).

Three groups of rows, one table:

dists    the sampled step (a [V] bias, temperature 0.8, top_p 0.9) on logits N(0, s^2) for s in
         --sigma (default 0.5 1 2 4 6) at every --batch x --vocab, and on real next-token logits
         of SmolLM2 (V = 49152) and Gemma-3 (V = 262144) at every --batch (see real_logits.py),
         each in every --dtype. Baseline: torch.softmax of the same logits (the exp-per-token
         floor any sampler pays). Peers: the pure-PyTorch reference (backend="torch"), the
         transformers path (bias subtraction, TemperatureLogitsWarper, TopPLogitsWarper, softmax,
         multinomial) and a vLLM-style native path (see vllm_style).
greedy   temperature 0 on N(0, 2^2) logits whose maximum is put at index 0, in the middle or last
         (the worst case for a first-index scan), B in {1, 8}. Baseline: torch.amax(dim=-1); peer:
         torch.argmax(dim=-1).
filters  N(0, 2^2) logits at V in {32000, 128256}, B in {1, 8}: top-k (k = 50) alone, min-p (0.05)
         alone, top-k + top-p, top-k + top-p + min-p, each against the top-p-only fused step
         (column "/top-p": the filters' own cost) and against torch.softmax; peers: the same three
         as above with the same filters (transformers: TopKLogitsWarper, MinPLogitsWarper).

Method. Each candidate is warmed up (which also grows the kernel's workspaces); then the fast
candidates of a row (the fused op, its baseline, and for filters every fused variant) are called in
alternation, one call each per round with the order rotated every round, for a time budget
(--budget seconds, at least 20 and at most 1000 rounds), so that load from elsewhere on the machine
hits all of them alike. Every time and ratio is the median over all calls; the column "(win)" is
the same ratio in the least disturbed of 5 consecutive windows of rounds, kept as secondary
information only. The slow peers (milliseconds to seconds per call) are timed the same way among
themselves, with one warm-up call and as few as one timed call where a call takes longer than the
budget (the JSON keeps the number of calls). With --peers subset (the default) they are timed at
every shape of N(0, 2^2), of the real logits and of the filter rows, and elsewhere only at B <= 8
(at B = 64 they take up to seconds per call; their speed hardly depends on the distribution);
--peers all times them everywhere, --peers none nowhere. GB/s: the logits' bytes over the fused
op's time. The last lines name the worst row of each group (largest fused/softmax, fused/amax,
filters/top-p-only), not the best, against the goals of docs/benchmarks.md.

Options for a subset: --only dists|greedy|filters (any of them), --sigma, --batch, --vocab,
--dtype, --real (models, or none), --quick (a smoke run: a few shapes, a short budget);
--compile also times torch.compile (dynamic shapes, one compilation per filter set) of the
transformers and vLLM-style peers at the filter rows (not in the default run: compiling with the
C++ compiler adds about a minute on 2 cores). A full run (make bench) writes
benchmarks/results/cpu_sampling.{json,txt,png}; a subset run writes only where --out says.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import tsdi_ext
from tsdi_ext.ops.params import row_args

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside this script (python -P omits it)
import real_logits  # noqa: E402
from _machine import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEMPERATURE, TOP_P, TOP_K, MIN_P, ALPHA = 0.8, 0.9, 50, 0.05, 1.0
GREEDY_SIGMA = FILTER_SIGMA = PEER_SIGMA = 2.0
FILTERS = {  # name: the filter arguments beside temperature; "top-p" is the ratio's denominator
    "top-p": {"top_p": TOP_P},
    "top-k": {"top_k": TOP_K},
    "min-p": {"min_p": MIN_P},
    "top-k+top-p": {"top_k": TOP_K, "top_p": TOP_P},
    "top-k+top-p+min-p": {"top_k": TOP_K, "top_p": TOP_P, "min_p": MIN_P},
}
GOALS = {  # docs/benchmarks.md
    "fused/softmax": 2.0,
    "fused/softmax at B = 1, V >= 128256": 1.5,
    "fused/amax": 1.5,
    "filters/top-p only at V = 128256, B = 8": 1.15,
}


# --- timing ------------------------------------------------------------------------------------


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def alternate(fns: dict, *, budget_s: float, min_rounds: int, max_rounds: int, warmup: int):
    """Times the callables of ``fns`` in alternation: each round calls every one once, in an order
    rotated by one each round. Returns the median over all calls of each (microseconds), the
    medians of the least disturbed of 5 consecutive windows of rounds (the one whose medians sum
    lowest), and the number of rounds."""
    names = list(fns)
    round_s = 0.0
    for _ in range(max(1, warmup)):
        start = time.perf_counter()
        for name in names:
            fns[name]()
        round_s = time.perf_counter() - start  # the last warm-up round sizes the run
    rounds = int(max(min_rounds, min(max_rounds, budget_s / max(round_s, 1e-9))))
    times = {name: [] for name in names}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    windows = max(1, min(5, rounds // 5))
    size = rounds // windows
    per_window = [
        {name: median(times[name][k * size : (k + 1) * size]) for name in names}
        for k in range(windows)
    ]
    quietest = min(per_window, key=lambda medians: sum(medians.values()))
    return {
        "us": {name: median(times[name]) * 1e6 for name in names},
        "window_us": {name: quietest[name] * 1e6 for name in names},
        "calls": rounds,
        "windows": windows,
    }


class Timer:
    """The budgets of one run: fast candidates get many calls, slow peers few."""

    def __init__(self, budget_s: float, peer_budget_s: float):
        self.budget_s, self.peer_budget_s = budget_s, peer_budget_s

    def fast(self, fns):
        return alternate(fns, budget_s=self.budget_s, min_rounds=20, max_rounds=1000, warmup=3)

    def slow(self, fns):
        return alternate(fns, budget_s=self.peer_budget_s, min_rounds=1, max_rounds=50, warmup=1)


# --- inputs ------------------------------------------------------------------------------------


def normal_logits(batch: int, vocab: int, sigma: float, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, vocab, generator=g) * sigma).to(dtype)


def greedy_logits(batch: int, vocab: int, where: str, dtype: torch.dtype) -> torch.Tensor:
    """N(0, 2^2) logits whose (unique) maximum is at index 0, vocab // 2 or vocab - 1."""
    logits = normal_logits(batch, vocab, GREEDY_SIGMA, torch.float32)
    index = {"first": 0, "middle": vocab // 2, "last": vocab - 1}[where]
    logits[:, index] = logits.amax() + 8.0  # well above any other, also after rounding to bf16
    return logits.to(dtype)


def real_model_logits(name: str, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """The first ``batch`` captured rows of model ``name`` (cycled past 64), in ``dtype``."""
    captured = real_logits.load(name)
    rows = torch.arange(batch) % captured.shape[0]
    return captured[rows].to(dtype).contiguous()


def bias_for(vocab: int) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(1)) * 0.5


# --- candidates --------------------------------------------------------------------------------


def sampled(backend, logits, bias, **filters):
    """The sampled step of every row on one backend: "cpu" (the fused op) or "torch" (the
    reference)."""
    return tsdi_ext.sample(
        logits,
        bias=bias,
        alpha=ALPHA,
        temperature=TEMPERATURE,
        seed=1,
        offset=0,
        backend=backend,
        **filters,
    )


def fused(logits, bias, **filters):
    return sampled("cpu", logits, bias, **filters)


def reference(logits, bias, **filters):
    return sampled("torch", logits, bias, **filters)


def hf_scores(logits, bias, top_p=1.0, top_k=0, min_p=0.0):
    """transformers' warper chain in its order (temperature, top-k, top-p, min-p), after the bias
    subtraction the fused op does: the filtered scores (-inf where masked)."""
    scores = logits.float() - ALPHA * bias
    input_ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)
    scores = TemperatureLogitsWarper(TEMPERATURE)(input_ids, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(input_ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(input_ids, scores)
    if min_p:
        scores = MinPLogitsWarper(min_p)(input_ids, scores)
    return scores


def hf_path(logits, bias, generator=None, **filters):
    """The transformers path: hf_scores, then softmax and multinomial."""
    scores = hf_scores(logits, bias, **filters)
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)


def vllm_scores(logits, bias, top_p=1.0, top_k=0, min_p=0.0):
    """The filtering the way vLLM's native PyTorch sampler does it (its order: temperature, min-p,
    then top-k and top-p): min-p on the softmax; for top-p one ascending sort of the row, the
    top-k cut at the k-th largest sorted value, the top-p cut on the cumulative softmax of the
    sorted row, the masked row scattered back; top-k alone by torch.topk, without a sort. Returns
    the filtered scores (-inf where masked). Per-row parameters here are scalars (vLLM's are [B]
    tensors: the same work)."""
    x = logits.float() - ALPHA * bias
    x.div_(TEMPERATURE)
    if min_p:
        probs = x.softmax(dim=-1)
        cut = probs.amax(dim=-1, keepdim=True) * min_p
        x.masked_fill_(probs < cut, float("-inf"))
    if top_p < 1.0:
        ordered, order = x.sort(dim=-1)
        if top_k:
            kth = ordered[:, -top_k:].narrow(1, 0, 1)
            ordered.masked_fill_(ordered < kth, float("-inf"))
        tail = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - top_p
        tail[:, -1] = False  # the largest is always kept
        ordered.masked_fill_(tail, float("-inf"))
        x.scatter_(-1, order, ordered)
    elif top_k:
        kth = x.topk(top_k, dim=-1).values[:, -1:]
        x.masked_fill_(x < kth, float("-inf"))
    return x


def vllm_style(logits, bias, generator=None, **filters):
    """The vLLM-style path: vllm_scores, then a draw by exponential noise, argmax(p / q) with
    q ~ Exp(1), which needs no normalised cumulative sum."""
    probs = vllm_scores(logits, bias, **filters).softmax(dim=-1)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return probs.div_(noise).argmax(dim=-1)


def peers(logits, bias, filters, compiled=None):
    generator = torch.Generator().manual_seed(0)
    fns = {
        "ref": lambda: reference(logits, bias, **filters),
        "hf": lambda: hf_path(logits, bias, generator, **filters),
        "vllm": lambda: vllm_style(logits, bias, generator, **filters),
    }
    for name, fn in (compiled or {}).items():
        fns[name] = lambda fn=fn: fn(logits, bias, **filters)
    return fns


# --- rows --------------------------------------------------------------------------------------


def base_row(group, case, logits, fused_us, base, base_us, window_ratio, calls):
    batch, vocab = logits.shape
    return {
        "group": group,
        "case": case,
        "dtype": str(logits.dtype).replace("torch.", ""),
        "batch": batch,
        "vocab": vocab,
        "fused_us": fused_us,
        "base": base,
        "base_us": base_us,
        "fused_over_base": fused_us / base_us,
        "fused_over_base_window": window_ratio,
        "fused_gbps": logits.numel() * logits.element_size() / 1e9 / (fused_us * 1e-6),
        "calls": calls,
    }


def add_peers(row, timer, logits, bias, filters, compiled=None):
    timed = timer.slow(peers(logits, bias, filters, compiled))
    row["peers"] = {
        name: {"us": us, "speedup": us / row["fused_us"]} for name, us in timed["us"].items()
    }
    row["peer_calls"] = timed["calls"]


def dist_row(timer, case, logits, with_peers):
    bias = bias_for(logits.shape[1])
    timed = timer.fast(
        {
            "fused": lambda: fused(logits, bias, top_p=TOP_P),
            "softmax": lambda: torch.softmax(logits, dim=-1),
        }
    )
    us, win = timed["us"], timed["window_us"]
    row = base_row(
        "dists",
        case,
        logits,
        us["fused"],
        "softmax",
        us["softmax"],
        win["fused"] / win["softmax"],
        timed["calls"],
    )
    if with_peers:
        add_peers(row, timer, logits, bias, {"top_p": TOP_P})
    return row


def greedy_row(timer, logits, where):
    timed = timer.fast(
        {
            "fused": lambda: tsdi_ext.sample(logits, temperature=0.0, backend="cpu"),
            "amax": lambda: torch.amax(logits, dim=-1),
            "argmax": lambda: torch.argmax(logits, dim=-1),
        }
    )
    us, win = timed["us"], timed["window_us"]
    row = base_row(
        "greedy",
        f"max {where}",
        logits,
        us["fused"],
        "amax",
        us["amax"],
        win["fused"] / win["amax"],
        timed["calls"],
    )
    row["peers"] = {"argmax": {"us": us["argmax"], "speedup": us["argmax"] / us["fused"]}}
    row["peer_calls"] = timed["calls"]
    return row


def filter_rows(timer, logits, compiled=None):
    """One alternation of softmax and every fused variant, then the peers of each variant."""
    bias = bias_for(logits.shape[1])
    fns = {"softmax": lambda: torch.softmax(logits, dim=-1)}
    for name, filters in FILTERS.items():
        fns[name] = lambda filters=filters: fused(logits, bias, **filters)
    timed = timer.fast(fns)
    us, win = timed["us"], timed["window_us"]
    rows = []
    for name, filters in FILTERS.items():
        row = base_row(
            "filters",
            name,
            logits,
            us[name],
            "softmax",
            us["softmax"],
            win[name] / win["softmax"],
            timed["calls"],
        )
        row["filters"] = filters
        row["top_p_only_us"] = us["top-p"]
        row["over_top_p_only"] = us[name] / us["top-p"]
        row["over_top_p_only_window"] = win[name] / win["top-p"]
        add_peers(row, timer, logits, bias, filters, compiled)
        rows.append(row)
    return rows


def compiled_peers():
    """torch.compile of the transformers and vLLM-style paths (dynamic shapes, the default RNG:
    a torch.Generator argument would break the graph)."""
    return {
        "hf compiled": torch.compile(hf_path, dynamic=True),
        "vllm compiled": torch.compile(vllm_style, dynamic=True),
    }


def host_overhead(timer):
    """Per-call cost on a tiny input, where the kernel's own work is negligible."""
    logits = torch.randn(1, 16)
    args = row_args(logits, False, {"top_p": 0.9})
    timed = alternate(
        {
            "front_end": lambda: tsdi_ext.sample(logits, top_p=0.9),
            "raw_op": lambda: torch.ops.tsdi_ext.sample.default(
                logits, None, None, args.tensors, args.floats, args.ints
            ),
            "softmax": lambda: torch.softmax(logits, dim=-1),
        },
        budget_s=timer.budget_s,
        min_rounds=100,
        max_rounds=5000,
        warmup=10,
    )
    return {
        "python_front_end_us": timed["us"]["front_end"],
        "raw_dispatcher_op_us": timed["us"]["raw_op"],
        "softmax_us": timed["us"]["softmax"],
    }


# --- output ------------------------------------------------------------------------------------

HEADER = (
    f"{'group':7s} {'case':17s} {'dtype':8s} {'B':>3s} {'V':>6s} {'fused us':>9s} "
    f"{'base':7s} {'base us':>9s} {'/base':>6s} {'(win)':>6s} {'GB/s':>5s} {'/top-p':>6s}  "
    "peers: us (fused speed-up) [calls]"
)


def format_row(r) -> str:
    top_p = f"{r['over_top_p_only']:6.2f}" if "over_top_p_only" in r else f"{'':6s}"
    peer_text = ", ".join(
        f"{name} {p['us']:.0f} ({p['speedup']:.1f}x)" for name, p in r.get("peers", {}).items()
    )
    if peer_text and r["group"] != "greedy":
        peer_text += f" [{r['peer_calls']}]"
    return (
        f"{r['group']:7s} {r['case']:17s} {r['dtype']:8s} {r['batch']:3d} {r['vocab']:6d} "
        f"{r['fused_us']:9.1f} {r['base']:7s} {r['base_us']:9.1f} {r['fused_over_base']:6.2f} "
        f"{r['fused_over_base_window']:6.2f} {r['fused_gbps']:5.1f} {top_p}  {peer_text or '-'}"
    )


def describe(r) -> str:
    return f"{r['group']} {r['case']} {r['dtype']} B={r['batch']} V={r['vocab']}"


def summary(rows) -> list[str]:
    """The worst row of each group against its goal."""
    lines = []

    def worst(label, candidates, key, goal):
        if not candidates:
            return
        r = max(candidates, key=lambda r: r[key])
        verdict = (
            "" if goal is None else f"goal <= {goal}: {'meets' if r[key] <= goal else 'misses'}; "
        )
        lines.append(
            f"worst {label}: {r[key]:.2f} ({describe(r)}; {verdict}{len(candidates)} rows)"
        )

    dists = [r for r in rows if r["group"] == "dists"]
    filters = [r for r in rows if r["group"] == "filters" and r["case"] != "top-p"]
    worst("fused/softmax", dists, "fused_over_base", GOALS["fused/softmax"])
    key = "fused/softmax at B = 1, V >= 128256"
    worst(
        key,
        [r for r in dists if r["batch"] == 1 and r["vocab"] >= 128256],
        "fused_over_base",
        GOALS[key],
    )
    worst(
        "fused/amax",
        [r for r in rows if r["group"] == "greedy"],
        "fused_over_base",
        GOALS["fused/amax"],
    )
    key = "filters/top-p only at V = 128256, B = 8"
    worst(
        key,
        [r for r in filters if r["vocab"] == 128256 and r["batch"] == 8],
        "over_top_p_only",
        GOALS[key],
    )
    worst("filters/top-p only", filters, "over_top_p_only", None)
    # Where the top-p-only step is within 2x softmax, the filtered one should be too.
    worst(
        "filters fused/softmax where top-p alone is within 2x",
        [r for r in filters if r["top_p_only_us"] / r["base_us"] <= GOALS["fused/softmax"]],
        "fused_over_base",
        GOALS["fused/softmax"],
    )
    return lines


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("dists", "fused / torch.softmax", [(2.0, "goal 2x"), (1.5, "goal 1.5x at B=1, V>=128k")]),
        ("greedy", "fused greedy / torch.amax", [(1.5, "goal 1.5x")]),
        ("filters", "fused / top-p-only fused step", [(1.15, "goal 1.15x at V=128k, B=8")]),
    ]
    groups = [g for g in groups if any(r["group"] == g[0] for r in rows)]
    width = max(14, 0.12 * max(sum(r["group"] == g[0] for r in rows) for g in groups))
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, 4 * len(groups)), squeeze=False)
    for ax, (group, ylabel, lines) in zip(axes[:, 0], groups, strict=True):
        picked = [r for r in rows if r["group"] == group]
        key = "over_top_p_only" if group == "filters" else "fused_over_base"
        ax.bar(range(len(picked)), [r[key] for r in picked], color="tab:orange")
        for y, label in lines:
            ax.axhline(y, color="red", ls="--", lw=1, label=label)
        labels = [
            f"{r['case']}/{r['dtype'][:4]} B{r['batch']} V{r['vocab'] // 1000}k" for r in picked
        ]
        ax.set_xticks(range(len(picked)), labels, fontsize=5, rotation=90)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("tsdi_ext fused CPU sampling step: median over all alternated calls")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --- main --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=["dists", "greedy", "filters"])
    parser.add_argument("--quick", action="store_true", help="smoke run: few shapes, short budget")
    parser.add_argument("--sigma", type=float, nargs="+", help="default 0.5 1 2 4 6")
    parser.add_argument(
        "--vocab", type=int, nargs="+", help="synthetic dists; default 32000 128256 262144"
    )
    parser.add_argument("--batch", type=int, nargs="+", help="dists; default 1 8 64")
    parser.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--real", nargs="+", help=f"any of {' '.join(real_logits.MODELS)}, or none")
    parser.add_argument("--peers", choices=["subset", "all", "none"], default="subset")
    parser.add_argument("--compile", action="store_true", help="also torch.compile'd peers")
    parser.add_argument("--budget", type=float, help="seconds per row for the fast candidates")
    parser.add_argument("--out", type=Path, help="JSON path (.txt, .png beside it)")
    args = parser.parse_args(argv)

    quick = args.quick
    groups = args.only or ["dists", "greedy", "filters"]
    sigmas = args.sigma or ([0.5, 6.0] if quick else [0.5, 1.0, 2.0, 4.0, 6.0])
    vocabs = args.vocab or ([32000] if quick else [32000, 128256, 262144])
    batches = args.batch or ([1, 8] if quick else [1, 8, 64])
    dtypes = [getattr(torch, d) for d in args.dtype or ["float32", "bfloat16"]]
    models = args.real or (["smollm2"] if quick else list(real_logits.MODELS))
    models = [] if models == ["none"] else models
    unknown = sorted(set(models) - set(real_logits.MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {real_logits.MODELS} or none")
    greedy_vocabs = [32000] if quick else [32000, 128256, 262144]
    greedy_batches = [1] if quick else [1, 8]
    filter_vocabs = [32000] if quick else [32000, 128256]
    filter_batches = [1] if quick else [1, 8]
    budget = args.budget or (0.1 if quick else 1.0)
    timer = Timer(budget, peer_budget_s=budget)
    full = not (
        quick
        or args.only
        or args.sigma
        or args.vocab
        or args.batch
        or args.dtype
        or args.real
        or args.peers != "subset"
    )
    out = args.out or (RESULTS / "cpu_sampling.json" if full else None)

    def with_peers(sigma, batch):
        return args.peers == "all" or (
            args.peers == "subset" and (sigma is None or sigma == PEER_SIGMA or batch <= 8)
        )

    machine = {
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "tsdi_ext": tsdi_ext.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    method = {
        "params": {
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "top_k": TOP_K,
            "min_p": MIN_P,
            "alpha": ALPHA,
            "bias": "[V] N(0, 0.5^2)",
            "greedy": "temperature 0, no bias",
        },
        "timing": "warm-up, then the fast candidates of a row in alternation (one call each per "
        "round, order rotated every round) for budget_s; times and ratios are medians over all "
        "calls; *_window: the least disturbed of 5 consecutive windows (secondary); slow peers "
        "alternated among themselves with 1 warm-up call and >= 1 timed call",
        "budget_s": budget,
        "peers": args.peers,
        "quick": quick,
    }
    lines = []

    def emit(text=""):
        lines.append(text)
        print(text, flush=True)

    emit(
        f"# {machine['cpu']} | {machine['torch_threads']} torch threads of "
        f"{machine['logical_cpus']} logical CPUs | torch {machine['torch']} | "
        f"tsdi_ext {machine['tsdi_ext']}"
    )
    emit(
        f"# medians over all calls, alternated call by call (budget {budget} s a row); (win): the "
        "least disturbed of 5 windows; base: softmax, or amax for greedy; /top-p: over the "
        "top-p-only fused step"
    )
    if args.peers == "subset":
        emit(
            f"# peers (ref: backend='torch', hf: transformers warpers, vllm: vLLM-style sort and "
            f"exponential noise) at every shape of N(0, {PEER_SIGMA:g}^2), the real logits and "
            "the filter rows; elsewhere at B <= 8 only; [n]: calls per peer"
        )
    emit(HEADER)
    rows = []

    def add(r):
        rows.append(r)
        emit(format_row(r))

    if "dists" in groups:
        for dtype in dtypes:
            for sigma in sigmas:
                for vocab in vocabs:
                    for batch in batches:
                        logits = normal_logits(batch, vocab, sigma, dtype)
                        r = dist_row(timer, f"N(0,{sigma:g}^2)", logits, with_peers(sigma, batch))
                        r["sigma"] = sigma
                        add(r)
            for model in models:
                for batch in batches:
                    logits = real_model_logits(model, batch, dtype)
                    r = dist_row(timer, f"real {model}", logits, with_peers(None, batch))
                    r["model"] = model
                    add(r)
    if "greedy" in groups:
        for dtype in dtypes:
            for vocab in greedy_vocabs:
                for batch in greedy_batches:
                    for where in ("first", "middle", "last"):
                        add(greedy_row(timer, greedy_logits(batch, vocab, where, dtype), where))
    if "filters" in groups:
        compiled = compiled_peers() if args.compile else None
        for dtype in dtypes:
            for vocab in filter_vocabs:
                for batch in filter_batches:
                    logits = normal_logits(batch, vocab, FILTER_SIGMA, dtype)
                    for r in filter_rows(timer, logits, compiled):
                        r["sigma"] = FILTER_SIGMA
                        add(r)

    overhead = host_overhead(timer)
    emit(
        f"host overhead per call (B=1, V=16): front end {overhead['python_front_end_us']:.2f} us, "
        f"raw dispatcher op {overhead['raw_dispatcher_op_us']:.2f} us, "
        f"softmax {overhead['softmax_us']:.2f} us"
    )
    for line in summary(rows):
        emit(line)
    if out is None:
        print("(a subset run: nothing written; --out PATH writes the JSON, .txt and .png)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": machine,
                "method": method,
                "goals": GOALS,
                "host_overhead": overhead,
                "summary": summary(rows),
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and its .txt and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
