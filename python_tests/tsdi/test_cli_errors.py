"""The ``tsdi`` command line: every user error is one ``tsdi: error: ...`` line with exit status 2
and no traceback (``--debug`` shows it), numbers are checked before anything runs, outputs are
never overwritten without ``--force`` and are checked before the long work, help shows the right
defaults, and ``generate`` streams."""

import os
import subprocess
import sys

import pytest
import torch

from tsdi_ext.bias import BiasFileError, BiasTable, tokenizer_hash
from tsdi_ext.cli import main

from tiny_models import tiny_llama


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli_errors")
    tiny_llama(0).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    bias = torch.zeros(2, len(tokenizer))
    bias[0, tokenizer.convert_tokens_to_ids("sorry")] = 3.0
    BiasTable(bias, {"tokenizer_hash": tokenizer_hash(tokenizer)}).save(root / "bias.safetensors")
    (root / "prompts.txt").write_text("the river\nfarmers grow wheat\n")
    return root


def user_error(capsys, argv) -> str:
    """Runs ``tsdi argv``; asserts exit status 2 and a single error line; returns it."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tsdi: error: "), err
    return lines[0]


def test_missing_files_and_models_are_one_line(capsys, files, tmp_path):
    model = str(files / "model")
    cases = [
        (["inspect", str(tmp_path / "nope.safetensors"), "--model", model], "does not exist"),
        (["inspect", str(tmp_path), "--model", model], "is not a regular file"),
        (["inspect", str(files / "bias.safetensors"), "--model", "nowhere/at/all"], "no such"),
        (["generate", "--model", "SmolLM2", "--prompt", "x"], "did you mean the built-in"),
        (["generate", "--model", str(tmp_path), "--prompt", "x"], "holds no config.json"),
        (["generate", "--model", model, "--prompts-file", str(tmp_path / "p.txt")], "prompts file"),
        (["generate", "--model", model], "give --prompt TEXT"),
        (
            ["generate", "--model", model, "--bias", str(tmp_path / "b"), "--prompt", "x"],
            "does not exist",
        ),
        (["rescore", str(tmp_path / "missing")], "missing"),
    ]
    for argv, expected in cases:
        assert expected in user_error(capsys, argv), argv


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["generate", "--temperature", "-1", "--prompt", "x"], "negative"),
        (["generate", "--temperature", "nan", "--prompt", "x"], "not a finite"),
        (["generate", "--alpha", "1e400", "--prompt", "x"], "not a finite"),
        (["generate", "--top-p", "1.5", "--prompt", "x"], "outside [0, 1]"),
        (["generate", "--min-p", "-0.1", "--prompt", "x"], "outside [0, 1]"),
        (["generate", "--top-k", "-1", "--prompt", "x"], "out of range"),
        (["generate", "--seed", "99999999999999999999999", "--prompt", "x"], "out of range"),
        (["generate", "--seed", "-1", "--prompt", "x"], "out of range"),
        (["generate", "--max-new-tokens", "-5", "--prompt", "x"], "out of range"),
        (["inspect", "b.safetensors", "--positions", "-3"], "out of range"),
        (["op-demo", "--vocab", "5"], ">= 8"),
        (["op-demo", "--batch", "0"], "out of range"),
        (["sweep", "--aligned", "a", "--bias", "b", "--out", "o", "--alphas", "abc"], "abc"),
        (["sweep", "--aligned", "a", "--bias", "b", "--out", "o", "--alphas", ""], "at least one"),
        (["sweep", "--aligned", "a", "--bias", "b", "--out", "o", "--lengths", ""], "at least"),
        (["sweep", "--aligned", "a", "--bias", "b", "--out", "o", "--lengths", "1,0"], "range"),
        (["estimate", "--out", "b", "--num-prompts", "0"], "out of range"),
        (["estimate", "--out", "b", "--dtype", "float8"], "invalid choice"),
        (["estimate", "--out", "b", "--device", "nonsense"], "not a torch device"),
    ],
)
def test_numbers_are_checked_by_argparse(capsys, argv, expected):
    assert expected in user_error(capsys, argv)


def test_outputs_checked_before_the_work_and_never_overwritten(capsys, files, tmp_path):
    model = str(files / "model")
    # A model that does not exist: the output is checked first, or this would name the model.
    nothing = str(tmp_path / "no_model")
    line = user_error(capsys, ["estimate", "--aligned", nothing, "--out", str(tmp_path / "d/b")])
    assert "directory" in line and "does not exist" in line and "no_model" not in line
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    line = user_error(capsys, ["estimate", "--aligned", nothing, "--out", str(existing)])
    assert "exists" in line and "--force" in line
    assert existing.read_bytes() == b"keep me"
    argv = ["estimate", "--aligned", model, "--out", str(existing), "--num-prompts", "2"]
    assert main([*argv, "--length", "2", "--force"]) == 0
    assert BiasTable.load(existing).length == 2
    capsys.readouterr()

    # sweep --out: an earlier sweep is kept unless --force.
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "responses.jsonl").write_text("earlier\n")
    sweep = ["sweep", "--aligned", nothing, "--bias", str(files / "bias.safetensors")]
    line = user_error(capsys, [*sweep, "--out", str(out)])
    assert "already holds responses.jsonl" in line and "--force" in line
    assert (out / "responses.jsonl").read_text() == "earlier\n"
    (tmp_path / "a_file").write_text("")
    assert "not a directory" in user_error(capsys, [*sweep, "--out", str(tmp_path / "a_file")])
    # With --force the checks pass and the next error is the model's.
    assert "no_model" in user_error(capsys, [*sweep, "--out", str(out), "--force"])


def test_debug_shows_the_traceback(files, tmp_path):
    with pytest.raises(BiasFileError, match="does not exist"):
        main(["--debug", "inspect", str(tmp_path / "nope"), "--model", str(files / "model")])
    with pytest.raises(BiasFileError):
        main(["inspect", str(tmp_path / "nope"), "--debug"])


def test_console_script_error_is_one_line(tmp_path):
    # The installed entry point, in a fresh process (what a user's shell runs).
    tsdi = os.path.join(os.path.dirname(sys.executable), "tsdi")
    done = subprocess.run(
        [tsdi, "inspect", str(tmp_path / "missing.safetensors")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"tsdi: error: bias file {tmp_path / 'missing.safetensors'} does not exist"
    ]


def test_help_shows_the_right_defaults(capsys):
    for command, expected in (
        ("demo", ["debiasing strength (default: 0.5)", "tokens per answer (default: 40)"]),
        ("generate", ["debiasing strength (default: 1.0)", "(default: 48)", "--device"]),
        ("estimate", ["(default: 256)", "--dtype", "--force", "(default: float32)"]),
        ("sweep", ["(default: [0.25, 0.5, 1.0, 2.0])", "--device", "--force"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        shown = " ".join(capsys.readouterr().out.split())
        for text in expected:
            assert text in shown, (command, text)


def test_device_and_dtype_reach_the_model(capsys, files, tmp_path, monkeypatch):
    import tsdi_ext.models

    seen = []
    real = tsdi_ext.models.load_model

    def recording(name, **kwargs):
        seen.append(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(tsdi_ext.models, "load_model", recording)
    model = str(files / "model")
    argv = ["generate", "--model", model, "--prompt", "the river", "--max-new-tokens", "2"]
    assert main([*argv, "--dtype", "bfloat16", "--device", "cpu"]) == 0
    assert seen == [{"device": "cpu", "dtype": torch.bfloat16}]


def test_generate_streams_each_answer_as_it_comes(capsys, files, monkeypatch):
    import tsdi_ext.generation

    events = []
    real = tsdi_ext.generation.generate

    def recording(model, tokenizer, prompts, **kwargs):
        events.append(("generate", prompts, capsys.readouterr().out))
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(tsdi_ext.generation, "generate", recording)
    common = [
        "generate",
        "--model",
        str(files / "model"),
        "--bias",
        str(files / "bias.safetensors"),
    ]
    argv = [*common, "--prompts-file", str(files / "prompts.txt"), "--compare"]
    assert main([*argv, "--max-new-tokens", "4"]) == 0
    tail = capsys.readouterr().out
    # One prompt at a time, plain then debiased; what came before was already printed.
    assert [e[1] for e in events] == [["the river"]] * 2 + [["farmers grow wheat"]] * 2
    assert events[0][2] == "\n### the river\n[plain]            "
    # The plain answer was printed before the debiased run started, and the first prompt's
    # answers before the second prompt's run.
    assert events[1][2].endswith("\n[TSDI alpha=1.0] ") and events[1][2].count("\n") == 1
    assert events[2][2].endswith("\n### farmers grow wheat\n[plain]            ")
    streamed = "".join(e[2] for e in events) + tail
    # --no-stream batches the prompts behind a progress bar and prints the same answers.
    events.clear()
    assert main([*argv, "--max-new-tokens", "4", "--no-stream"]) == 0
    batched = capsys.readouterr().out
    assert [e[1] for e in events] == [["the river", "farmers grow wheat"]] * 2
    assert batched.split() == streamed.split()
    # Several batches: a progress bar on stderr.
    assert main([*argv, "--max-new-tokens", "4", "--no-stream", "--batch-size", "1"]) == 0
    shown = capsys.readouterr()
    assert "generating" in shown.err and "2/2" in shown.err
    assert shown.out.split() == streamed.split()
