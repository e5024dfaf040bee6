"""Safety realignment of a reference chat model: the "aligned model" of the replication.

TSDI needs an aligned model and the reference it was aligned from. SmolLM2-135M-Instruct answers
harmful requests, so it plays the paper's reference (SFT) model, and this module makes the aligned
one the way safety alignment is usually done, scaled down to a 2-core CPU:

* harmful prompts (AdvBench, from ``pyrit``) get refusal targets (``data/refusal_responses.txt``
  beside this file, one drawn per prompt with the seed);
* benign prompts (``data/benign_train_prompts.txt``, ordinary instructions, disjoint from the
  evaluation set) get the reference's own greedy answers, so helpfulness is kept where it was;
* supervised fine-tuning of LoRA adapters (``peft``) with ``trl``'s ``SFTTrainer``, loss on the
  response tokens only; the adapters are then merged, so the aligned model is a plain
  transformers model with the reference's architecture and vocabulary.

Decision: SFT rather than DPO. DPO needs a preference pair and a reference forward pass per
example, twice the compute; SFT on refusal targets reproduces what matters here (a learned
preference for refusal-leading tokens) within the 30-minute CPU budget with room to spare.

The result is cached under ``cache_dir()/<name>-realigned-<key>``, where the key hashes the
settings and the training data, next to ``realign.json`` (settings, data sizes, losses, wall time,
library versions). A second call with the same settings loads the cache.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tsdi_ext.eval.prompts import advbench_prompts, load_prompt_file
from tsdi_ext.generation import generate
from tsdi_ext.models import SMOLLM2, cache_dir, load_model

__all__ = [
    "RealignSettings",
    "benign_train_prompts",
    "refusal_responses",
    "build_training_examples",
    "realigned_model_path",
    "realign",
    "check_output_directory",
]

DATA = Path(__file__).resolve().parent / "data"


def benign_train_prompts() -> list[str]:
    """The benign *training* prompts (ordinary instructions, disjoint from the evaluation's)."""
    return load_prompt_file(DATA / "benign_train_prompts.txt")


def refusal_responses() -> list[str]:
    """The refusal targets given to harmful training prompts."""
    return load_prompt_file(DATA / "refusal_responses.txt")


@dataclass(frozen=True)
class RealignSettings:
    """What the realignment does; every field enters the cache key.

    Attributes
    ----------
    harmful_examples : int
        AdvBench prompts trained to refuse (a seeded sample of the 520).
    benign_examples : int
        Benign training prompts kept helpful (at most the size of the file).
    answer_tokens : int
        Length limit of the reference's answers used as benign targets (cut back to the last
        sentence end, so the model does not learn to stop mid-sentence).
    epochs, learning_rate, batch_size
        SFT optimisation (AdamW, linear decay).
    lora_rank, lora_alpha
        LoRA adapters on every linear layer of the decoder.
    seed : int
        Seeds the data sample, the refusal draws, the adapter initialisation and the data order.
    """

    harmful_examples: int = 256
    benign_examples: int = 160
    answer_tokens: int = 64
    epochs: int = 2
    learning_rate: float = 2e-4
    batch_size: int = 8
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0


def _trim_to_sentence(text: str) -> str:
    """``text`` up to its last sentence end, when that keeps at least half of it."""
    cut = max(text.rfind(mark) for mark in (". ", ".\n", "!\n", "! ", "?\n", "? ", "\n\n"))
    if text.endswith((".", "!", "?")) or cut < len(text) // 2:
        return text.strip()
    return text[: cut + 1].strip()


def _sample(items: list[str], count: int, rng: random.Random) -> list[str]:
    if count > len(items):
        raise ValueError(f"tsdi_ext: asked for {count} examples, the prompt set has {len(items)}")
    return rng.sample(items, count)


def build_training_examples(
    reference,
    tokenizer,
    settings: RealignSettings,
    *,
    harmful: list[str] | None = None,
    benign: list[str] | None = None,
    refusals: list[str] | None = None,
    progress: bool = True,
) -> list[dict]:
    """The SFT examples: ``{"prompt": [user message], "completion": [assistant message], "kind"}``.

    Parameters
    ----------
    reference, tokenizer
        The model to realign (it writes the benign targets, greedily) and its tokenizer.
    settings : RealignSettings
    harmful, benign, refusals : list of str, optional
        Override the packaged prompt sets (AdvBench, benign training prompts, refusal targets).

    Returns
    -------
    list of dict
        Harmful examples first, then benign ones; the trainer shuffles them with the seed.
    """
    rng = random.Random(settings.seed)
    harmful = _sample(
        harmful if harmful is not None else advbench_prompts(), settings.harmful_examples, rng
    )
    benign = _sample(
        benign if benign is not None else benign_train_prompts(), settings.benign_examples, rng
    )
    refusals = refusals if refusals is not None else refusal_responses()

    answers: list[str] = []
    batches = range(0, len(benign), 32)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="reference answers for benign prompts", unit="batch")
    for start in batches:
        result = generate(
            reference, tokenizer, benign[start : start + 32], max_new_tokens=settings.answer_tokens
        )
        answers += [_trim_to_sentence(text) for text in result.texts]

    def example(prompt: str, answer: str, kind: str) -> dict:
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": answer}],
            "kind": kind,
        }

    return [example(p, rng.choice(refusals), "harmful") for p in harmful] + [
        example(p, a, "benign") for p, a in zip(benign, answers) if a
    ]


