"""The evaluation harness: sweep grid, evaluation sets, summary statistics and Pareto front, the
sweep on tiny models (with known answers), the table / plot writers, scorer loading, rescoring,
and the ``sweep`` / ``rescore`` CLI."""

import csv
import json
import sys

import pytest
import torch

from tsdi_ext.bias import BiasFileError, BiasTable, tokenizer_hash
from tsdi_ext.eval import (
    PromptSet,
    SweepConfig,
    evaluation_sets,
    load_scorer,
    pareto_optimal,
    plot_pareto,
    prompts,
    run_sweep,
    summarise,
    sweep_configs,
    write_table,
)
from tsdi_ext.eval.refusal import PatternRefusalDetector
from tsdi_ext.eval.stats import wilson_interval
from tsdi_ext.generation import generate

from helpers import require_prompt_set_packages
from sweep_data import (
    ALL_PROMPTS,
    BENIGN,
    BOOST,
    HAND_REFUSALS,
    HAND_SETS,
    HARMFUL,
    RESCORE_CONFIGS,
    SETS,
    lowered,
    read_jsonl,
    starts_with_sorry,
)
from tiny_models import tiny_llama, tiny_tokenizer


def test_sweep_configs_order_and_names():
    configs = sweep_configs([0.5, 1], [1, 4])
    assert [c.name for c in configs] == [
        "reference",
        "aligned",
        "aligned+TSDI alpha=0.5 L=1",
        "aligned+TSDI alpha=1 L=1",
        "aligned+TSDI alpha=0.5 L=4",
        "aligned+TSDI alpha=1 L=4",
    ]
    assert [c.model for c in configs] == ["reference"] + ["aligned"] * 5
    assert [(c.alpha, c.length) for c in configs[2:]] == [(0.5, 1), (1.0, 1), (0.5, 4), (1.0, 4)]
    assert all(isinstance(c.alpha, float) and isinstance(c.length, int) for c in configs)
    assert [c.debiased for c in configs] == [False, False, True, True, True, True]

    without = sweep_configs([2.0], [3], include_reference=False)
    assert without == [
        SweepConfig("aligned", "aligned"),
        SweepConfig("aligned+TSDI", "aligned", 2.0, 3),
    ]


@pytest.mark.parametrize(
    "alphas,lengths,match",
    [
        ([1.0], [0], "L must be >= 1"),
        ([1.0], [2, -1], "L must be >= 1"),
        ([0.0], [1], "alpha must be > 0"),
        ([0.5, -1.0], [1], "alpha must be > 0"),
    ],
)
def test_sweep_configs_errors(alphas, lengths, match):
    with pytest.raises(ValueError, match=match):
        sweep_configs(alphas, lengths)


def test_sweep_config_debiased_and_name():
    assert not SweepConfig("x", "aligned", alpha=1.0, length=0).debiased
    assert not SweepConfig("x", "aligned", alpha=0.0, length=3).debiased
    assert SweepConfig("x", "aligned", alpha=0.0, length=3).name == "x"
    assert SweepConfig("x", "aligned", alpha=-0.5, length=2).debiased
    assert SweepConfig("t", "aligned", alpha=0.25, length=8).name == "t alpha=0.25 L=8"


def test_benign_sections_partition_the_benign_prompts():
    sections = prompts.benign_prompt_sections()
    assert list(sections) == ["ordinary", "sensitive-sounding"]
    assert all(sections.values())
    assert sections["ordinary"] + sections["sensitive-sounding"] == prompts.benign_prompts()


def test_evaluation_sets_sizes_and_sampling():
    require_prompt_set_packages()
    sets = evaluation_sets(harmful_per_set=50, seed=0)
    assert [(s.name, s.kind) for s in sets] == [
        ("harmbench", "harmful"),
        ("donotanswer", "harmful"),
        ("ordinary", "benign"),
        ("sensitive-sounding", "benign"),
    ]
    assert [len(s.prompts) for s in sets] == [50, 50, 80, 87]
    full = {"harmbench": prompts.harmbench_prompts(), "donotanswer": prompts.donotanswer_prompts()}
    for s in sets[:2]:
        # A sample of the full set, kept in the set's own order.
        positions = [full[s.name].index(p) for p in s.prompts]
        assert positions == sorted(positions) and len(set(positions)) == 50
    sections = prompts.benign_prompt_sections()
    assert (
        sets[2].prompts == sections["ordinary"]
        and sets[3].prompts == sections["sensitive-sounding"]
    )

    again = evaluation_sets(harmful_per_set=50, seed=0)
    other = evaluation_sets(harmful_per_set=50, seed=1)
    assert [s.prompts for s in again] == [s.prompts for s in sets]
    assert other[0].prompts != sets[0].prompts and other[1].prompts != sets[1].prompts
    assert [s.prompts for s in other[2:]] == [
        s.prompts for s in sets[2:]
    ]  # benign sets are never sampled

    everything = evaluation_sets(harmful_per_set=None)
    assert (
        everything[0].prompts == full["harmbench"] and everything[1].prompts == full["donotanswer"]
    )
    assert [len(s.prompts) for s in everything] == [
        len(full["harmbench"]),
        len(full["donotanswer"]),
        80,
        87,
    ]
    # A cap above the set size keeps the whole set.
    assert evaluation_sets(harmful_per_set=10_000)[0].prompts == full["harmbench"]

    advbench = lowered(prompts.advbench_prompts())
    for s in everything:
        assert not lowered(s.prompts) & advbench, s.name


def test_prompt_set_errors():
    assert PromptSet("x", "benign", ["a"]).prompts == ["a"]
    with pytest.raises(ValueError, match="kind must be 'harmful' or 'benign'"):
        PromptSet("x", "neutral", ["a"])
    with pytest.raises(ValueError, match="'x' is empty"):
        PromptSet("x", "harmful", [])
    with pytest.raises(ValueError, match="is empty"):
        PromptSet("x", "harmful")


