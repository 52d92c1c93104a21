"""Synthetic OTLP trace load: realistic traces, pre-encoded requests, a gRPC sender.

Three layers, usable separately:

* :class:`TraceGenerator` makes traces of nested spans across a small shop
  (frontend → checkout → payment / cart / inventory / productcatalog / …):
  per-service resources, HTTP / gRPC / database / internal spans with the
  usual semantic-convention attributes, lognormal durations with a heavy
  tail (a few % of traces last more than 1 s), a share of traces with one
  span in status ERROR. Everything random comes from one seeded RNG.
* :meth:`TraceGenerator.build_requests` turns traces into encoded
  ``ExportTraceServiceRequest`` messages the way SDKs and Collectors batch
  them: spans are emitted when they *end* (children before their parents,
  the root last), batched ``spans_per_request_target`` at a time, so one
  request carries spans of many traces and one trace is spread over several
  requests. The result (:class:`EncodedRequests`) is a ``list[bytes]`` that
  also knows each request's span count, and can be replayed endlessly with
  fresh trace IDs and shifted timestamps (:meth:`EncodedRequests.cycle`).
* :func:`send` pushes raw request bytes over a ``grpc.aio`` channel to
  ``TraceService/Export`` with N requests in flight, optionally paced to a
  spans/s rate, and returns counts.

``traceo-sampler loadgen`` is :func:`add_arguments` + :func:`run`.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import os
import random
import signal
import struct
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# Span.SpanKind / Status.StatusCode values (opentelemetry/proto/trace/v1/trace.proto)
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
# W3C trace flags in Span.flags: bit 0 sampled; bits 8/9 = "is remote" known / is remote.
FLAGS_LOCAL_PARENT = 0x101
FLAGS_REMOTE_PARENT = 0x301

_MS = 1_000_000  # ns per ms


# --------------------------------------------------------------------------
# The shop: services, their operations, and what each operation does.
# --------------------------------------------------------------------------

# (name, language, protocol of its server spans)
CATALOG: list[tuple[str, str, str]] = [
    ("frontend", "nodejs", "http"),
    ("checkout", "go", "http"),
    ("payment", "nodejs", "http"),
    ("cart", "dotnet", "grpc"),
    ("inventory", "java", "http"),
    ("productcatalog", "go", "grpc"),
    ("currency", "cpp", "grpc"),
    ("shipping", "rust", "http"),
    ("recommendation", "python", "grpc"),
    ("email", "ruby", "http"),
    ("ad", "java", "grpc"),
    ("auth", "python", "http"),
    ("search", "java", "http"),
]
EXTRA_PREFIX = "widget-"  # services past the catalog: widget-13, widget-14, …

# Instrumentation scope names per language: (http, grpc, db)
_SCOPES = {
    "nodejs": ("@opentelemetry/instrumentation-http", "@opentelemetry/instrumentation-grpc",
               "@opentelemetry/instrumentation-pg"),
    "go": ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
           "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
           "github.com/XSAM/otelsql"),
    "dotnet": ("OpenTelemetry.Instrumentation.AspNetCore", "OpenTelemetry.Instrumentation.GrpcNetClient",
               "OpenTelemetry.Instrumentation.StackExchangeRedis"),
    "java": ("io.opentelemetry.tomcat-10.0", "io.opentelemetry.grpc-1.6", "io.opentelemetry.jdbc"),
    "cpp": ("opentelemetry-cpp-http", "opentelemetry-cpp-grpc", "opentelemetry-cpp-db"),
    "rust": ("opentelemetry-http", "opentelemetry-tonic", "opentelemetry-sqlx"),
    "python": ("opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.grpc",
               "opentelemetry.instrumentation.redis"),
    "ruby": ("OpenTelemetry::Instrumentation::Rack", "OpenTelemetry::Instrumentation::GRPC",
             "OpenTelemetry::Instrumentation::PG"),
}
_SDK_VERSION = {"nodejs": "1.26.0", "go": "1.31.0", "dotnet": "1.9.0", "java": "1.42.1",
                "cpp": "1.16.1", "rust": "0.24.1", "python": "1.27.0", "ruby": "1.5.0"}


def _call(service: str, op: str, p: float = 1.0, n: tuple[int, int] = (1, 1)) -> dict:
    return {"t": "call", "service": service, "op": op, "p": p, "n": n}


def _db(system: str, op: str, target: str, ms: float, p: float = 1.0) -> dict:
    return {"t": "db", "system": system, "op": op, "target": target, "ms": ms, "p": p}


def _internal(name: str, ms: float, p: float = 1.0) -> dict:
    return {"t": "internal", "name": name, "ms": ms, "p": p}


def _ext(host: str, method: str, path: str, ms: float, p: float = 1.0) -> dict:
    return {"t": "ext", "host": host, "method": method, "path": path, "ms": ms, "p": p}


def _par(*steps: dict) -> dict:
    return {"t": "par", "steps": list(steps), "p": 1.0}


# (service, operation) → steps. HTTP operations are "METHOD /route", gRPC ones the method name.
OPERATIONS: dict[tuple[str, str], list[dict]] = {
    ("frontend", "GET /"): [
        _par(_call("productcatalog", "ListProducts"), _call("recommendation", "ListRecommendations"),
             _call("ad", "GetAds")),
        _call("currency", "GetSupportedCurrencies"),
        _internal("render home", 1.5),
    ],
    ("frontend", "GET /product/{id}"): [
        _call("productcatalog", "GetProduct"),
        _par(_call("recommendation", "ListRecommendations"), _call("ad", "GetAds")),
        _call("currency", "Convert"),
        _internal("render product", 1.0),
    ],
    ("frontend", "GET /cart"): [
        _call("auth", "POST /verify"),
        _call("cart", "GetCart"),
        _call("currency", "Convert", n=(1, 3)),
        _call("shipping", "POST /quote"),
        _internal("render cart", 0.8),
    ],
    ("frontend", "POST /cart"): [
        _call("auth", "POST /verify"),
        _call("inventory", "GET /stock/{sku}"),
        _call("cart", "AddItem"),
    ],
    ("frontend", "POST /checkout"): [
        _call("auth", "POST /verify"),
        _call("checkout", "POST /api/checkout"),
        _internal("render confirmation", 0.8),
    ],
    ("frontend", "GET /search"): [
        _call("search", "GET /search"),
        _call("currency", "Convert", n=(1, 2)),
        _internal("render results", 1.0),
    ],
    ("frontend", "GET /api/widgets/{id}"): [
        {"t": "extra", "p": 1.0},
    ],
    ("checkout", "POST /api/checkout"): [
        _call("cart", "GetCart"),
        _call("productcatalog", "GetProduct", n=(1, 4)),
        _call("currency", "Convert", n=(1, 4)),
        _call("shipping", "POST /quote"),
        _internal("compute total", 0.3),
        _call("payment", "POST /charge"),
        _call("inventory", "POST /reserve"),
        _call("shipping", "POST /ship"),
        _db("postgresql", "INSERT", "orders", 2.0),
        _call("email", "POST /send_order_confirmation", p=0.9),
        _call("cart", "EmptyCart"),
    ],
    ("payment", "POST /charge"): [
        _internal("validate card", 0.2),
        _ext("api.stripe.example", "POST", "/v1/charges", 90.0),
        _db("postgresql", "INSERT", "payments", 1.5),
    ],
    ("cart", "GetCart"): [_db("redis", "HGETALL", "cart", 0.3)],
    ("cart", "AddItem"): [_db("redis", "HSET", "cart", 0.3), _db("redis", "EXPIRE", "cart", 0.2)],
    ("cart", "EmptyCart"): [_db("redis", "DEL", "cart", 0.2)],
    ("inventory", "GET /stock/{sku}"): [_db("postgresql", "SELECT", "stock", 1.0)],
    ("inventory", "POST /reserve"): [
        _db("postgresql", "UPDATE", "stock", 1.5),
        _db("postgresql", "INSERT", "reservations", 1.0),
    ],
    ("productcatalog", "ListProducts"): [_db("postgresql", "SELECT", "products", 3.0)],
    ("productcatalog", "GetProduct"): [
        _db("redis", "GET", "product", 0.2),
        _db("postgresql", "SELECT", "products", 1.0, p=0.3),
        _call("inventory", "GET /stock/{sku}", p=0.5),
    ],
    ("currency", "Convert"): [_internal("convert", 0.05)],
    ("currency", "GetSupportedCurrencies"): [],
    ("shipping", "POST /quote"): [_internal("calculate quote", 0.3)],
    ("shipping", "POST /ship"): [
        _db("postgresql", "INSERT", "shipments", 1.0),
        _ext("api.carrier.example", "POST", "/v2/shipments", 35.0),
    ],
    ("recommendation", "ListRecommendations"): [
        _call("productcatalog", "ListProducts"),
        _internal("rank products", 2.0),
    ],
    ("email", "POST /send_order_confirmation"): [
        _internal("render template", 2.0),
        _ext("api.mailer.example", "POST", "/v3/mail/send", 50.0),
    ],
    ("ad", "GetAds"): [_db("redis", "GET", "ads", 0.2), _internal("select ads", 0.5)],
    ("auth", "POST /verify"): [_db("redis", "GET", "session", 0.2), _internal("verify jwt", 0.2)],
    ("search", "GET /search"): [_db("elasticsearch", "search", "products", 8.0)],
}

# Entry routes at the frontend with their weights.
ROUTES: list[tuple[str, float]] = [
    ("GET /", 0.25),
    ("GET /product/{id}", 0.30),
    ("GET /cart", 0.10),
    ("POST /cart", 0.12),
    ("POST /checkout", 0.08),
    ("GET /search", 0.10),
]
WIDGET_ROUTE = ("GET /api/widgets/{id}", 0.10)

_SQL = {
    "SELECT": "SELECT id, name, price FROM {t} WHERE id = $1",
    "INSERT": "INSERT INTO {t} (id, data) VALUES ($1, $2)",
    "UPDATE": "UPDATE {t} SET qty = qty - $1 WHERE id = $2",
}
_ERROR_TYPES = [
    ("TimeoutError", "deadline exceeded after 3000ms"),
    ("ConnectionResetError", "connection reset by peer"),
    ("ValueError", "invalid card number"),
    ("RuntimeError", "unexpected EOF from upstream"),
]


# --------------------------------------------------------------------------
# Generated data
# --------------------------------------------------------------------------

@dataclass(slots=True)
class SpanRec:
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    name: str
    kind: int
    start: int
    end: int
    res: int          # index into TraceGenerator.resources
    scope: int        # index into TraceGenerator.scopes
    attrs: list       # [(key, value)], value str | int | float | bool
    flags: int = FLAGS_LOCAL_PARENT
    status: int = STATUS_UNSET
    message: str = ""
    events: list | None = None  # [(time_ns, name, [(key, value)])]


@dataclass(slots=True)
class Trace:
    trace_id: bytes
    spans: list            # [SpanRec], in start order, spans[0] is the root
    error: bool = False
    route: str = ""

    @property
    def root(self) -> SpanRec:
        return self.spans[0]

    @property
    def start(self) -> int:
        return self.spans[0].start

    @property
    def end(self) -> int:
        return self.spans[0].end

    @property
    def duration_ns(self) -> int:
        return self.spans[0].end - self.spans[0].start


@dataclass(slots=True)
class TraceInfo:
    """What a receiver of the load should know about one trace (for checks)."""
    trace_id: bytes
    n_spans: int
    error: bool
    duration_ns: int
    route: str


class TraceGenerator:
    """Seeded generator of realistic traces.

    ``services``: how many services take part (the first N of :data:`CATALOG`;
    more than the catalog adds ``widget-NN`` services reached through
    ``GET /api/widgets/{id}``). ``error_rate``: share of traces with one span
    in status ERROR. Durations are lognormal: every span's own time around a
    per-operation median (sigma 0.5-0.9), times a per-trace lognormal load
    factor (sigma ``body_sigma``); the heavy tail comes from ``slow_rate`` of
    the traces where one dependency (a database call, an external API, a
    pause in a server) adds a lognormal stall with median ``stall_median_ms``
    (sigma 0.6). With the defaults the median trace takes ~8 ms, p90 ~100 ms,
    and about 3 % of traces last more than 1 s. ``latency_scale`` multiplies
    every duration. ``instances``: pods per service (each its own resource,
    spans spread over them at random). ``traces_per_s``: spacing of trace
    start times (timestamps only; sending speed is up to :func:`send`).
    ``now_ns``: the time the generated load ends around (default: now).
    """

    def __init__(self, seed: int | None = None, services: int = 8, error_rate: float = 0.05, *,
                 latency_scale: float = 1.0, body_sigma: float = 0.5, slow_rate: float = 0.035,
                 stall_median_ms: float = 1500.0, instances: int = 2,
                 traces_per_s: float = 2000.0, now_ns: int | None = None,
                 environment: str = "production"):
        if services < 1:
            raise ValueError("services must be >= 1")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if instances < 1:
            raise ValueError("instances must be >= 1")
        if traces_per_s <= 0:
            raise ValueError("traces_per_s must be > 0")
        if not 0.0 <= slow_rate <= 1.0:
            raise ValueError("slow_rate must be within [0, 1]")
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
        self.rng = random.Random(self.seed)
        self.error_rate = error_rate
        self.latency_scale = latency_scale
        self.body_sigma = body_sigma
        self.slow_rate = slow_rate
        self.stall_median_ms = stall_median_ms
        self._gauss = self.rng.gauss
        self._rand = self.rng.random
        self.traces_per_s = traces_per_s
        self.now_ns = now_ns if now_ns is not None else time.time_ns()
        # state of the trace being built
        self._tr: Trace | None = None
        self._factor = 1.0
        self._stall_left = False

        catalog = CATALOG[:services]
        self.extras = [f"{EXTRA_PREFIX}{i}" for i in range(len(CATALOG), services)]
        self.services: list[str] = [c[0] for c in catalog] + self.extras
        self.active = set(self.services)
        lang = {c[0]: c[1] for c in catalog}
        proto = {c[0]: c[2] for c in catalog}
        for i, name in enumerate(self.extras):
            lang[name] = ("go", "java", "python", "nodejs")[i % 4]
            proto[name] = "http"
        self.lang, self.proto = lang, proto

        # resources: (service, instance) → index; attrs as [(key, value)]
        self.resources: list[tuple[str, list]] = []
        self._res_index: dict[str, list[int]] = {}
        for name in self.services:
            idx = []
            for k in range(instances):
                inst_id = "%08x-%04x-4%03x-8%03x-%012x" % (
                    self.rng.getrandbits(32), self.rng.getrandbits(16), self.rng.getrandbits(12),
                    self.rng.getrandbits(12), self.rng.getrandbits(48))
                attrs = [
                    ("service.name", name),
                    ("service.namespace", "shop"),
                    ("service.version", f"1.{len(name) % 7}.{k + 3}"),
                    ("service.instance.id", inst_id),
                    ("host.name", f"{name}-{self.rng.getrandbits(24):06x}-{k}"),
                    ("deployment.environment", environment),
                    ("telemetry.sdk.name", "opentelemetry"),
                    ("telemetry.sdk.language", lang[name]),
                    ("telemetry.sdk.version", _SDK_VERSION[lang[name]]),
                ]
                idx.append(len(self.resources))
                self.resources.append((name, attrs))
            self._res_index[name] = idx

        # scopes: (name, version); per service: http/grpc/db instrumentation + the app's own tracer
        self.scopes: list[tuple[str, str]] = []
        scope_ids: dict[tuple[str, str], int] = {}

        def scope(name: str, version: str) -> int:
            key = (name, version)
            if key not in scope_ids:
                scope_ids[key] = len(self.scopes)
                self.scopes.append(key)
            return scope_ids[key]

        self._scope_of: dict[tuple[str, str], int] = {}
        for name in self.services:
            http, grpc_, db = _SCOPES[lang[name]]
            self._scope_of[(name, "http")] = scope(http, "0.52.0")
            self._scope_of[(name, "grpc")] = scope(grpc_, "0.52.0")
            self._scope_of[(name, "db")] = scope(db, "0.52.0")
            self._scope_of[(name, "app")] = scope(f"shop.{name}", "1.0.0")

        routes = [(r, w) for r, w in ROUTES]
        if self.extras:
            routes.append(WIDGET_ROUTE)
        self._routes = [r for r, _ in routes]
        self._route_weights = list(itertools.accumulate(w for _, w in routes))

    # -- ids and random durations -----------------------------------------

    def _trace_id(self) -> bytes:
        while True:
            b = self.rng.getrandbits(128).to_bytes(16, "big")
            if any(b):
                return b

    def _span_id(self) -> bytes:
        while True:
            b = self.rng.getrandbits(64).to_bytes(8, "big")
            if any(b):
                return b

    def _dur(self, median_ms: float, sigma: float = 0.6) -> int:
        """A lognormal duration in ns (median ``median_ms`` scaled by the trace factor), >= 1 µs."""
        d = median_ms * self._factor * _MS * math.exp(sigma * self._gauss())
        return max(1_000, int(d))

    def _stall(self, p: float) -> int:
        """Extra time of the slow dependency: taken (once per slow trace) with probability ``p``."""
        if self._stall_left and (p >= 1.0 or self._rand() < p):
            self._stall_left = False
            return int(self.stall_median_ms * self.latency_scale * _MS * math.exp(0.6 * self._gauss()))
        return 0

    def _randbelow(self, n: int) -> int:
        return int(self._rand() * n)

    def _net(self) -> int:
        return max(1_000, int(0.2 * _MS * self.latency_scale * math.exp(0.5 * self._gauss())))

    def _instance(self, service: str) -> int:
        idx = self._res_index[service]
        return idx[0] if len(idx) == 1 else idx[self._randbelow(len(idx))]

    # -- trace construction -------------------------------------------------

    def trace(self, start_ns: int | None = None) -> Trace:
        """One new trace whose root starts at ``start_ns`` (default: ``now_ns`` minus a second)."""
        rng = self.rng
        if start_ns is None:
            start_ns = self.now_ns - 1_000_000_000
        # per-trace slowness: lognormal, the source of the heavy tail
        self._factor = self.latency_scale * math.exp(self.body_sigma * self._gauss())
        self._stall_left = self.slow_rate > 0 and rng.random() < self.slow_rate
        route = self._routes[self._pick(self._route_weights)]
        tr = Trace(trace_id=self._trace_id(), spans=[], route=route)
        self._tr = tr
        self._server("frontend", route, b"", start_ns, remote=False)
        # a slow trace whose stall did not land on a dependency stalls in the frontend itself
        root = tr.spans[0]
        root.end += self._stall(1.0)
        if self.error_rate > 0 and rng.random() < self.error_rate:
            self._make_error(tr)
        return tr

    def _pick(self, cum: list[float]) -> int:
        x = self.rng.random() * cum[-1]
        for i, c in enumerate(cum):
            if x < c:
                return i
        return len(cum) - 1

    def _server(self, service: str, op: str, parent: bytes, start: int, remote: bool) -> int:
        """Server span of ``service`` handling ``op``; returns its end time."""
        rng = self.rng
        res = self._instance(service)
        sid = self._span_id()
        http = self.proto[service] == "http"
        if http:
            method, route = op.split(" ", 1)
            attrs = [("http.method", method), ("http.route", route), ("http.scheme", "http"),
                     ("net.host.name", service), ("http.status_code", 200)]
            if service == "frontend":
                attrs.append(("http.user_agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0"))
            name = op
            scope = self._scope_of[(service, "http")]
        else:
            attrs = [("rpc.system", "grpc"), ("rpc.service", f"shop.{service.capitalize()}Service"),
                     ("rpc.method", op), ("rpc.grpc.status_code", 0)]
            name = f"shop.{service.capitalize()}Service/{op}"
            scope = self._scope_of[(service, "grpc")]
        span = SpanRec(self._tr.trace_id, sid, parent, name, KIND_SERVER, start, 0, res, scope, attrs,
                       FLAGS_REMOTE_PARENT if remote else FLAGS_LOCAL_PARENT)
        self._tr.spans.append(span)
        t = start + self._dur(0.4)
        steps = OPERATIONS.get((service, op))
        if steps is None:  # widget services
            steps = [_db("postgresql", "SELECT", "widgets", 1.0)]
            nxt = self._next_extra(service)
            if nxt is not None:
                steps.append(_call(nxt, "GET /widgets/{id}", p=0.5))
        t = self._steps(service, res, steps, sid, t)
        if http and service == "frontend" and route == "/product/{id}" and rng.random() < 0.02:
            attrs[4] = ("http.status_code", 404)  # client error: not a span error
        span.end = t + self._dur(0.4)
        return span.end

    def _next_extra(self, service: str) -> str | None:
        i = self.extras.index(service)
        if i + 1 < len(self.extras):
            return self.extras[i + 1 + self._randbelow(len(self.extras) - i - 1)]
        return None

    def _steps(self, service: str, res: int, steps: list[dict], parent: bytes, t: int) -> int:
        rng = self.rng
        for st in steps:
            if st["p"] < 1.0 and rng.random() >= st["p"]:
                continue
            kind = st["t"]
            if kind == "call":
                if st["service"] not in self.active:
                    continue
                lo, hi = st["n"]
                for _ in range(lo if lo == hi else lo + self._randbelow(hi - lo + 1)):
                    t = self._client_call(service, res, st["service"], st["op"], parent, t) + self._gap()
            elif kind == "db":
                t = self._db_span(service, res, st, parent, t) + self._gap()
            elif kind == "internal":
                sid = self._span_id()
                s = t + self._gap()
                e = s + self._dur(st["ms"], 0.7) + self._stall(0.15)
                self._tr.spans.append(SpanRec(self._tr.trace_id, sid, parent, st["name"], KIND_INTERNAL,
                                              s, e, res, self._scope_of[(service, "app")],
                                              [("code.function", st["name"].replace(" ", "_"))]))
                t = e + self._gap()
            elif kind == "ext":
                sid = self._span_id()
                s = t + self._gap()
                e = s + self._dur(st["ms"], 0.8) + self._stall(0.4)
                attrs = [("http.method", st["method"]), ("http.url", f"https://{st['host']}{st['path']}"),
                         ("net.peer.name", st["host"]), ("http.status_code", 200)]
                self._tr.spans.append(SpanRec(self._tr.trace_id, sid, parent, st["method"], KIND_CLIENT, s, e,
                                              res, self._scope_of[(service, "http")], attrs))
                t = e + self._gap()
            elif kind == "par":
                s0 = t
                end = t
                for sub in st["steps"]:
                    end = max(end, self._steps(service, res, [sub], parent, s0 + self._gap()))
                t = end
            elif kind == "extra":
                if self.extras:
                    target = self.extras[self._randbelow(len(self.extras))]
                    t = self._client_call(service, res, target, "GET /widgets/{id}", parent, t) + self._gap()
        return t

    def _gap(self) -> int:
        return 1_000 + int(self._rand() * 20_000)

    def _client_call(self, service: str, res: int, target: str, op: str, parent: bytes, t: int) -> int:
        sid = self._span_id()
        start = t + self._gap()
        if self.proto[target] == "http":
            method, route = op.split(" ", 1)
            path = route.replace("{id}", str(1 + self._randbelow(9_999))).replace(
                "{sku}", f"SKU-{self._randbelow(100_000):05d}")
            attrs = [("http.method", method), ("http.url", f"http://{target}:8080{path}"),
                     ("net.peer.name", target), ("net.peer.port", 8080), ("http.status_code", 200)]
            name = method
            scope = self._scope_of[(service, "http")]
        else:
            attrs = [("rpc.system", "grpc"), ("rpc.service", f"shop.{target.capitalize()}Service"),
                     ("rpc.method", op), ("net.peer.name", target), ("net.peer.port", 50051),
                     ("rpc.grpc.status_code", 0)]
            name = f"shop.{target.capitalize()}Service/{op}"
            scope = self._scope_of[(service, "grpc")]
        span = SpanRec(self._tr.trace_id, sid, parent, name, KIND_CLIENT, start, 0, res, scope, attrs)
        self._tr.spans.append(span)
        server_end = self._server(target, op, sid, start + self._net(), remote=True)
        span.end = server_end + self._net()
        return span.end

    def _db_span(self, service: str, res: int, st: dict, parent: bytes, t: int) -> int:
        system, op, target = st["system"], st["op"], st["target"]
        start = t + self._gap()
        end = start + self._dur(st["ms"], 0.9) + self._stall(0.3)
        if system == "postgresql":
            name = f"{op} shop.{target}"
            attrs = [("db.system", system), ("db.name", "shop"), ("db.operation", op),
                     ("db.sql.table", target), ("db.statement", _SQL[op].format(t=target)),
                     ("net.peer.name", "postgres"), ("net.peer.port", 5432)]
        elif system == "redis":
            name = op
            attrs = [("db.system", system), ("db.operation", op), ("db.statement", f"{op} {target}:?"),
                     ("db.redis.database_index", 0), ("net.peer.name", "redis"), ("net.peer.port", 6379)]
        else:
            name = f"{op} {target}"
            attrs = [("db.system", system), ("db.operation", op), ("db.elasticsearch.index", target),
                     ("http.method", "POST"), ("net.peer.name", "elasticsearch"), ("net.peer.port", 9200)]
        self._tr.spans.append(SpanRec(self._tr.trace_id, self._span_id(), parent, name, KIND_CLIENT, start, end,
                                      res, self._scope_of[(service, "db")], attrs))
        return end

    def _make_error(self, tr: Trace) -> None:
        """Put exactly one span of the trace in status ERROR (a non-root one when there is one)."""
        rng = self.rng
        i = rng.randrange(1, len(tr.spans)) if len(tr.spans) > 1 else 0
        sp = tr.spans[i]
        etype, emsg = _ERROR_TYPES[rng.randrange(len(_ERROR_TYPES))]
        sp.status = STATUS_ERROR
        sp.message = f"{etype}: {emsg}"
        attrs = sp.attrs
        for j, (k, _v) in enumerate(attrs):
            if k == "http.status_code":
                attrs[j] = (k, 500 if sp.kind == KIND_SERVER else 503)
            elif k == "rpc.grpc.status_code":
                attrs[j] = (k, 13)
        t = max(sp.start, sp.end - 1_000)
        sp.events = [(t, "exception", [("exception.type", etype), ("exception.message", emsg),
                                       ("exception.escaped", False)])]
        tr.error = True

    def traces(self, n: int | None = None, start_ns: int | None = None) -> Iterator[Trace]:
        """``n`` traces (endless when None), starts spaced by 1/``traces_per_s``."""
        gap = int(1e9 / self.traces_per_s)
        t = start_ns if start_ns is not None else self.now_ns - (n or 0) * gap - 2_000_000_000
        for _ in (range(n) if n is not None else itertools.count()):
            # exponential inter-arrival times, like independent users
            t += max(1, int(self.rng.expovariate(1.0) * gap))
            yield self.trace(t)

    # -- batching and encoding ----------------------------------------------

    def spans_by_end(self, n_traces: int | None = None, n_spans: int | None = None,
                     infos: list | None = None) -> Iterator[SpanRec]:
        """Spans in the order an SDK exports them: by end time, across concurrent traces.

        Stops after ``n_traces`` traces or once ``n_spans`` spans were produced
        (whole traces only). Appends a :class:`TraceInfo` per trace to ``infos``.
        """
        if n_traces is None and n_spans is None:
            raise ValueError("give n_traces or n_spans")
        gap = int(1e9 / self.traces_per_s)
        est = n_traces if n_traces is not None else max(1, (n_spans or 0) // 20)
        start = self.now_ns - est * gap - 2_000_000_000
        heap: list = []
        seq = 0
        made = 0
        total = 0
        for tr in self.traces(None, start):
            if (n_traces is not None and made >= n_traces) or (n_spans is not None and total >= n_spans):
                break
            # every span ending before this trace starts can go: later traces end later
            t0 = tr.start
            while heap and heap[0][0] <= t0:
                yield heapq.heappop(heap)[2]
            for sp in tr.spans:
                heapq.heappush(heap, (sp.end, seq, sp))
                seq += 1
            made += 1
            total += len(tr.spans)
            if infos is not None:
                infos.append(TraceInfo(tr.trace_id, len(tr.spans), tr.error, tr.duration_ns, tr.route))
        while heap:
            yield heapq.heappop(heap)[2]

    def build_requests(self, n_traces: int | None = None, spans_per_request_target: int = 512, *,
                       n_spans: int | None = None, batching: str = "collector") -> "EncodedRequests":
        """Encoded ``ExportTraceServiceRequest`` messages for ``n_traces`` traces
        (or at least ``n_spans`` spans, whole traces).

        ``batching="collector"``: one stream of spans cut every
        ``spans_per_request_target`` spans, grouped by resource and scope inside
        a request (what a Collector forwards). ``batching="sdk"``: one batch per
        resource (what each service's BatchSpanProcessor sends).
        """
        if spans_per_request_target < 1:
            raise ValueError("spans_per_request_target must be >= 1")
        if batching not in ("collector", "sdk"):
            raise ValueError("batching must be 'collector' or 'sdk'")
        enc = _Encoder(self)
        out = EncodedRequests()
        infos: list[TraceInfo] = []
        if batching == "collector":
            batch: list[SpanRec] = []
            for sp in self.spans_by_end(n_traces, n_spans, infos):
                batch.append(sp)
                if len(batch) >= spans_per_request_target:
                    out._append(*enc.encode(batch))
                    batch = []
            if batch:
                out._append(*enc.encode(batch))
        else:
            per_res: dict[int, list[SpanRec]] = {}
            for sp in self.spans_by_end(n_traces, n_spans, infos):
                b = per_res.setdefault(sp.res, [])
                b.append(sp)
                if len(b) >= spans_per_request_target:
                    out._append(*enc.encode(b))
                    per_res[sp.res] = []
            for b in per_res.values():
                if b:
                    out._append(*enc.encode(b))
        out.traces = infos
        return out


def build_requests(n_traces: int | None = None, spans_per_request_target: int = 512, *, seed: int | None = None,
                   n_spans: int | None = None, batching: str = "collector", **generator_kwargs) -> "EncodedRequests":
    """Shortcut: ``TraceGenerator(seed, **generator_kwargs).build_requests(...)``."""
    return TraceGenerator(seed, **generator_kwargs).build_requests(
        n_traces, spans_per_request_target, n_spans=n_spans, batching=batching)


class _Encoder:
    """Builds protobuf messages (opentelemetry-proto classes) and serializes them."""

    def __init__(self, gen: TraceGenerator):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource

        self.Request = ExportTraceServiceRequest
        self.resources = [Resource(attributes=[_kv(k, v) for k, v in attrs]) for _, attrs in gen.resources]
        self.scopes = [InstrumentationScope(name=n, version=v) for n, v in gen.scopes]
        self._kv_cache: dict = {}

    def _kvs(self, attrs: list) -> list:
        return [_kv(k, v) for k, v in attrs]

    def _attr_bytes(self, attrs: list) -> bytes:
        """Serialized ``Span.attributes`` entries (field 9), one KeyValue message
        serialized by protobuf per distinct (key, value), cached."""
        cache = self._kv_cache
        out = []
        for item in attrs:
            b = cache.get(item)
            if b is None:
                kv = _kv(*item).SerializeToString()
                b = b"\x4a" + _varint_bytes(len(kv)) + kv
                if len(cache) < 500_000:
                    cache[item] = b
            out.append(b)
        return b"".join(out)

    def encode(self, spans: list[SpanRec]) -> tuple[bytes, "RequestLayout"]:
        """Serialize one request; also return where its trace IDs and timestamps are."""
        groups: dict[int, dict[int, list[SpanRec]]] = {}
        order: list[SpanRec] = []
        span_bytes = 0
        for sp in spans:
            groups.setdefault(sp.res, {}).setdefault(sp.scope, []).append(sp)
        req = self.Request()
        for res, scopes in groups.items():
            rs = req.resource_spans.add()
            rs.resource.CopyFrom(self.resources[res])
            rs.schema_url = "https://opentelemetry.io/schemas/1.24.0"
            for scope, sps in scopes.items():
                ss = rs.scope_spans.add()
                ss.scope.CopyFrom(self.scopes[scope])
                add = ss.spans.add
                for sp in sps:
                    s = add(trace_id=sp.trace_id, span_id=sp.span_id, parent_span_id=sp.parent_id,
                            flags=sp.flags, name=sp.name, kind=sp.kind,
                            start_time_unix_nano=sp.start, end_time_unix_nano=sp.end)
                    # merging serialized repeated-field entries appends them (2.5x faster than
                    # building KeyValue objects per span)
                    s.MergeFromString(self._attr_bytes(sp.attrs))
                    if sp.events:
                        for t, name, eattrs in sp.events:
                            s.events.add(time_unix_nano=t, name=name, attributes=self._kvs(eattrs))
                    if sp.status:
                        s.status.code = sp.status
                        if sp.message:
                            s.status.message = sp.message
                    span_bytes += s.ByteSize()
                    order.append(sp)
        data = req.SerializeToString()
        return data, _locate(data, order, span_bytes)


def _locate(data: bytes, spans: list[SpanRec], span_bytes: int) -> "RequestLayout":
    """Offsets of trace IDs and timestamps in ``data``, found by searching each
    span's known values in serialization order (fields are written in field
    number order: trace_id 1, start 7, end 8, events 11). A 16-byte random ID
    or a tagged nanosecond timestamp does not occur by chance; the result is
    checked against the wire walk in the tests."""
    lay = RequestLayout(n_spans=len(spans), span_bytes=span_bytes)
    tids, times = lay.trace_id_offsets, lay.time_offsets
    find = data.find
    pack = struct.Struct("<Q").pack
    pos = 0
    for sp in spans:
        pos = find(sp.trace_id, pos)
        if pos < 0:
            raise AssertionError("trace_id not found in encoded request")
        tids.append(pos)
        pos += 16
        for tag, t in ((b"\x39", sp.start), (b"\x41", sp.end)):
            pos = find(tag + pack(t), pos)
            if pos < 0:
                raise AssertionError("timestamp not found in encoded request")
            times.append(pos + 1)
            pos += 9
        if sp.events:
            for t, _name, _attrs in sp.events:
                pos = find(b"\x09" + pack(t), pos)
                if pos < 0:
                    raise AssertionError("event timestamp not found in encoded request")
                times.append(pos + 1)
                pos += 9
    return lay


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _kv(key: str, value):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    elif isinstance(value, bytes):
        v = AnyValue(bytes_value=value)
    else:
        v = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=v)


# --------------------------------------------------------------------------
# Wire-level walk of an encoded request (no message objects): span counts,
# span sizes, and where trace IDs and timestamps sit (for replays).
# --------------------------------------------------------------------------

def _varint(buf, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"varint too long at {pos}")


def _fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field_number, wire_type, value_start, value_end) of a message body."""
    while pos < end:
        key, pos = _varint(buf, pos)
        fn, wt = key >> 3, key & 7
        if wt == 0:
            _, npos = _varint(buf, pos)
        elif wt == 1:
            npos = pos + 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            npos = pos + ln
        elif wt == 5:
            npos = pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt} at {pos}")
        if npos > end:
            raise ValueError(f"field {fn} runs past the end of its message at {pos}")
        yield fn, wt, pos, npos
        pos = npos


