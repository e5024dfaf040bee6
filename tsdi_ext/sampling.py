"""Public sampling API: ``tsdi_ext.sample`` and ``tsdi_ext.sampling_probs``.

The front end checks arguments (tensor metadata only: no host-device synchronisation) and
dispatches to one of three backends that implement the same contract:

* ``"torch"``: the pure-PyTorch reference (:mod:`tsdi_ext.reference`), any device;
* ``"cpu"``: the fused C++ kernel (csrc/tsdi/cpu/sampling_kernel.h), CPU tensors;
* ``"cuda"``: the fused CUDA kernel, CUDA tensors (when the extension was built with CUDA);
* ``"auto"`` (default): the fused kernel of the logits' device.
"""

from __future__ import annotations

import math
import operator
import struct

import torch

from . import _ops, reference

__all__ = ["sample", "sampling_probs", "BACKENDS"]

BACKENDS = ("auto", "torch", "cpu", "cuda")
_LOGITS_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT64_MIN, _UINT64_END = -(2**63), 2**64


def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"tsdi_ext: logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"tsdi_ext: logits must be [B, V] (2-D), got shape {tuple(logits.shape)}")
    if logits.dtype not in _LOGITS_DTYPES:
        raise TypeError(f"tsdi_ext: logits must be float32, float16 or bfloat16, got {logits.dtype}")
    if logits.shape[1] == 0:
        raise ValueError("tsdi_ext: logits have an empty vocabulary (V == 0)")


def _check_same_device(name: str, tensor: torch.Tensor, logits: torch.Tensor) -> None:
    if tensor.device != logits.device:
        raise ValueError(f"tsdi_ext: {name} is on {tensor.device} but logits are on {logits.device}")


def _check_bias(bias, positions, logits):
    """Validates bias and positions; returns positions with unit stride (or None)."""
    batch, vocab = logits.shape
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"tsdi_ext: bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dim() not in (1, 2):
            raise ValueError(f"tsdi_ext: bias must be [V] or [L, V], got shape {tuple(bias.shape)}")
        if bias.dtype != torch.float32:
            raise TypeError(f"tsdi_ext: bias must be float32, got {bias.dtype}")
        if bias.shape[-1] != vocab:
            raise ValueError(
                f"tsdi_ext: bias has vocabulary size {bias.shape[-1]} but logits have {vocab}"
            )
        _check_same_device("bias", bias, logits)
        if bias.dim() == 2 and positions is None:
            raise ValueError("tsdi_ext: positions ([B] int64) are required with an [L, V] bias")
    if positions is not None:
        if not isinstance(positions, torch.Tensor):
            raise TypeError(
                f"tsdi_ext: positions must be a [B] int64 tensor, got {type(positions).__name__}"
            )
        if positions.dim() != 1 or positions.shape[0] != batch:
            raise ValueError(
                f"tsdi_ext: positions must be [B] with B = {batch}, got shape {tuple(positions.shape)}"
            )
        if positions.dtype != torch.int64:
            raise TypeError(f"tsdi_ext: positions must be int64, got {positions.dtype}")
        _check_same_device("positions", positions, logits)
        if not positions.is_contiguous():
            positions = positions.contiguous()
    return positions


def _row_tensor(name: str, value: torch.Tensor, logits: torch.Tensor, dtype: torch.dtype):
    batch = logits.shape[0]
    if value.dim() != 1 or value.shape[0] != batch:
        raise ValueError(
            f"tsdi_ext: {name} must be a Python number or a [B] tensor with B = {batch}, "
            f"got shape {tuple(value.shape)}"
        )
    if value.dtype != dtype:
        raise TypeError(f"tsdi_ext: {name} must have dtype {dtype}, got {value.dtype}")
    _check_same_device(name, value, logits)
    return value if value.is_contiguous() else value.contiguous()


# Rounded values of the scalars seen so far: a decoding loop passes the same few temperatures and
# top-p values at every step, and a dict lookup costs a fifth of the struct round trip.
_FLOAT32_CACHE: dict[float, float] = {}


def _to_float32(value: float) -> float:
    """``value`` rounded to float32 (overflowing to +-inf), as every backend will read it."""
    rounded = _FLOAT32_CACHE.get(value)
    if rounded is not None:
        return rounded
    try:
        rounded = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        rounded = math.copysign(math.inf, value)
    if len(_FLOAT32_CACHE) < 1024 and value == value:  # NaN is never found again: not cached
        _FLOAT32_CACHE[value] = rounded
    return rounded


