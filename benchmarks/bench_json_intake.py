"""How much a large OTLP/JSON request holds back the gRPC receiver.

    python benchmarks/bench_json_intake.py [--mib 15] [--repeat 3]

Starts ``serve`` (gRPC + HTTP receivers, keep-all policy, file exporter to
/dev/null-like temp file), sends small gRPC exports back to back from a
thread and, meanwhile, POSTs one JSON body of ``--mib`` MiB. Prints one JSON
document: the JSON request's time, and the gRPC latency while it ran
(max, p99) against the same client's latency without it (ratio).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "src"))

from support_otlp import make_request, trace  # noqa: E402
from support_serve import Serve  # noqa: E402


def json_body(mib: int) -> bytes:
    spans = []
    i = 0
    size = 0
    while size < mib << 20:
        sp = {"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(),
              "parentSpanId": os.urandom(8).hex(), "name": f"GET /api/v1/items/{i}",
              "kind": 2, "startTimeUnixNano": "1700000000000000000",
              "endTimeUnixNano": "1700000000100000000",
              "attributes": [{"key": "http.route", "value": {"stringValue": "/api/v1/items"}},
                             {"key": "http.status_code", "value": {"intValue": "200"}},
                             {"key": "peer", "value": {"stringValue": "10.0.0.1"}}],
              "status": {"code": 1}}
        s = json.dumps(sp)
        size += len(s) + 1
        spans.append(sp)
        i += 1
    doc = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "bench"}}]},
        "scopeSpans": [{"scope": {"name": "b"}, "spans": spans}]}]}
    return json.dumps(doc).encode()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    body = json_body(args.mib)
    cfg = {"sampler": {"root_wait": "100ms", "idle_timeout": "300ms",
                       "policies": [{"name": "none", "type": "probabilistic",
                                     "probabilistic": {"sampling_percentage": 0}}]},
           "exporters": {"file": {"path": "kept.jsonl"}}}
    out = {"json_body_mib": round(len(body) / (1 << 20), 2), "runs": []}
    with Serve(cfg, http_opts={"max_recv_msg_size_mib": 64}) as srv:
        ch = grpc.insecure_channel(srv.endpoint)
        export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        small = make_request([trace(3)])
        export(small)

        def probe(seconds):
            lat = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.perf_counter()
                export(small, timeout=30)
                lat.append(time.perf_counter() - t)
                time.sleep(0.002)
            return lat
        idle = probe(1.5)
        for _ in range(args.repeat):
            lat: list[float] = []
            done = threading.Event()

            def grpc_loop():
                while not done.is_set():
                    t = time.perf_counter()
                    export(small, timeout=30)
                    lat.append(time.perf_counter() - t)
                    time.sleep(0.002)
            th = threading.Thread(target=grpc_loop)
            th.start()
            time.sleep(0.2)
            t0 = time.perf_counter()
            req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/v1/traces", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                assert r.status == 200, r.status
            json_s = time.perf_counter() - t0
            done.set()
            th.join()
            out["runs"].append({"json_request_s": round(json_s, 3),
                                "grpc_max_ms": round(max(lat) * 1e3, 1),
                                "grpc_p99_ms": round(pct(lat, 0.99) * 1e3, 1),
                                "grpc_requests_meanwhile": len(lat)})
            time.sleep(1.0)
        ch.close()
    out["grpc_idle_p99_ms"] = round(pct(idle, 0.99) * 1e3, 2)
    out["grpc_max_ms_worst"] = max(r["grpc_max_ms"] for r in out["runs"])
    out["ratio_grpc_max_to_idle_p99"] = round(out["grpc_max_ms_worst"] / max(out["grpc_idle_p99_ms"], 1e-3), 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
