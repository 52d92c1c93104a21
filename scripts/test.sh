#!/usr/bin/env bash
# The whole test suite, from nothing: system packages, virtualenv, Cython
# build, then the tests against the compiled hot path and again against the
# pure-Python twins, then the integration tests on a real Kafka broker and a
# real Jaeger and the real OpenTelemetry Collector. Kafka's jars, Jaeger's
# and the Collector's binaries are fetched/built into the user's caches in the background while the first tests run (a cold Jaeger
# build takes 10-30 minutes on 2 cores; warm, nothing happens).
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
echo "== unit and e2e tests, compiled hot path =="
.venv/bin/python -m pytest -p no:cacheprovider -q tests/unit tests/e2e "$@" || rc=$?
# The pure-twin run and the integration tests run side by side: both spend
# most of their time waiting on subprocesses, brokers and timers, and in
# turn they took 7 + 10 minutes. TRACEO_TESTS_SERIAL=1 runs them one after
# the other. The pure run's output follows the integration tests'.
pure_log="$logs/pure.log"
run_pure() {
  TRACEO_SAMPLER_PURE=1 .venv/bin/python -m pytest -p no:cacheprovider -q tests/unit tests/e2e "$@"
}
if [ "${TRACEO_TESTS_SERIAL:-0}" = 1 ]; then
  echo "== unit and e2e tests, pure-Python twins (TRACEO_SAMPLER_PURE=1) =="
  run_pure "$@" || rc=$?
else
  run_pure "$@" >"$pure_log" 2>&1 &
  pure_pid=$!
fi
echo "== integration tests: real Kafka broker, real Jaeger, the real Collector, Helm, the image =="
wait $kafka_pid || { echo "test: Kafka fetch failed:" >&2; tail -30 "$logs/kafka-fetch.log" >&2; rc=1; }
wait $jaeger_pid || { echo "test: Jaeger build failed:" >&2; tail -30 "$logs/jaeger-build.log" >&2; rc=1; }
wait $otelcol_pid || { echo "test: Collector build failed:" >&2; tail -30 "$logs/otelcol-build.log" >&2; rc=1; }
wait $helm_pid || { echo "test: Helm build failed:" >&2; tail -30 "$logs/helm-build.log" >&2; rc=1; }
wait $image_pid || { echo "test: image build failed:" >&2; tail -30 "$logs/image-build.log" >&2; rc=1; }
.venv/bin/python -m pytest -p no:cacheprovider -q tests/integration "$@" || rc=$?
if [ "${TRACEO_TESTS_SERIAL:-0}" != 1 ]; then
  prc=0
  wait $pure_pid || prc=$?
  echo "== unit and e2e tests, pure-Python twins (TRACEO_SAMPLER_PURE=1), run beside the integration tests =="
  cat "$pure_log"
  [ "$prc" -ne 0 ] && rc=$prc
fi
rm -rf "$logs"
if [ "$rc" -ne 0 ]; then
  echo "test: FAILED (exit $rc)" >&2
else
  echo "test: all passed" >&2
fi
exit "$rc"
