#!/usr/bin/env bash
# The reuse check (`make reuse-check`, run by CI): install the wheel from dist/ into a fresh
# virtual environment with only its own dependencies (+ the [examples] extra: pillow), check that
# the benchmark suite's dependencies are absent there, and run the split-learning example from
# outside the checkout, so that it imports the installed package and not the sources.
#   scripts/reuse_check.sh [WHEEL]        default: the newest dist/hierbench-*.whl
# PYTHON (default python3) makes the venv; EXAMPLE_FLAGS are passed to the example.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEEL=${1:-$(ls -t dist/hierbench-*.whl 2>/dev/null | head -n 1)}
if [ -z "$WHEEL" ] || [ ! -f "$WHEEL" ]; then
  echo "reuse_check: no wheel (run make wheel first)" >&2
  exit 1
fi
WHEEL=$(realpath "$WHEEL")
TMP=$(mktemp -d -t hierbench-reuse-XXXXXX)
trap 'rm -rf "$TMP"' EXIT

t0=$(date +%s)
"${PYTHON:-python3}" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install --quiet --upgrade pip  # venv's bundled pip warns on file indexes
"$TMP/venv/bin/python" -m pip install --quiet "$WHEEL[examples]"
t1=$(date +%s)
echo "reuse_check: installed $(basename "$WHEEL")[examples] into a fresh venv in $((t1 - t0)) s:"
"$TMP/venv/bin/python" -m pip list --format=freeze | sed 's/^/  /' | tr '\n' ' '
echo

cd "$TMP"  # not the checkout: `import hierbench` must find the installed package
"$TMP/venv/bin/python" - "$TMP/venv" <<'EOF'
import importlib.util, sys
from pathlib import Path
import hierbench
where = Path(hierbench.__file__).resolve()
assert Path(sys.argv[1]).resolve() in where.parents, f"hierbench imported from {where}"
extra = [m for m in ("pandas", "torchvision", "matplotlib") if importlib.util.find_spec(m)]
assert not extra, f"the fresh venv has {extra}: the wheel must not require them"
print(f"reuse_check: hierbench from {where.parent}; pandas, torchvision, matplotlib absent")
EOF
# shellcheck disable=SC2086
"$TMP/venv/bin/python" "$ROOT/examples/split_learning.py" --check ${EXAMPLE_FLAGS:-}
echo "reuse_check: passed in $(($(date +%s) - t0)) s"
