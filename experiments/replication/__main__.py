"""Command line of the replication: ``PYTHONPATH=experiments python -m replication ...``.

realign    safety-realign SmolLM2 (LoRA SFT; cached): the aligned model of the replication
replicate  the whole replication: realign, estimate, inspect, sweep (make replicate)
rescore    rebuild a replication's table, plot and summary from its responses
judge      train and cross-validate the safety judge, check it against the hand labels
judged     judged safety per harm category of a sweep's stored answers (results/judged/)
premise    the premise diagnostic on the replication's SFT model (results/premise/)
export-adapter  the aligned model's LoRA adapter into the package (tsdi_ext's "smollm2-aligned")
study      the faithful test: SFT and DPO models, their fronts, TSDI in both bias scales,
           SafePatching and three more baselines, judged; cached per stage (--reduced: smaller)
"""

from __future__ import annotations

import argparse
import json
import sys

from tsdi_ext.cli import add_rescore_options, add_sweep_options, comma_separated, run

from .realign import RealignSettings, realign
from .replicate import RESULTS, check_results_directory, replicate, rescore_replication


def _realign_settings(args) -> RealignSettings:
    return RealignSettings(
        harmful_examples=args.harmful_examples,
        benign_examples=args.benign_examples,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        lora_rank=args.lora_rank,
        seed=args.seed,
    )


def realign_command(args: argparse.Namespace) -> int:
    path = realign(
        args.base, _realign_settings(args), output=args.out, device=args.device, force=args.force
    )
    print(f"aligned model: {path}")
    return 0


def replicate_command(args: argparse.Namespace) -> int:
    from tsdi_ext.eval import format_rows

    rows = replicate(
        args.out,
        realign_settings=_realign_settings(args),
        alphas=comma_separated(args.alphas, float),
        lengths=comma_separated(args.lengths, int),
        harmful_per_set=args.harmful_per_set or None,
        bias_prompts=args.bias_prompts,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        scorer=args.scorer,
        force=args.force,
    )
    print(format_rows(rows))
    print((check_results_directory(args.out, force=True) / "summary.md").read_text())
    return 0


def rescore_command(args: argparse.Namespace) -> int:
    from tsdi_ext.eval import format_rows, load_scorer
    from tsdi_ext.models import load_model

    fluency = load_model(args.fluency_model) if args.fluency_model else None
    rows = rescore_replication(
        args.directory, load_scorer(args.scorer) if args.scorer else None, fluency=fluency
    )
    print(format_rows(rows))
    return 0


def judge_command(args: argparse.Namespace) -> int:
    from tsdi_ext.eval.judge import SafetyJudge

    from .judge_training import WEIGHTS, hand_label_check, train_judge

    if not args.check_only:
        record = train_judge(seed=args.seed)
        cv = record["cross_validation"]
        print(
            f"judge: {record['examples']} labelled answers, grouped {cv['folds']}-fold CV: "
            f"AUC {cv['best']['auc']:.3f}, accuracy {cv['best']['accuracy']:.3f} "
            f"(best grid point); weights: {WEIGHTS}"
        )
    check = hand_label_check(SafetyJudge(weights=WEIGHTS))
    print(
        f"hand labels: {check['n']} answers, judge agrees on {check['judge_agreement']:.3f}, "
        f"the pattern refusal detector on {check['pattern_refusal_agreement']:.3f}"
    )
    return 0


def judged_command(args: argparse.Namespace) -> int:
    from .judged import format_judged, write_judged

    print(format_judged(write_judged(args.directory)))
    return 0


# The reduced configuration, for a machine that cannot give the full one its ~75 minutes: one
# front point per model, fewer prompts and alphas. Its outputs say "reduced".
REDUCED = {
    "harmful_per_set": 50,
    "scales": (0.5,),
    "alphas_logprob": (0.25, 0.5),
    "alphas_prob": (2.0,),
    "bias_prompts": 128,
    "reduced": True,
}


def study_command(args: argparse.Namespace) -> int:
    from .study import StudySettings, run_study

    overrides = {
        k: v
        for k, v in (
            ("harmful_per_set", args.harmful_per_set),
            ("batch_size", args.batch_size),
            ("max_new_tokens", args.max_new_tokens),
        )
        if v is not None
    }
    settings = StudySettings(**{**(REDUCED if args.reduced else {}), **overrides}, seed=args.seed)
    run_study(args.out, settings)
    print((args.out / "study.md").read_text())
    return 0


def export_adapter_command(args: argparse.Namespace) -> int:
    from .export import export_adapter

    out = export_adapter(args.model, args.out)
    print(
        f"wrote {out}: {json.loads((out / 'provenance.json').read_text())['parameters']} parameters"
    )
    return 0


