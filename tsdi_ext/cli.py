"""The ``tsdi`` command line (also ``python -m tsdi_ext``).

tsdi demo       the main job: SmolLM2, bias estimation, inspection, side-by-side generation
tsdi estimate   estimate a bias table and write it (safetensors)
tsdi generate   generate completions, optionally with and without debiasing side by side
tsdi inspect    the tokens a bias table pushes down / up most at each position
tsdi sweep      refusal / compliance rates over a grid of alpha and L, table and Pareto plot
tsdi rescore    rebuild a sweep's table and plot from its responses, optionally with another scorer
tsdi info       versions, compiled backends, GPU, whether the build matches the running torch
tsdi op-demo    the fused sampling op on synthetic logits
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import __version__

DEMO_PROMPTS = [
    "How do I kill a Python process that is stuck?",
    "Write one sentence about the history of the Roman army.",
    "What happens in the body during a caffeine overdose?",
]


def _median_us(fn, repeats: int = 50) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e6


def op_demo(args: argparse.Namespace) -> int:
    """Shows the debiased sampling step on synthetic logits: what the bias does and what it costs."""
    from .ops import sample, sampling_probs

    torch.manual_seed(args.seed)
    batch, vocab, table_rows = args.batch, args.vocab, 4
    logits = torch.randn(batch, vocab) * 3
    # A "refusal" preference like the one TSDI estimates: token 7 favoured at the first positions.
    bias = torch.zeros(table_rows, vocab)
    bias[:, 7] = 6.0
    logits[:, 7] = logits.max(dim=1).values + 4.0
    positions = torch.arange(batch) % (table_rows + 2)  # rows at positions >= 4 get no bias
    print(f"tsdi_ext {__version__} | torch {torch.__version__} | logits [{batch}, {vocab}]")
    print(
        f"bias table [{table_rows}, {vocab}]: token 7 pushed up by 6.0; positions {positions.tolist()}"
    )
    for alpha in (0.0, 1.0):
        probs = sampling_probs(logits, bias=bias, positions=positions, alpha=alpha, top_p=0.9)
        tokens, valid = sample(
            logits,
            bias=bias,
            positions=positions,
            alpha=alpha,
            top_p=0.9,
            seed=args.seed,
            offset=torch.arange(batch),
        )
        print(
            f"alpha={alpha}: P(token 7) per row = {[round(p, 3) for p in probs[:, 7].tolist()]}\n"
            f"           tokens = {tokens.tolist()} valid = {valid.all().item()}"
        )
    for backend in ("torch", "cpu"):
        us = _median_us(
            lambda backend=backend: sample(
                logits, bias=bias, positions=positions, top_p=0.9, backend=backend
            )
        )
        print(f"backend={backend:5s}: {us:9.1f} us per call")
    return 0


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [
            line.strip()
            for line in Path(args.prompts_file).read_text().splitlines()
            if line.strip()
        ]
    if not prompts:
        raise SystemExit("tsdi: give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def _side_by_side(model, tokenizer, prompts, table, args) -> None:
    from .generation import generate

    settings = dict(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    plain = (
        generate(model, tokenizer, prompts, **settings).texts
        if args.compare or table is None
        else None
    )
    debiased = (
        generate(model, tokenizer, prompts, bias=table, alpha=args.alpha, **settings).texts
        if table
        else None
    )
    for i, prompt in enumerate(prompts):
        print(f"\n### {prompt}")
        if plain is not None:
            print(f"[plain]            {plain[i]}")
        if debiased is not None:
            print(f"[TSDI alpha={args.alpha}] {debiased[i]}")


def estimate(args: argparse.Namespace) -> int:
    from .bias import estimate_bias
    from .models import load_model

    aligned, tokenizer = load_model(args.aligned)
    reference = None if args.reference is None else load_model(args.reference)[0]
    table = estimate_bias(
        aligned,
        reference,
        tokenizer,
        num_prompts=args.num_prompts,
        prompt_length=args.prompt_length,
        length=args.length,
        batch_size=args.batch_size,
        pool=args.pool,
        chat_template=not args.no_chat_template,
        score=args.score,
        seed=args.seed,
        aligned_name=args.aligned,
        reference_name=args.reference,
    )
    table.save(args.out)
    print(
        f"wrote {args.out}: bias [{table.length}, {table.vocab_size}] ({table.metadata['variant']})"
    )
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    from .bias import BiasTable, format_inspection
    from .models import load_model

    _, tokenizer = load_model(args.model)
    table = BiasTable.load(args.bias, tokenizer=tokenizer)
    print(format_inspection(table, tokenizer, args.positions, args.top))
    return 0


def generate_command(args: argparse.Namespace) -> int:
    from .bias import BiasTable
    from .models import load_model

    model, tokenizer = load_model(args.model)
    table = None
    if args.bias:
        table = BiasTable.load(
            args.bias, tokenizer=tokenizer, vocab_size=model.get_output_embeddings().weight.shape[0]
        )
    _side_by_side(model, tokenizer, _read_prompts(args), table, args)
    return 0


def demo(args: argparse.Namespace) -> int:
    """The main job: TSDI on SmolLM2-135M-Instruct, end to end, in about a minute on 2 CPU cores."""
    from .bias import estimate_bias, format_inspection
    from .models import load_model

    start = time.perf_counter()
    model, tokenizer = load_model("smollm2")
    print(
        f"tsdi_ext {__version__} | torch {torch.__version__} | SmolLM2-135M-Instruct loaded in "
        f"{time.perf_counter() - start:.1f} s"
    )
    # Only one model ships offline, so the demo uses the reference-free variant (centred
    # log-probabilities of the model itself); `tsdi estimate --reference` runs the paper's
    # aligned-minus-reference estimate.
    start = time.perf_counter()
    table = estimate_bias(
        model,
        None,
        tokenizer,
        num_prompts=args.num_prompts,
        length=args.length,
        seed=args.seed,
        aligned_name="smollm2",
    )
    print(
        f"estimated a reference-free bias [{table.length}, {table.vocab_size}] from "
        f"{args.num_prompts} random prompts in {time.perf_counter() - start:.1f} s"
    )
    print(format_inspection(table, tokenizer, positions=3, top=6))
    _side_by_side(model, tokenizer, DEMO_PROMPTS, table, args)
    return 0


def comma_separated(text: str, convert):
    """``[convert(x), ...]`` for ``"x,y,..."`` (empty items ignored): the --alphas / --lengths lists."""
    return [convert(x) for x in text.split(",") if x.strip()]


def sweep_command(args: argparse.Namespace) -> int:
    from .bias import BiasTable
    from .eval import (
        evaluation_sets,
        format_rows,
        load_scorer,
        plot_pareto,
        run_sweep,
        sweep_configs,
        write_table,
    )
    from .models import load_model

    aligned, tokenizer = load_model(args.aligned)
    models = {"aligned": (aligned, tokenizer)}
    if args.reference:
        models["reference"] = load_model(args.reference)
    table = BiasTable.load(
        args.bias, tokenizer=tokenizer, vocab_size=aligned.get_output_embeddings().weight.shape[0]
    )
    if args.push_down_only:
        # Only lower the tokens the aligned model prefers; never raise the ones it disfavours.
        table = BiasTable(table.bias.clamp(min=0.0), {**table.metadata, "push_down_only": True})
    configs = sweep_configs(
        comma_separated(args.alphas, float),
        comma_separated(args.lengths, int),
        include_reference=bool(args.reference),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_sweep(
        models,
        table,
        configs,
        evaluation_sets(args.harmful_per_set or None, seed=args.seed),
        scorer=load_scorer(args.scorer),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        responses_path=out / "responses.jsonl",
        fluency=models.get("reference"),
    )
    write_table(rows, out)
    plot_pareto(rows, out / "pareto.png")
    print(format_rows(rows))
    print(f"wrote {out}/sweep.csv, sweep.json, pareto.png, responses.jsonl")
    return 0


def rescore_command(args: argparse.Namespace) -> int:
    from .eval import format_rows, load_scorer, rescore

    fluency = None
    if args.fluency_model:
        from .models import load_model

        fluency = load_model(args.fluency_model)
    rows = rescore(
        args.directory, load_scorer(args.scorer) if args.scorer else None, fluency=fluency
    )
    print(format_rows(rows))
    return 0


def add_rescore_options(parser: argparse.ArgumentParser) -> None:
    """The judging options of ``tsdi rescore`` (shared with the experiments' rescore)."""
    parser.add_argument(
        "--scorer",
        default=None,
        help="judge the stored responses again: 'pattern' or 'package.module:callable' (default: keep verdicts)",
    )
    parser.add_argument(
        "--fluency-model",
        default=None,
        help="recompute the benign answers' NLL under this model (e.g. 'smollm2')",
    )


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alphas", default="0.25,0.5,1,2", help="comma-separated TSDI strengths")
    parser.add_argument("--lengths", default="1,8", help="comma-separated L (bias rows used)")
    parser.add_argument(
        "--harmful-per-set",
        type=int,
        default=200,
        help="seeded sample of HarmBench and of Do-Not-Answer (0: all)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--scorer", default="pattern", help="'pattern' or 'package.module:callable'"
    )


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=float, default=1.0, help="debiasing strength (default 1.0)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsdi", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tsdi_ext {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("demo", help="TSDI on SmolLM2 end to end (the main job)")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--length", type=int, default=4)
    p.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also print the completion without debiasing",
    )
    _add_generation_options(p)
    p.set_defaults(alpha=0.5, max_new_tokens=40)
    p.set_defaults(handler=demo)

    p = commands.add_parser("estimate", help="estimate a TSDI bias table")
    p.add_argument("--aligned", default="smollm2", help="aligned model: 'smollm2' or a directory")
    p.add_argument(
        "--reference", default=None, help="reference model; omit for the reference-free variant"
    )
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--length", type=int, default=8, help="L, response positions covered")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--pool", default="corpus", help="'corpus' (shipped text), 'vocab', or a text file"
    )
    p.add_argument("--score", choices=["logprob", "prob"], default="logprob")
    p.add_argument("--no-chat-template", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=estimate)

    p = commands.add_parser("generate", help="generate completions")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--bias", help="bias file from 'tsdi estimate'")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help="one prompt per line")
    p.add_argument(
        "--compare", action="store_true", help="also print the completion without debiasing"
    )
    _add_generation_options(p)
    p.set_defaults(handler=generate_command)

    p = commands.add_parser("inspect", help="top tokens pushed down / up by a bias table")
    p.add_argument("bias")
    p.add_argument("--model", default="smollm2", help="model whose tokenizer decodes the tokens")
    p.add_argument("--positions", type=int, default=4)
    p.add_argument("--top", type=int, default=10)
    p.set_defaults(handler=inspect_command)

    p = commands.add_parser("sweep", help="refusal/compliance over a grid of alpha and L")
    p.add_argument(
        "--aligned", required=True, help="aligned model directory (e.g. from 'tsdi realign')"
    )
    p.add_argument(
        "--reference", default="smollm2", help="reference model, evaluated too ('' to skip)"
    )
    p.add_argument(
        "--bias", required=True, help="bias file from 'tsdi estimate' (L rows >= the largest L)"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--push-down-only",
        action="store_true",
        help="clip the bias at 0: lower the tokens the aligned model prefers, raise none",
    )
    add_sweep_options(p)
    p.set_defaults(handler=sweep_command)

    p = commands.add_parser("rescore", help="rebuild a sweep's table/plot from responses.jsonl")
    p.add_argument("directory", help="output directory of 'tsdi sweep'")
    add_rescore_options(p)
    p.set_defaults(handler=rescore_command)

    p = commands.add_parser("info", help="versions, compiled backends, GPU, build/torch match")
    p.set_defaults(handler=lambda args: __import__("tsdi_ext.info", fromlist=["main"]).main())

    p = commands.add_parser("op-demo", help="the fused sampling op on synthetic logits")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=op_demo)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parses ``argv`` and runs the chosen command's handler (shared with the experiments' CLIs)."""
    args = parser.parse_args(argv)
    try:  # transformers' per-tensor loading bars drown the CLI's own output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    return args.handler(args)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
