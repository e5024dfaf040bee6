"""Statistics of the evaluation: intervals, paired tests, the Pareto front and the mixture line.

Pure Python on lists of verdicts and table rows (no torch), so each is checked against known
values in the tests.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["wilson_interval", "rate", "mcnemar_exact", "pareto_optimal", "mixture_gap"]


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default)."""
    if total <= 0:
        raise ValueError("tsdi_ext: the interval needs at least one trial")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # Exact at the ends: rounding can leave the bound a hair inside [0, 1] when the rate is 0 or 1,
    # and the interval must contain the observed rate.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def rate(flags: list[bool]) -> dict:
    """The share of True in ``flags`` with its 95% Wilson interval, count and size."""
    successes, total = sum(flags), len(flags)
    low, high = wilson_interval(successes, total)
    return {"rate": successes / total, "low": low, "high": high, "count": successes, "n": total}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def pareto_optimal(rows: Sequence[dict]) -> list[bool]:
    """Whether each row is on the Pareto front of (benign compliance, harmful refusal): no other
    row is at least as good on both and strictly better on one."""
    points = [(r["benign_compliance"], r["harmful_refusal"]) for r in rows]
    return [not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points) for p in points]


def mixture_gap(rows: Sequence[dict]) -> list[float | None]:
    """How far each row's harmful refusal lies above the *mixture line*: the points a server gets
    by answering each request with the aligned model with probability t and with the reference
    otherwise (the chord from the reference row to the aligned row). A trade-off above the line
    beats simply mixing the two models; the gap is None outside the chord's compliance range or
    when the sweep has no reference/aligned row."""
    reference = next((r for r in rows if r["label"] == "reference"), None)
    aligned = next((r for r in rows if r["label"] == "aligned"), None)
    if reference is None or aligned is None:
        return [None] * len(rows)
    x0, y0 = aligned["benign_compliance"], aligned["harmful_refusal"]
    x1, y1 = reference["benign_compliance"], reference["harmful_refusal"]
    gaps: list[float | None] = []
    for r in rows:
        x = r["benign_compliance"]
        if x1 == x0 or not (min(x0, x1) <= x <= max(x0, x1)):
            gaps.append(None)
            continue
        gaps.append(r["harmful_refusal"] - (y0 + (y1 - y0) * (x - x0) / (x1 - x0)))
    return gaps
