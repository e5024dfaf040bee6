"""tsdi_ext: Token-level Safety-Debiased Inference (Tran et al., 2025) for real decoding loops.

The basic flow needs one import::

    import tsdi_ext

    model, tokenizer = tsdi_ext.load_model("smollm2")
    table = tsdi_ext.estimate_bias(model, reference, tokenizer)
    out = tsdi_ext.generate(model, tokenizer, ["..."], bias=table, alpha=0.5)

* the op: :func:`sample` / :func:`sampling_probs` (:mod:`tsdi_ext.ops`; contract in
  docs/contract.md);
* the method: :func:`estimate_bias`, :class:`BiasTable`, :func:`generate` / :func:`decode`,
  :func:`load_model`;
* ``tsdi_ext.hf`` (transformers integration), ``tsdi_ext.eval`` (the evaluation harness, extra
  ``[eval]``) and ``tsdi_ext.info`` are imported on first use.
"""

import importlib
import sys
import warnings

if "torch" not in sys.modules:
    # torch warns at import when NumPy is missing; tsdi_ext does not use NumPy, and in an
    # environment without the [hf] extra (which brings NumPy) the warning would bury the one line
    # that names the extra to install.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)

from ._version import __version__  # noqa: E402
from .bias import BiasFileError, BiasTable, estimate_bias  # noqa: E402
from .generation import Generation, decode, generate  # noqa: E402
from .models import load_model  # noqa: E402
from .ops import BACKENDS, sample, sampling_probs  # noqa: E402

__all__ = [
    "__version__",
    "BACKENDS",
    "sample",
    "sampling_probs",
    "BiasTable",
    "BiasFileError",
    "estimate_bias",
    "Generation",
    "decode",
    "generate",
    "load_model",
]  # not the lazy submodules: `from tsdi_ext import *` must not shadow the builtin eval

# Submodules with optional or heavy dependencies (transformers, matplotlib): imported when first
# named, so `import tsdi_ext` stays light and `tsdi_ext.hf` works without an explicit import.
_LAZY_SUBMODULES = ("hf", "eval", "info", "cli")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            # transformers, matplotlib...: say which extra installs it, in one line.
            from .models import EXTRA_OF_MODULE, MissingExtraError, missing_extra_message

            if error.name not in EXTRA_OF_MODULE:
                raise
            raise MissingExtraError(missing_extra_message(error.name), name=error.name) from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
