"""Micro-benchmark of the span scanner: compiled vs pure-Python twin.

Builds a realistic ExportTraceServiceRequest (5 services, 100 spans, a few
attributes each, one event on error spans) and prints JSON with spans/s for
``traceo_sampler._scan.scan`` and ``traceo_sampler.scan.scan_py``, with and
without attribute keys to extract, and the speed ratio.

    .venv/bin/python benchmarks/bench_scan.py [--seconds 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (  # noqa: E402
    AnyValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status  # noqa: E402

from traceo_sampler import scan as scan_mod  # noqa: E402

SERVICES = ["frontend", "cart", "checkout", "payment", "shipping"]
ROUTES = ["/api/cart", "/api/checkout", "/api/product/{id}", "/health", "/api/pay"]
ATTR_KEYS = frozenset({"http.response.status_code", "http.route", "error.type"})


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def build_request(n_spans: int = 100, seed: int = 7) -> bytes:
    rnd = random.Random(seed)
    per_service = n_spans // len(SERVICES)
    req = ExportTraceServiceRequest()
    t0 = 1_700_000_000_000_000_000
    for si, svc in enumerate(SERVICES):
        rs = ResourceSpans(
            resource=Resource(
                attributes=[
                    _kv("service.name", svc),
                    _kv("service.version", "1.4.2"),
                    _kv("host.name", f"node-{si}.cluster.local"),
                    _kv("telemetry.sdk.language", "python"),
                ]
            ),
            schema_url="https://opentelemetry.io/schemas/1.24.0",
        )
        ss = ScopeSpans(scope=InstrumentationScope(name=f"{svc}.instrumentation", version="0.44b0"))
        for _ in range(per_service):
            trace_id = rnd.randbytes(16)
            start = t0 + rnd.randrange(10**9)
            status = 500 if rnd.random() < 0.05 else 200
            route = rnd.choice(ROUTES)
            span = Span(
                trace_id=trace_id,
                span_id=rnd.randbytes(8),
                parent_span_id=rnd.randbytes(8) if rnd.random() < 0.8 else b"",
                name=f"GET {route}",
                kind=rnd.choice([1, 2, 3]),
                start_time_unix_nano=start,
                end_time_unix_nano=start + rnd.randrange(10**8),
                attributes=[
                    _kv("http.request.method", "GET"),
                    _kv("http.route", route),
                    _kv("http.response.status_code", status),
                    _kv("url.full", f"https://{svc}.example.com{route}?q={rnd.randrange(1000)}"),
                    _kv("server.port", 8080),
                ],
                status=Status(code=2 if status == 500 else 0),
            )
            if status == 500:
                span.attributes.append(_kv("error.type", "500"))
                ev = span.events.add()
                ev.name = "exception"
                ev.time_unix_nano = start + 1000
                ev.attributes.append(_kv("exception.message", "boom"))
            ss.spans.append(span)
        rs.scope_spans.append(ss)
        req.resource_spans.append(rs)
    return req.SerializeToString()


def _loops_for(fn, data: bytes, keys: frozenset[str], seconds: float) -> int:
    loops = 1
    while True:
        t = time.process_time()
        for _ in range(loops):
            fn(data, keys)
        dt = time.process_time() - t
        if dt > 0.02:
            return max(1, int(loops * seconds / dt))
        loops *= 2


def bench(impls: dict, data: bytes, keys: frozenset[str], seconds: float, rounds: int = 7) -> dict:
    """Best spans/s of each implementation, rounds interleaved.

    CPU time of this process (``time.process_time``) rather than wall time,
    and interleaved rounds, so that other load on the machine skews both
    implementations alike instead of whichever ran at the wrong moment.
    """
    n_spans = {name: len(fn(data, keys).spans) for name, fn in impls.items()}
    loops = {name: _loops_for(fn, data, keys, seconds / rounds) for name, fn in impls.items()}
    best = dict.fromkeys(impls, float("inf"))
    for _ in range(rounds):
        for name, fn in impls.items():
            n = loops[name]
            t = time.process_time()
            for _ in range(n):
                fn(data, keys)
            best[name] = min(best[name], (time.process_time() - t) / n)
    return {name: n_spans[name] / best[name] for name in impls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per implementation and case")
    ap.add_argument("--spans", type=int, default=100)
    args = ap.parse_args()

    data = build_request(args.spans)
    impls = {"python": scan_mod.scan_py}
    try:
        from traceo_sampler import _scan

        impls["cython"] = _scan.scan
    except ImportError as exc:
        print(f"compiled scanner not available: {exc}", file=sys.stderr)

    out: dict[str, object] = {
        "request_bytes": len(data),
        "spans": len(scan_mod.scan_py(data, ATTR_KEYS).spans),
        "services": len(SERVICES),
        "attr_keys": sorted(ATTR_KEYS),
        "selected": scan_mod.IMPLEMENTATION,
    }
    for label, keys in (("with_attr_keys", ATTR_KEYS), ("no_attr_keys", frozenset())):
        res: dict[str, object] = {}
        for name, rate in bench(impls, data, keys, args.seconds).items():
            res[f"{name}_spans_per_s"] = round(rate)
        if "cython" in impls:
            res["ratio"] = round(res["cython_spans_per_s"] / res["python_spans_per_s"], 1)
        out[label] = res
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
