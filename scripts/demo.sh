#!/usr/bin/env bash
# End to end on the embedded default, no external service: bootstraps,
# starts `traceo-sampler serve` (OTLP gRPC 127.0.0.1:4317, admin :9464,
# kept traces to ./traceo-data/kept.otlp.jsonl), runs the load generator
# against it, then SIGTERM (which drains) and prints the summary.
# Usage: scripts/demo.sh [SECONDS] [SPANS_PER_S]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rate=${2:-5000}
scripts/bootstrap.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p traceo-data
rm -f traceo-data/kept.otlp.jsonl
log=traceo-data/serve.log
.venv/bin/python -m traceo_sampler serve >"$log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if .venv/bin/python -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:9464/readyz", timeout=1)' 2>/dev/null; then break; fi
  if ! kill -0 $pid 2>/dev/null; then cat "$log" >&2; exit 1; fi
  sleep 0.2
done
echo "demo: sampler ready; sending ${rate} spans/s for ${secs}s" >&2
.venv/bin/python -m traceo_sampler loadgen --endpoint 127.0.0.1:4317 --rate "$rate" --duration "$secs"
kill -TERM $pid
wait $pid
trap - EXIT
echo "demo: kept traces in traceo-data/kept.otlp.jsonl ($(wc -l < traceo-data/kept.otlp.jsonl) lines)" >&2
grep '^{"summary"' "$log" | .venv/bin/python -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["summary"], indent=1))'