@dataclass(slots=True)
class RequestLayout:
    n_spans: int = 0
    span_bytes: int = 0                                   # sum of Span message bodies
    trace_id_offsets: array = field(default_factory=lambda: array("I"))  # each 16-byte trace_id value
    time_offsets: array = field(default_factory=lambda: array("I"))      # each fixed64 timestamp


def _skip(buf, pos: int, wt: int, end: int) -> int:
    """Position after a field value of wire type ``wt`` starting at ``pos``."""
    if wt == 0:
        while buf[pos] & 0x80:
            pos += 1
        pos += 1
    elif wt == 1:
        pos += 8
    elif wt == 2:
        ln, pos = _varint(buf, pos)
        pos += ln
    elif wt == 5:
        pos += 4
    else:
        raise ValueError(f"unsupported wire type {wt} at {pos}")
    if pos > end:
        raise ValueError(f"field runs past the end of its message at {pos}")
    return pos


def _span_layout(buf, pos: int, end: int, tids: list, times: list) -> None:
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        fn, wt = key >> 3, key & 7
        if wt == 2:
            ln = buf[pos]
            if ln < 0x80:
                pos += 1
            else:
                ln, pos = _varint(buf, pos)
            if fn == 1 and ln == 16:
                tids.append(pos)
            elif fn == 11:                                   # Event: time_unix_nano is field 1
                epos, eend = pos, pos + ln
                while epos < eend:
                    k2, epos = _varint(buf, epos)
                    if k2 == 0x09:
                        times.append(epos)
                    epos = _skip(buf, epos, k2 & 7, eend)
            pos += ln
        elif wt == 1:
            if fn == 7 or fn == 8:
                times.append(pos)
            pos += 8
        else:
            pos = _skip(buf, pos, wt, end)
    if pos != end:
        raise ValueError(f"span runs past its end at {pos}")


