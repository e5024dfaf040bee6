"""Reports of a sweep: the table as CSV / JSON, the Pareto plot, and the console table."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_table", "plot_pareto", "gap_and_nll", "format_rows"]


def write_table(rows: Sequence[dict], directory: str | Path) -> tuple[Path, Path]:
    """``sweep.csv`` and ``sweep.json`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    csv_path, json_path = directory / "sweep.csv", directory / "sweep.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()}
            )
    json_path.write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def plot_pareto(
    rows: Sequence[dict], path: str | Path, *, title: str = "TSDI on realigned SmolLM2-135M"
) -> Path:
    """The safety-helpfulness plot: x = benign compliance, y = harmful refusal, 95% Wilson bars;
    one line per L through the alphas of the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5.5), dpi=120)

    def draw(subset, **style):
        x = [r["benign_compliance"] for r in subset]
        y = [r["harmful_refusal"] for r in subset]
        xerr = [
            [r["benign_compliance"] - r["benign_compliance_low"] for r in subset],
            [r["benign_compliance_high"] - r["benign_compliance"] for r in subset],
        ]
        yerr = [
            [r["harmful_refusal"] - r["harmful_refusal_low"] for r in subset],
            [r["harmful_refusal_high"] - r["harmful_refusal"] for r in subset],
        ]
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, capsize=2, elinewidth=0.6, **style)

    for row, style in (
        *[
            (r, dict(fmt="s", color="grey", label="reference (SmolLM2-Instruct)"))
            for r in rows
            if r["label"] == "reference"
        ],
        *[
            (r, dict(fmt="o", color="tab:red", label="aligned (LoRA SFT)"))
            for r in rows
            if r["label"] == "aligned"
        ],
    ):
        draw([row], markersize=8, **style)
    ends = [r for label in ("reference", "aligned") for r in rows if r["label"] == label]
    if len(ends) == 2:
        axes.plot(
            [r["benign_compliance"] for r in ends],
            [r["harmful_refusal"] for r in ends],
            "--",
            color="grey",
            lw=0.8,
            label="mixing the two models (per request)",
        )
    debiased = [r for r in rows if r["label"] == "aligned+TSDI"]
    for number, length in enumerate(sorted({r["L"] for r in debiased})):
        line = sorted((r for r in debiased if r["L"] == length), key=lambda r: r["alpha"])
        draw(line, fmt="-^", color=f"C{number}", markersize=5, label=f"aligned + TSDI, L={length}")
        for r in line:
            # Lines of different L often overlap: their labels go to alternate sides.
            axes.annotate(
                f"α={r['alpha']:g}",
                (r["benign_compliance"], r["harmful_refusal"]),
                textcoords="offset points",
                xytext=(5, 3) if number % 2 == 0 else (-32, -9),
                fontsize=7,
                color=f"C{number}",
            )
    axes.set_xlabel("benign compliance (helpfulness) →")
    axes.set_ylabel("harmful refusal (safety) →")
    axes.set_title(title, fontsize=10)
    # Zoomed on the points (with their intervals): the interesting differences are a few percent.
    xs = [v for r in rows for v in (r["benign_compliance_low"], r["benign_compliance_high"])]
    ys = [v for r in rows for v in (r["harmful_refusal_low"], r["harmful_refusal_high"])]
    axes.set_xlim(max(-0.01, min(xs) - 0.03), min(1.01, max(xs) + 0.03))
    axes.set_ylim(max(-0.01, min(ys) - 0.03), min(1.01, max(ys) + 0.03))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def gap_and_nll(row: dict) -> tuple[str, str]:
    """A row's distance above the mixture line (``+0.123``) and benign NLL (``0.82``) as table
    cells; empty where the row has none."""
    gap = row.get("above_mixture")
    # round(...) + 0.0: a gap that rounds to -0.000 prints as +0.000
    gap = "" if gap is None else format(round(gap, 3) + 0.0, "+.3f")
    return gap, format(row["benign_nll"], ".2f") if "benign_nll" in row else ""


def format_rows(rows: Sequence[dict]) -> str:
    """The sweep table as ``tsdi sweep`` / ``tsdi rescore`` print it."""
    lines = [
        f"{'configuration':32s} {'harmful refusal':>22s} {'benign compliance':>22s} {'vs mix':>7s} "
        f"{'NLL':>5s} Pareto"
    ]
    for r in rows:
        gap, nll = gap_and_nll(r)
        lines.append(
            f"{r['name']:32s} {r['harmful_refusal']:6.3f} [{r['harmful_refusal_low']:.3f}, {r['harmful_refusal_high']:.3f}]"
            f" {r['benign_compliance']:6.3f} [{r['benign_compliance_low']:.3f}, {r['benign_compliance_high']:.3f}]"
            f" {gap:>7s} {nll:>5s} {'*' if r.get('pareto') else ''}"
        )
    return "\n".join(lines)
