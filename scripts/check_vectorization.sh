#!/usr/bin/env bash
# Check that the CPU quantization kernels are vectorised, call no libm, and use no FMA.
#
# Reads the disassembly of the built object (build/temp*/csrc/quant/quant_cpu.o, from `make build`
# or `python setup.py build_ext --inplace`) and reports, for every target_clones entry point
# (clones .arch_x86_64_v4 = AVX-512, .arch_x86_64_v3 = AVX2, .default = baseline x86-64): its size,
# how many instructions use zmm/ymm/xmm registers, packed-float instructions, the functions it
# calls, and FMA instructions.
#
# Fails (exit 1) when a clone calls a libm rounding/math function (floorf, roundf, lrintf,
# nearbyintf, rintf, ...) or any other function but memcpy/memset/memmove (a helper that was not
# inlined runs as baseline scalar code), when any FMA instruction appears (the kernels must round every
# multiply and add, like the CUDA build's --fmad=false, to match bit for bit), or when an AVX2 or
# AVX-512 clone has no packed vector arithmetic at all.
#
# Usage: scripts/check_vectorization.sh [--opt-info] [object]
#   --opt-info  also recompile quant_cpu.cpp with -fopt-info-vec-optimized and list the loops GCC
#               reports as vectorised (about a minute: torch's headers are large).
set -euo pipefail
cd "$(dirname "$0")/.."

OPT_INFO=0
if [[ "${1:-}" == "--opt-info" ]]; then OPT_INFO=1; shift; fi
OBJ="${1:-$(ls -t build/temp*/csrc/quant/quant_cpu.o 2>/dev/null | head -1 || true)}"
if [[ -z "$OBJ" || ! -f "$OBJ" ]]; then
  echo "check_vectorization: no quant_cpu.o found; build first (make build)" >&2
  exit 2
fi
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
echo "object: $OBJ"

DIS=$(mktemp)
trap 'rm -f "$DIS"' EXIT
objdump -dr -C --no-show-raw-insn "$OBJ" > "$DIS"  # -r: calls resolve through relocations
"$PY" - "$DIS" <<'PYEOF'

import re, sys
LIBM = re.compile(r"\b(floor|ceil|round|lround|llround|rint|lrint|llrint|nearbyint|trunc|fmin|fmax|"
                  r"fma|exp|log|pow|sqrt|modf|frexp|ldexp)f?(@plt)?\b")
funcs, cur, pending_call = {}, None, False
for line in open(sys.argv[1]):
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        name = m.group(1)
        cur = None
        c = re.search(r"\[clone \.(arch_x86_64_v4|arch_x86_64_v3|default)\]$", name)
        if c and "hierbench::quant" in name:
            short = re.sub(r"hierbench::quant::\(anonymous namespace\)::", "", name)
            short = re.sub(r"\(.*\)", "", short.split(" [clone")[0])
            cur = (short, {'arch_x86_64_v4': "avx512", "arch_x86_64_v3": "avx2",
                           "default": "x86-64"}[c.group(1)])
            funcs[cur] = {'n': 0, "zmm": 0, "ymm": 0, "xmm": 0, "packed": 0, "fma": 0,
                          "calls": set()}
        continue
    if cur is None:
        continue
    f = funcs[cur]
    rel = re.match(r"^\s+[0-9a-f]+: R_X86_64_(PLT32|PC32|GOTPCREL\w*)\s+(.*?)(-0x4)?$", line)
    if rel:
        if pending_call:
            f["calls"].add(rel.group(2))
        pending_call = False
        continue
    if not re.match(r"^\s+[0-9a-f]+:\s", line):
        continue
    if pending_call:  # a call with no relocation: a local target, named in the instruction
        f["calls"].add(pending_call)
    pending_call = False
    f["n"] += 1
    ins = line.split(":", 1)[1].strip()
    for r in ("zmm", "ymm", "xmm"):
        if "%" + r in ins:
            f[r] += 1
            break
    op = ins.split()[0] if ins else ""
    if re.match(r"v?(add|sub|mul|div|min|max|cmp)[a-z]*ps$|vcvt|vpmull|vpmovdb|vpmovzx|vpack", op):
        f["packed"] += 1
    if re.match(r"vf(n)?m(add|sub)", op):
        f["fma"] += 1
    if op.startswith("call"):
        t = re.search(r"<(.*)>", ins)
        pending_call = t.group(1) if t else ins
bad = []
print(f"{'function':28} {'clone':7} {'insns':>6} {'zmm':>5} {'ymm':>5} {'xmm':>5} "
      f"{'packed':>6} {'fma':>4}  calls")
