"""Loads the native extension and registers what torch.compile needs to trace the ops.

Importing ``tsdi_ext._C`` registers the dispatcher ops ``torch.ops.tsdi_ext.sample`` and
``torch.ops.tsdi_ext.sampling_probs`` with their CPU (and, when built, CUDA) kernels. The fake
(meta) implementations below give their output shapes without running them. An extension whose
per-row parameters differ from :data:`tsdi_ext.ops.params.ROW_PARAMS` (built from another
version of the sources) is not used.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path

import torch

from .params import ROW_PARAMS


def _torch_series(version: str) -> str:
    """``"2.13"`` for ``"2.13.0+cpu"``: compiled extensions are tied to a torch minor series."""
    return ".".join(version.split("+")[0].split(".")[:2])


def _label_cuda(flavour: str) -> str | None:
    """``"13.0"`` for a wheel label's ``"cu130"``, None for ``"cpu"`` (setup.py's convention)."""
    if flavour.startswith("cu") and flavour[2:].isdigit():
        return f"{flavour[2:-1]}.{flavour[-1]}"
    return None


def _cuda_words(cuda: str | None) -> str:
    return f"CUDA {cuda}" if cuda else "no CUDA"


def explain_import_failure(
    error: ImportError, package_version: str | None, torch_version: str, torch_cuda: str | None
) -> ImportError:
    """The import error of ``tsdi_ext._C`` with what the user needs to know to fix it.

    A wheel's local version label (``0.1.0+cu130.torch2.11``) says what it was built for, so a
    wheel for another torch series or another CUDA flavour is named as such (e.g. a cu130 wheel
    next to a CPU torch fails with "libc10_cuda.so: cannot open shared object file", which does
    not say why). Without a label (source builds) an undefined symbol still points at the torch.
    """
    label = (package_version or "").partition("+")[2]
    flavour, _, built_series = label.partition(".torch")
    if flavour and built_series:
        built_cuda = _label_cuda(flavour)
        wrong_series = built_series != _torch_series(torch_version)
        wrong_cuda = built_cuda is not None and (
            not torch_cuda or built_cuda.split(".")[0] != torch_cuda.split(".")[0]
        )
        if wrong_series or wrong_cuda:
            wanted = "cu" + torch_cuda.replace(".", "") if torch_cuda else "cpu"
            return ImportError(
                f"{error}. This tsdi_ext wheel ({package_version}) was built for torch {built_series} "
                f"with {_cuda_words(built_cuda)}, but torch {torch_version} ({_cuda_words(torch_cuda)}) "
                f"is running: install the wheel for this torch (+{wanted}.torch"
                f"{_torch_series(torch_version)}) or build from source against it with "
                "'pip install --no-build-isolation tsdi_ext'"
            )
    if "undefined symbol" in str(error):
        # The most common failure of compiled torch extensions: built for another torch.
        return ImportError(
            f"{error}. tsdi_ext's extension was most likely compiled against a different torch than "
            f"the one installed ({torch_version}): rebuild it with "
            "'pip install --no-build-isolation --force-reinstall tsdi_ext' or install the wheel for "
            "this torch"
        )
    return error


def _installed_version() -> str | None:
    """The version of the installed distribution, when it is the package being imported."""
    try:
        distribution = metadata.distribution("tsdi_ext")
        installed = Path(str(distribution.locate_file("tsdi_ext"))).resolve()
        if installed != Path(__file__).resolve().parents[1]:
            return None  # a source checkout shadows some other installed copy
        return distribution.version
    except Exception:  # noqa: BLE001 - metadata is a hint only
        return None


def _row_params_mismatch(native_params) -> str | None:
    """Why the extension's per-row parameters are not the front end's, or None when they are."""
    native = [tuple(entry) for entry in native_params]
    python = [(param.name, param.kind) for param in ROW_PARAMS]
    if native == python:
        return None
    return (
        f"tsdi_ext's extension takes the per-row parameters {native} but this Python package "
        f"passes {python}: the extension was built from other sources; rebuild it with "
        "'pip install --no-build-isolation --force-reinstall tsdi_ext'"
    )


NATIVE_IMPORT_ERROR: ImportError | None = None
try:
    from .. import _C  # noqa: F401  (import registers the ops)
except ImportError as error:  # pragma: no cover - depends on the installation
    _C = None
    NATIVE_IMPORT_ERROR = explain_import_failure(
        error, _installed_version(), torch.__version__, torch.version.cuda
    )
else:
    _mismatch = _row_params_mismatch(_C.row_params())
    if _mismatch is not None:  # pragma: no cover - depends on the installation
        _C, NATIVE_IMPORT_ERROR = None, ImportError(_mismatch)


def native_available() -> bool:
    """True when the compiled extension is importable."""
    return _C is not None


def build_mismatch() -> str | None:
    """A sentence saying how the compiled extension does not fit the running torch, or None."""
    if _C is None:
        return None
    info = _C.build_info()
    built = info.get("torch_version", "")
    if built and _torch_series(built) != _torch_series(torch.__version__):
        return (
            f"tsdi_ext was compiled against torch {built} but torch {torch.__version__} is running; "
            f"rebuild it (pip install --no-build-isolation --force-reinstall tsdi_ext) or install "
            f"the wheel built for torch {_torch_series(torch.__version__)}"
        )
    cuda = info.get("cuda_version", "")
    if (
        info.get("cuda")
        and torch.version.cuda
        and cuda.split(".")[0] != torch.version.cuda.split(".")[0]
    ):
        return f"tsdi_ext's CUDA kernels were built with CUDA {cuda} but torch uses CUDA {torch.version.cuda}"
    return None


def _check_build_matches_torch() -> None:
    mismatch = build_mismatch()
    if mismatch is not None:
        warnings.warn(
            f"{mismatch}; expect crashes or wrong results (see 'python -m tsdi_ext.info').",
            RuntimeWarning,
            stacklevel=2,
        )


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
    def _sample_fake(logits, bias, positions, row_tensors, row_floats, row_ints):
        batch = logits.shape[0]
        tokens = logits.new_empty((batch,), dtype=torch.int64)
        valid = logits.new_empty((batch,), dtype=torch.bool)
        return tokens, valid

    @torch.library.register_fake("tsdi_ext::sampling_probs")
    def _sampling_probs_fake(logits, bias, positions, row_tensors, row_floats, row_ints):
        return logits.new_empty(logits.shape, dtype=torch.float32)


# Read once: cuda_available() is on the per-call path of CUDA tensors.
_HAS_CUDA_KERNELS = _C is not None and bool(_C.build_info().get("cuda", False))


def cuda_available() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return _HAS_CUDA_KERNELS
