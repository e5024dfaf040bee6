"""Environment report: ``python -m tsdi_ext.info`` or ``tsdi info``.

Prints the package version, the torch it runs on and the torch it was built against, the compiled
backends, the GPU seen, and whether the build matches the running torch: a compiled torch
extension only works with the torch minor series it was built for.
"""

from __future__ import annotations

import platform
import sys

import torch

from ._version import __version__
from .ops import _native

build_mismatch = _native.build_mismatch


def report() -> dict:
    """The environment as a dictionary (what ``main`` prints)."""
    result = {
        "tsdi_ext": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none (CPU build)",
        "extension": "loaded"
        if _native._C is not None
        else f"NOT loaded ({_native.NATIVE_IMPORT_ERROR})",
    }
    if _native._C is not None:
        info = _native._C.build_info()
        result["built_against_torch"] = info.get("torch_version", "?")
        backends = ["cpu (fused C++ kernel)"]
        if info.get("cuda"):
            backends.append(
                f"cuda (CUDA {info.get('cuda_version')}, archs {info.get('cuda_archs')})"
            )
        result["backends"] = ", ".join(backends) + ", torch (reference)"
        result["compiler"] = info.get("compiler", "?")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        result["gpu"] = (
            f"{props.name} (sm_{props.major}{props.minor}), {torch.cuda.device_count()} device(s)"
        )
    else:
        result["gpu"] = "none seen by torch"
    mismatch = build_mismatch()
    result["build_matches_torch"] = (
        "yes" if mismatch is None and _native._C is not None else (mismatch or "no extension")
    )
    return result


def main() -> int:
    for key, value in report().items():
        print(f"{key:22s} {value}")
    return 0 if build_mismatch() is None and _native._C is not None else 1


if __name__ == "__main__":
    sys.exit(main())