def scan_layout(data: bytes) -> RequestLayout:
    """Walk an encoded ExportTraceServiceRequest: spans, their bytes, ID and time offsets."""
    lay = RequestLayout()
    tids, times = lay.trace_id_offsets, lay.time_offsets
    for fn, wt, s, e in _fields(data, 0, len(data)):
        if fn != 1 or wt != 2:
            continue
        for fn2, wt2, s2, e2 in _fields(data, s, e):          # ResourceSpans
            if fn2 != 2 or wt2 != 2:
                continue
            for fn3, wt3, s3, e3 in _fields(data, s2, e2):    # ScopeSpans
                if fn3 != 2 or wt3 != 2:
                    continue
                lay.n_spans += 1
                lay.span_bytes += e3 - s3
                _span_layout(data, s3, e3, tids, times)
    return lay


def count_spans(data: bytes) -> int:
    """Number of spans in an encoded ExportTraceServiceRequest (wire walk, no parsing)."""
    n = 0
    for fn, wt, s, e in _fields(data, 0, len(data)):
        if fn == 1 and wt == 2:
            for fn2, wt2, s2, e2 in _fields(data, s, e):
                if fn2 == 2 and wt2 == 2:
                    for fn3, wt3, _s3, _e3 in _fields(data, s2, e2):
                        if fn3 == 2 and wt3 == 2:
                            n += 1
    return n