for (name, arch), f in sorted(funcs.items()):
    calls = sorted(re.sub(r"\(.*", "", c) for c in f["calls"])
    print(f"{name:28} {arch:7} {f['n']:6} {f['zmm']:5} {f['ymm']:5} {f['xmm']:5} "
          f"{f['packed']:6} {f['fma']:4}  {', '.join(calls) or '-'}")
    for c in calls:
        if LIBM.search(c.split("::")[-1]):
            bad.append(f"{name} [{arch}] calls libm {c}")
        elif not re.match(r"(memcpy|memset|memmove)$", c):
            bad.append(f"{name} [{arch}] calls {c} (not inlined: scalar baseline code)")
    if f['fma']:
        bad.append(f"{name} [{arch}] has {f['fma']} FMA instructions")
    if arch != "x86-64" and f["packed"] == 0 and f["n"] > 20:
        bad.append(f"{name} [{arch}] has no packed vector arithmetic")
if not funcs:
    bad.append("no target_clones functions of hierbench::quant found")
print()
if bad:
    print("FAIL:")
    print("\n".join("  " + b for b in bad))
    sys.exit(1)
print(f"OK: {len(funcs)} clone bodies; no libm calls, no FMA, every AVX2/AVX-512 clone is vectorised")
PYEOF

# The hand-written AVX-512 kernel (quant_cpu_avx512.o, beside quant_cpu.o): intrinsics, so it is
# vectorised by construction; check that it uses zmm registers, has no FMA (the intrinsics are
# separate multiplies and adds, and nothing may fuse them) and calls nothing but memset/memcpy.
AVX_OBJ="$(dirname "$OBJ")/quant_cpu_avx512.o"
if [[ ! -f "$AVX_OBJ" ]]; then
  echo "FAIL: $AVX_OBJ not found (it is built with quant_cpu.o)" >&2
  exit 1
fi
objdump -dr -C --no-show-raw-insn "$AVX_OBJ" > "$DIS"
"$PY" - "$DIS" <<'PYEOF'
import re, sys
insns, calls, cur = [], set(), False
for line in open(sys.argv[1]):
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        cur = "avx512::quantize_groups(" in m.group(1)
        continue
    if not cur:
        continue
    rel = re.match(r"^\s+[0-9a-f]+: R_X86_64_\w+\s+(\w+)", line)
    if rel and insns and insns[-1].startswith(("call", "jmp")):
        calls.add(rel.group(1))  # a call or tail call through a relocation
        continue
    if re.match(r"^\s+[0-9a-f]+:\s", line):
        ins = line.split(":", 1)[1].strip()
        insns.append(ins)
        t = re.match(r"call\w*\s+\S+\s+<(.*)>", ins)
        if t and not t.group(1).startswith("hierbench::quant::avx512::quantize_groups"):
            calls.add(re.sub(r"[+-]0x[0-9a-f]+$", "", t.group(1)))  # a call named in the insn
zmm = sum("%zmm" in i for i in insns)
fma = sum(bool(re.match(r"vf(n)?m(add|sub)", i)) for i in insns)
bad = sorted(c for c in calls if c not in ("memset", "memcpy"))
print(f"avx512 kernel quantize_groups: {len(insns)} insns, {zmm} zmm, {fma} fma, "
      f"calls: {', '.join(sorted(calls)) or '-'}")
if not insns or zmm == 0 or fma or bad:
    print("FAIL: the AVX-512 kernel is missing, not AVX-512, has FMA, or calls " + ", ".join(bad))
    sys.exit(1)
PYEOF

if [[ $OPT_INFO == 1 ]]; then
  echo
  echo "GCC -fopt-info-vec-optimized on csrc/quant/quant_cpu.cpp: vectorised loops by source line"
  echo "(one loop is compiled for 3 clones x every template it is inlined into; widths in bytes)"
  INC=$("$PY" -c 'from torch.utils.cpp_extension import include_paths; print(" ".join("-I"+p for p in include_paths()))')
  PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  INFO=$(mktemp)
  # shellcheck disable=SC2086
  g++ -std=c++20 -O3 -fopenmp -fno-math-errno -ffp-contract=off -fPIC $INC -I"$PYINC" \
    -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C -c csrc/quant/quant_cpu.cpp \
    -o /dev/null -fopt-info-vec-optimized 2> "$INFO" || true
  "$PY" - "$INFO" csrc/quant/quant_cpu.cpp csrc/common/simd.h <<'PYEOF'
import collections, re, sys
info, *sources = sys.argv[1:]
text = {src: open(src).read().splitlines() for src in sources}
loops = collections.defaultdict(set)
for line in open(info):
    m = re.search(r"([\w/.]+):(\d+):\d+: optimized: loop vectorized using (\d+) byte vectors", line)
    if m and any(m.group(1).endswith(s) for s in sources):
        src = next(s for s in sources if m.group(1).endswith(s))
        loops[(src, int(m.group(2)))].add(int(m.group(3)))
for (src, n), widths in sorted(loops.items()):
    code = text[src][n - 1].strip()[:70]
    print(f"  {src.split('/')[-1]}:{n:<4} {sorted(widths)!s:<16} {code}")
print(f"  {len(loops)} loops vectorised")
PYEOF
  rm -f "$INFO"
fi
