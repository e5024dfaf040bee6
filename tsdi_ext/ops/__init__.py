"""The fused sampling op: debias, temperature, top-p and the draw in one pass over each row.

* :func:`sample`, :func:`sampling_probs`: the public API (:mod:`.sampling`);
* :mod:`.reference`: the pure-PyTorch reference, the test oracle;
* :mod:`.params`: the per-row parameters and how Python values reach the kernels;
* :mod:`._native`: the compiled extension's loader.

The contract all backends implement is docs/contract.md.
"""

from . import reference
from ._native import cuda_available, native_available
from .sampling import BACKENDS, SampleWithLogprobs, sample, sampling_probs

__all__ = [
    "BACKENDS",
    "sample",
    "sampling_probs",
    "SampleWithLogprobs",
    "reference",
    "native_available",
    "cuda_available",
]
