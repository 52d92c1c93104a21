"""An OTLP/gRPC trace server that accepts everything and keeps only counts.

It is the ceiling server of the benchmarks (mode ``discard``: count requests
and bytes, never parse) and the export target of the full path (mode
``parse``: also parse each request with protobuf, count spans, traces, error
spans, and keep a small summary per trace so the harness can check what the
sampler kept).

Run as a process::

    python benchmarks/sink.py [--host 127.0.0.1] [--port 0] [--mode discard|parse]

It prints one JSON line ``{"event": "ready", "port": P, ...}`` once it
listens, and on SIGTERM / SIGINT one JSON line ``{"event": "stopped", ...counts}``
before it exits 0. While it runs, counts are read over the same port with
gRPC (raw bytes both ways, see :func:`query`):

* ``/traceo.bench.Sink/Stats``  request ``b""`` → JSON counts; ``b"traces"``
  → also ``"trace_spans": {trace_id_hex: spans}`` (parse mode)
* ``/traceo.bench.Sink/Reset``  → JSON counts before the reset
* ``/traceo.bench.Sink/Mode``   request ``b"discard"`` or ``b"parse"`` → JSON counts

Or in-process: ``sink = Sink(mode="parse"); port = await sink.start(); ...;
sink.stats(); await sink.stop()``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

import grpc

EXPORT_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
SINK_SERVICE = "traceo.bench.Sink"
MODES = ("discard", "parse")
MAX_MESSAGE = 256 * 1024 * 1024
SLOW_NS = 1_000_000_000


class Sink:
    """Counts what it is sent. ``mode``: ``discard`` (requests and bytes only) or ``parse``."""

    def __init__(self, mode: str = "discard", *, delay_s: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.delay_s = delay_s  # artificial per-request latency (tests of backpressure)
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self._request_cls = None
        self.reset()

    # -- counting -----------------------------------------------------------

    def reset(self) -> dict:
        old = self.stats() if hasattr(self, "requests") else {}
        self.requests = 0
        self.bytes = 0
        self.spans = 0
        self.error_spans = 0
        self.parse_errors = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        # trace_id → [spans, min_start, max_end, error]
        self.traces: dict[bytes, list] = {}
        return old

    def stats(self, with_traces: bool = False) -> dict:
        out = {
            "mode": self.mode,
            "requests": self.requests,
            "bytes": self.bytes,
            "spans": self.spans,  # counted in parse mode only
            "first_at": self.first_at,
            "last_at": self.last_at,
            "now": time.monotonic(),
            "active_s": round(self.last_at - self.first_at, 6) if self.first_at is not None else None,
        }
        if self.traces or self.mode == "parse":
            tr = self.traces.values()
            out.update({
                "traces": len(self.traces),
                "error_spans": self.error_spans,
                "error_traces": sum(1 for t in tr if t[3]),
                "slow_traces_over_1s": sum(1 for t in tr if t[2] - t[1] > SLOW_NS),
                "parse_errors": self.parse_errors,
            })
        if with_traces:
            out["trace_spans"] = {k.hex(): v[0] for k, v in self.traces.items()}
        return out

    def _count(self, data: bytes) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.requests += 1
        self.bytes += len(data)
        if self.mode == "parse":
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        if self._request_cls is None:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
            self._request_cls = ExportTraceServiceRequest
        try:
            req = self._request_cls.FromString(data)
        except Exception:  # noqa: BLE001 - a bad request is counted, not fatal
            self.parse_errors += 1
            return
        traces = self.traces
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    self.spans += 1
                    err = sp.status.code == 2
                    if err:
                        self.error_spans += 1
                    t = traces.get(sp.trace_id)
                    if t is None:
                        traces[sp.trace_id] = [1, sp.start_time_unix_nano, sp.end_time_unix_nano, err]
                    else:
                        t[0] += 1
                        if sp.start_time_unix_nano < t[1]:
                            t[1] = sp.start_time_unix_nano
                        if sp.end_time_unix_nano > t[2]:
                            t[2] = sp.end_time_unix_nano
                        if err:
                            t[3] = True

    # -- gRPC handlers (raw bytes in and out) ---------------------------------

    async def _export(self, request: bytes, context) -> bytes:
        self._count(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return b""  # an empty ExportTraceServiceResponse

    async def _stats(self, request: bytes, context) -> bytes:
        return json.dumps(self.stats(with_traces=request == b"traces")).encode()

    async def _reset(self, request: bytes, context) -> bytes:
        return json.dumps(self.reset()).encode()

    async def _mode(self, request: bytes, context) -> bytes:
        mode = request.decode(errors="replace")
        if mode not in MODES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"mode must be one of {MODES}")
        self.mode = mode
        return json.dumps(self.stats()).encode()

    def handlers(self) -> list:
        raw = dict(request_deserializer=None, response_serializer=None)
        return [
            grpc.method_handlers_generic_handler(EXPORT_SERVICE, {
                "Export": grpc.unary_unary_rpc_method_handler(self._export, **raw)}),
            grpc.method_handlers_generic_handler(SINK_SERVICE, {
                "Stats": grpc.unary_unary_rpc_method_handler(self._stats, **raw),
                "Reset": grpc.unary_unary_rpc_method_handler(self._reset, **raw),
                "Mode": grpc.unary_unary_rpc_method_handler(self._mode, **raw)}),
        ]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: a free port); return the port."""
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ])
        self.server.add_generic_rpc_handlers(self.handlers())
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"cannot listen on {host}:{port}")
        await self.server.start()
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None


async def query(endpoint: str, method: str = "Stats", body: bytes = b"", timeout: float = 10.0) -> dict:
    """Call a side-channel method (``Stats``, ``Reset``, ``Mode``) of a sink at ``endpoint``."""
    async with grpc.aio.insecure_channel(endpoint, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE)]) as ch:
        call = ch.unary_unary(f"/{SINK_SERVICE}/{method}", request_serializer=None, response_deserializer=None)
        return json.loads(await call(body, timeout=timeout))


def query_sync(endpoint: str, method: str = "Stats", body: bytes = b"", timeout: float = 10.0) -> dict:
    """Blocking :func:`query` (plain grpc channel, for code outside an event loop)."""
    with grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", MAX_MESSAGE)]) as ch:
        call = ch.unary_unary(f"/{SINK_SERVICE}/{method}", request_serializer=None, response_deserializer=None)
        return json.loads(call(body, timeout=timeout))


async def _main(args: argparse.Namespace) -> int:
    sink = Sink(args.mode, delay_s=args.delay)
    port = await sink.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "ready", "host": args.host, "port": port, "mode": args.mode}), flush=True)
    await stop.wait()
    await sink.stop(grace=0.5)
    print(json.dumps({"event": "stopped", **sink.stats()}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="OTLP gRPC sink: accepts traces, keeps counts.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed in the ready line)")
    p.add_argument("--mode", choices=MODES, default="discard",
                   help="discard: count requests and bytes only; parse: also parse and count spans/traces")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to hold each Export call (default 0)")
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