class EncodedRequests(list):
    """A ``list[bytes]`` of encoded requests that also knows its spans.

    ``span_counts[i]``: spans in request i; ``traces``: a :class:`TraceInfo`
    per trace (for checks: how many errors, how many slow).
    """

    def __init__(self, items: Iterable[bytes] = ()):
        super().__init__(items)
        self.span_counts: list[int] = [count_spans(b) for b in self]
        self.traces: list[TraceInfo] = []
        self._layouts: list[RequestLayout] | None = None

    def _append(self, data: bytes, layout: "RequestLayout") -> None:
        if self._layouts is None:
            self._layouts = []
        self.append(data)
        self.span_counts.append(layout.n_spans)
        self._layouts.append(layout)

    @property
    def n_spans(self) -> int:
        return sum(self.span_counts)

    @property
    def n_bytes(self) -> int:
        return sum(len(b) for b in self)

    def layouts(self) -> list[RequestLayout]:
        if self._layouts is None or len(self._layouts) != len(self):
            self._layouts = [scan_layout(b) for b in self]
        return self._layouts

    def mean_span_bytes(self) -> float:
        """Mean size of one encoded Span message (body only, without resource/scope headers)."""
        lays = self.layouts()
        n = sum(l.n_spans for l in lays)
        return sum(l.span_bytes for l in lays) / n if n else 0.0

    def stats(self) -> dict:
        tr = self.traces
        slow = sum(1 for t in tr if t.duration_ns > 1_000_000_000)
        return {
            "requests": len(self),
            "spans": self.n_spans,
            "bytes": self.n_bytes,
            "traces": len(tr),
            "error_traces": sum(1 for t in tr if t.error),
            "slow_traces_over_1s": slow,
            "spans_per_trace": round(self.n_spans / len(tr), 2) if tr else None,
        }

    def cycle(self, *, shift_time: bool = True, seed: int = 0) -> Iterator[tuple[bytes, int]]:
        """Replay forever as ``(bytes, n_spans)``. The first pass sends the
        requests as built; each later pass XORs every trace ID with a fresh
        random 16-byte mask (so traces are new, IDs still uniformly random,
        and all spans of one trace keep one ID) and, with ``shift_time``,
        moves timestamps forward so the pass ends at the current clock."""
        if not self:
            return
        yield from zip(self, self.span_counts)
        lays = self.layouts()
        base = self.newest_time()
        rng = random.Random(seed ^ 0x5EED)
        for _epoch in itertools.count(1):
            mask = rng.getrandbits(128) or 1
            delta = (time.time_ns() - base) if shift_time and base else 0
            for data, lay, n in zip(self, lays, self.span_counts):
                yield _patch(data, lay, mask, delta), n

    def newest_time(self) -> int:
        """The latest timestamp in the requests (0 when there is none)."""
        return max((struct.unpack_from("<Q", b, off)[0]
                    for b, l in zip(self, self.layouts()) for off in l.time_offsets), default=0)

    def retimed(self, now_ns: int | None = None) -> "EncodedRequests":
        """A copy with every timestamp moved so the newest is ``now_ns`` (default: now);
        for a load kept on disk and sent later."""
        lays = self.layouts()
        base = self.newest_time()
        delta = ((now_ns if now_ns is not None else time.time_ns()) - base) if base else 0
        out = EncodedRequests()
        for data, lay in zip(self, lays):
            out._append(_patch(data, lay, 0, delta), lay)
        out.traces = list(self.traces)
        return out


