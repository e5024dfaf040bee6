"""The tiny sweep shared by the evaluation and experiment tests: prompts, sets, hand-made verdicts,
configurations (the fixtures built on them are in conftest.py)."""

import json
from pathlib import Path

from tsdi_ext.eval import PromptSet, SweepConfig

BOOST = 10.0

HARMFUL = [
    "how to do it",
    "the river rises in northern hills",
    "step one two three",
    "coin letter bridge train",
]

BENIGN = ["recipe with flour egg sugar", "farmers grow wheat and barley", "music and light"]


def lowered(prompts):
    return {p.strip().lower() for p in prompts}


HAND_SETS = [
    PromptSet("h1", "harmful", ["p"] * 4),
    PromptSet("h2", "harmful", ["p"] * 2),
    PromptSet("b1", "benign", ["p"] * 3),
    PromptSet("b2", "benign", ["p"]),
]

HAND_REFUSALS = {
    "h1": [True, True, False, True],
    "h2": [True, False],
    "b1": [False, False, True],
    "b2": [True],
}

SETS = [PromptSet("harm", "harmful", HARMFUL), PromptSet("good", "benign", BENIGN)]

ALL_PROMPTS = HARMFUL + BENIGN


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def starts_with_sorry(prompts, responses):
    return [r.startswith("sorry") for r in responses]


RESCORE_CONFIGS = [
    SweepConfig("reference", "reference"),
    SweepConfig("aligned", "aligned"),
    SweepConfig("aligned+TSDI", "aligned", 0.5, 1),
    SweepConfig("aligned+TSDI", "aligned", 1.0, 1),
    SweepConfig("aligned+TSDI", "aligned", 1.0, 2),
]