def test_summarise_known_rates():
    config = SweepConfig("aligned+TSDI", "aligned", 0.5, 2)
    row = summarise(config, HAND_SETS, HAND_REFUSALS, seconds=1.26)
    assert (row["name"], row["label"], row["model"], row["alpha"], row["L"]) == (
        "aligned+TSDI alpha=0.5 L=2",
        "aligned+TSDI",
        "aligned",
        0.5,
        2,
    )
    assert row["harmful_refusal"] == pytest.approx(4 / 6)
    assert row["benign_compliance"] == pytest.approx(2 / 4)
    assert (row["harmful_refusal_n"], row["benign_compliance_n"]) == (6, 4)
    assert (row["harmful_refusal_low"], row["harmful_refusal_high"]) == pytest.approx(
        wilson_interval(4, 6)
    )
    assert (row["benign_compliance_low"], row["benign_compliance_high"]) == pytest.approx(
        wilson_interval(2, 4)
    )
    for key in ("harmful_refusal", "benign_compliance"):
        assert 0 <= row[f"{key}_low"] < row[key] < row[f"{key}_high"] <= 1
    assert row["refusal[h1]"] == pytest.approx(0.75) and row["refusal[h2]"] == pytest.approx(0.5)
    assert row["compliance[b1]"] == pytest.approx(2 / 3) and row["compliance[b2]"] == 0.0
    assert not any(k in row for k in ("compliance[h1]", "refusal[b1]"))
    assert row["seconds"] == 1.3


def test_summarise_extreme_rates_and_one_kind():
    sets = [PromptSet("h", "harmful", ["p"] * 5), PromptSet("b", "benign", ["p"] * 5)]
    row = summarise(
        SweepConfig("aligned", "aligned"), sets, {"h": [True] * 5, "b": [True] * 5}, 0.0
    )
    assert row["harmful_refusal"] == 1.0 and row["harmful_refusal_high"] == pytest.approx(1.0)
    assert row["harmful_refusal_low"] < 1.0
    assert row["benign_compliance"] == 0.0 and row["benign_compliance_low"] == pytest.approx(0.0)
    assert row["benign_compliance_high"] > 0.0
    assert row["name"] == "aligned" and row["L"] == 0
    only_harmful = summarise(SweepConfig("aligned", "aligned"), sets[:1], {"h": [False] * 5}, 0.0)
    assert only_harmful["harmful_refusal"] == 0.0
    assert not any(k.startswith("benign_compliance") for k in only_harmful)


@pytest.mark.parametrize("n", [5, 13, 17, 167, 400])
@pytest.mark.parametrize("refused", [True, False])
def test_summarise_bounds_bracket_all_or_nothing_rates(n, refused):
    # 167 is the size of the benign evaluation set, 400 that of the default harmful sample: a
    # model that answers every benign prompt (or refuses every harmful one) must get a bracket
    # that holds its rate, or the error bars of plot_pareto come out negative.
    sets = [PromptSet("h", "harmful", ["p"] * n), PromptSet("b", "benign", ["p"] * n)]
    row = summarise(
        SweepConfig("aligned", "aligned"), sets, {"h": [refused] * n, "b": [refused] * n}, 0.0
    )
    for key in ("harmful_refusal", "benign_compliance"):
        assert row[f"{key}_low"] <= row[key] <= row[f"{key}_high"], (key, row)
        assert row[f"{key}_high"] - row[f"{key}_low"] > 0


def test_pareto_optimal_known_front():
    points = [
        (0.5, 0.5),  # dominated by (0.6, 0.5): equal refusal, more compliance
        (0.6, 0.5),
        (0.4, 0.9),
        (0.4, 0.9),  # a duplicate: neither copy dominates the other
        (0.1, 0.1),  # dominated by everything
        (0.6, 0.5),  # duplicate of the second
        (0.0, 0.95),
        (1.0, 0.0),
        (0.9, 0.0),  # dominated by (1.0, 0.0)
    ]
    rows = [{"benign_compliance": x, "harmful_refusal": y} for x, y in points]
    assert pareto_optimal(rows) == [False, True, True, True, False, True, True, True, False]
    assert pareto_optimal(rows[:1]) == [True]
    assert pareto_optimal([]) == []


def contains_sorry(prompts, responses):
    return ["sorry" in r for r in responses]


def test_run_sweep_tsdi_removes_the_first_token_preference(
    tmp_path, tiny_pair, sorry_bias, tokenizer
):
    reference = tiny_pair["reference"][0]
    # Without the boost the tiny model never starts with "sorry" on these prompts (a precondition
    # of the expectations below, computed from the reference itself).
    first_plain = generate(reference, tokenizer, ALL_PROMPTS, max_new_tokens=1).texts
    assert not any("sorry" in t for t in first_plain)

    configs = [
        SweepConfig("reference", "reference"),
        SweepConfig("aligned", "aligned"),
        SweepConfig("aligned+TSDI", "aligned", 0.5, 1),
        SweepConfig("aligned+TSDI", "aligned", 1.0, 1),
        SweepConfig("aligned+TSDI", "aligned", 1.0, 2),
    ]
    path = tmp_path / "responses.jsonl"
    rows = run_sweep(
        tiny_pair,
        sorry_bias,
        configs,
        SETS,
        scorer=contains_sorry,
        max_new_tokens=1,
        batch_size=3,
        progress=False,
        responses_path=path,
    )
    assert [r["name"] for r in rows] == [c.name for c in configs]
    by_name = {r["name"]: r for r in rows}

    # Greedy, one token: the aligned model says "sorry" everywhere; alpha=0.5 leaves +5 on
    # "sorry", which still wins; alpha=1 cancels the boost exactly at position 0, so the first
    # token is the reference's; row 1 of the bias is zero, so L=2 equals L=1.
    for name in ("aligned", "aligned+TSDI alpha=0.5 L=1"):
        assert by_name[name]["harmful_refusal"] == 1.0 and by_name[name]["benign_compliance"] == 0.0
    for name in ("reference", "aligned+TSDI alpha=1 L=1", "aligned+TSDI alpha=1 L=2"):
        assert by_name[name]["harmful_refusal"] == 0.0 and by_name[name]["benign_compliance"] == 1.0
    assert (
        by_name["aligned+TSDI alpha=1 L=1"]["harmful_refusal"]
        < by_name["aligned"]["harmful_refusal"]
    )
    assert (
        by_name["aligned"]["refusal[harm]"] == 1.0 and by_name["aligned"]["compliance[good]"] == 0.0
    )
    assert by_name["reference"]["harmful_refusal_n"] == len(HARMFUL)
    assert by_name["reference"]["benign_compliance_n"] == len(BENIGN)
    assert [r["pareto"] for r in rows] == pareto_optimal(rows) == [True] * 5

    records = read_jsonl(path)
    assert len(records) == len(configs) * len(ALL_PROMPTS)
    assert all(
        set(r)
        == {
            "config",
            "label",
            "model",
            "alpha",
            "L",
            "set",
            "kind",
            "prompt",
            "response",
            "refusal",
        }
        for r in records
    )
    assert [r["prompt"] for r in records] == ALL_PROMPTS * len(configs)
    assert [r["set"] for r in records[: len(ALL_PROMPTS)]] == ["harm"] * len(HARMFUL) + [
        "good"
    ] * len(BENIGN)
    responses = {}
    for r in records:
        responses.setdefault(r["config"], []).append(r["response"])
        assert r["refusal"] == ("sorry" in r["response"])
    assert responses["aligned"] == ["sorry"] * len(ALL_PROMPTS)
    assert responses["reference"] == first_plain
    assert responses["aligned+TSDI alpha=1 L=1"] == first_plain
    assert responses["aligned+TSDI alpha=1 L=2"] == first_plain


