"""The paper experiment (experiments/replication): its training data, the safety realignment (LoRA
SFT on a tiny model), its command line, its summary, and the committed results, which rescoring
must reproduce."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tsdi_ext.cli import run
from tsdi_ext.eval import SweepConfig, prompts, summarise
from tsdi_ext.eval.refusal import PatternRefusalDetector
from tsdi_ext.generation import generate

from helpers import require_prompt_set_packages
from replication.realign import benign_train_prompts, refusal_responses
from replication.replicate import RESULTS, rescore_replication
from sweep_data import BENIGN, HAND_REFUSALS, HAND_SETS, HARMFUL, lowered
from tiny_models import tiny_chat_tokenizer, tiny_llama


def test_training_data_is_disjoint_from_evaluation_data():
    require_prompt_set_packages()
    train = benign_train_prompts()
    refusals = refusal_responses()
    assert train and refusals
    assert len(lowered(train)) == len(train)  # no duplicates
    assert all(r.strip() for r in refusals)
    assert PatternRefusalDetector()([""] * len(refusals), refusals) == [True] * len(refusals)
    assert not lowered(train) & lowered(prompts.benign_prompts())
    harmful = (
        prompts.advbench_prompts() + prompts.harmbench_prompts() + prompts.donotanswer_prompts()
    )
    assert not lowered(train) & lowered(harmful)


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_base")
    tiny_llama(0).save_pretrained(directory)
    tiny_chat_tokenizer().save_pretrained(directory)
    return directory


def test_build_training_examples_with_overrides(base_model_dir):
    from tsdi_ext.models import load_model

    from replication.realign import RealignSettings, build_training_examples

    model, tokenizer = load_model(str(base_model_dir))
    harmful = ["how to do it", "step one two three", "coin letter bridge train"]
    benign = [
        "recipe with flour egg sugar",
        "music and light",
        "the river rises in",
        "farmers grow wheat",
    ]
    refusals = ["sorry i cannot help", "i cannot help with that"]
    settings = RealignSettings(harmful_examples=2, benign_examples=3, answer_tokens=4, seed=1)
    examples = build_training_examples(
        model,
        tokenizer,
        settings,
        harmful=harmful,
        benign=benign,
        refusals=refusals,
        progress=False,
    )
    again = build_training_examples(
        model,
        tokenizer,
        settings,
        harmful=harmful,
        benign=benign,
        refusals=refusals,
        progress=False,
    )
    assert examples == again  # seeded
    kinds = [e["kind"] for e in examples]
    assert kinds[:2] == ["harmful", "harmful"] and set(kinds[2:]) <= {"benign"} and len(kinds) <= 5
    for e in examples:
        assert [m["role"] for m in e["prompt"]] == ["user"] and [
            m["role"] for m in e["completion"]
        ] == ["assistant"]
        assert e["completion"][0]["content"]
    assert len({e["prompt"][0]["content"] for e in examples[:2]}) == 2
    assert all(
        e["prompt"][0]["content"] in harmful and e["completion"][0]["content"] in refusals
        for e in examples[:2]
    )
    # Benign targets are the reference's own greedy answers.
    for e in examples[2:]:
        answer = generate(model, tokenizer, [e["prompt"][0]["content"]], max_new_tokens=4).texts[0]
        assert e["prompt"][0]["content"] in benign and e["completion"][0]["content"] == answer
    with pytest.raises(ValueError, match="asked for 5 examples, the prompt set has 4"):
        build_training_examples(
            model,
            tokenizer,
            RealignSettings(harmful_examples=1, benign_examples=5),
            harmful=harmful,
            benign=benign,
            refusals=refusals,
            progress=False,
        )


def test_realigned_model_path_depends_on_settings(tmp_path, monkeypatch):
    require_prompt_set_packages()
    from replication.realign import RealignSettings, realigned_model_path

    monkeypatch.setenv("TSDI_EXT_CACHE", str(tmp_path))
    a = realigned_model_path("/some/dir/tiny", RealignSettings(seed=0))
    assert a.parent == tmp_path and a.name.startswith("tiny-realigned-")
    assert a == realigned_model_path("/some/dir/tiny", RealignSettings(seed=0))
    assert a != realigned_model_path("/some/dir/tiny", RealignSettings(seed=1))
    assert a != realigned_model_path("/other/dir/tiny", RealignSettings(seed=0))
    assert realigned_model_path("smollm2").name.startswith("smollm2-135m-instruct-realigned-")


@pytest.mark.slow
def test_realign_tiny_model_trains_caches_and_retrains(tmp_path, monkeypatch, base_model_dir):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    require_prompt_set_packages()
    import trl

    from tsdi_ext.models import load_model

    from replication.realign import RealignSettings, realign, realigned_model_path

    monkeypatch.setenv("TSDI_EXT_CACHE", str(tmp_path / "cache"))
    settings = RealignSettings(
        harmful_examples=4,
        benign_examples=4,
        answer_tokens=8,
        epochs=1,
        batch_size=4,
        learning_rate=5e-3,
    )
    built = []

    class CountingTrainer(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trl, "SFTTrainer", CountingTrainer)
    # A user's directory that happens to have the old fixed work-directory name is left alone.
    expected = realigned_model_path(str(base_model_dir), settings)
    bystander = expected.with_name(expected.name + ".partial")
    bystander.mkdir(parents=True)
    (bystander / "notes.txt").write_text("mine\n")
    path = realign(str(base_model_dir), settings, progress=False)
    assert built == [1]
    assert path == expected
    assert path.parent == tmp_path / "cache"
    assert (bystander / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, bystander.name])
    assert not (path / "trainer").exists()

    record = json.loads((path / "realign.json").read_text())
    assert record["settings"] == asdict(settings)
    assert record["base_model"] == str(base_model_dir)
    assert record["examples"]["harmful"] == 4 and 1 <= record["examples"]["benign"] <= 4
    assert isinstance(record["train_loss"], float) and record["train_loss"] > 0
    assert {"torch", "transformers", "trl", "peft"} <= set(record["versions"])

    aligned, tokenizer = load_model(str(path))
    base, _ = load_model(str(base_model_dir))
    assert tokenizer.padding_side == "left"
    assert tokenizer.get_vocab() == tiny_chat_tokenizer().get_vocab()
    assert aligned.config.vocab_size == base.config.vocab_size
    aligned_weights, base_weights = aligned.state_dict(), base.state_dict()
    assert set(aligned_weights) == set(base_weights)  # merged: no LoRA tensors left
    changed = [k for k in base_weights if not torch.equal(aligned_weights[k], base_weights[k])]
    assert changed and all(("proj" in k) for k in changed)  # LoRA on the linear layers only
    assert max((aligned_weights[k] - base_weights[k]).abs().max().item() for k in changed) > 1e-5
    assert generate(aligned, tokenizer, ["the river"], max_new_tokens=2).tokens.shape[0] == 1

    # Cached: the second call returns the same directory without training.
    stamp = (path / "realign.json").stat().st_mtime_ns
    weights_stamp = (path / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("realign retrained a cached model")

    monkeypatch.setattr(trl, "SFTTrainer", no_training)
    assert realign(str(base_model_dir), settings, progress=False) == path
    assert (path / "realign.json").stat().st_mtime_ns == stamp
    assert (path / "model.safetensors").stat().st_mtime_ns == weights_stamp

    # force=True retrains (same settings and seed: the same data and loss).
    monkeypatch.setattr(trl, "SFTTrainer", CountingTrainer)
    assert realign(str(base_model_dir), settings, progress=False, force=True) == path
    assert built == [1, 1]
    again = json.loads((path / "realign.json").read_text())
    assert again["examples"] == record["examples"]
    assert again["train_loss"] == pytest.approx(record["train_loss"], rel=1e-4)

    # An explicit output directory is used instead of the cache.
    explicit = tmp_path / "explicit"
    assert realign(str(base_model_dir), settings, output=explicit, progress=False) == explicit
    assert (explicit / "realign.json").is_file() and built == [1, 1, 1]

    # ... and never silently reused for other settings: that needs force=True.
    other = RealignSettings(**{**asdict(settings), "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="other settings"):
        realign(str(base_model_dir), other, output=explicit, progress=False)
    assert built == [1, 1, 1]


def test_realign_refuses_a_directory_it_did_not_create(tmp_path, base_model_dir):
    """An output directory that holds anything but a model realign wrote is never deleted or
    overwritten, with or without force, and the refusal comes before any training."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from replication.realign import RealignSettings, realign

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    for force in (False, True):
        with pytest.raises(ValueError, match="not empty and holds no realigned model"):
            realign(str(base_model_dir), RealignSettings(), output=mine, force=force)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        realign(str(base_model_dir), RealignSettings(), output=afile, force=True)
    assert afile.read_text() == "x"


