#!/usr/bin/env bash
# Creates .venv (if missing), installs the package with its test extras and
# builds the Cython extension in place. Idempotent; pip's cache keeps later
# runs fast. Usage: scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version 2>&1)" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.traceo-deps
want=$(cat pyproject.toml setup.py | sha1sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0"
  .venv/bin/python -m pip install -q -e ".[test]" --no-build-isolation
  echo "$want" > "$stamp"
fi
# Always rebuild the extension from the current sources (seconds when
# nothing changed): a stale .so would test old code.
.venv/bin/python setup.py -q build_ext --inplace >/dev/null
.venv/bin/python - <<'PY'
from traceo_sampler import accel, buffer, scan
assert scan.IMPLEMENTATION == "cython" and buffer.IMPLEMENTATION == "cython", accel.LOAD_ERRORS
PY
echo "bootstrap: ready (.venv, compiled extension loaded)" >&2
