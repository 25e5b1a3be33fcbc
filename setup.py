"""Build hierbench and its one native extension, ``hierbench._C``.

C++ is always built (-O3, OpenMP; hot loops carry GCC ``target_clones`` so one binary runs AVX-512,
AVX2 or baseline x86-64 code, chosen when the library loads). CUDA sources are added when a CUDA
toolkit and a CUDA build of torch are both present.

Environment knobs
-----------------
HIERBENCH_CUDA          auto (default) | 1 (CUDA required, fail without it) | 0 (C++ only).
                        ``auto`` builds CUDA for in-place and editable builds (``make build``, CI)
                        but not for wheels (``bdist_wheel``: ``make wheel``, ``pip wheel .``):
                        a wheel gets CUDA kernels only with HIERBENCH_CUDA=1.
TORCH_CUDA_ARCH_LIST    CUDA architectures, default "8.0;9.0" (sm_80, sm_90)
CUDA_HOME / CUDA_PATH   toolkit root; otherwise found from the ``nvcc`` on PATH or /usr/local/cuda*
MAX_JOBS                parallel compile jobs (ninja)
DEBUG=1                 -O0 -g (otherwise -g0 and the debug sections are stripped at link)

Distributions (README "Reuse"): the core, ``pip install hierbench``, needs only torch (pinned to
the version this build compiles against: ``_C`` links against libtorch's C++ ABI), numpy and
zstandard; ``hierbench[bench]`` adds what the benchmark suite needs (pandas, torchvision,
matplotlib, pillow); ``hierbench[examples]`` what ``examples/`` needs (pillow). A wheel is built
out of tree, timed and checked by ``make wheel`` (scripts/build_wheel.py).

Build with ``pip install --no-build-isolation -e .`` (the extension compiles against the torch that
is already installed, which an isolated build environment cannot see).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "8.0;9.0"

# Runtime dependencies of the core (ops, codec, transfer engine), besides torch_requirement().
CORE_REQUIRES = ["numpy>=2.0", "zstandard>=0.23"]
# What the rest of the package needs: the benchmark suite (data, report, reproduce, the CLI's
# results commands) and the examples. Never imported by hierbench.ops / codec / transfer
# (tests/test_packaging.py blocks them and imports the core).
EXTRAS_REQUIRE = {
    "bench": ["torchvision", "pandas", "matplotlib", "pillow"],
    "examples": ["pillow"],
    # the codec's optional lz4 stage (hierbench/codec/stages.py); absent, it says so
    "lz4": ["lz4>=4.4"],
}


def torch_requirement() -> str:
    """``torch==X.Y.Z``, the torch this build compiles against: ``_C`` links against libtorch's
    C++ ABI, which is not stable across releases. The local label (``+cpu``, ``+cu130``) is
    dropped: a requirement cannot name it portably, and a C++-only ``_C`` runs on either build
    (a wheel built with HIERBENCH_CUDA=1 needs a CUDA torch of the same CUDA major version)."""
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def _building_wheel() -> bool:
    """Whether this run builds a wheel (``bdist_wheel``; editable installs: ``editable_wheel``)."""
    return "bdist_wheel" in sys.argv[1:]


def _find_cuda_home() -> str | None:
    """The CUDA toolkit root: $CUDA_HOME, $CUDA_PATH, the nvcc on PATH, or /usr/local/cuda*."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and Path(os.environ[var], "bin", "nvcc").exists():
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
        # Some machines put a wrapper script on PATH that execs the real nvcc: read its target.
        try:
            text = Path(nvcc).read_text(errors="ignore")[:4096]
            candidates += [Path(m).parent.parent for m in re.findall(r"(/\S+/bin/nvcc)\b", text)]
        except OSError:
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*"), reverse=True)]
    for c in candidates:
        if (c / "bin" / "nvcc").exists() and (c / "include" / "cuda_runtime.h").exists():
            return str(c)
    return None


