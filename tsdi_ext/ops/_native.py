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


def _register_probs_autograd() -> None:
    """Gradients of sampling_probs (docs/contract.md §6): on the kept set the probabilities are a
    softmax of ``d * s`` (s = 1/T, clamped), and the set itself is piecewise constant, so

        dL/dd = s * p * (g - sum(g * p))        (0 outside the kept set, where p = 0)

    flowing to the logits (dL/dx = dL/dd) and to the bias (dL/dbias = -alpha * dL/dd, summed over
    the rows that read each bias row). Greedy and invalid rows have zero gradient. A per-row
    parameter tensor that requires grad raises: no gradient flows to alpha, temperature, top_p."""

    def setup_context(ctx, inputs, output):
        logits, bias, positions, row_tensors, row_floats, _ = inputs
        names = [p.name for p in ROW_PARAMS]
        for name, tensor in zip(names, row_tensors):
            if tensor is not None and tensor.requires_grad:
                raise ValueError(
                    f"tsdi_ext: sampling_probs has gradients for logits and bias only, but "
                    f"{name} requires grad (detach it)"
                )
        floats = iter(row_floats)
        scalars = {p.name: next(floats) for p in ROW_PARAMS if p.kind == "float"}
        tensors = dict(zip(names, row_tensors))
        ctx.alpha = tensors["alpha"] if tensors["alpha"] is not None else scalars["alpha"]
        temperature = tensors["temperature"]
        if temperature is None:
            temperature = torch.full(
                (logits.shape[0],), scalars["temperature"], device=logits.device
            )
        ctx.logits_dtype = logits.dtype
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.save_for_backward(output, temperature, bias, positions)

    def backward(ctx, grad):
        probs, temperature, bias, positions = ctx.saved_tensors
        finfo = torch.finfo(torch.float32)
        scale = temperature.float().reciprocal().clamp(finfo.tiny, finfo.max)
        scale = torch.where(temperature > 0, scale, torch.zeros_like(scale))  # greedy: constant
        inner = (grad * probs).sum(dim=1, keepdim=True)
        grad_d = scale[:, None] * probs * (grad - inner)
        grad_logits = grad_d.to(ctx.logits_dtype) if ctx.needs_input_grad[0] else None
        grad_bias = None
        if bias is not None and ctx.needs_input_grad[1]:
            alpha = ctx.alpha
            alpha = alpha[:, None] if isinstance(alpha, torch.Tensor) else alpha
            per_row = -alpha * grad_d
            if bias.dim() == 1:
                grad_bias = per_row.sum(dim=0)
            else:
                rows = bias.shape[0]
                reads = (positions >= 0) & (positions < rows)
                grad_bias = torch.zeros_like(bias).index_add_(
                    0, positions[reads], per_row[reads].to(bias.dtype)
                )
        return grad_logits, grad_bias, None, None, None, None

    torch.library.register_autograd(
        "tsdi_ext::sampling_probs", backward, setup_context=setup_context
    )


if _C is not None:
    _check_build_matches_torch()

    def _check_devices(logits, bias, positions, row_tensors) -> None:
        """The C++ glue's device check, for the calls that reach no kernel: a tensor on the meta
        device (or under FakeTensorMode) among the arguments dispatches to these fake
        implementations, which would otherwise return uninitialised outputs for CPU logits."""
        named = [("bias", bias), ("positions", positions)]
        named += [(p.name, t) for p, t in zip(ROW_PARAMS, row_tensors)]
        for name, tensor in named:
            if tensor is not None and tensor.device != logits.device:
                raise ValueError(
                    f"tsdi_ext: {name} is on {tensor.device} but logits are on {logits.device}"
                )

    @torch.library.register_fake("tsdi_ext::sample")
    def _sample_fake(logits, bias, positions, row_tensors, row_floats, row_ints):
        _check_devices(logits, bias, positions, row_tensors)
        batch = logits.shape[0]
        tokens = logits.new_empty((batch,), dtype=torch.int64)
        valid = logits.new_empty((batch,), dtype=torch.bool)
        return tokens, valid

    @torch.library.register_fake("tsdi_ext::sample_logprobs")
    def _sample_logprobs_fake(logits, bias, positions, row_tensors, row_floats, row_ints):
        _check_devices(logits, bias, positions, row_tensors)
        batch = logits.shape[0]
        tokens = logits.new_empty((batch,), dtype=torch.int64)
        valid = logits.new_empty((batch,), dtype=torch.bool)
        return tokens, valid, logits.new_empty((batch, 2), dtype=torch.float32)

    @torch.library.register_fake("tsdi_ext::sampling_probs")
    def _sampling_probs_fake(logits, bias, positions, row_tensors, row_floats, row_ints):
        _check_devices(logits, bias, positions, row_tensors)
        return logits.new_empty(logits.shape, dtype=torch.float32)

    _register_probs_autograd()


# Read once: cuda_available() is on the per-call path of CUDA tensors.
_HAS_CUDA_KERNELS = _C is not None and bool(_C.build_info().get("cuda", False))


def cuda_available() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return _HAS_CUDA_KERNELS
