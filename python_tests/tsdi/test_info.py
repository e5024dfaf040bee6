"""The environment report and the build-versus-runtime torch check."""

import importlib.resources

import pytest
import torch

import tsdi_ext
from tsdi_ext import info
from tsdi_ext.cli import main
from tsdi_ext.ops import _native


def test_report_names_versions_and_backends():
    report = info.report()
    assert report["tsdi_ext"] == tsdi_ext.__version__
    assert report["torch"] == torch.__version__
    assert report["extension"] == "loaded"
    assert "cpu (fused C++ kernel)" in report["backends"]
    assert report["build_matches_torch"] == "yes"
    assert info.main() == 0


def test_tsdi_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "built_against_torch" in out and "gpu" in out


def test_mismatch_is_named(monkeypatch):
    class FakeC:
        @staticmethod
        def build_info():
            return {"torch_version": "2.9.0", "cuda": False}

    monkeypatch.setattr(_native, "_C", FakeC)
    message = info.build_mismatch()
    assert message.startswith("tsdi_ext was compiled against torch 2.9.0 but torch")
    assert "rebuild it" in message
    with pytest.warns(RuntimeWarning, match="compiled against torch 2.9.0"):
        _native._check_build_matches_torch()


def test_package_data_is_installed():
    corpus = importlib.resources.files("tsdi_ext") / "data" / "random_prompt_corpus.txt"
    assert corpus.is_file() and len(corpus.read_text().split()) > 300


@pytest.mark.parametrize(
    "package_version,torch_version,torch_cuda,expected",
    [
        # A CUDA wheel next to a CPU torch: the loader only says a CUDA library is missing.
        (
            "0.1.0+cu130.torch2.11",
            "2.13.0+cpu",
            None,
            "built for torch 2.11 with CUDA 13.0, but torch 2.13.0+cpu (no CUDA) is running: install "
            "the wheel for this torch (+cpu.torch2.13)",
        ),
        # Same flavour, another torch series.
        (
            "0.1.0+cpu.torch2.13",
            "2.11.0+cpu",
            None,
            "built for torch 2.13 with no CUDA, but torch 2.11.0+cpu (no CUDA) is running: install the "
            "wheel for this torch (+cpu.torch2.11)",
        ),
        # Another CUDA major version.
        (
            "0.1.0+cu126.torch2.11",
            "2.11.0+cu130",
            "13.0",
            "built for torch 2.11 with CUDA 12.6, but torch 2.11.0+cu130 (CUDA 13.0) is running: "
            "install the wheel for this torch (+cu130.torch2.11)",
        ),
    ],
)
def test_import_failure_names_the_wheel_and_the_torch(
    package_version, torch_version, torch_cuda, expected
):
    error = ImportError("libc10_cuda.so: cannot open shared object file")
    explained = _native.explain_import_failure(error, package_version, torch_version, torch_cuda)
    assert str(explained).startswith(
        "libc10_cuda.so: cannot open shared object file. This tsdi_ext wheel"
    )
    assert expected in str(explained)


def test_import_failure_without_a_wheel_label():
    # A source build (no local label) that fits: the loader's own error, or the undefined-symbol hint.
    plain = ImportError("some loader error")
    assert _native.explain_import_failure(plain, "0.1.0", "2.13.0", None) is plain
    assert _native.explain_import_failure(plain, None, "2.13.0", None) is plain
    # A CPU wheel on a CUDA torch of its series loads and works: nothing to add.
    assert (
        _native.explain_import_failure(plain, "0.1.0+cpu.torch2.13", "2.13.0+cu130", "13.0")
        is plain
    )
    symbol = ImportError("_C.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")
    explained = _native.explain_import_failure(symbol, "0.1.0", "2.12.0", None)
    assert "compiled against a different torch than the one installed (2.12.0)" in str(explained)


@pytest.mark.parametrize(
    "torch_version,torch_cuda,expected",
    [
        ("2.13.0+cpu", None, "+cpu.torch2.13"),
        ("2.11.0", "13.0", "+cu130.torch2.11"),
        ("2.12.1+cu128", "12.8", "+cu128.torch2.12"),
    ],
)
def test_needed_wheel_follows_the_build_label(torch_version, torch_cuda, expected):
    wanted = info.needed_wheel(torch_version, torch_cuda, version="0.1.0+cpu.torch2.13")
    assert wanted == "0.1.0" + expected


def test_install_hint_names_the_index_path_and_the_pip_command(monkeypatch):
    monkeypatch.delenv(info.WHEEL_INDEX_ENV, raising=False)
    hint = info.install_hint("2.11.0", "13.0")
    assert (
        "+cu130.torch2.11" in hint and "cu130/torch2.11/" in hint and "docs/installing.md" in hint
    )
    monkeypatch.setenv(info.WHEEL_INDEX_ENV, "https://example.org/whl/")
    hint = info.install_hint("2.11.0", "13.0")
    assert "--extra-index-url https://example.org/whl/cu130/torch2.11/" in hint


def test_report_names_the_wheel_for_this_torch_only_on_a_mismatch(monkeypatch):
    assert "wheel_for_this_torch" not in info.report()

    class FakeC:
        @staticmethod
        def build_info():
            return {"torch_version": "2.9.0", "cuda": False}

    monkeypatch.setattr(_native, "_C", FakeC)
    wanted = info.needed_wheel(torch.__version__, torch.version.cuda)
    assert wanted in info.report()["wheel_for_this_torch"]
