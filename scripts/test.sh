#!/usr/bin/env bash
# The whole test suite, from nothing: system packages, virtualenv, Cython
# build, lint and type checks, then two lanes at once: the unit and e2e
# tests against the compiled hot path and again against the pure-Python
# twins; and the integration tests on a real Kafka broker, a real Jaeger,
# the real OpenTelemetry Collector, Helm and the image, once Kafka's jars and
# the binaries are fetched/built into the user's caches (a cold Jaeger build
# takes 10-30 minutes on 2 cores; warm, nothing happens).
# Exits non-zero when any test fails. Extra arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh || { echo "test: system packages missing" >&2; exit 2; }
scripts/bootstrap.sh || { echo "test: bootstrap failed" >&2; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
logs=$(mktemp -d)
scripts/jaeger.sh build >"$logs/jaeger-build.log" 2>&1 &
jaeger_pid=$!
scripts/kafka.sh fetch >"$logs/kafka-fetch.log" 2>&1 &
kafka_pid=$!
scripts/otelcol.sh build >"$logs/otelcol-build.log" 2>&1 &
otelcol_pid=$!
scripts/helm.sh build >"$logs/helm-build.log" 2>&1 &
helm_pid=$!
# The container image (Debian base by mmdebstrap, then buildah): cached on its inputs.
deploy/container/build.sh >"$logs/image-build.log" 2>&1 &
image_pid=$!
rc=0
# lint, types, stubs against the compiled modules, generated docs: seconds
scripts/check.sh || rc=1
# Two lanes side by side: the unit and e2e tests (compiled, then the
# pure-Python twins) in one, the builds and then the integration tests in
# the other. Both spend most of their time waiting on subprocesses, brokers
# and timers: in turn they took 7.8 + 7.5 + 10.7 minutes; in two lanes, a
# fresh clone with warm caches took 21.8 minutes with two benchmarking
# agents loading the machine (load average 7-8; units 10.4 + 8.4, integration
# 13.7 beside them); on a quiet machine, 18.1 minutes (units 8.2 + 7.2,
# integration 12.0). The unit lane's
# output follows the integration tests'. TRACEO_TESTS_SERIAL=1 runs
# everything one after the other, in the foreground.
run_compiled() {
  echo "== unit and e2e tests, compiled hot path =="
  .venv/bin/python -m pytest -p no:cacheprovider -q tests/unit tests/e2e "$@"
}
run_pure() {
  echo "== unit and e2e tests, pure-Python twins (TRACEO_SAMPLER_PURE=1) =="
  TRACEO_SAMPLER_PURE=1 .venv/bin/python -m pytest -p no:cacheprovider -q tests/unit tests/e2e "$@"
}
units_log="$logs/units.log"
if [ "${TRACEO_TESTS_SERIAL:-0}" = 1 ]; then
  run_compiled "$@" || rc=1
  run_pure "$@" || rc=1
else
  ( urc=0; run_compiled "$@" || urc=1; run_pure "$@" || urc=1; exit $urc ) >"$units_log" 2>&1 &
  units_pid=$!
fi
wait $kafka_pid || { echo "test: Kafka fetch failed:" >&2; tail -30 "$logs/kafka-fetch.log" >&2; rc=1; }
wait $jaeger_pid || { echo "test: Jaeger build failed:" >&2; tail -30 "$logs/jaeger-build.log" >&2; rc=1; }
wait $otelcol_pid || { echo "test: Collector build failed:" >&2; tail -30 "$logs/otelcol-build.log" >&2; rc=1; }
wait $helm_pid || { echo "test: Helm build failed:" >&2; tail -30 "$logs/helm-build.log" >&2; rc=1; }
wait $image_pid || { echo "test: image build failed:" >&2; tail -30 "$logs/image-build.log" >&2; rc=1; }
echo "== integration tests: real Kafka broker, real Jaeger, the real Collector, Helm, the image =="
.venv/bin/python -m pytest -p no:cacheprovider -q --durations=12 tests/integration "$@" || rc=1
if [ "${TRACEO_TESTS_SERIAL:-0}" != 1 ]; then
  wait $units_pid || rc=1
  echo "== (run beside the builds and the integration tests) =="
  cat "$units_log"
fi
rm -rf "$logs"
if [ "$rc" -ne 0 ]; then
  echo "test: FAILED (exit $rc)" >&2
else
  echo "test: all passed" >&2
fi
exit "$rc"
