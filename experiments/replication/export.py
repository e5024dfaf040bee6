"""The adapter behind tsdi_ext's built-in ``"smollm2-aligned"`` model (``make demo-adapter``).

The study's aligned model is trained here (cached, seeded: :func:`replication.realign.realign`
for ``sft``, :func:`replication.dpo.dpo_align` for ``dpo``) and its LoRA adapter is written into
the package as peft's adapter layout, the weights cast to float16 (half the size; the merge then
differs from the study's float32 merge by float16 rounding of A and B only), with
``provenance.json``: which model, its settings, the command, the library versions and the hash
of the float32 adapter it came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from tsdi_ext.models import SMOLLM2

PACKAGE_ADAPTER = Path(__file__).resolve().parents[2] / "tsdi_ext" / "data" / "smollm2_aligned"

__all__ = ["PACKAGE_ADAPTER", "export_adapter", "trained_adapter"]


def trained_adapter(model: str) -> tuple[Path, dict]:
    """``(adapter directory, settings)`` of the study's ``model`` ("sft" or "dpo"), trained on
    first use."""
    if model == "sft":
        from .realign import RealignSettings, realign

        settings = RealignSettings()
        return realign(SMOLLM2, settings) / "adapter", asdict(settings)
    if model == "dpo":
        from .dpo import DPOSettings, dpo_align

        settings = DPOSettings()
        return dpo_align(SMOLLM2, settings) / "adapter", asdict(settings)
    raise ValueError(f"tsdi_ext: no aligned model {model!r} (expected 'sft' or 'dpo')")


def export_adapter(model: str, out: Path = PACKAGE_ADAPTER, *, source: Path | None = None) -> Path:
    """Writes the float16 copy of ``model``'s adapter (or of the adapter directory ``source``)
    into ``out`` and returns ``out``."""
    from safetensors.torch import load_file, save_file

    settings: dict = {}
    if source is None:
        source, settings = trained_adapter(model)
    weights_path = source / "adapter_model.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"tsdi_ext: {weights_path} does not exist")
    weights = load_file(weights_path)
    config = json.loads((source / "adapter_config.json").read_text())
    # A cache path of the machine that trained it; load_model("smollm2-aligned") merges into
    # the built-in SmolLM2 whatever this says.
    config["base_model_name_or_path"] = SMOLLM2
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in sorted(weights.items())},
        out / "adapter_model.safetensors",
    )
    (out / "adapter_config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    import peft
    import transformers
    import trl

    provenance = {
        "model": model,
        "settings": settings,
        "command": "make demo-adapter (PYTHONPATH=experiments python -m replication "
        f"export-adapter --model {model})",
        "float32_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "parameters": sum(v.numel() for v in weights.values()),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
        },
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    for path in out.iterdir():  # safetensors writes its file private; it ships in the wheel
        path.chmod(0o644)
    return out