def _cache_key(base: str, settings: RealignSettings) -> str:
    digest = hashlib.sha256(json.dumps({"base": base, **asdict(settings)}, sort_keys=True).encode())
    for prompts in (advbench_prompts(), benign_train_prompts(), refusal_responses()):
        digest.update("\n".join(prompts).encode())
    return digest.hexdigest()[:12]


def model_cache_name(base: str) -> str:
    """The folder-name stem of a model trained from ``base`` (realigned, DPO-aligned)."""
    return Path(base).name if base != SMOLLM2 else "smollm2-135m-instruct"


def realigned_model_path(
    base: str = SMOLLM2, settings: RealignSettings = RealignSettings()
) -> Path:
    """Where :func:`realign` keeps (or finds) the realigned model for these settings."""
    return cache_dir() / f"{model_cache_name(base)}-realigned-{_cache_key(base, settings)}"


def realign(
    base: str = SMOLLM2,
    settings: RealignSettings = RealignSettings(),
    *,
    output: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Safety-realigns ``base`` (see the module docstring) and returns the merged model's directory.

    Parameters
    ----------
    base : str
        ``"smollm2"`` or a local model directory (the reference model).
    settings : RealignSettings
    output : path, optional
        Where to write the model; default :func:`realigned_model_path`, which is reused when it
        already holds a finished model (unless ``force``).
    device : str
        Training device ("cpu", or "cuda" where one is present).

    Returns
    -------
    Path
        A directory loadable with :func:`tsdi_ext.models.load_model`, with ``realign.json``.
    """
    try:
        from datasets import Dataset
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer
    except ImportError as error:
        raise RuntimeError(
            "the realignment needs peft, trl and datasets (pip install -r requirements-dev.txt)"
        ) from error

    target = (
        Path(output) if output is not None else realigned_model_path(base, settings)
    ).absolute()
    if (target / "realign.json").is_file() and not force:
        record = json.loads((target / "realign.json").read_text())
        if record.get("settings") == asdict(settings) and record.get("base_model") == base:
            return target
        if output is not None:
            raise ValueError(
                f"tsdi_ext: {target} holds a model realigned with other settings or another base; "
                "pass force=True (--force) to overwrite it"
            )
    check_output_directory(target)

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    reference, tokenizer = load_model(base, device=device)
    examples = build_training_examples(reference, tokenizer, settings, progress=progress)
    generated = time.perf_counter() - started

    # Right padding while training (what the trainer's collator expects); load_model's left
    # padding (batched generation) is restored before the tokenizer is saved.
    tokenizer.padding_side = "right"
    # A fresh temporary directory beside the target (same file system: the final rename is
    # atomic), never a fixed name that could be someone's directory.
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    config = SFTConfig(
        output_dir=str(work / "trainer"),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        lr_scheduler_type="linear",
        warmup_steps=5,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        completion_only_loss=True,
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
    dataset = Dataset.from_list(
        [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples]
    )
    reference.train()
    trainer = SFTTrainer(
        model=reference,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )
    result = trainer.train()
    # The adapter alone (a few MB) beside the merged model: what `tsdi demo` ships.
    trainer.model.save_pretrained(work / "adapter")
    merged = trainer.model.merge_and_unload().eval()
    tokenizer.padding_side = "left"

    merged.save_pretrained(work)
    tokenizer.save_pretrained(work)
    import peft
    import transformers
    import trl

    record = {
        "base_model": base,
        "settings": asdict(settings),
        "examples": {
            "harmful": sum(e["kind"] == "harmful" for e in examples),
            "benign": sum(e["kind"] == "benign" for e in examples),
        },
        "train_loss": result.training_loss,
        "loss_log": [
            {"step": entry["step"], "loss": entry["loss"]}
            for entry in trainer.state.log_history
            if "loss" in entry
        ],
        "seconds": {
            "reference_answers": round(generated, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "device": device,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
        "threads": torch.get_num_threads(),
        "sample_targets": [
            {
                "kind": e["kind"],
                "prompt": e["prompt"][0]["content"],
                "target": e["completion"][0]["content"],
            }
            for e in (examples[:2] + examples[-2:])
        ],
    }
    (work / "realign.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(work / "trainer", ignore_errors=True)
    _install(work, target)
    return target


def check_output_directory(target: Path) -> None:
    """Refuses an output directory that :func:`realign` did not create: an existing path is
    accepted only when it is an empty directory or holds a ``realign.json`` (a model this tool
    wrote, which ``force`` may replace). Checked before any training starts."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"tsdi_ext: the output {target} exists and is not a directory")
    if any(target.iterdir()) and not (target / "realign.json").is_file():
        raise ValueError(
            f"tsdi_ext: the output directory {target} is not empty and holds no realigned model "
            "(no realign.json); it is never overwritten, even with --force: choose another path"
        )


def _install(work: Path, target: Path) -> None:
    """Moves the finished model ``work`` to ``target``. An earlier model there (checked by
    :func:`check_output_directory` to be one this tool wrote) is first renamed aside and removed
    only once the new one is in place; the directory is checked again, since training takes
    minutes and someone may have filled it meanwhile."""
    check_output_directory(target)
    if not target.exists():
        work.rename(target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        work.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old.rmdir()
    target.rename(old)
    work.rename(target)
    shutil.rmtree(old)