def _float_param(name: str, value, logits: torch.Tensor, compiling: bool):
    """(per-row tensor or None, scalar) for a float parameter. Python numbers are rounded to
    float32 here, so that every backend sees the same value."""
    if isinstance(value, torch.Tensor):
        return _row_tensor(name, value, logits, torch.float32), 0.0
    if compiling:
        # Traced by torch.compile: a constant or a symbolic number, passed through as is; the op
        # checks it (and reads it as float32) at run time.
        return None, value
    if type(value) is float:  # the common case first
        return None, _to_float32(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"tsdi_ext: {name} must be a Python number or a [B] float32 tensor, "
            f"got {type(value).__name__}"
        )
    return None, _to_float32(float(value))


def _int_param(name: str, value, logits: torch.Tensor):
    """(per-row tensor or None, scalar) for a 64-bit integer parameter (seed, offset)."""
    if isinstance(value, torch.Tensor):
        return _row_tensor(name, value, logits, torch.int64), 0
    if isinstance(value, bool):
        raise TypeError(f"tsdi_ext: {name} must be an int or a [B] int64 tensor, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"tsdi_ext: {name} must be an int or a [B] int64 tensor, got {type(value).__name__}"
        ) from None
    if not _INT64_MIN <= value < _UINT64_END:
        raise ValueError(f"tsdi_ext: {name} must fit in 64 bits, got {value}")
    # Values in [2**63, 2**64) are read as uint64: pass their two's complement int64.
    return None, value - _UINT64_END if value >= 2**63 else value


def _prepare(logits, bias, positions, alpha, temperature, top_p, backend):
    _check_logits(logits)
    positions = _check_bias(bias, positions, logits)
    if backend not in BACKENDS:
        raise ValueError(f"tsdi_ext: backend must be one of {BACKENDS}, got {backend!r}")
    compiling = torch.compiler.is_compiling()
    alpha_t, alpha_v = _float_param("alpha", alpha, logits, compiling)
    temperature_t, temperature_v = _float_param("temperature", temperature, logits, compiling)
    top_p_t, top_p_v = _float_param("top_p", top_p, logits, compiling)
    # Scalar checks in eager mode only: under torch.compile a changed float becomes symbolic and
    # cannot be inspected while tracing; the C++ op repeats these checks at run time.
    if not compiling:
        if not math.isfinite(alpha_v):
            raise ValueError(f"tsdi_ext: alpha must be finite (in float32), got {alpha_v}")
        if not temperature_v >= 0:  # also catches NaN
            raise ValueError(
                f"tsdi_ext: temperature must be >= 0 (0 means greedy), got {temperature_v}"
            )
        if math.isnan(top_p_v):
            raise ValueError("tsdi_ext: top_p must be a number, got NaN")
    if backend in ("cpu", "cuda") and logits.device.type != backend:
        raise ValueError(
            f"tsdi_ext: backend={backend!r} needs {backend} tensors, logits are on {logits.device}"
        )
    if backend != "torch":
        _ops.require_native()
        if logits.is_cuda and not _ops.cuda_available():
            raise RuntimeError(
                "tsdi_ext: logits are on CUDA but this build of tsdi_ext has no CUDA kernels "
                "(rebuild on a machine with nvcc and a CUDA torch, or use backend='torch')"
            )
    return positions, (alpha_t, alpha_v), (temperature_t, temperature_v), (top_p_t, top_p_v)


def _raise_for_invalid_rows(valid, logits, bias, positions, alpha, temperature, top_p) -> None:
    if bool(valid.all()):
        return
    rows = (~valid).nonzero().flatten()[:8]

    def pick(value):
        return value[rows] if isinstance(value, torch.Tensor) else value

    d, bad_position = reference.debiased_logits(logits[rows], bias, pick(positions), pick(alpha))
    status = reference.row_status(d, bad_position, pick(temperature), pick(top_p)).tolist()
    reasons = "; ".join(
        f"row {row} cannot be sampled: {reference.ROW_STATUS_MESSAGES.get(code, 'unknown reason')}"
        for row, code in zip(rows.tolist(), status)
    )
    count = int((~valid).sum())
    raise ValueError(f"tsdi_ext: {count} invalid row(s) with strict=True: {reasons}")


