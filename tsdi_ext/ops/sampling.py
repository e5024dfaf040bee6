"""Public sampling API: ``tsdi_ext.sample`` and ``tsdi_ext.sampling_probs``.

What they compute is the contract in docs/contract.md. The front end checks arguments (tensor
metadata only: no host-device synchronisation) and dispatches to one of the backends that
implement that contract:

* ``"torch"``: the pure-PyTorch reference (:mod:`tsdi_ext.ops.reference`), any device;
* ``"cpu"``: the fused C++ kernel (csrc/tsdi/cpu/sampling_kernel.h), CPU tensors;
* ``"cuda"``: the fused CUDA kernel, CUDA tensors (when the extension was built with CUDA);
* ``"auto"`` (default): the fused kernel of the logits' device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _native, reference
from .params import row_args

__all__ = ["sample", "sampling_probs", "SampleWithLogprobs", "BACKENDS"]

BACKENDS = ("auto", "torch", "cpu", "cuda")


class SampleWithLogprobs(NamedTuple):
    """What :func:`sample` returns with ``return_logprobs=True`` (docs/contract.md §7)."""

    tokens: torch.Tensor  # [B] int64
    valid: torch.Tensor  # [B] bool
    logprob: torch.Tensor  # [B] float32: log p(token) under the final (filtered) distribution
    unfiltered_logprob: torch.Tensor  # [B] float32: under the debiased, tempered, unfiltered one


_LOGITS_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"tsdi_ext: logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"tsdi_ext: logits must be [B, V] (2-D), got shape {tuple(logits.shape)}")
    if logits.dtype not in _LOGITS_DTYPES:
        raise TypeError(
            f"tsdi_ext: logits must be float32, float16 or bfloat16, got {logits.dtype}"
        )
    if logits.shape[1] == 0:
        raise ValueError("tsdi_ext: logits have an empty vocabulary (V == 0)")


def _check_same_device(name: str, tensor: torch.Tensor, logits: torch.Tensor) -> None:
    if tensor.device != logits.device:
        raise ValueError(
            f"tsdi_ext: {name} is on {tensor.device} but logits are on {logits.device}"
        )


def _check_bias(bias, positions, logits):
    """Validates bias and positions; returns positions with unit stride (or None)."""
    batch, vocab = logits.shape
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(
                f"tsdi_ext: bias must be a torch.Tensor or None, got {type(bias).__name__}"
            )
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


def _prepare(logits, bias, positions, backend, params: dict):
    """Checks one call's arguments; returns unit-stride positions and the per-row arguments."""
    _check_logits(logits)
    positions = _check_bias(bias, positions, logits)
    if backend not in BACKENDS:
        raise ValueError(f"tsdi_ext: backend must be one of {BACKENDS}, got {backend!r}")
    # Under torch.compile a changed float becomes symbolic and cannot be inspected while tracing:
    # the scalars' checks then run in the C++ op, at run time.
    args = row_args(logits, torch.compiler.is_compiling(), params)
    if backend in ("cpu", "cuda") and logits.device.type != backend:
        raise ValueError(
            f"tsdi_ext: backend={backend!r} needs {backend} tensors, logits are on {logits.device}"
        )
    if backend != "torch":
        _native.require_native()
        if logits.is_cuda and not _native.cuda_available():
            raise RuntimeError(
                "tsdi_ext: logits are on CUDA but this build of tsdi_ext has no CUDA kernels "
                "(rebuild on a machine with nvcc and a CUDA torch, or use backend='torch')"
            )
    return positions, args


