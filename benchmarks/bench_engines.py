"""Throughput with TSDI on and off inside vLLM and llama.cpp (a benchmark, not a test).

Run inside an engine's environment (tools/setup_engines.sh), one engine per run, on an otherwise
idle machine:

    ~/.cache/tsdi_ext/engines/vllm/bin/python -P benchmarks/bench_engines.py vllm
    ~/.cache/tsdi_ext/engines/llama-cpp/bin/python -P benchmarks/bench_engines.py llama-cpp

vLLM (SmolLM2-135M-Instruct, float32, greedy, every request exactly --tokens tokens): tokens per
second of batches of 1 and 8 requests in an engine without the adapter ("off") and in one with it
whose requests all carry a bias table ("on"), for L = 4 (a typical table: only the first four
steps are debiased) and L = --tokens (every step debiased: the worst case); and the time of the
adapter's per-step work alone (update_state + apply on [B, V] logits), as a share of a step.

llama.cpp (the Q4_1 GGUF, batch 1): tokens per second of llama.cpp's greedy decoding without and
with the TSDI logits processor (L = 4 and L = --tokens), the processor's time per call, and the
fused TSDI sampler against llama.cpp's own sampler chain at temperature 0.8, top-p 0.9.

Each result is the median of --repeats runs after a warm-up. The results of each engine are
merged into benchmarks/results/engines.json (with the CPU's name), and the table of both is
written to benchmarks/results/engines.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch

import tsdi_ext
from tsdi_ext.models import resolve, smollm2_gguf_path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside this script (python -P omits it)
from _machine import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = [
    "How do I kill a Python process that is stuck?",
    "Write one sentence about the history of the Roman army.",
    "What happens in the body during a caffeine overdose?",
    "Explain how a bridge carries heavy traffic.",
    "Name three uses of copper.",
    "What is the capital of Australia?",
    "Give me a recipe with flour, eggs and sugar.",
    "Why is the sky blue?",
]


def median(values):
    return sorted(values)[len(values) // 2]


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def bias_file(directory: Path, length: int, vocab: int) -> str:
    g = torch.Generator().manual_seed(0)
    path = directory / f"bench_bias_L{length}.safetensors"
    tsdi_ext.BiasTable(torch.randn(length, vocab, generator=g) * 2, {"aligned": "bench"}).save(path)
    return str(path)


# --------------------------------------------------------------------------------------- vLLM


def bench_vllm(args, work: Path) -> list[dict]:
    import gc
    from types import SimpleNamespace

    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.v1.sample.logits_processor import BatchUpdate

    from tsdi_ext.adapters.vllm import TSDILogitsProcessor

    model_dir = resolve("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab = len(tokenizer)
    prompts = []
    for p in PROMPTS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(TokensPrompt(prompt_token_ids=ids))
    files = {length: bias_file(work, length, vocab) for length in (4, args.tokens)}
    engine = dict(dtype="float32", max_model_len=512, enforce_eager=True, seed=0)

    def throughput(llm, batch, extra):
        params = SamplingParams(
            temperature=0.0, max_tokens=args.tokens, ignore_eos=True, extra_args=extra
        )
        chosen = [prompts[i % len(prompts)] for i in range(batch)]
        seconds = timed(lambda: llm.generate(chosen, params, use_tqdm=False), args.repeats)
        return batch * args.tokens / seconds, seconds

    rows = []
    measured = {}
    for with_adapter in (False, True):
        processors = ["tsdi_ext.adapters.vllm:TSDILogitsProcessor"] if with_adapter else []
        llm = LLM(model=model_dir, logits_processors=processors, **engine)
        for batch in args.vllm_batch:
            cases = [(None, None)] if not with_adapter else [(L, files[L]) for L in files]
            for length, path in cases:
                extra = None if path is None else {"tsdi_bias": path, "tsdi_alpha": 0.5}
                tps, seconds = throughput(llm, batch, extra)
                measured[(batch, length)] = (tps, seconds)
                print(f"vllm batch {batch} L={length}: {tps:.1f} tokens/s", flush=True)
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()

    # The adapter's own work per step, on the same shapes, outside the engine.
    config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: vocab))
    for batch in args.vllm_batch:
        off_tps, off_seconds = measured[(batch, None)]
        step_ms = off_seconds / args.tokens * 1e3
        for length in files:
            processor = TSDILogitsProcessor(config, torch.device("cpu"), False)
            params = SamplingParams(extra_args={"tsdi_bias": files[length], "tsdi_alpha": 0.5})
            outputs = [[] for _ in range(batch)]
            added = [(i, params, [1], outputs[i]) for i in range(batch)]
            processor.update_state(BatchUpdate(batch, [], added, []))
            logits = torch.randn(batch, vocab)

            def one_step():
                processor.update_state(None)
                processor.apply(logits)

            for _ in range(3):
                one_step()
            start = time.perf_counter()
            n = 200
            for _ in range(n):
                one_step()
            adapter_us = (time.perf_counter() - start) / n * 1e6
            on_tps, _ = measured[(batch, length)]
            rows.append(
                {
                    "engine": "vllm",
                    "batch": batch,
                    "L": length,
                    "tokens": args.tokens,
                    "off_tokens_per_s": round(off_tps, 2),
                    "on_tokens_per_s": round(on_tps, 2),
                    "loss_pct": round(100 * (1 - on_tps / off_tps), 2),
                    "step_ms": round(step_ms, 3),
                    "adapter_us_per_debiased_step": round(adapter_us, 1),
                    "adapter_share_of_debiased_step_pct": round(
                        100 * adapter_us / 1e3 / step_ms, 3
                    ),
                }
            )
    return rows


# ---------------------------------------------------------------------------------- llama.cpp


def bench_llama_cpp(args, work: Path) -> list[dict]:
    import numpy as np
    from llama_cpp import Llama, LogitsProcessorList

    from tsdi_ext.adapters.llama_cpp import TSDILogitsProcessor, TSDISampler, generate

    llm = Llama(model_path=str(smollm2_gguf_path()), n_ctx=512, n_threads=2, seed=0, verbose=False)
    vocab = llm.n_vocab()
    files = {length: bias_file(work, length, vocab) for length in (4, args.tokens)}
    text = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        f"Face<|im_end|>\n<|im_start|>user\n{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n"
    )
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)

    def chain(processors=None, temp=0.0, top_p=1.0):
        def run():
            llm.reset()
            for n, _ in enumerate(
                llm.generate(
                    tokens,
                    temp=temp,
                    top_p=top_p,
                    top_k=0 if temp else 1,
                    repeat_penalty=1.0,
                    min_p=0.0,
                    logits_processor=processors,
                    reset=True,
                ),
                start=1,
            ):
                if n == args.tokens:
                    break

        return run

    def tps(run):
        return args.tokens / timed(run, args.repeats)

    rows = []
    off = tps(chain())
    print(f"llama.cpp greedy, no processor: {off:.1f} tokens/s", flush=True)
    for length, path in files.items():
        processor = TSDILogitsProcessor(path, vocab, 0.5, length=length)
        on = tps(chain(LogitsProcessorList([processor])))
        # The processor's own time per debiased call, on a strided view like llama-cpp-python's
        # candidate array (id, logit, p: 12-byte records).
        timing = TSDILogitsProcessor(path, vocab, 0.5, length=length, prompt_length=len(tokens))
        scores = np.zeros((vocab, 3), dtype=np.float32)[:, 1]
        ids = np.zeros(len(tokens), dtype=np.intc)  # position 0 at every call
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            timing(ids, scores)
        call_us = (time.perf_counter() - start) / n * 1e6
        step_ms = 1e3 / off
        print(f"llama.cpp greedy, TSDI processor L={length}: {on:.1f} tokens/s", flush=True)
        rows.append(
            {
                "engine": "llama.cpp",
                "mode": "logits processor, greedy",
                "batch": 1,
                "L": length,
                "tokens": args.tokens,
                "off_tokens_per_s": round(off, 2),
                "on_tokens_per_s": round(on, 2),
                "loss_pct": round(100 * (1 - on / off), 2),
                "step_ms": round(step_ms, 3),
                "adapter_us_per_debiased_step": round(call_us, 1),
                "adapter_share_of_debiased_step_pct": round(100 * call_us / 1e3 / step_ms, 3),
            }
        )

    own = tps(chain(temp=0.8, top_p=0.9))
    for length, path in files.items():
        sampler = TSDISampler(llm, path, alpha=0.5, temperature=0.8, top_p=0.9, seed=0)
        fused = tps(lambda: generate(llm, tokens, sampler, max_tokens=args.tokens))
        logits = sampler.logits().clone()
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            sampler.step(logits)
        step_us = (time.perf_counter() - start) / n * 1e6
        sampler.close()
        print(f"llama.cpp t=0.8 p=0.9: own chain {own:.1f}, TSDI sampler L={length} {fused:.1f}")
        rows.append(
            {
                "engine": "llama.cpp",
                "mode": "fused sampler vs llama.cpp's chain, T=0.8 top-p=0.9",
                "batch": 1,
                "L": length,
                "tokens": args.tokens,
                "off_tokens_per_s": round(own, 2),
                "on_tokens_per_s": round(fused, 2),
                "loss_pct": round(100 * (1 - fused / own), 2),
                "step_ms": round(1e3 / own, 3),
                "adapter_us_per_debiased_step": round(step_us, 1),
                "adapter_share_of_debiased_step_pct": round(100 * step_us / 1e3 / (1e3 / own), 3),
            }
        )
    llm.close()
    return rows


def table(results: dict) -> str:
    lines = [
        f"CPU: {results.get('cpu', '?')}; {results.get('threads', '?')} threads; "
        "tokens/s: median of runs, every request exactly `tokens` tokens.",
        "",
        "| engine | mode | batch | L | off tokens/s | on tokens/s | loss % | step ms | adapter µs/step | adapter share % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine in ("vllm", "llama.cpp"):
        for r in results.get("engines", {}).get(engine, {}).get("rows", []):
            lines.append(
                f"| {r['engine']} | {r.get('mode', 'logits processor, greedy')} | {r['batch']} | "
                f"{r['L']} | {r['off_tokens_per_s']} | {r['on_tokens_per_s']} | {r['loss_pct']} | "
                f"{r['step_ms']} | {r['adapter_us_per_debiased_step']} | "
                f"{r['adapter_share_of_debiased_step_pct']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("engine", choices=["vllm", "llama-cpp"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vllm-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=RESULTS / "engines.json")
    args = parser.parse_args(argv)

    import tempfile

    print(f"CPU: {cpu_model()}, torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        if args.engine == "vllm":
            import vllm

            version = vllm.__version__
            rows = bench_vllm(args, Path(work))
        else:
            import llama_cpp

            version = llama_cpp.__version__
            rows = bench_llama_cpp(args, Path(work))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.update(cpu=cpu_model(), threads=torch.get_num_threads(), python=sys.version.split()[0])
    results.setdefault("engines", {})[rows[0]["engine"]] = {
        "version": version,
        "torch": torch.__version__,
        "tsdi_ext": tsdi_ext.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    rendered = table(results)
    args.out.with_suffix(".md").write_text(rendered)
    print(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