def sample(
    logits: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    alpha: float | torch.Tensor = 1.0,
    temperature: float | torch.Tensor = 1.0,
    top_p: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor = 0,
    offset: int | torch.Tensor = 0,
    backend: str = "auto",
    strict: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Debias, scale, keep the top-p nucleus and draw one token per row, in one fused step.

    Parameters
    ----------
    logits : torch.Tensor
        ``[B, V]`` float32, float16 or bfloat16. Any row stride; a tensor whose vocabulary axis is
        not unit-stride is copied once. All arithmetic is float32.
    bias : torch.Tensor, optional
        ``[L, V]`` float32 table (row ``t``: the bias at response position ``t``) or ``[V]`` (the
        same bias at every position). Must be contiguous on the CUDA and CPU backends.
    positions : torch.Tensor, optional
        ``[B]`` int64 response position of each row; required with an ``[L, V]`` bias. A row whose
        position is ``>= L`` gets no bias; a negative position makes the row invalid.
    alpha : float or torch.Tensor
        Debiasing strength, scalar or ``[B]`` float32: ``d = logits - alpha * bias[positions]``.
    temperature : float or torch.Tensor
        Scalar or ``[B]`` float32, ``>= 0``. 0 means greedy (first argmax of ``d``).
    top_p : float or torch.Tensor
        Nucleus mass, scalar or ``[B]`` float32. ``>= 1`` keeps all tokens, ``<= 0`` the maximum.
    seed, offset : int or torch.Tensor
        Scalar or ``[B]`` int64 (read as uint64). The draw of a row depends only on its own
        ``(seed, offset)``: the same pair gives the same uniform on every backend and at every
        batch position. Use ``offset`` as the decoding step.
    backend : {"auto", "torch", "cpu", "cuda"}
        Implementation to run (see module docstring).
    strict : bool
        If True, raise ``ValueError`` naming the invalid rows (this synchronises with the device).

    Returns
    -------
    tokens : torch.Tensor
        ``[B]`` int64, in ``[0, V)``. 0 for invalid rows.
    valid : torch.Tensor
        ``[B]`` bool. False where the row cannot be sampled: a debiased logit is NaN or +inf, all
        are -inf, or a per-row temperature is negative/NaN, top_p NaN or position negative.

    Notes
    -----
    The draw is the inverse CDF over the nucleus in vocabulary order: with
    ``u = philox4x32_10(counter=(offset_lo, offset_hi, 0, 0), key=(seed_lo, seed_hi))[0] / 2**32``,
    the token is the first kept index whose cumulative renormalised probability exceeds ``u``.
    Backends agree token for token except when ``u`` falls within float rounding of a boundary.
    """
    positions, (alpha_t, alpha_v), (temperature_t, temperature_v), (top_p_t, top_p_v) = _prepare(
        logits, bias, positions, alpha, temperature, top_p, backend
    )
    seed_t, seed_v = _int_param("seed", seed, logits)
    offset_t, offset_v = _int_param("offset", offset, logits)
    if backend == "torch":
        tokens, valid = reference.sample(
            logits,
            bias=bias,
            positions=positions,
            alpha=alpha_v if alpha_t is None else alpha_t,
            temperature=temperature_v if temperature_t is None else temperature_t,
            top_p=top_p_v if top_p_t is None else top_p_t,
            seed=seed_v if seed_t is None else seed_t,
            offset=offset_v if offset_t is None else offset_t,
        )
    else:
        tokens, valid = torch.ops.tsdi_ext.sample.default(
            logits, bias, positions, alpha_t, alpha_v, temperature_t, temperature_v,
            top_p_t, top_p_v, seed_t, seed_v, offset_t, offset_v,
        )
    if strict:
        _raise_for_invalid_rows(valid, logits, bias, positions, alpha, temperature, top_p)
    return tokens, valid


def sampling_probs(
    logits: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    alpha: float | torch.Tensor = 1.0,
    temperature: float | torch.Tensor = 1.0,
    top_p: float | torch.Tensor = 1.0,
    backend: str = "auto",
    strict: bool = False,
) -> torch.Tensor:
    """The distribution that :func:`sample` draws from.

    Parameters are those of :func:`sample` (without ``seed`` and ``offset``).

    Returns
    -------
    torch.Tensor
        ``[B, V]`` float32: the nucleus probabilities renormalised to sum to 1, zeros outside the
        nucleus; one-hot at the first argmax for ``temperature == 0``; all zeros for invalid rows.
    """
    positions, (alpha_t, alpha_v), (temperature_t, temperature_v), (top_p_t, top_p_v) = _prepare(
        logits, bias, positions, alpha, temperature, top_p, backend
    )
    if backend == "torch":
        probs = reference.sampling_probs(
            logits,
            bias=bias,
            positions=positions,
            alpha=alpha_v if alpha_t is None else alpha_t,
            temperature=temperature_v if temperature_t is None else temperature_t,
            top_p=top_p_v if top_p_t is None else top_p_t,
        )
    else:
        probs = torch.ops.tsdi_ext.sampling_probs.default(
            logits, bias, positions, alpha_t, alpha_v, temperature_t, temperature_v, top_p_t, top_p_v
        )
    if strict:
        valid = probs.sum(dim=1) > 0
        _raise_for_invalid_rows(valid, logits, bias, positions, alpha, temperature, top_p)
    return probs