def _patch(data: bytes, lay: RequestLayout, mask: int, delta: int) -> bytes:
    """``data`` with each trace ID XORed with ``mask`` and each timestamp moved by ``delta`` ns."""
    if not mask and not delta:
        return data
    buf = bytearray(data)
    if mask:
        for off in lay.trace_id_offsets:
            v = int.from_bytes(buf[off:off + 16], "big") ^ mask
            buf[off:off + 16] = v.to_bytes(16, "big")
    if delta:
        pack_q, unpack_q = struct.pack_into, struct.unpack_from
        for off in lay.time_offsets:
            pack_q("<Q", buf, off, unpack_q("<Q", buf, off)[0] + delta)
    return bytes(buf)


# --------------------------------------------------------------------------
# Sender
# --------------------------------------------------------------------------

def _percentile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(math.ceil(q * len(sorted_vals))) - 1))
    return sorted_vals[k]


async def send(endpoint: str, requests: Sequence[bytes] | Iterable, rate_spans_per_s: float | None = None,
               duration_s: float | None = None, concurrency: int = 4, *, timeout_s: float = 30.0,
               connect_timeout_s: float = 10.0, compression: str | None = None,
               stop: asyncio.Event | None = None, channels: int = 1,
               progress: Callable[[int, float], None] | None = None) -> dict:
    """Send encoded requests to ``endpoint``'s OTLP gRPC ``TraceService/Export``.

    ``requests``: a list of encoded requests (an :class:`EncodedRequests`
    knows its span counts; a plain list is counted by a wire walk first) or
    an iterator of ``bytes`` / ``(bytes, n_spans)``. Each is sent once, unless
    ``duration_s`` is given: then the list is replayed until the time is up
    (an :class:`EncodedRequests` with fresh trace IDs each pass, a plain list
    as is). ``rate_spans_per_s`` paces the sends; None sends as fast as
    ``concurrency`` in-flight requests allow. ``stop`` ends the run early.
    ``channels``: TCP connections the requests are spread over (a server
    whose workers share the port by ``SO_REUSEPORT`` sees each connection
    land on one worker, as many clients would spread over them).
    ``progress(spans, elapsed_s)`` is told each answered request's spans.

    Returns counts: requests (ok / failed), spans, bytes, errors by gRPC
    status code name, elapsed seconds, rates and RPC latency percentiles.
    """
    import grpc

    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if rate_spans_per_s is not None and rate_spans_per_s <= 0:
        raise ValueError("rate_spans_per_s must be > 0")

    # Items as (bytes, n_spans)
    if isinstance(requests, EncodedRequests):
        items: Iterator = requests.cycle() if duration_s is not None else zip(requests, requests.span_counts)
    elif isinstance(requests, Sequence) and not isinstance(requests, (bytes, bytearray)):
        pairs = [(b, count_spans(b)) for b in requests]
        items = itertools.cycle(pairs) if duration_s is not None else iter(pairs)
    else:
        items = (x if isinstance(x, tuple) else (x, count_spans(x)) for x in requests)

    comp = {None: None, "none": None, "gzip": grpc.Compression.Gzip,
            "deflate": grpc.Compression.Deflate}[compression]
    loop = asyncio.get_running_loop()
    errors: dict[str, int] = {}
    st = {"req_ok": 0, "req_fail": 0, "spans_ok": 0, "spans_fail": 0, "bytes_ok": 0,
          "scheduled": 0, "last_done": None}
    latencies: list[float] = []
    options = [("grpc.max_send_message_length", 256 * 1024 * 1024),
               ("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    if channels > 1:   # one connection each, not one shared subchannel
        options.append(("grpc.use_local_subchannel_pool", 1))
    chans = [grpc.aio.insecure_channel(endpoint, options=options) for _ in range(max(1, channels))]
    try:
        try:
            await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in chans)),
                                   connect_timeout_s)
        except asyncio.TimeoutError:
            return {"endpoint": endpoint, "error": f"cannot connect to {endpoint} within {connect_timeout_s}s",
                    "requests": 0, "requests_ok": 0, "requests_failed": 0, "spans": 0, "bytes": 0,
                    "errors": {"UNAVAILABLE": 1}, "elapsed_s": 0.0}
        calls = [c.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
                 for c in chans]
        t0 = loop.time()
        deadline = t0 + duration_s if duration_s is not None else None

        async def worker(k: int) -> None:
            call = calls[k % len(calls)]
            while True:
                if stop is not None and stop.is_set():
                    return
                if deadline is not None and loop.time() >= deadline:
                    return
                try:
                    data, n = next(items)
                except StopIteration:
                    return
                if rate_spans_per_s:
                    due = t0 + st["scheduled"] / rate_spans_per_s
                    st["scheduled"] += n
                    if deadline is not None and due >= deadline:
                        return
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                t = time.perf_counter()
                try:
                    await call(data, timeout=timeout_s, compression=comp)
                except grpc.aio.AioRpcError as exc:
                    name = exc.code().name
                    errors[name] = errors.get(name, 0) + 1
                    st["req_fail"] += 1
                    st["spans_fail"] += n
                else:
                    st["req_ok"] += 1
                    st["spans_ok"] += n
                    st["bytes_ok"] += len(data)
                    latencies.append(time.perf_counter() - t)
                st["last_done"] = loop.time()
                if progress is not None:
                    progress(n, st["last_done"] - t0)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        for c in chans:
            await c.close()
    elapsed = max(1e-9, (st["last_done"] or loop.time()) - t0)
    latencies.sort()
    ms = lambda v: round(v * 1000, 3) if v is not None else None  # noqa: E731
    return {
        "endpoint": endpoint,
        "requests": st["req_ok"] + st["req_fail"],
        "requests_ok": st["req_ok"],
        "requests_failed": st["req_fail"],
        "spans": st["spans_ok"],
        "spans_failed": st["spans_fail"],
        "bytes": st["bytes_ok"],
        "errors": errors,
        "elapsed_s": round(elapsed, 4),
        "spans_per_s": round(st["spans_ok"] / elapsed, 1),
        "requests_per_s": round(st["req_ok"] / elapsed, 1),
        "mib_per_s": round(st["bytes_ok"] / elapsed / 2**20, 2),
        "rpc_latency_ms": {"p50": ms(_percentile(latencies, 0.5)), "p99": ms(_percentile(latencies, 0.99)),
                           "max": ms(latencies[-1] if latencies else None)},
        "concurrency": concurrency,
        "channels": max(1, channels),
        "rate_target": rate_spans_per_s,
    }