def _want_cuda() -> tuple[bool, str]:
    mode = os.environ.get("HIERBENCH_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"HIERBENCH_CUDA must be auto, 0 or 1, not {mode!r}")
    if mode == "0":
        return False, "HIERBENCH_CUDA=0"
    if mode == "auto" and _building_wheel():
        return False, "a wheel: CUDA is opt-in there, set HIERBENCH_CUDA=1"
    import torch

    cuda_home = _find_cuda_home()
    reason = None
    if torch.version.cuda is None:
        reason = "torch is a CPU-only build"
    elif cuda_home is None:
        reason = "no CUDA toolkit found (set CUDA_HOME)"
    if reason:
        if mode == "1":
            raise SystemExit(f"HIERBENCH_CUDA=1 but CUDA cannot be built: {reason}")
        return False, reason
    os.environ["CUDA_HOME"] = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    return True, f"CUDA_HOME={cuda_home}, archs {os.environ['TORCH_CUDA_ARCH_LIST']}"


def _nvcc_version(cuda_home: str) -> str:
    out = subprocess.run([f"{cuda_home}/bin/nvcc", "--version"], capture_output=True, text=True)
    m = re.search(r"release (\d+\.\d+)", out.stdout)
    return m.group(1) if m else "unknown"


# OpenSSL's libcrypto (libssl-dev): HMAC-SHA256, scrypt and randomness for the TCP transport.
LIBRARIES = ["crypto"]


def extensions():
    with_cuda, why = _want_cuda()
    # Imported only after CUDA_HOME is settled: cpp_extension reads it at import time.
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    debug = os.environ.get("DEBUG") == "1"
    # -g0 last wins over the -g in Python's own CFLAGS; --strip-debug drops what is left (e.g.
    # nvcc's host objects), keeping the symbol table (function names in profilers, backtraces).
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    link = ["-fopenmp"] if debug else ["-fopenmp", "-Wl,--strip-debug"]
    cxx = [*opt, "-std=c++20", "-fopenmp", "-Wall", "-Wno-unknown-pragmas", "-fno-math-errno"]
    # Exact IEEE arithmetic, never fused into FMA (GCC's default is -ffp-contract=fast): the CPU
    # kernels must match the reference and the CUDA kernels (nvcc --fmad=false) bit for bit.
    cxx.append("-ffp-contract=off")
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp"))
    define_macros = [("HIERBENCH_VERSION", '"0.1.0"')]
    if not with_cuda:
        print(f"hierbench: building C++ only ({why})")
        return [
            CppExtension(
                "hierbench._C",
                sources,
                define_macros=define_macros,
                extra_compile_args={"cxx": cxx},
                extra_link_args=link,
                libraries=list(LIBRARIES),  # cpp_extension appends to it
            )
        ]
    cu = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cu"))
    nvcc_ver = _nvcc_version(os.environ["CUDA_HOME"])
    print(f"hierbench: building C++ and CUDA ({why}, nvcc {nvcc_ver})")
    nvcc = [
        *(["-O0", "-g", "-lineinfo"] if debug else ["-O3", "-lineinfo"]),
        "-std=c++20",
        # Exact IEEE arithmetic: the CUDA kernels must match the CPU ones bit for bit.
        "--fmad=false",
        "--expt-relaxed-constexpr",
    ]
    define_macros.append(("HIERBENCH_WITH_CUDA", "1"))
    define_macros.append(("HIERBENCH_NVCC_VERSION", f'"{nvcc_ver}"'))
    return [
        CUDAExtension(
            "hierbench._C",
            sources + cu,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
            libraries=list(LIBRARIES),  # cpp_extension appends to it
        )
    ]


def main():
    ext_modules = extensions()  # settles CUDA_HOME before cpp_extension is first imported
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name="hierbench",
        version="0.1.0",
        description="Edge-cloud hierarchical training with early exits: kernels, engine, benchmark",
        long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
        long_description_content_type="text/markdown",
        python_requires=">=3.10",
        packages=find_packages(include=["hierbench", "hierbench.*"]),
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        license_expression="MIT",
        license_files=["LICENSE"],
        package_data={"hierbench": ["py.typed"]},
        install_requires=[torch_requirement(), *CORE_REQUIRES],
        extras_require=EXTRAS_REQUIRE,
        entry_points={"console_scripts": ["hierbench = hierbench.cli:main"]},
        zip_safe=False,
    )


if __name__ == "__main__":
    main()
