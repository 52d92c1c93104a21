"""The sender: encoded requests over a ``grpc.aio`` channel to OTLP
``TraceService/Export``, N in flight, optionally paced to a spans/s rate."""
from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .encoding import EncodedRequests, count_spans

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _retry_delay(exc, attempt: int) -> float | None:
    """Seconds to wait before sending again, or None: not worth a retry.
    The SDK retries RESOURCE_EXHAUSTED only when the server says when
    (RetryInfo): without it, it is a request too large to ever pass."""
    import grpc

    from ..exporters.otlp_grpc import retry_info_delay

    code = exc.code()
    hint = retry_info_delay(exc)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return hint
    if code == grpc.StatusCode.UNAVAILABLE:
        return hint if hint is not None else min(2.0, 0.05 * 2 ** attempt)
    return None


def _percentile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(math.ceil(q * len(sorted_vals))) - 1))
    return sorted_vals[k]


class _Counts:
    """What ``send`` counted so far."""

    __slots__ = ("req_ok", "req_fail", "spans_ok", "spans_fail", "bytes_ok", "retried", "scheduled",
                 "last_done")

    def __init__(self) -> None:
        self.req_ok = self.req_fail = self.spans_ok = self.spans_fail = self.bytes_ok = 0
        self.retried = 0
        self.scheduled = 0            # spans given a send time (pacing)
        self.last_done: float | None = None


async def send(endpoint: str, requests: Iterable[Any], rate_spans_per_s: float | None = None,
               duration_s: float | None = None, concurrency: int = 4, *, timeout_s: float = 30.0,
               connect_timeout_s: float = 10.0, compression: str | None = None,
               stop: asyncio.Event | None = None, channels: int = 1,
               progress: Callable[[int, float], None] | None = None,
               retries: int = 5) -> dict:
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
    ``retries``: as the OpenTelemetry SDK's exporter does, a request pushed
    back (RESOURCE_EXHAUSTED with RetryInfo) or refused as UNAVAILABLE is
    sent again after the server's delay (or 50 ms doubling up to 2 s), up to
    this many times; 0 counts it failed at once.

    Returns counts: requests (ok / failed), spans, bytes, errors by gRPC
    status code name, elapsed seconds, rates and RPC latency percentiles.
    """
    import grpc

    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if rate_spans_per_s is not None and rate_spans_per_s <= 0:
        raise ValueError("rate_spans_per_s must be > 0")

    if isinstance(requests, (bytes, bytearray)):
        raise TypeError("requests: a list or iterator of encoded requests, not one request's bytes")

    # Items as (bytes, n_spans)
    items: Iterator[tuple[bytes, int]]
    if isinstance(requests, EncodedRequests):
        items = requests.cycle() if duration_s is not None else zip(requests, requests.span_counts)
    elif isinstance(requests, Sequence):
        pairs = [(b, count_spans(b)) for b in requests]
        items = itertools.cycle(pairs) if duration_s is not None else iter(pairs)
    else:
        items = (x if isinstance(x, tuple) else (x, count_spans(x)) for x in requests)

    comp = {None: None, "none": None, "gzip": grpc.Compression.Gzip,
            "deflate": grpc.Compression.Deflate}[compression]
    loop = asyncio.get_running_loop()
    errors: dict[str, int] = {}
    st = _Counts()
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
        calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [c.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
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
                    due = t0 + st.scheduled / rate_spans_per_s
                    st.scheduled += n
                    if deadline is not None and due >= deadline:
                        return
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                t = time.perf_counter()
                attempt = 0
                while True:
                    try:
                        await call(data, timeout=timeout_s, compression=comp)
                    except grpc.aio.AioRpcError as exc:
                        wait = _retry_delay(exc, attempt) if attempt < retries else None
                        if wait is not None and not (stop is not None and stop.is_set()):
                            attempt += 1
                            st.retried += 1
                            await asyncio.sleep(wait)
                            continue
                        name = exc.code().name
                        errors[name] = errors.get(name, 0) + 1
                        st.req_fail += 1
                        st.spans_fail += n
                    else:
                        st.req_ok += 1
                        st.spans_ok += n
                        st.bytes_ok += len(data)
                        latencies.append(time.perf_counter() - t)
                    break
                st.last_done = loop.time()
                if progress is not None:
                    progress(n, st.last_done - t0)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        for c in chans:
            await c.close()
    elapsed = max(1e-9, (st.last_done or loop.time()) - t0)
    latencies.sort()
    ms = lambda v: round(v * 1000, 3) if v is not None else None  # noqa: E731
    return {
        "endpoint": endpoint,
        "requests": st.req_ok + st.req_fail,
        "requests_ok": st.req_ok,
        "requests_failed": st.req_fail,
        "requests_retried": st.retried,
        "spans": st.spans_ok,
        "spans_failed": st.spans_fail,
        "bytes": st.bytes_ok,
        "errors": errors,
        "elapsed_s": round(elapsed, 4),
        "spans_per_s": round(st.spans_ok / elapsed, 1),
        "requests_per_s": round(st.req_ok / elapsed, 1),
        "mib_per_s": round(st.bytes_ok / elapsed / 2**20, 2),
        "rpc_latency_ms": {"p50": ms(_percentile(latencies, 0.5)), "p99": ms(_percentile(latencies, 0.99)),
                           "max": ms(latencies[-1] if latencies else None)},
        "concurrency": concurrency,
        "channels": max(1, channels),
        "rate_target": rate_spans_per_s,
    }