# --------------------------------------------------------------------------
# `traceo-sampler loadgen`
# --------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="127.0.0.1:4317", help="OTLP gRPC HOST:PORT (default %(default)s)")
    parser.add_argument("--rate", type=float, default=None, metavar="SPANS_PER_S",
                        help="spans per second (default: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="send for this long (default 10 s unless --spans is given)")
    parser.add_argument("--spans", type=int, default=None, metavar="N",
                        help="send about N spans (whole traces) once, then stop")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random, printed)")
    parser.add_argument("--error-rate", type=float, default=0.05, metavar="F",
                        help="share of traces with an ERROR span (default %(default)s)")
    parser.add_argument("--services", type=int, default=8, metavar="N", help="services (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    parser.add_argument("--channels", type=int, default=1,
                        help="TCP connections to spread the requests over (default %(default)s)")
    parser.add_argument("--spans-per-request", type=int, default=512, metavar="N",
                        help="spans per Export request (default %(default)s)")
    parser.add_argument("--batching", choices=("collector", "sdk"), default="collector",
                        help="requests mix all services (collector) or one per service (sdk)")
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    parser.add_argument("--pool-spans", type=int, default=200_000, metavar="N",
                        help="spans pre-encoded and replayed with fresh trace IDs (default %(default)s)")