def premise_command(args: argparse.Namespace) -> int:
    from tsdi_ext.bias import estimate_bias
    from tsdi_ext.eval import evaluation_sets
    from tsdi_ext.models import SMOLLM2, load_model

    from .premise import premise_diagnostic, refusal_opening_ids
    from .realign import RealignSettings, realign, refusal_responses
    from .study import _random_text_prompts

    reference, tokenizer = load_model(SMOLLM2)
    aligned, _ = load_model(str(realign(SMOLLM2, RealignSettings())))
    table = estimate_bias(aligned, reference, tokenizer, num_prompts=256, length=1, seed=0)
    harmful = [p for s in evaluation_sets(200, seed=0) if s.kind == "harmful" for p in s.prompts]
    # Over-refused: the benign prompts the aligned model refused in the committed sweep.
    records = [json.loads(line) for line in (RESULTS / "responses.jsonl").open()]
    over = [
        r["prompt"]
        for r in records
        if r["config"] == "aligned" and r["kind"] == "benign" and r["refusal"]
    ]
    result = premise_diagnostic(
        {"reference": reference, "aligned": aligned},
        tokenizer,
        {"harmful": harmful, "over-refused benign": over},
        reference="reference",
        opening_ids=refusal_opening_ids(tokenizer, refusal_responses()),
        random_prompts=_random_text_prompts(64, 0),
        biases={"aligned": table.bias},
        alphas=(0.25, 0.5, 1.0, 2.0),
    )
    # Is this the model the committed sweep answered with? (Training is seeded; this checks it.)
    from tsdi_ext.generation import generate

    sample = [r for r in records if r["config"] == "aligned"][::40]
    again = generate(aligned, tokenizer, [r["prompt"] for r in sample], max_new_tokens=40).texts
    result["same_answers_as_committed_sweep"] = {
        "checked": len(sample),
        "identical": sum(a.strip() == r["response"].strip() for a, r in zip(again, sample)),
    }
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "premise.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


def _add_realign_options(parser: argparse.ArgumentParser) -> None:
    d = RealignSettings()
    parser.add_argument(
        "--harmful-examples",
        type=int,
        default=d.harmful_examples,
        help="AdvBench prompts trained to refuse",
    )
    parser.add_argument(
        "--benign-examples", type=int, default=d.benign_examples, help="benign prompts kept helpful"
    )
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--lora-rank", type=int, default=d.lora_rank)
    parser.add_argument("--seed", type=int, default=d.seed)


def build_parser() -> argparse.ArgumentParser:
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m replication",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("realign", help="safety-realign SmolLM2 with LoRA SFT (cached)")
    p.add_argument("--base", default="smollm2", help="reference model: 'smollm2' or a directory")
    p.add_argument("--out", default=None, help="output directory (default: the cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--force", action="store_true", help="retrain even when the cache has this model"
    )
    _add_realign_options(p)
    p.set_defaults(handler=realign_command)

    p = commands.add_parser("replicate", help="the whole replication: realign, estimate, sweep")
    p.add_argument(
        "--out", type=Path, default=RESULTS, help=f"output directory (default: {RESULTS})"
    )
    p.add_argument(
        "--bias-prompts", type=int, default=256, help="random prompts for the bias estimate"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out that holds no earlier replication results",
    )
    _add_realign_options(p)
    add_sweep_options(p)
    p.set_defaults(handler=replicate_command)

    p = commands.add_parser("rescore", help="rebuild a replication's table, plot and summary")
    p.add_argument("directory", nargs="?", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    add_rescore_options(p)
    p.set_defaults(handler=rescore_command)

    p = commands.add_parser("judge", help="train and validate the safety judge")
    p.add_argument("--seed", type=int, default=0, help="cross-validation fold assignment")
    p.add_argument(
        "--check-only", action="store_true", help="only check the frozen judge on the hand labels"
    )
    p.set_defaults(handler=judge_command)

    p = commands.add_parser("judged", help="judged safety of a sweep's answers, per category")
    p.add_argument("directory", nargs="?", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    p.set_defaults(handler=judged_command)

    p = commands.add_parser("premise", help="the premise diagnostic on the SFT model")
    p.add_argument("--out", type=Path, default=RESULTS / "premise")
    p.set_defaults(handler=premise_command)

    from .export import PACKAGE_ADAPTER

    p = commands.add_parser("export-adapter", help="the aligned model's adapter into the package")
    p.add_argument("--model", choices=("sft", "dpo"), default="sft")
    p.add_argument("--out", type=Path, default=PACKAGE_ADAPTER, help=f"default: {PACKAGE_ADAPTER}")
    p.set_defaults(handler=export_adapter_command)

    p = commands.add_parser("study", help="the faithful test with baselines, judged (cached)")
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "study",
        help=f"output directory (default: {RESULTS / 'study'})",
    )
    p.add_argument("--reduced", action="store_true", help="the smaller, labelled configuration")
    p.add_argument(
        "--harmful-per-set", type=int, default=None, help="harmful prompts per set (default 100)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="generation batch (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=study_command)
    return parser


if __name__ == "__main__":
    sys.exit(run(build_parser(), sys.argv[1:]))
