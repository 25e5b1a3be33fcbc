"""The reuse distribution (issue 16): the core (ops, codec, transfer engine) imports and works
without the benchmark suite's dependencies; setup.py's metadata pins torch to the build's version
and keeps pandas / torchvision / matplotlib / pillow behind extras; the wheel checker of
scripts/build_wheel.py rejects what a reuse wheel must not be. (Building the wheel itself takes
minutes: CI does it, `make reuse-check`, and runs examples/ from a fresh venv.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH_ONLY = ("pandas", "torchvision", "matplotlib", "PIL")
TORCH_PIN = f"torch=={torch.__version__.split('+')[0]}"


def _load_script(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_core_api_works_with_the_bench_dependencies_blocked():
    """The README's reuse integration, with pandas, torchvision, matplotlib and PIL made
    unimportable: a codec round trip through a real TCP connection of the transfer engine."""
    code = f"""
import sys
for m in {BENCH_ONLY!r}:
    sys.modules[m] = None  # import m now raises ImportError
import threading
import torch
import hierbench.ops, hierbench.codec, hierbench.transfer
from hierbench.codec import ActivationCodec
from hierbench.ops import QuantConfig, dequantize, quantize
from hierbench.transfer import connect, listen

x = torch.randn(4, 16, 8, 8)
q = quantize(x, QuantConfig(bits=4, granularity="group", group_size=64))
assert (dequantize(q) - x).abs().max() <= q.scale.max() / 2 + 1e-6
up = ActivationCodec("q8")
with listen(port=0, secret=b"k" * 16) as lst:
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(lst.accept(timeout=30)))
    t.start()
    edge = connect("127.0.0.1", lst.port, b"k" * 16)
    t.join()
    (cloud,) = accepted
    frame = up.encode(x)
    edge.send(frame)
    got = up.decode(cloud.recv(timeout=30).data)
    edge.close(); cloud.close()
assert torch.equal(got, up.decode(frame)) and got.shape == x.shape
loaded = sorted(m for m in {BENCH_ONLY!r} if sys.modules.get(m) is not None)
assert not loaded, loaded
print("ok")
"""
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_cli_names_the_bench_extra_when_its_dependencies_are_missing(tmp_path):
    code = f"""
import sys
for m in {BENCH_ONLY!r}:
    sys.modules[m] = None
from hierbench.cli import main
assert main(["models", "--model", "vgg16"]) == 0  # needs none of them
sys.exit(main(["report", {str(tmp_path)!r}]))
"""
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert "pip install 'hierbench[bench]'" in res.stderr, res.stderr[-3000:]
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def egg_info(tmp_path_factory) -> Path:
    """setup.py's metadata as a build writes it (``egg_info``: no compilation)."""
    out = tmp_path_factory.mktemp("egg")
    env = {**os.environ, "HIERBENCH_CUDA": "0"}
    res = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "hierbench.egg-info"


def test_metadata_pins_torch_and_keeps_the_bench_dependencies_in_extras(egg_info):
    sections: dict[str, list[str]] = {"": []}
    key = ""
    for line in (egg_info / "requires.txt").read_text().splitlines():
        if line.startswith("["):
            key = line.strip("[]")
            sections[key] = []
        elif line.strip():
            sections[key].append(line.strip())
    core = sections[""]
    assert TORCH_PIN in core, core  # the ABI _C is built against
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in core}
    assert names == {"torch", "numpy", "zstandard"}, core
    bench = {r.split(">")[0].split("=")[0].lower() for r in sections.get("bench", [])}
    assert {"pandas", "torchvision", "matplotlib", "pillow"} <= bench, sections
    assert any(r.lower().startswith("pillow") for r in sections.get("examples", [])), sections


def test_metadata_has_a_licence_and_py_typed(egg_info):
    pkg_info = (egg_info / "PKG-INFO").read_text()
    assert "License-Expression: MIT" in pkg_info
    assert "License-File: LICENSE" in pkg_info
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "hierbench/py.typed" in (egg_info / "SOURCES.txt").read_text().splitlines()
    assert (ROOT / "hierbench" / "py.typed").is_file()


