"""The per-row parameters of the ops, and how a Python value becomes what the kernels read.

Each per-row parameter is a Python number or a ``[B]`` tensor. The native ops take them as one
group (``row_tensors, row_floats, row_ints``: a tensor or None per parameter, in the order of
:data:`ROW_PARAMS`, and the scalars used where the tensor is None), the reference takes them by
name. :data:`ROW_PARAMS` is the Python side's one list of them; the C++ side's is
``TSDI_ROW_PARAMS`` in ``csrc/tsdi/common.h``, and the two are compared when the extension loads.
What each parameter means is stated in docs/contract.md.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = ["RowParam", "ROW_PARAMS", "RowArgs", "row_args"]

_INT64_MIN, _UINT64_END = -(2**63), 2**64


@dataclass(frozen=True)
class RowParam:
    """One per-row parameter: its name, ``"float"`` (float32) or ``"int"`` (64-bit), the default,
    the check a scalar value must pass (None: any value of the kind) with the error's wording
    (``{value}``: the value), and
    whether only the draw reads it (``sampling_probs`` does not take those)."""

    name: str
    kind: str
    default: float | int
    check: Callable[[float], bool] | None = None
    requirement: str = ""
    draw_only: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.kind == "float" else torch.int64


ROW_PARAMS: tuple[RowParam, ...] = (
    RowParam("alpha", "float", 1.0, math.isfinite, "must be finite (in float32), got {value}"),
    RowParam(
        "temperature", "float", 1.0, lambda t: t >= 0, "must be >= 0 (0 means greedy), got {value}"
    ),
    RowParam("top_p", "float", 1.0, lambda p: 0 <= p <= 1, "must be in [0, 1], got {value}"),
    RowParam("top_k", "int", 0, lambda k: 0 <= k < 2**63, "must be >= 0 (0: off), got {value}"),
    RowParam(
        "min_p", "float", 0.0, lambda p: 0 <= p <= 1, "must be in [0, 1] (0: off), got {value}"
    ),
    RowParam("seed", "int", 0, draw_only=True),
    RowParam("offset", "int", 0, draw_only=True),
)
_BY_NAME = {param.name: param for param in ROW_PARAMS}
_NAMES = frozenset(_BY_NAME)


class RowArgs(NamedTuple):
    """The per-row arguments of one call as the native ops take them (every parameter, in the
    order of :data:`ROW_PARAMS`): a ``[B]`` tensor or None each, and the scalars used where the
    tensor is None, the float parameters' in ``floats`` and the integer ones' in ``ints``."""

    tensors: list
    floats: list
    ints: list

    def by_name(self, draw: bool) -> dict:
        """``{name: tensor or scalar}`` as the reference takes them; without the draw-only
        parameters unless ``draw``."""
        values, next_float, next_int = {}, 0, 0
        for param, tensor in zip(ROW_PARAMS, self.tensors):
            if param.kind == "float":
                scalar, next_float = self.floats[next_float], next_float + 1
            else:
                scalar, next_int = self.ints[next_int], next_int + 1
            if draw or not param.draw_only:
                values[param.name] = scalar if tensor is None else tensor
        return values


def _to_float32(value: float) -> float:
    """``value`` rounded to float32 (overflowing to +-inf), as every backend will read it."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _row_tensor(param: RowParam, value: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    batch = logits.shape[0]
    if value.dim() != 1 or value.shape[0] != batch:
        raise ValueError(
            f"tsdi_ext: {param.name} must be a Python number or a [B] tensor with B = {batch}, "
            f"got shape {tuple(value.shape)}"
        )
    if value.dtype != param.dtype:
        raise TypeError(f"tsdi_ext: {param.name} must have dtype {param.dtype}, got {value.dtype}")
    if value.device != logits.device:
        raise ValueError(
            f"tsdi_ext: {param.name} is on {value.device} but logits are on {logits.device}"
        )
    return value if value.is_contiguous() else value.contiguous()


def _float_scalar(param: RowParam, value, compiling: bool):
    if compiling:
        # Traced by torch.compile: a constant or a symbolic number, passed through as is; the op
        # checks it (and reads it as float32) at run time.
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"tsdi_ext: {param.name} must be a Python number or a [B] float32 tensor, "
            f"got {type(value).__name__}"
        )
    rounded = _to_float32(float(value))
    if param.check is not None and not param.check(rounded):
        raise ValueError(f"tsdi_ext: {param.name} {param.requirement.format(value=rounded)}")
    return rounded


def _int_scalar(param: RowParam, value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"tsdi_ext: {param.name} must be an int or a [B] int64 tensor, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"tsdi_ext: {param.name} must be an int or a [B] int64 tensor, "
            f"got {type(value).__name__}"
        ) from None
    if not _INT64_MIN <= value < _UINT64_END:
        raise ValueError(f"tsdi_ext: {param.name} must fit in 64 bits, got {value}")
    if param.check is not None and not param.check(value):
        raise ValueError(f"tsdi_ext: {param.name} {param.requirement.format(value=value)}")
    # Values in [2**63, 2**64) are read as uint64: pass their two's complement int64.
    return value - _UINT64_END if value >= 2**63 else value


# Per parameter: its float scalars already checked and rounded (a decoding loop passes the same
# few values at every step; a dict hit skips the checks), or None for an integer parameter.
_CHECKED_FLOATS = tuple({} if param.kind == "float" else None for param in ROW_PARAMS)
_SPECS = tuple(zip(ROW_PARAMS, _CHECKED_FLOATS))
_INT63_END = 2**63


def row_args(logits: torch.Tensor, compiling: bool, given: dict) -> RowArgs:
    """Checks the per-row parameters ``given`` (``{name: value}``; the others take their
    defaults, and names of no parameter are an error) and
    returns them as the native ops take them. Tensor checks read metadata only: no host-device
    sync. This runs on every decoding step, so the common cases (a repeated float, a small int)
    take the shortest path."""
    tensors, floats, ints = [], [], []
    for param, checked in _SPECS:
        value = given.get(param.name, param.default)
        kind = type(value)
        if checked is not None:  # a float parameter
            if kind is float and (rounded := checked.get(value)) is not None:
                floats.append(rounded)
                tensors.append(None)
                continue
            if isinstance(value, torch.Tensor):
                tensors.append(_row_tensor(param, value, logits))
                floats.append(param.default)
                continue
            rounded = _float_scalar(param, value, compiling)
            if kind is float and len(checked) < 1024 and not compiling:
                checked[value] = rounded  # NaN never passes a check, so it is never cached
            floats.append(rounded)
            tensors.append(None)
        else:
            if kind is int and 0 <= value < _INT63_END and param.check is None:
                ints.append(value)
                tensors.append(None)
            elif isinstance(value, torch.Tensor):
                tensors.append(_row_tensor(param, value, logits))
                ints.append(param.default)
            else:
                ints.append(_int_scalar(param, value))
                tensors.append(None)
    if not given.keys() <= _NAMES:
        raise TypeError(f"tsdi_ext: unknown per-row parameter(s) {sorted(set(given) - _NAMES)}")
    return RowArgs(tensors, floats, ints)


def param(name: str) -> RowParam:
    """The :class:`RowParam` called ``name``."""
    return _BY_NAME[name]