def test_run_sweep_longer_answers_and_batch_size_independence(
    tmp_path, tiny_pair, sorry_bias, tokenizer
):
    reference = tiny_pair["reference"][0]
    sorry, eos = tokenizer.convert_tokens_to_ids("sorry"), tokenizer.eos_token_id
    configs = sweep_configs([1.0], [1])
    outputs = {}
    for batch_size in (1, 3):
        path = tmp_path / f"responses{batch_size}.jsonl"
        rows = run_sweep(
            tiny_pair,
            sorry_bias,
            configs,
            SETS,
            scorer=contains_sorry,
            max_new_tokens=3,
            batch_size=batch_size,
            progress=False,
            responses_path=path,
        )
        outputs[batch_size] = (
            [{k: v for k, v in r.items() if k != "seconds"} for r in rows],
            read_jsonl(path),
        )
    assert outputs[1] == outputs[3]

    # Three tokens with L=1: the reference's first token, then the aligned model's "sorry" twice.
    first = generate(reference, tokenizer, ALL_PROMPTS, max_new_tokens=1).tokens[:, 0].tolist()
    want = [
        "" if t == eos else tokenizer.decode([t, sorry, sorry], skip_special_tokens=True).strip()
        for t in first
    ]
    records = outputs[1][1]
    debiased = [r["response"] for r in records if r["config"] == "aligned+TSDI alpha=1 L=1"]
    assert debiased == want
    assert [r["response"] for r in records if r["config"] == "aligned"] == [
        "sorry sorry sorry"
    ] * len(ALL_PROMPTS)


def test_run_sweep_accepts_a_bias_table_and_checks_it(tiny_pair, sorry_bias, tokenizer):
    table = BiasTable(sorry_bias, {"tokenizer_hash": tokenizer_hash(tokenizer)})
    configs = sweep_configs([1.0], [2], include_reference=False)
    from_table = run_sweep(
        tiny_pair, table, configs, SETS, scorer=contains_sorry, max_new_tokens=1, progress=False
    )
    from_tensor = run_sweep(
        tiny_pair,
        sorry_bias,
        configs,
        SETS,
        scorer=contains_sorry,
        max_new_tokens=1,
        progress=False,
    )
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(from_table) == strip(from_tensor)
    assert from_table[1]["harmful_refusal"] == 0.0

    other = tiny_tokenizer()
    other.add_tokens(["zebra"])
    foreign = BiasTable(sorry_bias, {"tokenizer_hash": tokenizer_hash(other)})
    with pytest.raises(BiasFileError, match="different tokenizer"):
        run_sweep(
            tiny_pair,
            foreign,
            configs,
            SETS,
            scorer=contains_sorry,
            max_new_tokens=1,
            progress=False,
        )
    wide = BiasTable(torch.zeros(2, sorry_bias.shape[1] + 1))
    with pytest.raises(BiasFileError, match="vocabulary size"):
        run_sweep(
            tiny_pair, wide, configs, SETS, scorer=contains_sorry, max_new_tokens=1, progress=False
        )


def test_run_sweep_errors(tmp_path, tiny_pair, sorry_bias):
    kwargs = dict(scorer=contains_sorry, max_new_tokens=1, progress=False)
    with pytest.raises(ValueError, match=r"needs L=3 bias rows, have 2"):
        run_sweep(tiny_pair, sorry_bias, sweep_configs([1.0], [1, 3]), SETS, **kwargs)
    with pytest.raises(ValueError, match=r"needs L=1 bias rows, have 0"):
        run_sweep(tiny_pair, None, sweep_configs([1.0], [1]), SETS, **kwargs)
    # Plain configurations need no bias at all.
    rows = run_sweep(tiny_pair, None, sweep_configs([1.0], [1])[:2], SETS, **kwargs)
    assert [r["name"] for r in rows] == ["reference", "aligned"]
    with pytest.raises(ValueError, match=r"needs the model 'reference'"):
        run_sweep(
            {"aligned": tiny_pair["aligned"]}, sorry_bias, sweep_configs([1.0], [1]), SETS, **kwargs
        )
    path = tmp_path / "responses.jsonl"
    with pytest.raises(ValueError, match=r"returned 6 verdicts for 7 responses"):
        run_sweep(
            tiny_pair,
            sorry_bias,
            sweep_configs([1.0], [1]),
            SETS,
            scorer=lambda p, r: [False] * (len(r) - 1),
            max_new_tokens=1,
            progress=False,
            responses_path=path,
        )


def test_run_sweep_without_benign_sets_has_no_pareto(tiny_pair, sorry_bias):
    rows = run_sweep(
        tiny_pair,
        sorry_bias,
        sweep_configs([1.0], [1]),
        SETS[:1],
        scorer=contains_sorry,
        max_new_tokens=1,
        progress=False,
    )
    assert [r["harmful_refusal"] for r in rows] == [0.0, 1.0, 0.0]
    assert not any("pareto" in r or "benign_compliance" in r for r in rows)


