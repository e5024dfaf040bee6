"""Loads the native extension and registers what torch.compile needs to trace the ops.

Importing ``tsdi_ext._C`` registers the dispatcher ops ``torch.ops.tsdi_ext.sample`` and
``torch.ops.tsdi_ext.sampling_probs`` with their CPU (and, when built, CUDA) kernels. The fake
(meta) implementations below give their output shapes without running them.
"""

from __future__ import annotations

import warnings

import torch

try:
    from . import _C  # noqa: F401  (import registers the ops)
except ImportError as error:  # pragma: no cover - depends on the installation
    _C = None
    if "undefined symbol" in str(error):
        # The most common failure of compiled torch extensions: built for another torch.
        error = ImportError(
            f"{error}. tsdi_ext's extension was most likely compiled against a different torch than "
            f"the one installed ({torch.__version__}): rebuild it with "
            "'pip install --no-build-isolation --force-reinstall tsdi_ext' or install the wheel for "
            "this torch"
        )
    NATIVE_IMPORT_ERROR: ImportError | None = error
else:
    NATIVE_IMPORT_ERROR = None


def native_available() -> bool:
    """True when the compiled extension is importable."""
    return _C is not None


def _torch_series(version: str) -> str:
    """``"2.13"`` for ``"2.13.0+cpu"``: compiled extensions are tied to a torch minor series."""
    return ".".join(version.split("+")[0].split(".")[:2])


def build_mismatch() -> str | None:
    """A sentence saying how the compiled extension does not fit the running torch, or None."""
    if _C is None:
        return None
    info = _C.build_info()
    built = info.get("torch_version", "")
    if built and _torch_series(built) != _torch_series(torch.__version__):
        return (f"tsdi_ext was compiled against torch {built} but torch {torch.__version__} is running; "
                f"rebuild it (pip install --no-build-isolation --force-reinstall tsdi_ext) or install "
                f"the wheel built for torch {_torch_series(torch.__version__)}")
    cuda = info.get("cuda_version", "")
    if info.get("cuda") and torch.version.cuda and cuda.split(".")[0] != torch.version.cuda.split(".")[0]:
        return f"tsdi_ext's CUDA kernels were built with CUDA {cuda} but torch uses CUDA {torch.version.cuda}"
    return None


def _check_build_matches_torch() -> None:
    mismatch = build_mismatch()
    if mismatch is not None:
        warnings.warn(f"{mismatch}; expect crashes or wrong results (see 'python -m tsdi_ext.info').",
                      RuntimeWarning, stacklevel=2)


def require_native() -> None:
    """Raises a clear error when the compiled extension is missing or does not load."""
    if _C is None:
        raise RuntimeError(
            "tsdi_ext: the compiled extension tsdi_ext._C is not available "
            f"({NATIVE_IMPORT_ERROR}). Build it against the installed torch with "
            "'pip install --no-build-isolation .' (or use backend='torch')."
        )


if _C is not None:
    _check_build_matches_torch()

    @torch.library.register_fake("tsdi_ext::sample")
    def _sample_fake(logits, bias, positions, alpha, alpha_value, temperature, temperature_value,
                     top_p, top_p_value, seed, seed_value, offset, offset_value):
        batch = logits.shape[0]
        tokens = logits.new_empty((batch,), dtype=torch.int64)
        valid = logits.new_empty((batch,), dtype=torch.bool)
        return tokens, valid

    @torch.library.register_fake("tsdi_ext::sampling_probs")
    def _sampling_probs_fake(logits, bias, positions, alpha, alpha_value, temperature,
                             temperature_value, top_p, top_p_value):
        return logits.new_empty(logits.shape, dtype=torch.float32)


# Read once: cuda_available() is on the per-call path of CUDA tensors.
_HAS_CUDA_KERNELS = _C is not None and bool(_C.build_info().get("cuda", False))


def cuda_available() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return _HAS_CUDA_KERNELS
