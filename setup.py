"""Build script for tsdi_ext.

The native sources and flags live in ``csrc/build_config.json`` (shared with CMakeLists.txt).
The extension is built against the torch that is already installed, so build with
``pip install --no-build-isolation .``: an isolated build would resolve its own torch (on Linux, a
multi-GB CUDA build) and produce a binary that does not match the torch you run.

Environment:
  TSDI_EXT_CUDA=0   never build the CUDA kernels
  FORCE_CUDA=1      build them even when torch reports no CUDA device (needs nvcc + CUDA torch)
  TORCH_CUDA_ARCH_LIST, MAX_JOBS   respected as by torch.utils.cpp_extension
  TSDI_EXT_LOCAL_VERSION=1   add the local version label of a binary wheel: +cpu.torch2.13 or
                             +cu130.torch2.13 (the extension is tied to one torch minor series)

A wheel requires the torch series it was compiled against (``torch==2.13.*``): its extension is
ABI-tied to that series, and in a per-CUDA package index (docs/installing.md) pip must not pair it
with another torch. The sdist, which compiles against whatever torch is installed, requires
``torch>=2.11`` only.
"""

import json
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - build-time message
    sys.exit(
        "tsdi_ext compiles against the torch you run: install torch first (e.g. "
        "'pip install torch'), then build with 'pip install --no-build-isolation .'"
    )


def want_cuda() -> bool:
    if os.environ.get("TSDI_EXT_CUDA", "") == "0":
        return False
    if os.environ.get("FORCE_CUDA", "") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


BUILD_CUDA = want_cuda()


def version() -> str:
    namespace: dict = {}
    exec((ROOT / "tsdi_ext" / "_version.py").read_text(), namespace)
    base = namespace["__version__"]
    if os.environ.get("TSDI_EXT_LOCAL_VERSION", "") != "1":
        return base
    flavour = "cu" + torch.version.cuda.replace(".", "") if BUILD_CUDA else "cpu"
    return f"{base}+{flavour}.torch{torch_series()}"


MIN_TORCH = "2.11"


def torch_series() -> str:
    """The installed torch's minor series, e.g. ``2.13`` for 2.13.0+cpu."""
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def torch_requirement() -> str:
    # setuptools runs the "sdist" command only when making the source distribution; every other
    # path (bdist_wheel, dist_info for a wheel, pip install .) compiles the extension against the
    # installed torch, so its metadata names that series.
    if "sdist" in sys.argv[1:]:
        return f"torch>={MIN_TORCH}"
    return f"torch=={torch_series()}.*"


def cuda_arch_list() -> str:
    return os.environ.get("TORCH_CUDA_ARCH_LIST", "") or "as detected by torch"


def extensions():
    config = json.loads((ROOT / "csrc" / "build_config.json").read_text())
    sources = config["kernel_sources_cpu"] + config["glue_sources_cpu"]
    torch_version = torch.__version__.split("+")[0]
    macros = [("TSDI_TORCH_VERSION", f'"{torch_version}"')]
    compile_args = {"cxx": list(config["cxx_flags"])}
    include_dirs = [str(ROOT / d) for d in config["include_dirs"]]
    if BUILD_CUDA:
        sources += config["glue_sources_cuda"]
        macros.append(("TSDI_WITH_CUDA", "1"))
        macros.append(("TSDI_CUDA_VERSION", f'"{torch.version.cuda}"'))
        macros.append(("TSDI_CUDA_ARCHS", f'"{cuda_arch_list()}"'))
        compile_args["nvcc"] = list(config["nvcc_flags"])
        extension_class = CUDAExtension
    else:
        extension_class = CppExtension
    return [
        extension_class(
            name="tsdi_ext._C",
            sources=sources,
            include_dirs=include_dirs,
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=list(config["link_flags"]),
        )
    ]


setup(
    version=version(),
    # pyproject.toml declares dependencies dynamic: the torch requirement depends on what is built.
    install_requires=[torch_requirement(), "safetensors>=0.4", "tqdm>=4.60"],
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
)
