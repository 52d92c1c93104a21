#!/usr/bin/env bash
# The whole test suite, from nothing: virtualenv, Cython build, then the
# tests against the compiled hot path and again against the pure-Python
# twins. Real services the integration tests need (Kafka broker, Jaeger) are
# fetched/built into the user's caches and started by the tests themselves.
# Exits non-zero when any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh || { echo "test: system packages missing" >&2; exit 2; }
scripts/bootstrap.sh || { echo "test: bootstrap failed" >&2; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
rc=0
echo "== tests, compiled hot path =="
.venv/bin/python -m pytest -p no:cacheprovider -q tests "$@" || rc=$?
echo "== unit and e2e tests, pure-Python twins (TRACEO_SAMPLER_PURE=1) =="
TRACEO_SAMPLER_PURE=1 .venv/bin/python -m pytest -p no:cacheprovider -q tests/unit tests/e2e "$@" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "test: FAILED (exit $rc)" >&2
else
  echo "test: all passed" >&2
fi
exit "$rc"
