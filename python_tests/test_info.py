"""The environment report and the build-versus-runtime torch check."""

import importlib.resources

import pytest
import torch

import tsdi_ext
from tsdi_ext import _ops, info
from tsdi_ext.cli import main


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

    monkeypatch.setattr(_ops, "_C", FakeC)
    message = info.build_mismatch()
    assert message.startswith("tsdi_ext was compiled against torch 2.9.0 but torch")
    assert "rebuild it" in message
    with pytest.warns(RuntimeWarning, match="compiled against torch 2.9.0"):
        _ops._check_build_matches_torch()


def test_package_data_is_installed():
    corpus = importlib.resources.files("tsdi_ext") / "data" / "random_prompt_corpus.txt"
    assert corpus.is_file() and len(corpus.read_text().split()) > 300
