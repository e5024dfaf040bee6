"""The package's shape: one import for the basic flow, lazily imported optional parts, no import
cycle, the core independent of the evaluation harness, what the wheel ships, and the per-row
parameter list shared by the Python front end and the extension."""

import subprocess
import sys
from importlib import metadata

import pytest

import tsdi_ext
from tsdi_ext.ops import _native
from tsdi_ext.ops.params import ROW_PARAMS


def run_python(code: str) -> str:
    # -P and another directory: only the installed package can be imported.
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_basic_flow_is_one_import():
    for name in (
        "sample",
        "sampling_probs",
        "BACKENDS",
        "estimate_bias",
        "BiasTable",
        "BiasFileError",
        "generate",
        "decode",
        "Generation",
        "load_model",
    ):
        assert hasattr(tsdi_ext, name), name
        assert name in tsdi_ext.__all__, name


def test_optional_parts_import_lazily():
    shown = run_python(
        "import sys, tsdi_ext\n"
        "print(sorted(m for m in ('tsdi_ext.hf', 'tsdi_ext.eval', 'tsdi_ext.info', 'transformers',"
        " 'matplotlib') if m in sys.modules))\n"
        "print(tsdi_ext.hf.TSDILogitsProcessor.__name__, tsdi_ext.eval.run_sweep.__name__,"
        " tsdi_ext.info.report.__name__)\n"
        "print('eval' in dir(tsdi_ext), 'hf' in dir(tsdi_ext))\n"
        "from tsdi_ext import *\n"
        "print(eval('1 + 1'))\n"  # the star import leaves the builtin eval alone
    )
    assert shown.splitlines() == ["[]", "TSDILogitsProcessor run_sweep report", "True True", "2"]
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        tsdi_ext.nothing_here  # noqa: B018


def test_core_does_not_import_the_evaluation_harness():
    core = [
        "tsdi_ext",
        "tsdi_ext.ops",
        "tsdi_ext.ops.reference",
        "tsdi_ext.bias",
        "tsdi_ext.generation",
        "tsdi_ext.models",
        "tsdi_ext.hf",
        "tsdi_ext.info",
        "tsdi_ext.cli",
    ]
    shown = run_python(
        "import importlib, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('tsdi_ext.eval') or m == 'matplotlib'))"
    )
    assert shown.strip() == "[]"


@pytest.mark.parametrize(
    "module",
    [
        "tsdi_ext.ops.sampling",
        "tsdi_ext.ops.reference",
        "tsdi_ext.ops.params",
        "tsdi_ext.bias",
        "tsdi_ext.generation",
        "tsdi_ext.models",
        "tsdi_ext.hf",
        "tsdi_ext.info",
        "tsdi_ext.cli",
        "tsdi_ext.eval",
        "tsdi_ext.eval.sweep",
        "tsdi_ext.eval.prompts",
        "tsdi_ext.eval.refusal",
        "tsdi_ext.eval.stats",
        "tsdi_ext.eval.report",
    ],
)
def test_each_module_imports_first(module):
    """Imported first, in a fresh interpreter: an import cycle fails here whatever the order."""
    run_python(f"import {module}")


def test_wheel_ships_the_library_only():
    files = [str(f) for f in metadata.files("tsdi_ext")]
    assert any(f.endswith("tsdi_ext/eval/data/benign_prompts.txt") for f in files)
    assert any(f.endswith("tsdi_ext/data/random_prompt_corpus.txt") for f in files)
    for unwanted in ("experiments", "realign", "replicat", "python_tests", "benchmarks"):
        assert not [f for f in files if unwanted in f], unwanted
    # Package data only where a module reads it.
    data = sorted(f for f in files if f.endswith(".txt") and "dist-info" not in f)
    assert data == [
        "tsdi_ext/data/random_prompt_corpus.txt",
        "tsdi_ext/eval/data/benign_prompts.txt",
    ]


def test_extension_and_front_end_list_the_same_row_parameters():
    assert _native.native_available()
    assert [tuple(p) for p in _native._C.row_params()] == [(p.name, p.kind) for p in ROW_PARAMS]
    assert _native._row_params_mismatch(_native._C.row_params()) is None
    message = _native._row_params_mismatch([("alpha", "float"), ("temperature", "float")])
    assert "built from other sources" in message and "('top_p', 'float')" in message


def test_demo_defaults_are_the_studys_setting():
    from tsdi_ext.cli import DEMO_SETTINGS, build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.score, args.length, args.num_prompts, args.alpha) == (
        DEMO_SETTINGS["score"],
        DEMO_SETTINGS["length"],
        DEMO_SETTINGS["num_prompts"],
        DEMO_SETTINGS["alpha"],
    )
    assert (args.rate_prompts, args.show, args.temperature) == (48, 3, 0.0)  # greedy, as the study
