"""One pass over captured requests through one or more policy sets.

Each policy set is a :class:`Run`: its own Pipeline (the same buffer and
policies as ``serve``) with an exporter that only counts, and a
:class:`Recorder` that watches every decision and aggregates what the
report draws, in memory bounded by the number of time buckets and latency
bins, not by the capture's size. All runs share one virtual clock driven by
the spans' own end times and see every request in the same order, so a
comparison is over exactly the same traffic.

Captures that carry arrival times -- JSON lines with a top-level
``"arrivalTimeUnixNano"`` (a string or number of ns; OTLP/JSON readers ignore
the unknown key) -- drive the clock by when each request arrived instead:
the arrival lags per service, the waits ``auto`` would learn and the late
spans that would have changed a decision are then those of the capture,
and are reported (``completion``).
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Callable, Iterator

from ..config import Config
from ..exporters.base import Exporter
from ..forecast import monthly
from ..otlp_json import decode_request
from ..pipeline import Pipeline
from ..telemetry import Metrics

ERROR_BIT = 1 << 2            # status code ERROR in Trace.status_mask
# latency histogram: 10 log-spaced bins per decade from 1 µs up to ~2.8 h
LAT_BINS_PER_DECADE = 10
LAT_BINS = 101
# time buckets kept before the bucket width doubles (bounded memory)
MAX_BUCKETS = 600
# error traces a policy set did not keep, listed by ID in the report
MAX_LISTED = 20


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


def read_requests(path: str, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """Encoded requests from one capture file (format auto-detected).
    ``progress(n)`` is told the file bytes consumed after each request."""
    for data, _arrival in read_records(path, progress):
        yield data


def read_records(path: str, progress: Callable[[int], None] | None = None
                 ) -> Iterator[tuple[bytes, float | None]]:
    """(encoded request, its arrival time in s when the capture has it)."""
    tell = progress or (lambda n: None)
    with open(path, "rb") as fh:
        head = fh.read(1)
        fh.seek(0)
        if head in (b"{", b" ", b"\n", b"\r", b"\t"):
            for n, line in enumerate(fh, 1):
                size = len(line)
                line = line.strip()
                if not line:
                    tell(size)
                    continue
                try:
                    req = decode_request(line)
                    arrival = _arrival_s(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not an OTLP JSON request: {exc}") from None
                tell(size)
                yield req, arrival
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
            tell(4 + ln)
            yield body, None


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _max_end_s(data: bytes) -> float | None:
    from ..scan import SPAN_END, scan
    sc = scan(data, frozenset())
    ends = [s[SPAN_END] for s in sc.spans]
    return max(ends) / 1e9 if ends else None


# columns of a time bucket
_T_TRACES, _T_KEPT, _T_SPANS, _T_SPANS_KEPT, _T_ERRORS, _T_ERRORS_KEPT = range(6)


class TimeBuckets:
    """Traces by their start time in buckets of ``width_ns`` (1 s at first,
    doubled whenever more than MAX_BUCKETS exist)."""

    def __init__(self):
        self.width_ns = 1_000_000_000
        self.rows: dict[int, list[int]] = {}

    def add(self, t_ns: int, kept: bool, spans: int, error: bool) -> None:
        k = t_ns // self.width_ns
        row = self.rows.get(k)
        if row is None:
            if len(self.rows) >= MAX_BUCKETS:
                self._coarsen()
                k = t_ns // self.width_ns
                row = self.rows.get(k)
            if row is None:
                row = self.rows[k] = [0, 0, 0, 0, 0, 0]
        row[_T_TRACES] += 1
        row[_T_SPANS] += spans
        if error:
            row[_T_ERRORS] += 1
        if kept:
            row[_T_KEPT] += 1
            row[_T_SPANS_KEPT] += spans
            if error:
                row[_T_ERRORS_KEPT] += 1

    def _coarsen(self) -> None:
        self.width_ns *= 2
        merged: dict[int, list[int]] = {}
        for k, row in self.rows.items():
            m = merged.get(k // 2)
            if m is None:
                merged[k // 2] = list(row)
            else:
                for i, v in enumerate(row):
                    m[i] += v
        self.rows = merged

    def columns(self) -> dict:
        keys = sorted(self.rows)
        col = lambda i: [self.rows[k][i] for k in keys]  # noqa: E731
        return {"bucket_s": self.width_ns / 1e9,
                "start_unix_s": [k * self.width_ns / 1e9 for k in keys],
                "traces": col(_T_TRACES), "traces_kept": col(_T_KEPT),
                "spans": col(_T_SPANS), "spans_kept": col(_T_SPANS_KEPT),
                "error_traces": col(_T_ERRORS), "error_traces_kept": col(_T_ERRORS_KEPT)}


def latency_bin(duration_ns: int) -> int:
    us = duration_ns / 1000.0
    if us < 1.0:
        return 0
    return min(LAT_BINS - 1, int(math.log10(us) * LAT_BINS_PER_DECADE) + 1)


def bin_edges_ms() -> list[float]:
    """Lower edge of every latency bin, in ms (bin 0 is everything under 1 µs)."""
    return [0.0] + [round(10 ** ((i - 1) / LAT_BINS_PER_DECADE) / 1000.0, 9)
                    for i in range(1, LAT_BINS)]


def _quantiles(counts: list[int], edges: list[float]) -> dict:
    """p50/p90/p99 as the upper edge of the bin holding them (resolution:
    one bin, about 26 %)."""
    total = sum(counts)
    out: dict = {}
    for q in (0.5, 0.9, 0.99):
        if not total:
            out[f"p{round(q * 100)}"] = None
            continue
        need, seen = q * total, 0
        for i, c in enumerate(counts):
            seen += c
            if seen >= need:
                hi = edges[i + 1] if i + 1 < len(edges) else edges[-1] * 10 ** (1 / LAT_BINS_PER_DECADE)
                out[f"p{round(q * 100)}"] = round(hi, 6)
                break
    return out


class TraceFact:
    """What a comparison needs of one decided trace."""

    __slots__ = ("kept", "policy", "services", "spans", "span_bytes", "error")

    def __init__(self, kept, policy, services, spans, span_bytes, error):
        self.kept = kept
        self.policy = policy
        self.services = services
        self.spans = spans
        self.span_bytes = span_bytes
        self.error = error


class Recorder:
    """Watches every decision of one pipeline (``Pipeline.observer``)."""

    def __init__(self, entry_header: int = 40):
        self.hdr = entry_header
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.timeline = TimeBuckets()
        self.lat_all = [0] * LAT_BINS
        self.lat_kept = [0] * LAT_BINS
        self.kept_by: dict[tuple[str, str], int] = {}
        self.error_traces = 0
        self.error_traces_kept = 0
        self.errors_not_kept: list[str] = []
        # compare.py sets it: called with (trace_id, TraceFact) per decision
        self.sink: Callable[[bytes, TraceFact], None] | None = None

    def __call__(self, t, trigger: str, dec, out) -> None:
        start, end = t.min_start, t.max_end
        if self.start_ns is None or start < self.start_ns:
            self.start_ns = start
        if self.end_ns is None or end > self.end_ns:
            self.end_ns = end
        kept = dec.sampled
        error = bool(t.status_mask & ERROR_BIT)
        n = t.span_count
        self.timeline.add(start, kept, n, error)
        b = latency_bin(max(0, end - start))
        self.lat_all[b] += 1
        if kept:
            self.lat_kept[b] += 1
            key = (dec.policy, trigger)
            self.kept_by[key] = self.kept_by.get(key, 0) + 1
        if error:
            self.error_traces += 1
            if kept:
                self.error_traces_kept += 1
            elif len(self.errors_not_kept) < MAX_LISTED:
                self.errors_not_kept.append(t.trace_id.hex())
        if self.sink is not None:
            self.sink(t.trace_id, TraceFact(kept, dec.policy, tuple(sorted(t.services)), n,
                                            len(t.data) - self.hdr * n, error))

    @property
    def window_s(self) -> float:
        if self.start_ns is None or self.end_ns is None:
            return 0.0
        return max(0, self.end_ns - self.start_ns) / 1e9


class Run:
    """One policy set over the capture. ``prices``: the config whose
    ``cost`` block prices the bytes (a comparison prices both sets alike)."""

    def __init__(self, cfg: Config, clock: Clock, prices: Config | None = None):
        prices = prices or cfg
        self.cfg = cfg
        self.cost = prices.cost
        self.metrics = Metrics(cfg.telemetry.max_services, prices.cost.usd_per_gib)
        self.sink = _Collect(self.metrics)
        pcfg = cfg if prices is cfg else _with_cost(cfg, prices)
        self.pipeline = Pipeline(pcfg, self.metrics, [self.sink], clock=clock)
        from ..buffer import ENTRY_HDR
        self.recorder = Recorder(ENTRY_HDR)
        self.pipeline.observer = self.recorder
        self.arrivals = 0       # requests with an arrival time

    def report(self, inputs: list[str], invalid_requests: int) -> dict:
        p = self.pipeline
        r = self.recorder
        # the totals, per policy, trigger and service and their cost are the
        # pipeline's Account rendered, as serve's /api/status renders it
        counted = p.account.simulate(p.prices)
        by_pt: dict[str, dict[str, int]] = {}
        for (pol, trig), n in sorted(r.kept_by.items()):
            by_pt.setdefault(pol, {})[trig] = n
        edges = bin_edges_ms()
        per_service_consistency: dict[str, dict[str, float]] = {}
        for key, name in (("orphan_spans", "orphan_spans_total"),
                          ("clock_skew_spans", "clock_skew_spans_total")):
            for labels, v in self.metrics.counts(name):
                if v:
                    per_service_consistency.setdefault(labels["service"], {})[key] = v
        window = r.window_s
        return {
            "inputs": inputs,
            **counted,
            "invalid_requests": invalid_requests,
            "capture": {"start_unix_s": r.start_ns / 1e9 if r.start_ns is not None else None,
                        "end_unix_s": r.end_ns / 1e9 if r.end_ns is not None else None,
                        "seconds": window},
            "kept_by_policy_trigger": by_pt,
            "errors": {"traces": r.error_traces, "kept": r.error_traces_kept,
                       "all_kept": r.error_traces_kept == r.error_traces,
                       "not_kept_trace_ids": list(r.errors_not_kept)},
            "timeline": r.timeline.columns(),
            "latency": {"bin_lower_ms": edges, "all": list(r.lat_all), "kept": list(r.lat_kept),
                        "quantiles_ms": {"all": _quantiles(r.lat_all, edges),
                                         "kept": _quantiles(r.lat_kept, edges)}},
            "consistency": {**self.metrics.consistency(), "per_service": per_service_consistency},
            "forecast": monthly(p.account.usd(p.prices), window, self.cost.monthly_budget_usd,
                                "capture"),
            **({"completion": p.completion.status()} if self.arrivals else {}),
        }


def _with_cost(cfg: Config, prices: Config) -> Config:
    import msgspec
    return msgspec.structs.replace(cfg, cost=prices.cost)


def replay(runs: list[Run], inputs: list[str], clock: Clock,
           progress: Callable[[int], None] | None = None) -> int:
    """Feed every request of ``inputs`` to every run; returns how many
    requests were not decodable (counted once, whichever run saw them)."""
    invalid = 0
    for path in inputs:
        for data, arrival in read_records(path, progress):
            try:
                t = arrival if arrival is not None else _max_end_s(data)
            except ValueError:
                invalid += 1
                continue
            if arrival is not None:
                for r in runs:
                    r.arrivals += 1
            if t is not None and t > clock.now:
                clock.now = t
                for r in runs:
                    r.pipeline.tick()
            bad = False
            for r in runs:
                try:
                    r.pipeline.ingest(data)
                except ValueError:
                    bad = True
            invalid += bad
    for r in runs:
        r.pipeline.tick()
        r.pipeline.drain()
    return invalid


def total_bytes(inputs: list[str]) -> int:
    return sum(os.path.getsize(p) for p in inputs)