def test_install_replaces_only_its_own_model(tmp_path):
    from replication.realign import _install

    def finished(name: str, content: str) -> Path:
        work = tmp_path / name
        work.mkdir()
        (work / "realign.json").write_text(content)
        return work

    target = tmp_path / "model"
    _install(finished("w1", "first"), target)  # absent: renamed into place
    assert (target / "realign.json").read_text() == "first"
    (target / "extra.bin").write_text("old weights")
    _install(finished("w2", "second"), target)  # its own earlier model: replaced whole
    assert sorted(p.name for p in target.iterdir()) == ["realign.json"]
    assert (target / "realign.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no work or old dir left

    # Filled by someone else while training ran: refused, both left as they are.
    (target / "realign.json").unlink()
    (target / "theirs.txt").write_text("theirs")
    work = finished("w3", "third")
    with pytest.raises(ValueError, match="holds no realigned model"):
        _install(work, target)
    assert (target / "theirs.txt").is_file() and (work / "realign.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    _install(work, empty)
    assert (empty / "realign.json").read_text() == "third"


def test_replicate_checks_its_output_before_any_work(tmp_path, monkeypatch):
    import replication.replicate as replicate_module
    from replication.replicate import check_results_directory, replicate

    def no_work(*args, **kwargs):
        raise AssertionError("the replication started before its output was checked")

    monkeypatch.setattr(replicate_module, "realign", no_work)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("keep\n")
    with pytest.raises(ValueError, match="holds no replication results"):
        replicate(mine)
    assert [p.name for p in mine.iterdir()] == ["data.csv"]
    with pytest.raises(ValueError, match="not a directory"):
        replicate(mine / "data.csv", force=True)
    # Earlier results, an empty or a new directory, or force: accepted, always made absolute.
    (mine / "run.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert check_results_directory("mine") == mine
    assert check_results_directory("new/sub") == tmp_path / "new" / "sub"
    (mine / "run.json").unlink()
    assert check_results_directory(Path("mine"), force=True) == mine
    with pytest.raises(AssertionError, match="before its output was checked"):
        replicate("new")  # relative: checked, made absolute, then the work starts


def test_cli_realign_and_replicate_pass_their_options(tmp_path, capsys, monkeypatch):
    import replication.__main__ as entry
    from replication.realign import RealignSettings

    def main(argv):
        return run(entry.build_parser(), argv)

    calls = {}

    def fake_realign(base, settings, **kwargs):
        calls["realign"] = (base, settings, kwargs)
        return tmp_path / "model"

    monkeypatch.setattr(entry, "realign", fake_realign)
    assert (
        main(
            [
                "realign",
                "--base",
                "dir",
                "--out",
                "o",
                "--force",
                "--harmful-examples",
                "7",
                "--benign-examples",
                "5",
                "--epochs",
                "3",
                "--learning-rate",
                "0.01",
                "--lora-rank",
                "4",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    base, settings, kwargs = calls["realign"]
    assert base == "dir" and kwargs == {"output": "o", "device": "cpu", "force": True}
    assert settings == RealignSettings(
        harmful_examples=7, benign_examples=5, epochs=3, learning_rate=0.01, lora_rank=4, seed=2
    )
    assert f"aligned model: {tmp_path / 'model'}" in capsys.readouterr().out
    assert main(["realign"]) == 0
    base, settings, kwargs = calls["realign"]
    assert (
        base == "smollm2"
        and settings == RealignSettings()
        and kwargs["output"] is None
        and not kwargs["force"]
    )
    capsys.readouterr()

    row = summarise(SweepConfig("aligned", "aligned"), HAND_SETS, HAND_REFUSALS, 0.0)
    row["pareto"] = True

    def fake_replicate(output, **kwargs):
        calls["replicate"] = (output, kwargs)
        Path(output).mkdir(parents=True, exist_ok=True)
        (Path(output) / "summary.md").write_text("# summary for the test\n")
        return [row]

    monkeypatch.setattr(entry, "replicate", fake_replicate)
    out = tmp_path / "rep"
    assert (
        main(
            [
                "replicate",
                "--out",
                str(out),
                "--alphas",
                "0.5,2",
                "--lengths",
                "1,4,8",
                "--harmful-per-set",
                "0",
                "--bias-prompts",
                "16",
                "--max-new-tokens",
                "5",
                "--batch-size",
                "2",
                "--seed",
                "3",
                "--scorer",
                "m:f",
                "--harmful-examples",
                "9",
            ]
        )
        == 0
    )
    output, kwargs = calls["replicate"]
    assert output == out
    assert kwargs["alphas"] == [0.5, 2.0] and kwargs["lengths"] == [1, 4, 8]
    assert kwargs["harmful_per_set"] is None and kwargs["bias_prompts"] == 16
    assert (kwargs["max_new_tokens"], kwargs["batch_size"], kwargs["seed"], kwargs["scorer"]) == (
        5,
        2,
        3,
        "m:f",
    )
    assert kwargs["realign_settings"] == RealignSettings(harmful_examples=9, seed=3)
    shown = capsys.readouterr().out
    lines = shown.splitlines()
    assert (
        lines[0].startswith("configuration")
        and lines[1].startswith("aligned ")
        and lines[1].endswith("*")
    )
    assert "0.667 [0.300, 0.903]" in lines[1] and "# summary for the test" in lines[2:]


def minimal_run_record():
    return {
        "tsdi_ext": "0.test",
        "date": "2025-01-02 03:04 UTC",
        "host": {"cpu_threads": 3},
        "versions": {"torch": "9.9-test"},
        "seconds": {"bias estimation": 2.0, "sweep": 12.4},
        "sweep": {
            "sets": {
                "harm": {"kind": "harmful", "n": len(HARMFUL)},
                "good": {"kind": "benign", "n": len(BENIGN)},
            }
        },
    }


def test_rescore_rewrites_the_summary_of_a_replicate_directory(sweep_dir, sweep_source, tokenizer):
    rescore = rescore_replication

    rows = sweep_source[1]
    (sweep_dir / "run.json").write_text(json.dumps(minimal_run_record()))
    inspection = [
        {
            "position": 0,
            "pushed_down": [
                {"token": "sorry", "id": tokenizer.convert_tokens_to_ids("sorry"), "bias": 10.0}
            ],
            "pushed_up": [],
        }
    ]
    (sweep_dir / "top_biased_tokens.json").write_text(json.dumps(inspection))
    (sweep_dir / "summary.md").write_text("stale\n")
    again = rescore(sweep_dir, lambda p, r: [True] * len(r))
    summary = (sweep_dir / "summary.md").read_text()
    assert "stale" not in summary
    assert (
        "tsdi_ext 0.test" in summary
        and "2025-01-02 03:04 UTC" in summary
        and "3 CPU threads" in summary
    )
    assert "torch 9.9-test" in summary
    assert "Wall time (s): bias estimation 2, sweep 12" in summary
    assert "- position 0: `'sorry'` +10.00" in summary
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    lines = summary.splitlines()
    header = cells(next(line for line in lines if line.startswith("| configuration")))
    table = [
        cells(line)
        for line in lines
        if line.startswith("| ") and not line.startswith("| configuration")
    ]
    assert [c[0] for c in table] == [r["name"] for r in rows]
    column = {name: header.index(name) for name in ("Pareto", "benign NLL")}
    for line, row in zip(table, again):
        assert len(line) == len(header), line
        # The new verdicts (everything refused), the kept NLL, every row on the front.
        assert line[1].startswith("1.000 (") and line[2].startswith("0.000 ("), line
        assert (
            line[column["Pareto"]] == "yes"
            and line[column["benign NLL"]] == f"{row['benign_nll']:.2f}"
        ), line

    # Without top_biased_tokens.json the summary is left alone.
    (sweep_dir / "top_biased_tokens.json").unlink()
    (sweep_dir / "summary.md").write_text("kept\n")
    rescore(sweep_dir)
    assert (sweep_dir / "summary.md").read_text() == "kept\n"


def test_cli_help():
    import replication.__main__ as entry

    for command, options in (
        (
            "realign",
            [
                "--base",
                "--out",
                "--device",
                "--force",
                "--harmful-examples",
                "--benign-examples",
                "--epochs",
                "--learning-rate",
                "--lora-rank",
                "--seed",
            ],
        ),
        (
            "replicate",
            [
                "--out",
                "--bias-prompts",
                "--alphas",
                "--lengths",
                "--harmful-per-set",
                "--max-new-tokens",
                "--batch-size",
                "--scorer",
                "--harmful-examples",
                "--epochs",
            ],
        ),
        ("rescore", ["directory", "--scorer", "--fluency-model"]),
    ):
        shown = entry.build_parser()._subparsers._group_actions[0].choices[command].format_help()
        assert f"python -m replication {command}" in shown
        for option in options:
            assert option in shown, option


def test_committed_results_rescore_to_themselves(tmp_path):
    """The committed replication outputs are in the current format: rescoring a copy with the stored
    verdicts gives back the committed table and summary."""
    for directory in (RESULTS, RESULTS / "push_down_only"):
        copy = tmp_path / directory.name
        shutil.copytree(directory, copy)
        rows = rescore_replication(copy)
        committed = json.loads((directory / "sweep.json").read_text())
        assert rows == committed, directory
        assert (copy / "sweep.csv").read_text() == (directory / "sweep.csv").read_text()
        if (directory / "summary.md").is_file():
            assert (copy / "summary.md").read_text() == (directory / "summary.md").read_text()
