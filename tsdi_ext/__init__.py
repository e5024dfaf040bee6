"""tsdi_ext: Token-level Safety-Debiased Inference (Tran et al., 2025), production grade.

The core op is :func:`sample`: subtract a per-position bias from the logits, scale by
temperature, keep the top-p nucleus and draw a token, fused in one kernel per device.
"""

from ._version import __version__
from .sampling import BACKENDS, sample, sampling_probs

__all__ = ["__version__", "BACKENDS", "sample", "sampling_probs"]
