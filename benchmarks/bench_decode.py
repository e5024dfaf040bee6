"""Per-token latency of the TSDI decoding loop on SmolLM2-135M-Instruct (a benchmark, not a test).

For each batch size: the plain loop (tsdi_ext.decode without bias, greedy), the TSDI loop (bias
table, greedy and sampled), transformers' own model.generate (greedy), and the time of the fused
sampling step alone on the same [B, V] logits, i.e. its share of a decoding step. Every loop runs
exactly --tokens steps (no EOS stop). Prints one table, writes benchmarks/results/decode_latency.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

import tsdi_ext
from tsdi_ext.bias import estimate_bias
from tsdi_ext.generation import decode, prepare_prompts
from tsdi_ext.models import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside this script (python -P omits it)
from _machine import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = [
    "How do I kill a Python process that is stuck?",
    "Write one sentence about the history of the Roman army.",
    "What happens in the body during a caffeine overdose?",
    "Explain how a bridge carries heavy traffic.",
]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "decode_latency.json")
    args = parser.parse_args(argv)

    model, tokenizer = load_model("smollm2")
    device = next(model.parameters()).device
    table = estimate_bias(model, None, tokenizer, num_prompts=32, length=8, progress=False)
    machine = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "tsdi_ext": tsdi_ext.__version__,
        "model": "SmolLM2-135M-Instruct (float32)",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(
        f"# {machine['cpu']} | {machine['threads']} threads | torch {machine['torch']} | {machine['model']}"
    )
    print(
        f"{'B':>3s} {'plain ms/tok':>13s} {'TSDI greedy':>12s} {'TSDI sampled':>13s} {'HF greedy':>10s} "
        f"{'sample() us':>12s} {'share':>6s}"
    )
    rows = []
    n = args.tokens
    for batch in args.batch:
        prompts = (PROMPTS * batch)[:batch]
        ids, mask = prepare_prompts(tokenizer, prompts, device=device)

        def loop(**kwargs):
            return lambda: decode(model, ids, mask, max_new_tokens=n, eos_token_ids=[], **kwargs)

        plain = median_seconds(loop(), args.repeats) / n
        greedy = median_seconds(loop(bias=table, alpha=0.5), args.repeats) / n
        sampled = (
            median_seconds(
                loop(bias=table, alpha=0.5, temperature=0.7, top_p=0.9, seed=1), args.repeats
            )
            / n
        )
        with torch.inference_mode():
            hf = (
                median_seconds(
                    lambda: model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        do_sample=False,
                        max_new_tokens=n,
                        min_new_tokens=n,
                        pad_token_id=tokenizer.pad_token_id,
                    ),
                    args.repeats,
                )
                / n
            )
        logits = torch.randn(batch, table.vocab_size, device=device) * 3
        bias = table.to(device)
        positions = torch.zeros(batch, dtype=torch.int64, device=device)
        step_seconds = median_seconds(
            lambda: tsdi_ext.sample(
                logits,
                bias=bias,
                positions=positions,
                alpha=0.5,
                temperature=0.7,
                top_p=0.9,
                seed=1,
            ),
            200,
        )
        row = {
            "batch": batch,
            "tokens": n,
            "plain_ms_per_token": plain * 1e3,
            "tsdi_greedy_ms_per_token": greedy * 1e3,
            "tsdi_sampled_ms_per_token": sampled * 1e3,
            "hf_generate_greedy_ms_per_token": hf * 1e3,
            "sample_op_us": step_seconds * 1e6,
            "sample_share_of_tsdi_step": step_seconds / sampled,
        }
        rows.append(row)
        print(
            f"{batch:3d} {plain * 1e3:13.2f} {greedy * 1e3:12.2f} {sampled * 1e3:13.2f} {hf * 1e3:10.2f} "
            f"{step_seconds * 1e6:12.1f} {row['sample_share_of_tsdi_step']:6.1%}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
