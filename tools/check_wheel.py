"""Checks that a tsdi_ext binary wheel can go into a package index and be resolved correctly.

    python tools/check_wheel.py [--allow-linux-tag] WHEEL [WHEEL ...]

For each wheel:
  * its platform tag is one an index accepts (manylinux_* / musllinux_*, not linux_x86_64), unless
    --allow-linux-tag (a wheel for local use only);
  * it requires torch by minor series (``torch==2.11.*``), and when its local version label names a
    series (``+cu130.torch2.11``), that very series: otherwise pip, in a per-CUDA index holding
    several torch series, could pair it with a torch whose ABI it does not match;
  * the label's flavour matches the binary: a ``cuNNN`` wheel links torch's CUDA library, a ``cpu``
    one does not;
  * no library of torch's or of the CUDA runtime or driver is vendored into it (the extension must
    use the copies the running torch has loaded).
Prints one line per wheel; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import email.parser
import fnmatch
import io
import re
import sys
import zipfile
from pathlib import PurePosixPath

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

# What must never be vendored: torch's own libraries and the CUDA runtime/driver.
FORBIDDEN_VENDORED = ("libc10*", "libtorch*", "libgomp*", "libcudart*", "libcuda.so*", "libnvrtc*")
INDEX_PLATFORMS = re.compile(r"^(manylinux_\d+_\d+|musllinux_\d+_\d+)_\w+$")
LABEL = re.compile(r"^(?P<flavour>cpu|cu\d+)\.torch(?P<series>\d+\.\d+)$")
SERIES_PIN = re.compile(r"^==(?P<series>\d+\.\d+)\.\*$")


def needed_libraries(data: bytes) -> list[str]:
    """The DT_NEEDED entries of an ELF shared object."""
    elf = ELFFile(io.BytesIO(data))
    needed: list[str] = []
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            needed += [tag.needed for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
    return needed


def check(path: str, allow_linux_tag: bool = False) -> list[str]:
    """The problems found in one wheel (empty when it passes)."""
    problems: list[str] = []
    filename = PurePosixPath(path).name
    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except Exception as error:  # packaging's InvalidWheelFilename and friends
        return [f"not a wheel file name: {error}"]
    platforms = {tag.platform for tag in tags}
    if not allow_linux_tag:
        bad = sorted(p for p in platforms if not INDEX_PLATFORMS.match(p))
        if bad:
            problems.append(
                f"platform tag {', '.join(bad)}: a package index wants manylinux/musllinux"
            )

    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
        metadata_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if metadata_name is None:
            return problems + [f"no {dist_info}/METADATA"]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
        torch_reqs = [
            Requirement(r)
            for r in metadata.get_all("Requires-Dist") or []
            if Requirement(r).name == "torch" and Requirement(r).marker is None
        ]
        label = LABEL.match(version.local or "")
        if len(torch_reqs) != 1:
            problems.append(f"{len(torch_reqs)} unconditional torch requirements (want 1)")
        else:
            spec = str(torch_reqs[0].specifier)
            pin = SERIES_PIN.match(spec)
            if pin is None:
                problems.append(
                    f"requires torch{spec}: a binary wheel must pin its series (==A.B.*)"
                )
            elif label and pin["series"] != label["series"]:
                problems.append(
                    f"requires torch{spec} but its label {version.local} names torch {label['series']}"
                )
        if version.local and not label:
            problems.append(f"local label {version.local!r} is not <cpu|cuNNN>.torch<A.B>")

        extensions = [n for n in names if re.match(r"^tsdi_ext/_C[.].*so$", n)]
        if len(extensions) != 1:
            problems.append(f"{len(extensions)} tsdi_ext/_C extension modules (want 1)")
        else:
            needed = needed_libraries(wheel.read(extensions[0]))
            links_cuda = any(lib.startswith(("libc10_cuda", "libtorch_cuda")) for lib in needed)
            if label and label["flavour"] == "cpu" and links_cuda:
                problems.append("labelled cpu but the extension links torch's CUDA library")
            if label and label["flavour"] != "cpu" and not links_cuda:
                problems.append(f"labelled {label['flavour']} but the extension has no CUDA code")
        vendored = [
            n
            for n in names
            if any(fnmatch.fnmatch(PurePosixPath(n).name, pat) for pat in FORBIDDEN_VENDORED)
        ]
        if vendored:
            problems.append(f"vendors torch/CUDA libraries: {', '.join(vendored)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheels", nargs="+")
    parser.add_argument("--allow-linux-tag", action="store_true")
    args = parser.parse_args(argv)
    failed = False
    for path in args.wheels:
        problems = check(path, args.allow_linux_tag)
        failed |= bool(problems)
        name = PurePosixPath(path).name
        print(f"check_wheel: {'FAIL' if problems else 'ok'}  {name}")
        for problem in problems:
            print(f"check_wheel:   {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
