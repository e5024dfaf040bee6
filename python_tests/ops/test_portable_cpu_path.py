"""The fused CPU kernel has AVX-512 routines (exp, pivot masses, compaction) beside portable loops.
On an AVX-512 machine the rest of the suite exercises the former; this runs the fused-vs-reference
tests again with TSDI_EXT_CPU_PORTABLE=1, which forces the portable loops."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_portable_loops_match_reference():
    env = dict(os.environ, TSDI_EXT_CPU_PORTABLE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(TESTS / "test_fused_vs_reference.py"),
            "-k",
            "cpu and not V262144 and not V128256",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
