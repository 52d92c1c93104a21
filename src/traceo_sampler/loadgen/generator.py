"""The generator: realistic traces of nested spans across a small shop, and
their batching into requests the way SDKs and Collectors send them
(:meth:`TraceGenerator.build_requests`; the bytes are made by encoding.py)."""
from __future__ import annotations

import heapq
import itertools
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .encoding import EncodedRequests, Encoder

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

    def _add(self, sid: bytes, parent: bytes, name: str, kind: int, start: int, end: int, res: int,
             scope: int, attrs: list, flags: int = FLAGS_LOCAL_PARENT) -> SpanRec:
        """A new span of the trace being built (by :meth:`trace`)."""
        tr = self._tr
        assert tr is not None, "spans are made inside trace()"
        span = SpanRec(tr.trace_id, sid, parent, name, kind, start, end, res, scope, attrs, flags)
        tr.spans.append(span)
        return span

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
        span = self._add(sid, parent, name, KIND_SERVER, start, 0, res, scope, attrs,
                         FLAGS_REMOTE_PARENT if remote else FLAGS_LOCAL_PARENT)
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
                self._add(sid, parent, st["name"], KIND_INTERNAL, s, e, res,
                          self._scope_of[(service, "app")],
                          [("code.function", st["name"].replace(" ", "_"))])
                t = e + self._gap()
            elif kind == "ext":
                sid = self._span_id()
                s = t + self._gap()
                e = s + self._dur(st["ms"], 0.8) + self._stall(0.4)
                attrs = [("http.method", st["method"]), ("http.url", f"https://{st['host']}{st['path']}"),
                         ("net.peer.name", st["host"]), ("http.status_code", 200)]
                self._add(sid, parent, st["method"], KIND_CLIENT, s, e, res,
                          self._scope_of[(service, "http")], attrs)
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
        span = self._add(sid, parent, name, KIND_CLIENT, start, 0, res, scope, attrs)
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
        self._add(self._span_id(), parent, name, KIND_CLIENT, start, end, res,
                  self._scope_of[(service, "db")], attrs)
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
                       n_spans: int | None = None, batching: str = "collector") -> EncodedRequests:
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
        enc = Encoder(self)
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
                   n_spans: int | None = None, batching: str = "collector", **generator_kwargs) -> EncodedRequests:
    """Shortcut: ``TraceGenerator(seed, **generator_kwargs).build_requests(...)``."""
    return TraceGenerator(seed, **generator_kwargs).build_requests(
        n_traces, spans_per_request_target, n_spans=n_spans, batching=batching)
