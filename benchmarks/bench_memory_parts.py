"""What a serve process's RSS is made of, to size ``service.memory_limit_mib``.

    python benchmarks/bench_memory_parts.py

One process (service.workers: 1). Prints one JSON document:
- baseline: RSS idle after start (gRPC + HTTP receivers, admin, one exporter);
- buffer: spans buffered with timers that never fire, RSS growth against
  ``buffer_bytes`` (the buffer's own accounting, what sampler.memory_limit_mib
  bounds) -> ratio;
- queue: kept traces queued for an exporter whose backend is down, RSS
  growth against ``exporter_queue_bytes`` (what queue_max_bytes bounds) -> ratio;
- after: RSS once the buffer was decided, the queue dropped and the memory
  limiter handed memory back (the high-water mark left behind).
"""
from __future__ import annotations

import json
import os
import sys
import time

import grpc
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "src"))

from support_otlp import make_request, trace  # noqa: E402
from support_serve import Serve, free_port  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _fill(srv, n_requests: int, attrs: dict) -> None:
    ch = grpc.insecure_channel(srv.endpoint)
    ex = ch.unary_unary(EXPORT)
    for _ in range(n_requests):
        ex(make_request([trace(8, attrs=attrs) for _ in range(200)]), timeout=30)
    ch.close()


def _rss(srv) -> int:
    return psutil.Process(srv.proc.pid).memory_info().rss


def main() -> int:
    mib = 1 << 20
    attrs = {"http.route": "/api/v1/items/{id}", "payload": "x" * 200}
    out: dict = {}
    # -- baseline and buffer: nothing decided for 10 minutes
    cfg = {"sampler": {"root_wait": "10m", "idle_timeout": "10m", "decision_wait": "10m",
                       "memory_limit_mib": 2048,
                       "policies": [{"name": "all", "type": "always_sample"}]},
           "exporters": {"file": {"path": "kept.jsonl"}}, "service": {"workers": 1}}
    with Serve(cfg, http=True) as srv:
        time.sleep(1)
        base = _rss(srv)
        out["baseline_mib"] = round(base / mib, 1)
        _fill(srv, 150, attrs)
        time.sleep(0.5)
        grown, acct = _rss(srv) - base, srv.metric("traceo_sampler_buffer_bytes")
        out["buffer"] = {"buffer_bytes_mib": round(acct / mib, 1), "rss_growth_mib": round(grown / mib, 1),
                         "spans": int(srv.metric("traceo_sampler_buffer_spans")),
                         "rss_per_buffer_byte": round(grown / acct, 2)}
    # -- queue: everything kept, the backend is down, drop_oldest never drops
    dead = f"127.0.0.1:{free_port()}"
    cfg = {"sampler": {"root_wait": "50ms", "idle_timeout": "100ms",
                       "policies": [{"name": "all", "type": "always_sample"}]},
           "exporters": {"otlp": {"endpoint": dead, "queue_max_bytes": 1 << 30,
                                  "retry": {"max_elapsed": "10m"}}},
           "service": {"workers": 1, "memory_limit_mib": 0}}
    with Serve(cfg, http=True) as srv:
        time.sleep(1)
        base = _rss(srv)
        _fill(srv, 150, attrs)
        deadline = time.monotonic() + 30
        while srv.metric("traceo_sampler_buffer_spans") > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        grown, q = _rss(srv) - base, srv.metric("traceo_sampler_exporter_queue_bytes")
        out["queue"] = {"queue_bytes_mib": round(q / mib, 1), "rss_growth_mib": round(grown / mib, 1),
                        "rss_per_queue_byte": round(grown / q, 2) if q else None}
    # -- helper process of large OTLP/JSON bodies (not in the limiter's RSS)
    from bench_json_intake import json_body
    import urllib.request
    cfg = {"sampler": {"policies": [{"name": "none", "type": "probabilistic",
                                     "probabilistic": {"sampling_percentage": 0}}]},
           "exporters": {"file": {"path": "kept.jsonl"}}, "service": {"workers": 1}}
    with Serve(cfg, http_opts={"max_recv_msg_size_mib": 32}) as srv:
        req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/v1/traces", data=json_body(15),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=120).read()
        kids = psutil.Process(srv.proc.pid).children(recursive=True)
        out["json_helper_process_mib"] = round(max((k.memory_info().rss for k in kids), default=0) / mib, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