def hand_rows():
    configs = sweep_configs([0.5, 1.0], [1, 2])
    patterns = [
        (
            {
                "h1": [False, False, True, False],
                "h2": [False, True],
                "b1": [False] * 3,
                "b2": [False],
            }
        ),
        HAND_REFUSALS,
        (
            {
                "h1": [True, False, True, False],
                "h2": [True, True],
                "b1": [False, False, True],
                "b2": [False],
            }
        ),
        (
            {
                "h1": [True, False, False, False],
                "h2": [True, False],
                "b1": [False] * 3,
                "b2": [False],
            }
        ),
        ({"h1": [True] * 4, "h2": [True, True], "b1": [True] * 3, "b2": [True]}),
        ({"h1": [False] * 4, "h2": [False] * 2, "b1": [True] * 3, "b2": [True]}),
    ]
    rows = [
        summarise(c, HAND_SETS, r, seconds=0.5 * i)
        for i, (c, r) in enumerate(zip(configs, patterns))
    ]
    for row, flag in zip(rows, pareto_optimal(rows)):
        row["pareto"] = flag
    return rows


def test_write_table_csv_and_json(tmp_path):
    rows = hand_rows()
    rows.append({"name": "extra", "label": "aligned", "note": "only here"})
    csv_path, json_path = write_table(rows, tmp_path / "new" / "dir")
    assert csv_path == tmp_path / "new" / "dir" / "sweep.csv" and json_path.name == "sweep.json"
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        parsed = list(reader)
        columns = reader.fieldnames
    expected_columns = list(dict.fromkeys(k for r in rows for k in r))
    assert columns == expected_columns
    assert {
        "name",
        "label",
        "model",
        "alpha",
        "L",
        "harmful_refusal",
        "harmful_refusal_low",
        "harmful_refusal_high",
        "harmful_refusal_n",
        "benign_compliance",
        "benign_compliance_low",
        "benign_compliance_high",
        "benign_compliance_n",
        "refusal[h1]",
        "refusal[h2]",
        "compliance[b1]",
        "compliance[b2]",
        "seconds",
        "pareto",
        "note",
    } == set(columns)
    assert len(parsed) == len(rows)
    assert [p["name"] for p in parsed] == [r["name"] for r in rows]
    assert parsed[1]["harmful_refusal"] == f"{4 / 6:.4f}"
    assert parsed[1]["harmful_refusal_n"] == "6"
    assert parsed[2]["L"] == "1" and parsed[2]["alpha"] == "0.5000"
    assert parsed[-1]["note"] == "only here" and parsed[-1]["harmful_refusal"] == ""
    assert [p["pareto"] for p in parsed[:-1]] == [str(r["pareto"]) for r in rows[:-1]]
    assert json.loads(json_path.read_text()) == rows


def test_plot_pareto_writes_a_png(tmp_path):
    rows = hand_rows()
    path = plot_pareto(rows, tmp_path / "pareto.png", title="tiny")
    assert path == tmp_path / "pareto.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    # All-or-nothing rates (here n=167, the benign set's size) plot too.
    sets = [PromptSet("h", "harmful", ["p"] * 167), PromptSet("b", "benign", ["p"] * 167)]
    extreme = [
        summarise(c, sets, {"h": [flag] * 167, "b": [flag] * 167}, 0.0)
        for c, flag in zip(sweep_configs([1.0], [1]), (False, True, False))
    ]
    assert plot_pareto(extreme, tmp_path / "extreme.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The aligned model alone (no reference, no TSDI rows) still plots.
    alone = plot_pareto([r for r in rows if r["label"] == "aligned"], tmp_path / "alone.png")
    assert alone.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SCORER_MODULE = """
def starts_with_sorry(prompts, responses):
    return [r.startswith("sorry") for r in responses]


class ShortIsRefusal:
    def __init__(self):
        self.limit = 3

    def __call__(self, prompts, responses):
        return [len(r) < self.limit for r in responses]
"""


def test_load_scorer(tmp_path, monkeypatch):
    assert isinstance(load_scorer(None), PatternRefusalDetector)
    assert isinstance(load_scorer("pattern"), PatternRefusalDetector)
    (tmp_path / "tsdi_test_scorers.py").write_text(SCORER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tsdi_test_scorers", raising=False)
    function = load_scorer("tsdi_test_scorers:starts_with_sorry")
    assert function.__name__ == "starts_with_sorry"
    assert function(["a", "b"], ["sorry no", "sure sorry"]) == [True, False]
    instance = load_scorer("tsdi_test_scorers:ShortIsRefusal")
    assert type(instance).__name__ == "ShortIsRefusal" and instance.limit == 3
    assert instance(["a", "b"], ["ok", "long answer"]) == [True, False]
    with pytest.raises(ValueError, match="'pattern' or 'package.module:callable'"):
        load_scorer("tsdi_test_scorers")
    with pytest.raises(ValueError, match="package.module:callable"):
        load_scorer("patterns")
    with pytest.raises(AttributeError):
        load_scorer("tsdi_test_scorers:missing")
    with pytest.raises(ModuleNotFoundError):
        load_scorer("tsdi_no_such_module_xyz:f")


@pytest.fixture(scope="module")
def cli_models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli_models")
    for name, seed in (("aligned", 0), ("reference", 1)):
        tiny_llama(seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    bias = torch.zeros(2, len(tokenizer))
    bias[0, tokenizer.convert_tokens_to_ids("sorry")] = BOOST
    BiasTable(bias, {"tokenizer_hash": tokenizer_hash(tokenizer)}).save(root / "bias.safetensors")
    return root


def test_cli_sweep_on_tiny_models(tmp_path, capsys, cli_models):
    require_prompt_set_packages()
    from tsdi_ext.cli import main

    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--aligned",
                str(cli_models / "aligned"),
                "--reference",
                str(cli_models / "reference"),
                "--bias",
                str(cli_models / "bias.safetensors"),
                "--out",
                str(out),
                "--alphas",
                "0.5,1",
                "--lengths",
                "1,2",
                "--harmful-per-set",
                "3",
                "--max-new-tokens",
                "2",
                "--batch-size",
                "64",
            ]
        )
        == 0
    )
    shown = capsys.readouterr().out
    names = [
        "reference",
        "aligned",
        "aligned+TSDI alpha=0.5 L=1",
        "aligned+TSDI alpha=1 L=1",
        "aligned+TSDI alpha=0.5 L=2",
        "aligned+TSDI alpha=1 L=2",
    ]
    lines = shown.splitlines()
    assert (
        "harmful refusal" in lines[0] and "benign compliance" in lines[0] and "Pareto" in lines[0]
    )
    assert [line.split("  ")[0].strip() for line in lines[1:7]] == names
    assert f"wrote {out}/sweep.csv" in shown
    for name in ("sweep.csv", "sweep.json", "pareto.png", "responses.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in rows] == names
    assert all(r["harmful_refusal_n"] == 6 and r["benign_compliance_n"] == 80 + 87 for r in rows)
    assert all(isinstance(r["pareto"], bool) for r in rows)
    records = read_jsonl(out / "responses.jsonl")
    assert len(records) == len(names) * (3 + 3 + 80 + 87)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --reference '' skips the reference model.
    out2 = tmp_path / "sweep2"
    assert (
        main(
            [
                "sweep",
                "--aligned",
                str(cli_models / "aligned"),
                "--reference",
                "",
                "--bias",
                str(cli_models / "bias.safetensors"),
                "--out",
                str(out2),
                "--alphas",
                "1",
                "--lengths",
                "2",
                "--harmful-per-set",
                "2",
                "--max-new-tokens",
                "1",
            ]
        )
        == 0
    )
    rows = json.loads((out2 / "sweep.json").read_text())
    assert [r["name"] for r in rows] == ["aligned", "aligned+TSDI alpha=1 L=2"]
    capsys.readouterr()

    # L beyond the bias file's rows is refused before any generation (one error line, status 2).
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "sweep",
                "--aligned",
                str(cli_models / "aligned"),
                "--reference",
                "",
                "--bias",
                str(cli_models / "bias.safetensors"),
                "--out",
                str(tmp_path / "sweep3"),
                "--lengths",
                "3",
                "--harmful-per-set",
                "2",
            ]
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith("needs L=3 bias rows, have 2\n")


