"""The ``tsdi`` command line."""

from __future__ import annotations

import argparse
import time

import torch

from . import __version__
from .sampling import sample, sampling_probs


def _median_us(fn, repeats: int = 50) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e6


def demo(args: argparse.Namespace) -> int:
    """Shows the debiased sampling step on synthetic logits: what the bias does and what it costs."""
    torch.manual_seed(args.seed)
    batch, vocab, table_rows = args.batch, args.vocab, 4
    logits = torch.randn(batch, vocab) * 3
    # A "refusal" preference like the one TSDI estimates: token 7 favoured at the first positions.
    bias = torch.zeros(table_rows, vocab)
    bias[:, 7] = 6.0
    logits[:, 7] = logits.max(dim=1).values + 4.0
    positions = torch.arange(batch) % (table_rows + 2)  # rows at positions >= 4 get no bias
    print(f"tsdi_ext {__version__} | torch {torch.__version__} | logits [{batch}, {vocab}]")
    print(f"bias table [{table_rows}, {vocab}]: token 7 pushed up by 6.0; positions {positions.tolist()}")
    for alpha in (0.0, 1.0):
        probs = sampling_probs(logits, bias=bias, positions=positions, alpha=alpha, top_p=0.9)
        tokens, valid = sample(
            logits, bias=bias, positions=positions, alpha=alpha, top_p=0.9, seed=args.seed,
            offset=torch.arange(batch),
        )
        print(
            f"alpha={alpha}: P(token 7) per row = {[round(p, 3) for p in probs[:, 7].tolist()]}\n"
            f"           tokens = {tokens.tolist()} valid = {valid.all().item()}"
        )
    for backend in ("torch", "cpu"):
        us = _median_us(
            lambda: sample(logits, bias=bias, positions=positions, top_p=0.9, backend=backend)
        )
        print(f"backend={backend:5s}: {us:9.1f} us per call")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsdi", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tsdi_ext {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="show the fused debiased sampling op")
    demo_parser.add_argument("--batch", type=int, default=6)
    demo_parser.add_argument("--vocab", type=int, default=32000)
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.set_defaults(handler=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
