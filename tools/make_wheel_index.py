"""Lays tsdi_ext wheels out as one PEP 503 index per flavour and torch series.

    python tools/make_wheel_index.py WHEEL_DIR OUT_DIR

writes OUT_DIR/<flavour>/torch<A.B>/index.html and .../tsdi-ext/index.html with the wheels whose
local version label is +<flavour>.torch<A.B> (copied beside it), each linked with its sha256, so
that ``pip install tsdi_ext --extra-index-url <url>/cu130/torch2.11/`` sees only the wheels built
for that stack (docs/installing.md). A wheel without such a label is an error.
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from packaging.utils import parse_wheel_filename

LABEL = re.compile(r"^(?P<flavour>cpu|cu\d+)\.torch(?P<series>\d+\.\d+)$")
PROJECT = "tsdi-ext"  # the normalised name (PEP 503)


def page(title: str, links: list[tuple[str, str]]) -> str:
    body = "\n".join(
        f'<a href="{html.escape(href)}">{html.escape(text)}</a><br>' for href, text in links
    )
    return f"<!DOCTYPE html>\n<html><head><title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"


def build(wheel_dir: Path, out_dir: Path) -> dict[str, list[str]]:
    """Writes the indexes; returns {"<flavour>/torch<A.B>": [wheel names]}."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for wheel in sorted(wheel_dir.rglob("*.whl")):
        _name, version, _build, _tags = parse_wheel_filename(wheel.name)
        label = LABEL.match(version.local or "")
        if label is None:
            raise ValueError(f"{wheel.name}: no +<cpu|cuNNN>.torch<A.B> label to file it under")
        groups[f"{label['flavour']}/torch{label['series']}"].append(wheel)
    for folder, wheels in groups.items():
        project_dir = out_dir / folder / PROJECT
        project_dir.mkdir(parents=True, exist_ok=True)
        links = []
        for wheel in wheels:
            shutil.copy2(wheel, project_dir / wheel.name)
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            links.append((f"{wheel.name}#sha256={digest}", wheel.name))
        (project_dir / "index.html").write_text(page(f"Links for {PROJECT}", links))
        (out_dir / folder / "index.html").write_text(
            page("Simple index", [(f"{PROJECT}/", PROJECT)])
        )
    return {folder: [w.name for w in wheels] for folder, wheels in groups.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    for folder, names in sorted(build(Path(argv[0]), Path(argv[1])).items()):
        print(f"{folder}: {len(names)} wheel(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