@pytest.mark.parametrize(
    "command,options",
    [
        (
            "sweep",
            ["--aligned", "--reference", "--bias", "--out", "--alphas", "--lengths", "--scorer"],
        ),
    ],
)
def test_cli_help(capsys, command, options):
    from tsdi_ext.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert f"tsdi {command}" in shown
    for option in options:
        assert option in shown, option


def chord_row(label, x, y):
    return {"label": label, "benign_compliance": x, "harmful_refusal": y}


def test_mixture_gap_known_values():
    from tsdi_ext.eval import mixture_gap

    # Chord from the aligned model (0.5, 0.75) to the reference (1.0, 0.25): y = 1.25 - x. All
    # values are dyadic, so the gaps are exact.
    rows = [
        chord_row("aligned+TSDI", 0.75, 0.5),  # on the chord
        chord_row("reference", 1.0, 0.25),
        chord_row("aligned+TSDI", 0.75, 0.625),  # above: +0.125
        chord_row("aligned+TSDI", 0.625, 0.5),  # below: -0.125
        chord_row("aligned", 0.5, 0.75),
        chord_row("aligned+TSDI", 0.25, 1.0),  # left of the chord's compliance range
        chord_row("aligned+TSDI", 1.0, 1.0),  # at the right end, above the reference
    ]
    gaps = mixture_gap(rows)
    assert gaps[0] == 0.0
    assert gaps[1] == pytest.approx(0.0, abs=1e-12) and gaps[4] == pytest.approx(0.0, abs=1e-12)
    assert gaps[2] == 0.125 and gaps[3] == -0.125
    assert gaps[5] is None
    assert gaps[6] == 0.75

    # The same chord the other way round (the aligned model more compliant than the reference).
    flipped = [
        chord_row("reference", 0.2, 0.9),
        chord_row("aligned", 0.6, 0.5),
        chord_row("x", 0.4, 0.8),
        chord_row("x", 0.3, 0.8),
        chord_row("x", 0.7, 0.5),
        chord_row("x", 0.1, 1.0),
    ]
    gaps = mixture_gap(flipped)
    # chord: y = 0.9 - (x - 0.2)
    assert gaps[2] == pytest.approx(0.8 - 0.7) and gaps[3] == pytest.approx(0.8 - 0.8, abs=1e-12)
    assert gaps[4] is None and gaps[5] is None

    # Only the first reference / aligned row defines the chord.
    extra = rows + [chord_row("reference", 0.0, 0.0)]
    assert mixture_gap(extra)[: len(rows)] == mixture_gap(rows)


@pytest.mark.parametrize(
    "rows",
    [
        [chord_row("aligned", 0.5, 0.75), chord_row("x", 0.6, 0.7)],  # no reference
        [chord_row("reference", 1.0, 0.25), chord_row("x", 0.6, 0.7)],  # no aligned
        [
            chord_row("reference", 0.5, 0.25),
            chord_row("aligned", 0.5, 0.75),  # equal compliance
            chord_row("x", 0.5, 0.5),
            chord_row("x", 0.6, 0.7),
        ],
    ],
)
def test_mixture_gap_without_a_chord_is_none(rows):
    from tsdi_ext.eval import mixture_gap

    assert mixture_gap(rows) == [None] * len(rows)


def test_mixture_gap_of_nothing():
    from tsdi_ext.eval import mixture_gap

    assert mixture_gap([]) == []


