"""Pure-PyTorch reference of the sampling step: the test oracle and the "pure PyTorch path" of the
benchmarks. Written to be read, not to be fast.

It implements docs/contract.md step by step; each step below is marked with its section there
(``# §5``). Scalars arrive already rounded to float32 by the front end (contract §1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "ROW_OK",
    "ROW_NON_FINITE",
    "ROW_ALL_MASKED",
    "ROW_BAD_TEMPERATURE",
    "ROW_BAD_TOP_P",
    "ROW_BAD_POSITION",
    "ROW_STATUS_MESSAGES",
    "philox4x32_10",
    "uniform",
    "debiased_logits",
    "row_status",
    "sampling_probs",
    "sample",
]

# Row status codes (the same numbers as tsdi::RowStatus in csrc/tsdi/common.h).
ROW_OK = 0
ROW_NON_FINITE = 1
ROW_ALL_MASKED = 2
ROW_BAD_TEMPERATURE = 3
ROW_BAD_TOP_P = 4
ROW_BAD_POSITION = 5
ROW_STATUS_MESSAGES = {
    ROW_NON_FINITE: "its debiased logits contain NaN or +inf",
    ROW_ALL_MASKED: "all of its debiased logits are -inf",
    ROW_BAD_TEMPERATURE: "its temperature is negative or NaN",
    ROW_BAD_TOP_P: "its top_p is NaN",
    ROW_BAD_POSITION: "its position is negative",
}

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def _mulhilo32(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * b`` for ``a`` in [0, 2**32) (int64) and a 32-bit ``b``.

    int64 cannot hold the 64-bit product, so ``b`` is split into 16-bit halves."""
    p0 = a * (b & 0xFFFF)  # < 2**48
    p1 = a * (b >> 16)  # < 2**48
    t = p0 + ((p1 & 0xFFFF) << 16)
    return (t >> 32) + (p1 >> 16), t & _MASK32


