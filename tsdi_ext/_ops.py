"""Loads the native extension and registers what torch.compile needs to trace the ops.

Importing ``tsdi_ext._C`` registers the dispatcher ops ``torch.ops.tsdi_ext.sample`` and
``torch.ops.tsdi_ext.sampling_probs`` with their CPU (and, when built, CUDA) kernels. The fake
(meta) implementations below give their output shapes without running them.
"""

from __future__ import annotations

import torch

try:
    from . import _C  # noqa: F401  (import registers the ops)
except ImportError as error:  # pragma: no cover - depends on the installation
    _C = None
    NATIVE_IMPORT_ERROR: ImportError | None = error
else:
    NATIVE_IMPORT_ERROR = None


def native_available() -> bool:
    """True when the compiled extension is importable."""
    return _C is not None


def require_native() -> None:
    """Raises a clear error when the compiled extension is missing or does not load."""
    if _C is None:
        raise RuntimeError(
            "tsdi_ext: the compiled extension tsdi_ext._C is not available "
            f"({NATIVE_IMPORT_ERROR}). Build it against the installed torch with "
            "'pip install --no-build-isolation .' (or use backend='torch')."
        )


if _C is not None:

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


def cuda_available() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return _C is not None and bool(_C.build_info().get("cuda", False))
