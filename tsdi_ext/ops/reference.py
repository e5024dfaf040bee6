"""Pure-PyTorch reference of the sampling step: the test oracle and the "pure PyTorch path" of the
benchmarks. Written to be read, not to be fast.

It implements docs/contract.md step by step; each step below is marked with its section there
(``# §5``). Scalars arrive already rounded to float32 by the front end (contract §1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "ROW_OK",
    "ROW_NON_FINITE",
    "ROW_ALL_MASKED",
    "ROW_BAD_TEMPERATURE",
    "ROW_BAD_TOP_P",
    "ROW_BAD_POSITION",
    "ROW_BAD_TOP_K",
    "ROW_BAD_MIN_P",
    "ROW_STATUS_MESSAGES",
    "philox4x32_10",
    "exp_nonpositive",
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
ROW_BAD_TOP_K = 6
ROW_BAD_MIN_P = 7
ROW_STATUS_MESSAGES = {
    ROW_NON_FINITE: "its debiased logits contain NaN or +inf",
    ROW_ALL_MASKED: "all of its debiased logits are -inf",
    ROW_BAD_TEMPERATURE: "its temperature is negative or NaN",
    ROW_BAD_TOP_P: "its top_p is NaN or outside [0, 1]",
    ROW_BAD_POSITION: "its position is negative",
    ROW_BAD_TOP_K: "its top_k is negative",
    ROW_BAD_MIN_P: "its min_p is NaN or outside [0, 1]",
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


def row_status(d, bad_position, temperature, top_p, top_k=0, min_p=0.0) -> torch.Tensor:
    """§3: ``[B]`` int32 status codes (``ROW_*``) of debiased logits ``d`` and per-row parameters."""
    batch = d.shape[0]
    temperature = _per_row(temperature, batch, torch.float32, d.device)
    top_p = _per_row(top_p, batch, torch.float32, d.device)
    top_k = _per_row(top_k, batch, torch.int64, d.device)
    min_p = _per_row(min_p, batch, torch.float32, d.device)
    status = torch.full((batch,), ROW_OK, dtype=torch.int32, device=d.device)
    # Later parameter checks take precedence, as in tsdi::resolve_row.
    status[bad_position] = ROW_BAD_POSITION
    status[~(temperature >= 0)] = ROW_BAD_TEMPERATURE
    status[top_k < 0] = ROW_BAD_TOP_K
    status[~((min_p >= 0) & (min_p <= 1))] = ROW_BAD_MIN_P  # NaN too
    status[~((top_p >= 0) & (top_p <= 1))] = ROW_BAD_TOP_P  # NaN too
    params_ok = status == ROW_OK
    non_finite = (torch.isnan(d) | torch.isposinf(d)).any(dim=1)
    all_masked = (d == float("-inf")).all(dim=1)
    status[params_ok & all_masked & ~non_finite] = ROW_ALL_MASKED
    status[params_ok & non_finite] = ROW_NON_FINITE
    return status


_FLT_MIN, _FLT_MAX = torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).max

# §5's exp: the constants of tsdi::exp_nonpositive (csrc/tsdi/common.h), as float32.
_EXP_LOWEST = -86.0  # below it (and at -inf) the weight is exactly 0
_EXP_CONSTANTS = {
    "log2e": 1.44269504088896341,
    "round": 12582912.0,  # 1.5 * 2**23: adding it rounds to an integer
    "ln2_hi": 0.693359375,
    "ln2_lo": -2.12194440e-4,
}
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1)
_EXP_POLY_LAST = 5.0000001201e-1
_EXP_ROUND_BITS = 0x4B400000


def exp_nonpositive(x: torch.Tensor) -> torch.Tensor:
    """§5's exp of float32 ``x <= 0`` (``-inf`` allowed): the float32 operations of
    ``tsdi::exp_nonpositive`` in csrc/tsdi/common.h, one by one, so the bits are the kernels'.

    Every step is one elementwise float32 operation of a tensor and a float32 constant (torch rounds
    each to nearest and fuses none; under torch.compile a fused multiply-add could change bits)."""

    def c(value):
        return torch.tensor(value, dtype=torch.float32, device=x.device)

    xc = torch.clamp(x, min=_EXP_LOWEST)
    n = xc * c(_EXP_CONSTANTS["log2e"]) + c(_EXP_CONSTANTS["round"])
    n_int = n.view(torch.int32) - _EXP_ROUND_BITS  # n, as an integer in the low mantissa bits
    n = n - c(_EXP_CONSTANTS["round"])
    r = xc - n * c(_EXP_CONSTANTS["ln2_hi"])
    r = r - n * c(_EXP_CONSTANTS["ln2_lo"])
    y = c(_EXP_POLY[0]).expand_as(r)
    for coefficient in (*_EXP_POLY[1:], _EXP_POLY_LAST):
        y = y * r + c(coefficient)
    y = y * r * r + r + c(1.0)
    # 2^n by the exponent bits (n in [-124, 0]: no overflow, a normal result)
    scaled = (y.view(torch.int32) + n_int * (1 << 23)).view(torch.float32)
    return torch.where(x < _EXP_LOWEST, torch.zeros_like(scaled), scaled)


class _Row(NamedTuple):
    """What sample and sampling_probs share: validity, greedy rows, weights and the nucleus."""

    valid: torch.Tensor  # [B] bool (§3)
    greedy: torch.Tensor  # [B] bool: temperature == 0 (§4)
    argmax: torch.Tensor  # [B] int64: the first index of max d (§4)
    kept: torch.Tensor  # [B, V] float32: w where w >= tau, else 0 (§5, §6)
    kept_mass: torch.Tensor  # [B] float64: K (§6)
    total: torch.Tensor  # [B] float64: S (§5)


def _rows(logits, bias, positions, alpha, temperature, top_p, top_k, min_p) -> _Row:
    batch, vocab = logits.shape
    temperature = _per_row(temperature, batch, torch.float32, logits.device)
    top_p = _per_row(top_p, batch, torch.float32, logits.device)
    top_k = _per_row(top_k, batch, torch.int64, logits.device)
    min_p = _per_row(min_p, batch, torch.float32, logits.device)
    # §2
    d, bad_position = debiased_logits(logits, bias, positions, alpha)
    # §3
    valid = row_status(d, bad_position, temperature, top_p, top_k, min_p) == ROW_OK
    # §4 (first index: torch.argmax returns the first of equal maxima)
    greedy = temperature == 0
    argmax = d.argmax(dim=1) if vocab else torch.zeros(batch, dtype=torch.int64, device=d.device)
    # §5: w = exp((d - max d) * s), s = 1/T in float32 clamped to [FLT_MIN, FLT_MAX]
    d_max = d.max(dim=1, keepdim=True).values
    scale = temperature.reciprocal().clamp(_FLT_MIN, _FLT_MAX)
    z = (d - d_max) * scale[:, None]
    w = exp_nonpositive(z.detach())
    if z.requires_grad:  # the bits of exp_nonpositive, the gradient of exp (+ 0.0 exactly)
        w = w + (torch.exp(z) - torch.exp(z).detach())
    # §6 top-k: tau_k = the k-th largest weight (0 when off, k = 0 or k >= V)
    sorted_w = w.sort(dim=1, descending=True).values
    k_on = (top_k > 0) & (top_k < vocab)
    kth = sorted_w.gather(1, (top_k.clamp(1, vocab) - 1)[:, None]).squeeze(1)
    tau_k = torch.where(k_on, kth, torch.zeros_like(kth))
    # §6 top-p on the top-k set: tau_p = the largest w >= tau_k with
    # sum(w[w >= tau_p]) >= top_p * S_k, S_k = sum(w[w >= tau_k]) (masses in float64): the weight
    # of the first token, in descending order, at which the running mass reaches top_p * S_k.
    in_k = sorted_w >= tau_k[:, None]
    running = torch.where(in_k, sorted_w, torch.zeros_like(sorted_w)).double().cumsum(dim=1)
    total_k = torch.where(w >= tau_k[:, None], w, torch.zeros_like(w)).double().sum(dim=1)
    target = top_p.double() * total_k
    crossing = (running < target[:, None]).sum(dim=1).clamp(max=vocab - 1)
    tau_p = sorted_w.gather(1, crossing[:, None]).squeeze(1)
    tau_p = torch.where(top_p >= 1, torch.zeros_like(tau_p), tau_p)
    tau_p = torch.where(top_p <= 0, sorted_w[:, 0], tau_p)
    # §6 min-p: w >= min_p (w = 1 at the maximum, so w is p / p_max)
    tau = torch.maximum(torch.maximum(tau_k, tau_p), min_p)
    kept = torch.where(w >= tau[:, None], w, torch.zeros_like(w))
    return _Row(valid, greedy, argmax, kept, kept.double().sum(dim=1), w.double().sum(dim=1))


def sampling_probs(
    logits,
    *,
    bias=None,
    positions=None,
    alpha=1.0,
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    min_p=0.0,
) -> torch.Tensor:
    """The renormalised filtered distribution, ``[B, V]`` float32 (contract §6)."""
    batch, vocab = logits.shape
    if batch == 0:
        return logits.new_zeros((0, vocab), dtype=torch.float32)
    row = _rows(logits, bias, positions, alpha, temperature, top_p, top_k, min_p)
    # §6: w * c on the kept tokens, c = 1/K rounded to float32 (then a float32 product)
    probs = row.kept * (1.0 / row.kept_mass).float()[:, None]
    # §4: one-hot at the first maximum
    one_hot = torch.nn.functional.one_hot(row.argmax, vocab).float()
    probs = torch.where(row.greedy[:, None], one_hot, probs)
    # §3: invalid rows are all zeros
    return torch.where(row.valid[:, None], probs, torch.zeros_like(probs))


def sample(
    logits,
    *,
    bias=None,
    positions=None,
    alpha=1.0,
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    min_p=0.0,
    seed=0,
    offset=0,
    return_logprobs=False,
):
    """Tokens ``[B]`` int64 and validity ``[B]`` bool (contract §7); with ``return_logprobs``
    also the drawn tokens' log-probabilities, ``[B, 2]`` float32: under the final distribution
    and under the unfiltered tempered one."""
    batch, vocab = logits.shape
    device = logits.device
    if batch == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        out = (empty, torch.zeros(0, dtype=torch.bool, device=device))
        return (*out, torch.zeros(0, 2, device=device)) if return_logprobs else out
    row = _rows(logits, bias, positions, alpha, temperature, top_p, top_k, min_p)
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
    if not return_logprobs:
        return tokens, row.valid
    # §7: log w_t - log K and log w_t - log S in float64; 0 for greedy rows, NaN for invalid ones
    log_w = row.kept.gather(1, tokens[:, None]).squeeze(1).double().log()
    logprobs = torch.stack([log_w - row.kept_mass.log(), log_w - row.total.log()], dim=1).float()
    logprobs = torch.where(row.greedy[:, None], torch.zeros_like(logprobs), logprobs)
    logprobs = torch.where(row.valid[:, None], logprobs, torch.full_like(logprobs, math.nan))
    return tokens, row.valid, logprobs
