"""``traceo-sampler simulate -c FILE INPUT...``: replay captured traces
through the configured policies offline and report what they would keep.

Inputs: OTLP JSON lines as the Collector's file exporter (and ours) writes
them, one ExportTraceServiceRequest per line; or length-prefixed OTLP
protobuf (a 4-byte big-endian length, then the request; repeated). The
format is detected per file. Spans go through the same buffer and policies
as ``serve``, on a virtual clock driven by the spans' own end times, so the
completion timers (root_wait, idle_timeout, decision_wait) act as they would
have live; whatever is still buffered at the end is decided as on shutdown.
Nothing is sent anywhere.

Captures that carry arrival times -- JSON lines with a top-level
``"arrivalTimeUnixNano"`` (a string or number of ns; OTLP/JSON readers ignore
the unknown key) -- drive the clock by when each request arrived instead:
the arrival lags per service, the waits ``auto`` would learn and the late
spans that would have changed a decision are then those of the capture,
and are reported (``completion``).
"""
from __future__ import annotations

import json
import struct
import sys
from typing import Iterator

from .config import Config
from .exporters.base import Exporter
from .otlp_json import decode_request
from .pipeline import Pipeline
from .telemetry import Metrics


class _Collect(Exporter):
    """Counts what would be exported; sends nothing."""

    name = "simulate"

    def __init__(self, metrics):
        super().__init__(metrics, 1 << 62)
        self.spans = 0
        self.bytes = 0

    def submit(self, item) -> bool:
        self.spans += item.spans
        self.bytes += len(item.blob)
        return True


ARRIVAL_KEY = b'"arrivalTimeUnixNano"'


def _arrival_s(line: bytes) -> float | None:
    if ARRIVAL_KEY not in line:
        return None
    v = json.loads(line).get("arrivalTimeUnixNano")
    try:
        return int(v) / 1e9
    except (TypeError, ValueError):
        raise ValueError(f"arrivalTimeUnixNano must be integer nanoseconds, got {v!r}") from None


def read_records(path: str) -> Iterator[tuple[bytes, float | None]]:
    """(encoded request, arrival time in s or None) of one capture file
    (format auto-detected)."""
    with open(path, "rb") as fh:
        head = fh.read(1)
        fh.seek(0)
        if head in (b"{", b" ", b"\n", b"\r", b"\t"):
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield decode_request(line), _arrival_s(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not an OTLP JSON request: {exc}") from None
            return
        offset = 0
        while True:
            hdr = fh.read(4)
            if not hdr:
                return
            if len(hdr) < 4:
                raise ValueError(f"{path}: truncated length prefix at byte {offset}")
            (ln,) = struct.unpack(">I", hdr)
            body = fh.read(ln)
            if len(body) < ln:
                raise ValueError(f"{path}: record at byte {offset} wants {ln} bytes, file ends first")
            offset += 4 + ln
            yield body, None


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _max_end_s(data: bytes) -> float | None:
    from .scan import scan
    sc = scan(data, frozenset())
    ends = [s[4] for s in sc.spans]
    return max(ends) / 1e9 if ends else None


def simulate(cfg: Config, inputs: list[str]) -> dict:
    clock = _Clock()
    metrics = Metrics(cfg.telemetry.max_services, cfg.cost.usd_per_gib)
    sink = _Collect(metrics)
    p = Pipeline(cfg, metrics, [sink], clock=clock)
    invalid_requests = 0
    arrivals = 0
    for path in inputs:
        for data, arrival in read_records(path):
            t = arrival if arrival is not None else _max_end_s(data)
            arrivals += arrival is not None
            if t is not None and t > clock.now:
                clock.now = t
                p.tick()
            try:
                p.ingest(data)
            except ValueError:
                invalid_requests += 1
    p.tick()
    p.drain()
    services = {}
    for svc, (si, bi, so, bo) in sorted(p.by_service.items()):
        services[svc] = {"spans_before": si, "spans_after": so, "bytes_before": bi,
                         "bytes_after": round(bo), "keep_rate_spans": round(so / si, 4) if si else 0.0}
    decided = max(p.decided, 1)
    return {
        "inputs": inputs,
        "traces": p.decided,
        "traces_kept": p.traces_kept,
        "keep_rate_traces": round(p.traces_kept / decided, 4) if p.decided else 0.0,
        "spans_before": p.spans_in,
        "spans_after": p.spans_kept + p.late_kept,
        "bytes_before": p.bytes_in,
        "bytes_after": round(sum(v[3] for v in p.by_service.values())),
        "per_policy": {k: {"traces": v, "share_of_traces": round(v / decided, 4)}
                       for k, v in sorted(p.by_policy.items())},
        "per_trigger": dict(sorted(p.by_trigger.items())),
        "per_service": services,
        "late_spans": {"sampled": p.late_kept, "not_sampled": p.late_dropped},
        "invalid_requests": invalid_requests,
        **({"completion": p.completion.status()} if arrivals else {}),
    }


def add_arguments(parser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML config whose policies to replay")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="OTLP JSON lines or length-prefixed OTLP protobuf files")


def run(args, cfg: Config) -> int:
    try:
        report = simulate(cfg, args.inputs)
    except (OSError, ValueError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0
