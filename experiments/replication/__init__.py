"""The paper experiment: TSDI on a safety-realigned SmolLM2-135M-Instruct, offline, on a CPU.

Not part of the tsdi_ext package: it uses the library (``tsdi_ext``, ``tsdi_ext.eval``) the way a
user would. Run it from the repository root with ``make replicate``, or
``PYTHONPATH=experiments python -m replication --help``. docs/replication.md describes the
experiment and its results (``results/``).

* :mod:`.realign`: the safety realignment (LoRA SFT) that makes the aligned model;
* :mod:`.replicate`: the whole pipeline and its summary.
"""
