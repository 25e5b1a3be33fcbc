#!/usr/bin/env bash
# GPU check: build hierbench with CUDA, run every CUDA test and the CUDA kernel benchmarks, print
# a short table and write the JSON under results/gpu/. Meant for a machine with an NVIDIA GPU,
# from a clean clone; about 3-6 minutes (budget: 8).
#
#   bash scripts/gpu_check.sh            (or: make gpu-check)
#
# Python: $PYTHON if set, else .venv/bin/python if it exists, else `make setup` creates .venv
# (needs network for pip). The interpreter needs a CUDA build of torch (requirements.txt's pin).
# Knobs: TORCH_CUDA_ARCH_LIST (default 9.0: H100/H200), MAX_JOBS (default: all cores),
# GPU_CHECK_SKIP_BENCH=1 (tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
step() { printf '\n==> [%3ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
die() { printf '\ngpu_check: FAILED: %s\n' "$*" >&2; exit 1; }

step "environment"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this needs a machine with an NVIDIA GPU and driver"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || die "nvidia-smi cannot see a GPU"
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  step "no .venv: make setup (pip install -r requirements.txt)"
  make setup || die "make setup failed (no network? set PYTHON to an interpreter that has torch with CUDA)"
  PY=.venv/bin/python
fi
"$PY" - <<'PYEOF' || die "torch in $PY cannot use the GPU (CPU-only build, or driver too old for its CUDA)"
import torch
print(f"python ok: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}")
assert torch.version.cuda is not None and torch.cuda.is_available()
PYEOF

mkdir -p build
step "build (HIERBENCH_CUDA=1, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
HIERBENCH_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$PY" setup.py build_ext --inplace > build/gpu_check_build.log 2>&1 || { tail -40 build/gpu_check_build.log; die "CUDA build failed (full log: build/gpu_check_build.log)"; }
"$PY" -c 'from hierbench import _ext; i = _ext.build_info(); print(i); assert i["with_cuda"], "extension built without CUDA"' \
  || die "the built extension has no CUDA kernels"

step "CUDA tests (pytest -m cuda: every test of the cuda device parameter)"
"$PY" -m pytest tests -m cuda -q -p no:cacheprovider || die "CUDA tests failed"

if [[ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]]; then
  GPU=$("$PY" -c 'import torch, re; print(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))')
  SUITE="quant-cuda-${GPU}"
  step "CUDA benchmarks -> results/gpu/<UTC start>_<cpu>_<sha>[-dirty]_${SUITE}.json (never overwritten)"
  HIERBENCH_BENCH_DIR=results/gpu "$PY" -m pytest benchmarks/bench_quant.py -m cuda -q -p no:cacheprovider \
    --bench-save="$SUITE" --benchmark-max-time=0.5 --benchmark-columns=median,ops \
    || die "CUDA benchmarks failed"
  JSON=$(ls -t results/gpu/*_"${SUITE}".json | head -1)
  step "table (GB/s = bytes read + written / median; roofline = memcpy of the same bytes, same run)"
  "$PY" scripts/bench_table.py "$JSON" | tee "${JSON%.json}.txt"
fi
step "done in $(( $(date +%s) - START )) s"