def direct_nll(model, tokenizer, prompt, response):
    """Mean -log p of the response tokens, one pair at a time and without padding."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert answer_ids, "direct_nll needs a non-empty response"
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logprobs = model(input_ids=ids).logits[0].double().log_softmax(dim=-1)
    picked = [logprobs[len(prompt_ids) - 1 + i, token].item() for i, token in enumerate(answer_ids)]
    return -sum(picked) / len(picked)


NLL_PROMPTS = [
    "how to do it",
    "the river rises in northern hills and runs south to the sea",
    "music",
    "recipe with flour egg sugar",
    "step one",
    "coin letter bridge train",
]

NLL_RESPONSES = [
    "sure here is how",
    "water",
    "",
    "i cannot help with that sorry the map is a poem",
    "sorry sorry sorry",
    "the",
]


def test_response_nll_matches_a_direct_computation(tiny_pair, tokenizer):
    from tsdi_ext.eval import response_nll

    model = tiny_pair["reference"][0]
    want = [
        float("nan") if not r else direct_nll(model, tokenizer, p, r)
        for p, r in zip(NLL_PROMPTS, NLL_RESPONSES)
    ]
    assert all(v > 0 for v in want if v == v)
    assert len({round(v, 4) for v in want if v == v}) == 5  # distinct values: a mix-up would show
    results = {
        b: response_nll(model, tokenizer, NLL_PROMPTS, NLL_RESPONSES, batch_size=b)
        for b in (1, 3, 16)
    }
    for batch_size, got in results.items():
        assert len(got) == len(NLL_PROMPTS), batch_size
        assert all(isinstance(v, float) for v in got)
        assert got[2] != got[2], (batch_size, got)  # empty response: NaN
        keep = [i for i in range(len(want)) if i != 2]
        assert [got[i] for i in keep] == pytest.approx([want[i] for i in keep], abs=1e-4), (
            batch_size
        )
    assert results[1][:2] + results[1][3:] == pytest.approx(
        results[3][:2] + results[3][3:], abs=1e-4
    )

    # Under the aligned model (which adds BOOST to "sorry"), "sorry" answers become far likelier.
    aligned = tiny_pair["aligned"][0]
    sorry = response_nll(aligned, tokenizer, ["how to do it"], ["sorry sorry sorry"])[0]
    assert sorry == pytest.approx(
        direct_nll(aligned, tokenizer, "how to do it", "sorry sorry sorry"), abs=1e-4
    )
    assert sorry < 0.1 < 1.0 < results[1][4]


def test_response_nll_with_absolute_positions(tokenizer):
    # GPT-2 has learned absolute positions (Llama's rotary ones are blind to a shift of every
    # position): left-padded prompts must be scored at their real positions.
    from tsdi_ext.eval import response_nll

    from tiny_models import tiny_gpt2

    model = tiny_gpt2(0)
    keep = [i for i, r in enumerate(NLL_RESPONSES) if r]
    want = [direct_nll(model, tokenizer, NLL_PROMPTS[i], NLL_RESPONSES[i]) for i in keep]
    for batch_size in (1, 4):
        got = response_nll(model, tokenizer, NLL_PROMPTS, NLL_RESPONSES, batch_size=batch_size)
        assert [got[i] for i in keep] == pytest.approx(want, abs=1e-4), batch_size


def test_response_nll_all_empty_and_no_input(tiny_pair, tokenizer):
    from tsdi_ext.eval import response_nll

    model = tiny_pair["reference"][0]
    got = response_nll(model, tokenizer, ["how to do it", "music"], ["", ""], batch_size=2)
    assert len(got) == 2 and all(v != v for v in got)
    assert response_nll(model, tokenizer, [], []) == []


def test_run_sweep_fluency_is_the_mean_nll_of_the_benign_answers(
    tmp_path, tiny_pair, sorry_bias, tokenizer
):
    from tsdi_ext.eval import mixture_gap, response_nll

    reference = tiny_pair["reference"]
    configs = sweep_configs([0.5, 1.0], [1])
    path = tmp_path / "responses.jsonl"
    rows = run_sweep(
        tiny_pair,
        sorry_bias,
        configs,
        SETS,
        scorer=contains_sorry,
        max_new_tokens=3,
        batch_size=2,
        progress=False,
        responses_path=path,
        fluency=reference,
    )
    records = read_jsonl(path)
    assert [r["name"] for r in rows] == [c.name for c in configs]
    for row in rows:
        benign = [r for r in records if r["config"] == row["name"] and r["kind"] == "benign"]
        assert [r["prompt"] for r in benign] == BENIGN
        values = response_nll(
            *reference, [r["prompt"] for r in benign], [r["response"] for r in benign]
        )
        finite = [v for v in values if v == v]
        assert finite, row["name"]
        assert isinstance(row["benign_nll"], float) and row["benign_nll"] == row["benign_nll"]
        assert row["benign_nll"] == pytest.approx(sum(finite) / len(finite), rel=1e-6), row["name"]
    by_name = {r["name"]: r for r in rows}
    # The reference's own greedy answers read as more fluent (to itself) than "sorry sorry sorry".
    assert by_name["reference"]["benign_nll"] < by_name["aligned"]["benign_nll"]
    assert [r["above_mixture"] for r in rows] == mixture_gap(rows)
    assert [r["pareto"] for r in rows] == pareto_optimal(rows)

    # Without fluency there is no benign_nll; without benign prompts it is NaN.
    plain = run_sweep(
        tiny_pair,
        sorry_bias,
        configs[:2],
        SETS,
        scorer=contains_sorry,
        max_new_tokens=1,
        progress=False,
    )
    assert not any("benign_nll" in r for r in plain)
    harmful_only = run_sweep(
        tiny_pair,
        sorry_bias,
        configs[:2],
        SETS[:1],
        scorer=contains_sorry,
        max_new_tokens=1,
        progress=False,
        fluency=reference,
    )
    assert all(r["benign_nll"] != r["benign_nll"] for r in harmful_only)


def set_seconds(rows, directory):
    """Distinct, non-zero seconds in sweep.json, to see that rescore keeps them."""
    stored = json.loads((directory / "sweep.json").read_text())
    for i, row in enumerate(stored):
        row["seconds"] = 1.5 + i
    (directory / "sweep.json").write_text(json.dumps(stored))
    return [{**row, "seconds": 1.5 + i} for i, row in enumerate(rows)]


def test_rescore_rebuilds_the_same_rows_and_files(sweep_dir, sweep_source, tiny_pair, tokenizer):
    from tsdi_ext.eval import rescore

    rows = sweep_source[1]
    by_name = {r["name"]: r for r in rows}
    # A mix of configurations (the precondition of the comparisons below).
    assert (
        by_name["reference"]["benign_compliance"] == 1.0
        and by_name["aligned"]["benign_compliance"] == 0.0
    )
    assert by_name["aligned+TSDI alpha=1 L=1"]["harmful_refusal"] == 0.0
    assert all(r["benign_nll"] == r["benign_nll"] for r in rows)
    assert any(r["above_mixture"] is not None for r in rows)

    expected = set_seconds(rows, sweep_dir)
    (sweep_dir / "sweep.csv").unlink()
    responses_before = (sweep_dir / "responses.jsonl").read_bytes()
    again = rescore(sweep_dir)
    assert again == expected  # every key, benign_nll (kept from sweep.json) and seconds included
    assert [list(r) for r in again] == [list(r) for r in expected]
    assert json.loads((sweep_dir / "sweep.json").read_text()) == expected
    with open(sweep_dir / "sweep.csv", newline="") as handle:
        parsed = list(csv.DictReader(handle))
    assert [p["name"] for p in parsed] == [r["name"] for r in rows]
    assert [p["harmful_refusal"] for p in parsed] == [f"{r['harmful_refusal']:.4f}" for r in rows]
    assert [p["seconds"] for p in parsed] == [f"{r['seconds']:.4f}" for r in expected]
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep_dir / "responses.jsonl").read_bytes() == responses_before
    assert not (sweep_dir / "summary.md").exists()  # no run.json: not a replicate directory

    # fluency recomputes benign_nll (here with the model that made it: the same values).
    refreshed = rescore(sweep_dir, fluency=tiny_pair["reference"])
    assert [r["benign_nll"] for r in refreshed] == pytest.approx(
        [r["benign_nll"] for r in rows], rel=1e-6
    )
    # ... and with another model, other values (written to sweep.json).
    other = rescore(sweep_dir, fluency=tiny_pair["aligned"])
    assert all(abs(o["benign_nll"] - r["benign_nll"]) > 1e-3 for o, r in zip(other, rows))
    assert [r["benign_nll"] for r in json.loads((sweep_dir / "sweep.json").read_text())] == [
        r["benign_nll"] for r in other
    ]


def test_rescore_with_another_scorer(sweep_dir, sweep_source):
    from tsdi_ext.eval import rescore

    rows = sweep_source[1]
    records = read_jsonl(sweep_dir / "responses.jsonl")
    calls = []

    def everything_refused(prompts, responses):
        calls.append((list(prompts), list(responses)))
        return [True] * len(responses)

    judged = rescore(sweep_dir, everything_refused)
    # One call per configuration, with that configuration's prompts and responses, in order.
    assert [c[0] for c in calls] == [ALL_PROMPTS] * len(RESCORE_CONFIGS)
    assert [c[1] for c in calls] == [
        [r["response"] for r in records if r["config"] == c.name] for c in RESCORE_CONFIGS
    ]
    assert [r["name"] for r in judged] == [r["name"] for r in rows]
    for row in judged:
        assert row["harmful_refusal"] == 1.0 and row["benign_compliance"] == 0.0
        assert row["refusal[harm]"] == 1.0 and row["compliance[good]"] == 0.0
        assert (row["harmful_refusal_n"], row["benign_compliance_n"]) == (len(HARMFUL), len(BENIGN))
        assert row["pareto"] is True and row["above_mixture"] is None  # all equal: no chord
    assert [r["benign_nll"] for r in judged] == [
        r["benign_nll"] for r in rows
    ]  # kept from sweep.json
    assert json.loads((sweep_dir / "sweep.json").read_text()) == judged

    # A scorer that refuses what does not start with "sorry" inverts the stored verdicts.
    inverted = rescore(sweep_dir, lambda p, r: [not f for f in starts_with_sorry(p, r)])
    for new, old in zip(inverted, rows):
        assert new["harmful_refusal"] == pytest.approx(1 - old["harmful_refusal"])
        assert new["benign_compliance"] == pytest.approx(1 - old["benign_compliance"])

    # The stored verdicts are untouched: a plain rescore gives the original rows back.
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rescore(sweep_dir)] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in rows
    ]


def test_rescore_fluency_skips_empty_answers(sweep_dir, tiny_pair):
    from tsdi_ext.eval import rescore, response_nll

    records = read_jsonl(sweep_dir / "responses.jsonl")
    for r in records:
        if r["kind"] == "benign" and (
            r["config"] == "aligned" or (r["config"] == "reference" and r["prompt"] == BENIGN[0])
        ):
            r["response"] = ""
    (sweep_dir / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = {r["name"]: r for r in rescore(sweep_dir, fluency=tiny_pair["reference"])}
    assert rows["aligned"]["benign_nll"] != rows["aligned"]["benign_nll"]  # no answer to score: NaN
    benign = [r for r in records if r["config"] == "reference" and r["kind"] == "benign"]
    assert [r["response"] == "" for r in benign] == [True, False, False]
    values = response_nll(
        *tiny_pair["reference"],
        [r["prompt"] for r in benign[1:]],
        [r["response"] for r in benign[1:]],
    )
    assert rows["reference"]["benign_nll"] == pytest.approx(sum(values) / len(values), rel=1e-6)


def test_rescore_errors(tmp_path, sweep_dir):
    from tsdi_ext.eval import rescore

    with pytest.raises(FileNotFoundError, match="responses.jsonl"):
        rescore(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="responses.jsonl"):
        rescore(empty)

    # A record without one of the fields every record carries, named with its line.
    records = read_jsonl(sweep_dir / "responses.jsonl")
    broken = [dict(r) for r in records]
    del broken[2]["kind"], broken[2]["L"]
    (sweep_dir / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in broken))
    with pytest.raises(ValueError, match=r"responses.jsonl:3: the record lacks L, kind$"):
        rescore(sweep_dir)
    # A kind that is neither harmful nor benign.
    records = [{**r, "kind": "neutral" if r["set"] == "good" else "harmful"} for r in records]
    (sweep_dir / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ValueError, match="kind must be 'harmful' or 'benign', got 'neutral'"):
        rescore(sweep_dir)


def test_cli_rescore_prints_the_table(sweep_dir, sweep_source, capsys, cli_models, tokenizer):
    from tsdi_ext.cli import main
    from tsdi_ext.eval import response_nll
    from tsdi_ext.models import load_model

    rows = sweep_source[1]
    assert main(["rescore", str(sweep_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "harmful refusal" in lines[0] and "NLL" in lines[0] and "Pareto" in lines[0]
    assert len(lines) == 1 + len(rows)
    for line, row in zip(lines[1:], rows):
        assert line.startswith(row["name"] + " ")
        assert f"{row['harmful_refusal']:6.3f} [" in line and f"{row['benign_nll']:.2f}" in line
        assert line.endswith("*") == bool(row["pareto"])
    assert json.loads((sweep_dir / "sweep.json").read_text())[0]["name"] == "reference"

    # --scorer judges anew; --fluency-model recomputes the NLL under that model.
    assert (
        main(
            [
                "rescore",
                str(sweep_dir),
                "--scorer",
                "pattern",
                "--fluency-model",
                str(cli_models / "reference"),
            ]
        )
        == 0
    )
    shown = capsys.readouterr().out
    stored = json.loads((sweep_dir / "sweep.json").read_text())
    records = read_jsonl(sweep_dir / "responses.jsonl")
    detector = PatternRefusalDetector()
    fluency = load_model(str(cli_models / "reference"))
    for row in stored:
        mine = [r for r in records if r["config"] == row["name"]]
        harmful = [detector.is_refusal(r["response"]) for r in mine if r["kind"] == "harmful"]
        assert row["harmful_refusal"] == pytest.approx(sum(harmful) / len(harmful))
        benign = [r for r in mine if r["kind"] == "benign"]
        values = [
            v
            for v in response_nll(
                *fluency, [r["prompt"] for r in benign], [r["response"] for r in benign]
            )
            if v == v
        ]
        assert row["benign_nll"] == pytest.approx(sum(values) / len(values), rel=1e-5)
        assert f"{row['benign_nll']:.2f}" in shown

    with pytest.raises(SystemExit) as exit_info:
        main(["rescore", str(sweep_dir / "missing")])
    assert exit_info.value.code == 2 and "tsdi: error: " in capsys.readouterr().err


def test_cli_help_rescore_and_push_down_only(capsys):
    from tsdi_ext.cli import main

    for command, options in (
        ("rescore", ["directory", "--scorer", "--fluency-model"]),
        ("sweep", ["--push-down-only"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        shown = capsys.readouterr().out
        for option in options:
            assert option in shown, option


def test_cli_sweep_push_down_only_drops_negative_entries(tmp_path, capsys, monkeypatch, cli_models):
    import tsdi_ext.eval
    from tsdi_ext.cli import main
    from tsdi_ext.models import load_model

    aligned, tokenizer = load_model(str(cli_models / "aligned"))
    sorry = tokenizer.convert_tokens_to_ids("sorry")
    plain = generate(aligned, tokenizer, ALL_PROMPTS, max_new_tokens=2)
    first = plain.tokens[:, 0].tolist()
    assert sorry not in first
    common = max(set(first), key=first.count)  # the aligned model's most frequent first token
    # A negative entry (raising "sorry" by 100: every TSDI answer would start with it) and a
    # positive one (lowering the most frequent first token by 100).
    bias = torch.zeros(1, len(tokenizer))
    bias[0, sorry] = -100.0
    bias[0, common] = 100.0
    path = tmp_path / "bias.safetensors"
    BiasTable(bias, {"tokenizer_hash": tokenizer_hash(tokenizer)}).save(path)

    # Small evaluation sets (the CLI's own would take a while), and a spy on the table it uses.
    monkeypatch.setattr(tsdi_ext.eval, "evaluation_sets", lambda harmful_per_set=None, seed=0: SETS)
    real_run_sweep, tables = tsdi_ext.eval.run_sweep, []

    def spy(models, table, *args, **kwargs):
        tables.append(table)
        return real_run_sweep(models, table, *args, **kwargs)

    monkeypatch.setattr(tsdi_ext.eval, "run_sweep", spy)

    def sweep(out, *extra):
        assert (
            main(
                [
                    "sweep",
                    "--aligned",
                    str(cli_models / "aligned"),
                    "--reference",
                    "",
                    "--bias",
                    str(path),
                    "--out",
                    str(out),
                    "--alphas",
                    "1",
                    "--lengths",
                    "1",
                    "--max-new-tokens",
                    "2",
                    "--batch-size",
                    "64",
                    *extra,
                ]
            )
            == 0
        )
        capsys.readouterr()
        records = read_jsonl(out / "responses.jsonl")
        return {
            name: [r["response"] for r in records if r["config"] == name]
            for name in ("aligned", "aligned+TSDI alpha=1 L=1")
        }

    clipped = sweep(tmp_path / "clipped", "--push-down-only")
    full = sweep(tmp_path / "full")
    assert clipped["aligned"] == full["aligned"] == plain.texts

    # Without the option the negative entry applies: every debiased answer starts with "sorry".
    assert all(t.startswith("sorry") for t in full["aligned+TSDI alpha=1 L=1"])
    assert (
        full["aligned+TSDI alpha=1 L=1"]
        == generate(aligned, tokenizer, ALL_PROMPTS, bias=bias, alpha=1.0, max_new_tokens=2).texts
    )
    # With it, only the positive entry applies: no "sorry", and the common first token is gone.
    debiased = clipped["aligned+TSDI alpha=1 L=1"]
    assert (
        debiased
        == generate(
            aligned, tokenizer, ALL_PROMPTS, bias=bias.clamp(min=0), alpha=1.0, max_new_tokens=2
        ).texts
    )
    assert not any(t.startswith("sorry") for t in debiased)
    assert debiased != plain.texts
    assert [t.split()[0] if t else None for t in debiased].count(
        tokenizer.convert_ids_to_tokens(common)
    ) == 0

    assert len(tables) == 2
    assert tables[0].bias.min().item() == 0.0 and tables[0].bias[0, common].item() == 100.0
    assert (
        tables[0].bias[0, sorry].item() == 0.0 and tables[0].metadata.get("push_down_only") is True
    )
    assert tables[1].bias[0, sorry].item() == -100.0 and "push_down_only" not in tables[1].metadata
