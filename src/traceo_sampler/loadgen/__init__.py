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

The package: generator.py (the shop, :class:`TraceGenerator`, batching),
encoding.py (request bytes, their layout, :class:`EncodedRequests`),
sender.py (:func:`send`), cli.py (the command).
"""
from __future__ import annotations

from .cli import add_arguments, main, run
from .encoding import EncodedRequests, RequestLayout, count_spans, scan_layout
from .generator import (
    CATALOG, EXTRA_PREFIX, FLAGS_LOCAL_PARENT, FLAGS_REMOTE_PARENT, KIND_CLIENT, KIND_INTERNAL,
    KIND_SERVER, OPERATIONS, ROUTES, STATUS_ERROR, STATUS_OK, STATUS_UNSET, WIDGET_ROUTE, SpanRec,
    Trace, TraceGenerator, TraceInfo, build_requests,
)
from .sender import EXPORT_METHOD, send

__all__ = [
    "CATALOG", "EXPORT_METHOD", "EXTRA_PREFIX", "FLAGS_LOCAL_PARENT", "FLAGS_REMOTE_PARENT",
    "KIND_CLIENT", "KIND_INTERNAL", "KIND_SERVER", "OPERATIONS", "ROUTES", "STATUS_ERROR",
    "STATUS_OK", "STATUS_UNSET", "WIDGET_ROUTE", "EncodedRequests", "RequestLayout", "SpanRec",
    "Trace", "TraceGenerator", "TraceInfo", "add_arguments", "build_requests", "count_spans",
    "main", "run", "scan_layout", "send",
]
