"""Environment report: ``python -m tsdi_ext.info`` or ``tsdi info``.

Prints the package version, the torch it runs on and the torch it was built against, the compiled
backends, the GPU seen, and whether the build matches the running torch: a compiled torch
extension only works with the torch minor series it was built for.
"""

from __future__ import annotations

import os
import platform
import sys

import torch

from ._version import __version__
from .ops import _native

build_mismatch = _native.build_mismatch

# Where the per-flavour, per-torch-series wheel indexes live (docs/installing.md: the layout is
# <index>/<cpu|cuNNN>/torch<A.B>/, one PEP 503 index each, as FlashInfer's). Set by whoever hosts
# them; without it the report names the wheel and the index's path only.
WHEEL_INDEX_ENV = "TSDI_EXT_WHEEL_INDEX"


def needed_wheel(torch_version: str, torch_cuda: str | None, version: str = __version__) -> str:
    """The wheel's version for a torch: ``0.1.0+cu130.torch2.11`` (setup.py's local label)."""
    flavour = "cu" + torch_cuda.replace(".", "") if torch_cuda else "cpu"
    return f"{version.split('+')[0]}+{flavour}.torch{_native._torch_series(torch_version)}"


def install_hint(torch_version: str, torch_cuda: str | None) -> str:
    """What to install for this torch: the wheel, its index path, and the pip command if known."""
    wanted = needed_wheel(torch_version, torch_cuda)
    flavour, _, series = wanted.partition("+")[2].partition(".")
    path = f"{flavour}/{series}/"
    index = os.environ.get(WHEEL_INDEX_ENV, "").rstrip("/")
    if index:
        return (
            f"tsdi_ext=={wanted}: pip install 'tsdi_ext=={wanted}' --extra-index-url {index}/{path}"
        )
    return (
        f"tsdi_ext=={wanted} (from the index's {path} folder: docs/installing.md), or build it: "
        "pip install --no-build-isolation tsdi_ext"
    )


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
    if mismatch is not None or _native._C is None:
        result["wheel_for_this_torch"] = install_hint(torch.__version__, torch.version.cuda)
    return result


def main() -> int:
    for key, value in report().items():
        print(f"{key:22s} {value}")
    return 0 if build_mismatch() is None and _native._C is not None else 1


if __name__ == "__main__":
    sys.exit(main())
