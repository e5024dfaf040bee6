"""What machine a benchmark ran on, for the benchmarks' output (not part of the package).

The benchmarks run as scripts with ``python -P`` (which leaves the script's folder off sys.path),
so each one puts its own folder on sys.path before importing this module.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