def _raise_for_invalid_rows(valid, logits, bias, positions, values) -> None:
    if bool(valid.all()):
        return
    rows = (~valid).nonzero().flatten()[:8]

    def pick(value):
        return value[rows] if isinstance(value, torch.Tensor) else value

    picked = {name: pick(value) for name, value in values.items()}
    d, bad_position = reference.debiased_logits(
        logits[rows], bias, pick(positions), picked["alpha"]
    )
    status = reference.row_status(
        d,
        bad_position,
        picked["temperature"],
        picked["top_p"],
        picked["top_k"],
        picked["min_p"],
    ).tolist()
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
    top_k: int | torch.Tensor = 0,
    min_p: float | torch.Tensor = 0.0,
    seed: int | torch.Tensor = 0,
    offset: int | torch.Tensor = 0,
    backend: str = "auto",
    strict: bool = False,
    return_logprobs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | SampleWithLogprobs:
    """Debias, scale, filter (top-k, top-p, min-p) and draw one token per row, in one fused step.

    What it computes is docs/contract.md (arguments §1, invalid rows §3, the draw §7).

    Parameters
    ----------
    logits : torch.Tensor
        ``[B, V]`` float32, float16 or bfloat16, any row stride.
    bias : torch.Tensor, optional
        ``[L, V]`` float32 table (row ``t``: response position ``t``) or ``[V]``; contiguous.
    positions : torch.Tensor, optional
        ``[B]`` int64 response position of each row; required with an ``[L, V]`` bias.
    alpha, temperature, top_p : float or torch.Tensor
        Scalars or ``[B]`` float32: debiasing strength, temperature (0: greedy), nucleus mass in
        ``[0, 1]``.
    top_k : int or torch.Tensor
        Scalar or ``[B]`` int64 >= 0: keep the ``top_k`` largest weights and their ties (0: off).
    min_p : float or torch.Tensor
        Scalar or ``[B]`` float32 in ``[0, 1]``: keep the tokens of probability at least
        ``min_p`` times the largest (0: off). The filters' order is transformers' (contract §6).
    seed, offset : int or torch.Tensor
        Scalars or ``[B]`` int64 (read as uint64): a row's draw depends only on its own pair. Use
        ``offset`` as the decoding step.
    backend : {"auto", "torch", "cpu", "cuda"}
        Implementation to run (see the module docstring).
    strict : bool
        Raise ``ValueError`` naming the invalid rows (synchronises with the device).
    return_logprobs : bool
        Also return each drawn token's log-probability under the final distribution and under
        the debiased, tempered, unfiltered one, from the sums the draw makes anyway (no extra
        pass): a :class:`SampleWithLogprobs`.

    Returns
    -------
    tokens : torch.Tensor
        ``[B]`` int64 in ``[0, V)``; 0 for invalid rows.
    valid : torch.Tensor
        ``[B]`` bool; False for rows that cannot be sampled.
    """
    params = dict(
        alpha=alpha,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        seed=seed,
        offset=offset,
    )
    positions, args = _prepare(logits, bias, positions, backend, params)
    logprobs = None
    if backend == "torch":
        out = reference.sample(
            logits,
            bias=bias,
            positions=positions,
            return_logprobs=return_logprobs,
            **args.by_name(True),
        )
    elif return_logprobs:
        out = torch.ops.tsdi_ext.sample_logprobs.default(
            logits, bias, positions, args.tensors, args.floats, args.ints
        )
    else:
        out = torch.ops.tsdi_ext.sample.default(
            logits, bias, positions, args.tensors, args.floats, args.ints
        )
    tokens, valid = out[0], out[1]
    if strict:
        _raise_for_invalid_rows(valid, logits, bias, positions, args.by_name(True))
    if return_logprobs:
        logprobs = out[2]
        return SampleWithLogprobs(tokens, valid, logprobs[:, 0], logprobs[:, 1])
    return tokens, valid


def sampling_probs(
    logits: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    alpha: float | torch.Tensor = 1.0,
    temperature: float | torch.Tensor = 1.0,
    top_p: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    min_p: float | torch.Tensor = 0.0,
    backend: str = "auto",
    strict: bool = False,
) -> torch.Tensor:
    """The distribution that :func:`sample` draws from (docs/contract.md §4-§6).

    Parameters are those of :func:`sample` without ``seed`` and ``offset``.

    Returns
    -------
    torch.Tensor
        ``[B, V]`` float32: the renormalised kept set, zeros outside it; one-hot at the first
        maximum for ``temperature == 0``; all zeros for invalid rows.
    """
    params = dict(alpha=alpha, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p)
    positions, args = _prepare(logits, bias, positions, backend, params)
    if backend == "torch":
        probs = reference.sampling_probs(
            logits, bias=bias, positions=positions, **args.by_name(False)
        )
    else:
        probs = torch.ops.tsdi_ext.sampling_probs.default(
            logits, bias, positions, args.tensors, args.floats, args.ints
        )
    if strict:
        valid = probs.sum(dim=1) > 0
        _raise_for_invalid_rows(valid, logits, bias, positions, args.by_name(False))
    return probs