def philox4x32_10(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 (Salmon et al., SC'11) on int64 tensors holding 32-bit words.

    Parameters
    ----------
    counter : torch.Tensor
        ``[N, 4]`` int64, each word in ``[0, 2**32)``.
    key : torch.Tensor
        ``[N, 2]`` int64, each word in ``[0, 2**32)``.

    Returns
    -------
    torch.Tensor
        ``[N, 4]`` int64, the output words.
    """
    c0, c1, c2, c3 = counter.unbind(-1)
    k0, k1 = key.unbind(-1)
    for _ in range(10):
        hi0, lo0 = _mulhilo32(c0, _PHILOX_M[0])
        hi1, lo1 = _mulhilo32(c2, _PHILOX_M[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _PHILOX_W[0]) & _MASK32
        k1 = (k1 + _PHILOX_W[1]) & _MASK32
    return torch.stack([c0, c1, c2, c3], dim=-1)


def uniform(seed: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The uniform in [0, 1) of each ``(seed, offset)`` pair (``[B]`` int64 each) as ``[B]`` float64."""
    zeros = torch.zeros_like(offset)
    counter = torch.stack([offset & _MASK32, (offset >> 32) & _MASK32, zeros, zeros], dim=-1)
    key = torch.stack([seed & _MASK32, (seed >> 32) & _MASK32], dim=-1)
    return philox4x32_10(counter, key)[:, 0].double() / 2.0**32


def _per_row(value, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.full((batch,), value, dtype=dtype, device=device)


def debiased_logits(
    logits, bias=None, positions=None, alpha=1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """§2: ``d = logits - alpha * bias[positions]`` as ``[B, V]`` float32, and a ``[B]`` bool that
    is True where a row's position is negative (an invalid row, §3)."""
    batch, vocab = logits.shape
    d = logits.float()
    bad_position = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    if bias is None:
        return d, bad_position
    alpha = _per_row(alpha, batch, torch.float32, logits.device)
    if bias.dim() == 1:
        row_bias = bias.float().expand(batch, vocab)
        has_bias = torch.ones(batch, dtype=torch.bool, device=logits.device)
    else:
        table_rows = bias.shape[0]
        bad_position = positions < 0
        has_bias = (positions >= 0) & (positions < table_rows)
        if table_rows == 0:
            row_bias = torch.zeros_like(d)
        else:
            row_bias = bias.float()[positions.clamp(0, table_rows - 1)]
    # where(), not a multiplication by has_bias: a row without bias must not see alpha at all.
    d = torch.where(has_bias[:, None], d - alpha[:, None] * row_bias, d)
    return d, bad_position


def row_status(d, bad_position, temperature, top_p) -> torch.Tensor:
    """§3: ``[B]`` int32 status codes (``ROW_*``) of debiased logits ``d`` and per-row parameters."""
    batch = d.shape[0]
    temperature = _per_row(temperature, batch, torch.float32, d.device)
    top_p = _per_row(top_p, batch, torch.float32, d.device)
    status = torch.full((batch,), ROW_OK, dtype=torch.int32, device=d.device)
    # Later parameter checks take precedence, as in tsdi::resolve_row.
    status[bad_position] = ROW_BAD_POSITION
    status[~(temperature >= 0)] = ROW_BAD_TEMPERATURE
    status[torch.isnan(top_p)] = ROW_BAD_TOP_P
    params_ok = status == ROW_OK
    non_finite = (torch.isnan(d) | torch.isposinf(d)).any(dim=1)
    all_masked = (d == float("-inf")).all(dim=1)
    status[params_ok & all_masked & ~non_finite] = ROW_ALL_MASKED
    status[params_ok & non_finite] = ROW_NON_FINITE
    return status


_FLT_MIN, _FLT_MAX = torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).max
# Below this the fused kernels' exp returns exactly 0 (contract §5).
_EXP_FLUSH = -86.0


class _Row(NamedTuple):
    """What sample and sampling_probs share: validity, greedy rows, weights and the nucleus."""

    valid: torch.Tensor  # [B] bool (§3)
    greedy: torch.Tensor  # [B] bool: temperature == 0 (§4)
    argmax: torch.Tensor  # [B] int64: the first index of max d (§4)
    kept: torch.Tensor  # [B, V] float32: w where w >= tau, else 0 (§5, §6)
    kept_mass: torch.Tensor  # [B] float64: K (§6)


def _rows(logits, bias, positions, alpha, temperature, top_p) -> _Row:
    batch, vocab = logits.shape
    temperature = _per_row(temperature, batch, torch.float32, logits.device)
    top_p = _per_row(top_p, batch, torch.float32, logits.device)
    # §2
    d, bad_position = debiased_logits(logits, bias, positions, alpha)
    # §3
    valid = row_status(d, bad_position, temperature, top_p) == ROW_OK
    # §4 (first index: torch.argmax returns the first of equal maxima)
    greedy = temperature == 0
    argmax = d.argmax(dim=1) if vocab else torch.zeros(batch, dtype=torch.int64, device=d.device)
    # §5: w = exp((d - max d) * s), s = 1/T in float32 clamped to [FLT_MIN, FLT_MAX]
    d_max = d.max(dim=1, keepdim=True).values
    scale = temperature.reciprocal().clamp(_FLT_MIN, _FLT_MAX)
    z = (d - d_max) * scale[:, None]
    w = torch.where(z < _EXP_FLUSH, 0.0, torch.exp(z))
    total = w.double().sum(dim=1)
    # §6: tau = the largest w with sum(w[w >= tau]) >= top_p * S (masses in float64): the weight
    # of the first token, in descending order, at which the running mass reaches top_p * S.
    sorted_w = w.sort(dim=1, descending=True).values
    running = sorted_w.double().cumsum(dim=1)
    target = top_p.double() * total
    crossing = (running < target[:, None]).sum(dim=1).clamp(max=vocab - 1)
    tau = sorted_w.gather(1, crossing[:, None]).squeeze(1)
    tau = torch.where(top_p >= 1, torch.zeros_like(tau), tau)
    tau = torch.where(top_p <= 0, sorted_w[:, 0], tau)
    kept = torch.where(w >= tau[:, None], w, torch.zeros_like(w))
    return _Row(valid, greedy, argmax, kept, kept.double().sum(dim=1))


def sampling_probs(
    logits, *, bias=None, positions=None, alpha=1.0, temperature=1.0, top_p=1.0
) -> torch.Tensor:
    """The renormalised nucleus distribution, ``[B, V]`` float32 (contract §6)."""
    batch, vocab = logits.shape
    if batch == 0:
        return logits.new_zeros((0, vocab), dtype=torch.float32)
    row = _rows(logits, bias, positions, alpha, temperature, top_p)
    # §6: w / K on the kept tokens
    probs = (row.kept.double() / row.kept_mass[:, None]).float()
    # §4: one-hot at the first maximum
    one_hot = torch.nn.functional.one_hot(row.argmax, vocab).float()
    probs = torch.where(row.greedy[:, None], one_hot, probs)
    # §3: invalid rows are all zeros
    return torch.where(row.valid[:, None], probs, torch.zeros_like(probs))


def sample(
    logits, *, bias=None, positions=None, alpha=1.0, temperature=1.0, top_p=1.0, seed=0, offset=0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[B]`` int64 and validity ``[B]`` bool (contract §7)."""
    batch, vocab = logits.shape
    device = logits.device
    if batch == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, torch.zeros(0, dtype=torch.bool, device=device)
    row = _rows(logits, bias, positions, alpha, temperature, top_p)
    # §7: u from (seed, offset); the first kept index whose running kept mass exceeds u * K ...
    u = uniform(
        _per_row(seed, batch, torch.int64, device), _per_row(offset, batch, torch.int64, device)
    )
    running = row.kept.double().cumsum(dim=1)
    tokens = torch.searchsorted(running, (u * row.kept_mass)[:, None], right=True).squeeze(1)
    # ... or, when rounding leaves the total short of it, the last kept token with w > 0
    indices = torch.arange(vocab, device=device).expand(batch, vocab)
    last_kept = torch.where(row.kept > 0, indices, -1).max(dim=1).values
    tokens = torch.where(tokens >= vocab, last_kept, tokens)
    # §4: greedy rows
    tokens = torch.where(row.greedy, row.argmax, tokens)
    # §3: invalid rows give token 0
    tokens = torch.where(row.valid, tokens, torch.zeros_like(tokens))
    return tokens, row.valid
