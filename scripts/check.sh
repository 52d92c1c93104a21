#!/usr/bin/env bash
# Lint and type checks, fast (seconds), run by scripts/test.sh before the tests:
# ruff (pyflakes rules: unused and undefined names), mypy on src/, and mypy's
# stubtest of the .pyi stubs against the compiled extension modules, plus the
# generated reference docs against the code. Needs the extension built
# (setup.py build_ext --inplace). Exits non-zero when any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
rc=0
echo "== ruff =="
.venv/bin/ruff check --no-cache --output-format concise src tests benchmarks scripts || rc=1
echo "== mypy (src/) =="
.venv/bin/mypy --no-incremental --cache-dir /dev/null || rc=1
echo "== stubtest (the .pyi stubs against the compiled modules) =="
TRACEO_SAMPLER_PURE=0 .venv/bin/python -m mypy.stubtest --mypy-config-file pyproject.toml \
  --allowlist scripts/stubtest-allowlist.txt \
  traceo_sampler._buffer traceo_sampler._scan || rc=1
echo "== generated reference docs (docs/config.md, docs/metrics.md) =="
.venv/bin/python -m traceo_sampler.docgen --check || rc=1
[ "$rc" -eq 0 ] && echo "check: passed" || echo "check: FAILED" >&2
exit "$rc"