def test_wheels_build_cuda_only_when_asked(monkeypatch):
    setup = _load_script("hierbench_setup", ROOT / "setup.py")
    monkeypatch.setenv("HIERBENCH_CUDA", "auto")
    monkeypatch.setattr(sys, "argv", ["setup.py", "bdist_wheel", "--dist-dir", "x"])
    assert setup._want_cuda()[0] is False
    monkeypatch.setenv("HIERBENCH_CUDA", "0")
    monkeypatch.setattr(sys, "argv", ["setup.py", "editable_wheel"])
    assert setup._want_cuda()[0] is False


# -- the wheel checker (scripts/build_wheel.py) -----------------------------------------------

build_wheel = _load_script("build_wheel", ROOT / "scripts" / "build_wheel.py")
GOOD_REQS = [
    TORCH_PIN,
    "numpy>=2.0",
    "zstandard>=0.23",
    *(f'{m}; extra == "bench"' for m in ("torchvision", "pandas", "matplotlib", "pillow")),
]


def test_requirement_check_accepts_the_intended_metadata():
    build_wheel.check_requirements(GOOD_REQS, TORCH_PIN.split("==")[1])


@pytest.mark.parametrize(
    "reqs, problem",
    [
        (["torch", "numpy", "zstandard"], "expected"),  # unpinned torch (the wheel)
        (["torch==2.0.0", "numpy", "zstandard"], "expected"),  # another ABI
        ([*GOOD_REQS, "pandas"], "exactly"),  # a bench dependency forced on reusers
        ([*GOOD_REQS[:3], 'pandas; extra == "bench"'], "lacks"),
    ],
)
def test_requirement_check_rejects(reqs, problem):
    with pytest.raises(build_wheel.WheelError, match=problem):
        build_wheel.check_requirements(reqs, TORCH_PIN.split("==")[1])


def _wheel(path: Path, *, license_file: bool = True, typed: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        meta = "Metadata-Version: 2.4\nName: hierbench\nVersion: 0.1.0\n"
        meta += "".join(f"Requires-Dist: {r}\n" for r in GOOD_REQS)
        zf.writestr("hierbench-0.1.0.dist-info/METADATA", meta)
        if license_file:
            zf.writestr("hierbench-0.1.0.dist-info/licenses/LICENSE", "MIT License\n")
        if typed:
            zf.writestr("hierbench/py.typed", "")
    return path


@pytest.mark.parametrize("missing", ["LICENSE", "py.typed"])
def test_wheel_check_rejects_a_wheel_without(tmp_path, missing):
    wheel = _wheel(
        tmp_path / "w.whl", license_file=missing != "LICENSE", typed=missing != "py.typed"
    )
    with pytest.raises(build_wheel.WheelError, match=missing):
        build_wheel.check_wheel(wheel, TORCH_PIN.split("==")[1], tmp_path)


def test_wheel_check_rejects_a_wheel_without_the_extension(tmp_path):
    with pytest.raises(build_wheel.WheelError, match=r"_C\*\.so"):
        build_wheel.check_wheel(_wheel(tmp_path / "w.whl"), TORCH_PIN.split("==")[1], tmp_path)


def test_debug_sections_are_found_and_stripped_ones_are_not(tmp_path):
    """The ELF check itself, on a library compiled here with and without -g."""
    src = tmp_path / "f.c"
    src.write_text("int f(int x) { return x + 1; }\n")
    for flags, debug in ((["-g"], True), (["-g0", "-Wl,--strip-debug"], False)):
        so = tmp_path / f"f{len(flags)}.so"
        subprocess.run(["gcc", "-shared", "-fPIC", *flags, "-o", so, src], check=True)
        assert bool(build_wheel.debug_sections(so)) is debug, flags