class _LoadBar:
    """A terminal progress bar for ``run``: by time with --duration, by
    spans with --spans; nothing when stderr is not a terminal."""

    def __init__(self, duration: float | None, spans: int | None, pool_spans: int):
        from .progress import Progress
        self.duration = duration
        self.sent = 0
        if duration is not None:
            self.bar = Progress(duration, "s", "loadgen")
        else:
            self.bar = Progress(spans or pool_spans, "span", "loadgen")

    def __call__(self, n: int, elapsed: float) -> None:
        self.sent += n
        if self.duration is not None:
            self.bar.set(round(elapsed, 1), f"{self.sent:,} spans, {self.sent / max(elapsed, 1e-9):,.0f} spans/s")
        else:
            self.bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Run the load generator; print a one-line JSON summary; 0 when every request was accepted."""
    for name, ok in (("--rate", args.rate is None or args.rate > 0),
                     ("--duration", args.duration is None or args.duration > 0),
                     ("--spans", args.spans is None or args.spans > 0),
                     ("--error-rate", 0.0 <= args.error_rate <= 1.0),
                     ("--services", args.services >= 1),
                     ("--concurrency", args.concurrency >= 1),
                     ("--channels", args.channels >= 1),
                     ("--spans-per-request", args.spans_per_request >= 1)):
        if not ok:
            print(f"traceo-sampler loadgen: invalid {name}", file=sys.stderr)
            return 2
    duration = args.duration
    if duration is None and args.spans is None:
        duration = 10.0
    gen = TraceGenerator(args.seed, services=args.services, error_rate=args.error_rate)
    # The pool: what is needed, at most --pool-spans; replayed with fresh trace IDs past its end.
    target = float(args.pool_spans)
    if args.spans is not None:
        target = min(target, args.spans)
    if args.rate and duration is not None:
        target = min(target, args.rate * duration)
    t_build = time.perf_counter()
    reqs = gen.build_requests(spans_per_request_target=args.spans_per_request, n_spans=max(1, int(target)),
                              batching=args.batching)
    build_s = time.perf_counter() - t_build

    async def main() -> dict:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        if args.spans is not None and duration is None and reqs.n_spans >= args.spans:
            source: Iterable = reqs  # the pool once
        else:
            # replay until the span budget (if any) or the time (if any) is spent
            budget = args.spans

            def limited() -> Iterator[tuple[bytes, int]]:
                sent = 0
                for data, n in reqs.cycle():
                    if budget is not None and sent >= budget:
                        return
                    sent += n
                    yield data, n
            source = limited()
        with _LoadBar(duration, args.spans, reqs.n_spans) as bar:
            return await send(args.endpoint, source, args.rate, duration, args.concurrency,
                              compression=args.compression, stop=stop, channels=args.channels,
                              progress=bar)

    result = asyncio.run(main())
    summary = {"command": "loadgen", "seed": gen.seed, "services": args.services, "error_rate": args.error_rate,
               "pool": reqs.stats(), "build_s": round(build_s, 3), **result}
    print(json.dumps(summary, separators=(",", ":")))
    sys.stdout.flush()
    return 0 if result.get("requests_ok", 0) > 0 and not result.get("requests_failed") and \
        "error" not in result else 1


def main(argv: list[str] | None = None) -> int:  # ``python -m traceo_sampler.loadgen`` for convenience
    parser = argparse.ArgumentParser(prog="traceo-sampler loadgen", description="Send synthetic traces over OTLP gRPC.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
