"""The preference-aligned model: LoRA DPO of the reference on safer-response pairs (SACPO-like).

The paper aligns an SFT model by safe preference optimisation (Safe RLHF / SACPO-style DPO on
pairs that prefer the safer response). Here, scaled to a 2-core CPU:

* **pairs** (:func:`build_preference_pairs`): harmful AdvBench prompts (``pyrit``, the same
  seeded sample as the SFT realignment); *chosen*: a refusal target
  (``data/refusal_responses.txt``, one drawn per prompt with the seed); *rejected*: the
  reference's own greedy answer (cut back to a sentence end). Prompts the reference already
  refuses (pattern detector) are dropped: both sides would be refusals, nothing to prefer.
* **DPO** with ``trl``'s ``DPOTrainer``, sigmoid loss, ``beta = 0.1`` (SACPO's and DPO's usual
  value), LoRA adapters (``peft``) on every linear layer; the frozen reference of the DPO loss
  is the model with its adapters disabled (trl's default with a peft config), i.e. the
  reference model itself.
* **Decisions**: harmful pairs only (no benign pairs): DPO's reference term keeps the model
  close to the reference elsewhere, which is what SACPO's KL term does; one epoch at
  learning rate 5e-5, the adapter's scale then gives the alignment-strength front
  (:func:`replication.premise.interpolate` of the merged model is exactly the adapter merged at
  that scale).

The merged model is written with its adapter (``adapter/``, a few MB) and ``dpo.json``; the
output directory follows the same rules as :func:`replication.realign.realign` (never a
directory this tool did not create).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tsdi_ext.eval.prompts import advbench_prompts
from tsdi_ext.eval.refusal import PatternRefusalDetector
from tsdi_ext.generation import generate
from tsdi_ext.models import SMOLLM2, cache_dir, load_model

from .realign import (
    _install,
    _trim_to_sentence,
    check_output_directory,
    model_cache_name,
    refusal_responses,
)

__all__ = ["DPOSettings", "build_preference_pairs", "dpo_model_path", "dpo_align"]


@dataclass(frozen=True)
class DPOSettings:
    """What the DPO alignment does; every field enters the cache key."""

    harmful_examples: int = 256
    answer_tokens: int = 64
    epochs: int = 1
    learning_rate: float = 5e-5
    beta: float = 0.1
    batch_size: int = 8
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0


def build_preference_pairs(
    reference,
    tokenizer,
    settings: DPOSettings,
    *,
    harmful: list[str] | None = None,
    refusals: list[str] | None = None,
) -> list[dict]:
    """``{"prompt": [user], "chosen": [assistant refusal], "rejected": [assistant answer]}``
    per harmful prompt the reference does not already refuse (module docstring)."""
    rng = random.Random(settings.seed)
    pool = harmful if harmful is not None else advbench_prompts()
    if settings.harmful_examples > len(pool):
        raise ValueError(
            f"tsdi_ext: asked for {settings.harmful_examples} pairs, the prompt set has {len(pool)}"
        )
    prompts = rng.sample(pool, settings.harmful_examples)
    refusals = refusals if refusals is not None else refusal_responses()
    answers: list[str] = []
    for start in range(0, len(prompts), 32):
        result = generate(
            reference,
            tokenizer,
            prompts[start : start + 32],
            max_new_tokens=settings.answer_tokens,
        )
        answers += [_trim_to_sentence(t) for t in result.texts]
    refused = PatternRefusalDetector()(prompts, answers)
    pairs = []
    for prompt, answer, already in zip(prompts, answers, refused):
        chosen = rng.choice(refusals)  # drawn for every prompt: the draws do not depend on answers
        if already or not answer:
            continue
        pairs.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": answer}],
            }
        )
    return pairs


def dpo_model_path(base: str = SMOLLM2, settings: DPOSettings = DPOSettings()) -> Path:
    digest = hashlib.sha256(json.dumps({"base": base, **asdict(settings)}, sort_keys=True).encode())
    for prompts in (advbench_prompts(), refusal_responses()):
        digest.update("\n".join(prompts).encode())
    return cache_dir() / f"{model_cache_name(base)}-dpo-{digest.hexdigest()[:12]}"


def dpo_align(
    base: str = SMOLLM2,
    settings: DPOSettings = DPOSettings(),
    *,
    output: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    force: bool = False,
    harmful: list[str] | None = None,
) -> Path:
    """Trains (or finds cached) the DPO-aligned model; returns its directory (loadable with
    :func:`tsdi_ext.models.load_model`, with ``adapter/`` and ``dpo.json``)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    target = (Path(output) if output is not None else dpo_model_path(base, settings)).absolute()
    record_path = target / "dpo.json"
    if record_path.is_file() and not force:
        record = json.loads(record_path.read_text())
        if record.get("settings") == asdict(settings) and record.get("base_model") == base:
            return target
        raise ValueError(
            f"tsdi_ext: {target} holds a model aligned with other settings; pass force=True"
        )
    # The same rule as realign: only an empty directory or one this tool wrote.
    if target.exists() and any(target.iterdir()) and not record_path.is_file():
        check_output_directory(target)
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    reference, tokenizer = load_model(base, device=device)
    pairs = build_preference_pairs(reference, tokenizer, settings, harmful=harmful)
    if not pairs:
        raise RuntimeError("tsdi_ext: the reference refuses every prompt: no preference pairs")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    tokenizer.padding_side = "right"
    config = DPOConfig(
        output_dir=str(work / "trainer"),
        beta=settings.beta,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        lr_scheduler_type="linear",
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        max_length=256,
        use_cpu=device == "cpu",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        # trl 1.x defaults to bf16 autocast and activation checkpointing; on a CPU the bf16
        # matmuls of the backward take a slow fallback (161 s per step against about 10 s in
        # float32 on 2 cores), and checkpointing only saves memory this model does not need.
        bf16=False,
        activation_checkpointing=False,
    )
    lora = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    reference.train()
    trainer = DPOTrainer(
        model=reference,
        args=config,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=lora,
    )
    result = trainer.train()
    trainer.model.save_pretrained(work / "adapter")
    merged = trainer.model.merge_and_unload().eval()
    tokenizer.padding_side = "left"
    merged.save_pretrained(work)
    tokenizer.save_pretrained(work)
    import trl

    record = {
        "base_model": base,
        "settings": asdict(settings),
        "pairs": len(pairs),
        "train_loss": result.training_loss,
        "log": [
            {k: e[k] for k in e if k in ("step", "loss", "rewards/margins", "rewards/accuracies")}
            for e in trainer.state.log_history
            if "loss" in e
        ],
        "seconds": round(time.perf_counter() - started, 1),
        "versions": {"torch": torch.__version__, "trl": trl.__version__},
        "sample_pair": pairs[0],
    }
    (work / "dpo.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(work / "trainer", ignore_errors=True)
    # _install checks for realign's marker; the DPO model carries dpo.json, so an earlier DPO
    # model is moved aside by hand here.
    if record_path.is_file():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        target.rename(old)
        work.rename(target)
        shutil.rmtree(old)
    else:
        _install(work, target)
    return target
