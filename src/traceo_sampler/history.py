"""The running sampler's recent history for the /status page: one point a
second for the last hour, in a bounded ring (3 600 points of 8 numbers, about
1 MB), plus a per-service cost mark every 10 s for the last 10 minutes,
which the live cost forecast projects from.

A point holds rates over the second before it, derived from cumulative
counters, so a missed sample (a busy event loop) widens one interval and
loses nothing.
"""
from __future__ import annotations

import bisect
import collections
import time
from typing import NamedTuple

from .forecast import monthly

COLUMNS = ("t", "spans_in_per_s", "spans_out_per_s", "keep_ratio", "buffer_occupancy",
           "decision_p99_s", "usd_received_per_s", "usd_exported_per_s")


class Counters(NamedTuple):
    """Cumulative figures at one instant (wall-clock ``t``, seconds)."""

    t: float
    spans_in: int
    spans_out: int
    traces_decided: int
    traces_kept: int
    buffer_occupancy: float
    latency_buckets: tuple[tuple[float, float], ...]   # (upper bound, cumulative count)
    usd_received: float
    usd_exported: float
    usd_by_service: dict[str, tuple[float, float]]


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over (upper bound, cumulative count)
    pairs: linear inside the bucket holding the q-th observation; None with
    no observations. Past the last finite bound, that bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    i = bisect.bisect_left([c for _, c in buckets], rank)
    i = min(i, len(buckets) - 1)
    hi, c_hi = buckets[i]
    if hi == float("inf"):
        return buckets[i - 1][0] if i > 0 else None
    lo, c_lo = (buckets[i - 1] if i > 0 else (0.0, 0.0))
    if c_hi == c_lo:
        return hi
    return lo + (hi - lo) * (rank - c_lo) / (c_hi - c_lo)


def histogram_buckets(hist) -> tuple[tuple[float, float], ...]:
    """(upper bound, cumulative count) of a label-less prometheus Histogram."""
    return tuple((float(s.labels["le"]), s.value) for fam in hist.collect()
                 for s in fam.samples if s.name.endswith("_bucket"))


def counters_from_json(d: dict) -> Counters:
    """Counters as a worker's ``/api/counters`` sends them (JSON lists)."""
    return Counters(d["t"], d["spans_in"], d["spans_out"], d["traces_decided"], d["traces_kept"],
                    d["buffer_occupancy"], tuple((le, n) for le, n in d["latency_buckets"]),
                    d["usd_received"], d["usd_exported"],
                    {svc: (i, o) for svc, (i, o) in d["usd_by_service"].items()})


def merge_counters(parts: list[Counters], label=None) -> Counters:
    """The sum of several workers' Counters (service.workers' group history):
    counts, costs and latency buckets added, the buffer occupancy the mean
    (each worker has an equal share of the memory limit); ``label`` maps a
    service to the group's label (telemetry.max_services)."""
    buckets: dict[float, float] = {}
    by: dict[str, tuple[float, float]] = {}
    for c in parts:
        for le, n in c.latency_buckets:
            buckets[le] = buckets.get(le, 0) + n
        for svc, (i, o) in c.usd_by_service.items():
            key = label(svc) if label is not None else svc
            i0, o0 = by.get(key, (0.0, 0.0))
            by[key] = (i0 + i, o0 + o)
    occ = [c.buffer_occupancy for c in parts]
    return Counters(time.time(), sum(c.spans_in for c in parts), sum(c.spans_out for c in parts),
                    sum(c.traces_decided for c in parts), sum(c.traces_kept for c in parts),
                    sum(occ) / len(occ) if occ else 0.0, tuple(sorted(buckets.items())),
                    sum(c.usd_received for c in parts), sum(c.usd_exported for c in parts), by)


class History:
    def __init__(self, seconds: float = 3600, interval: float = 1.0,
                 cost_every: float = 10.0, cost_window: float = 600.0):
        self.interval = interval
        self.window = seconds
        self.points: collections.deque = collections.deque(maxlen=int(seconds / interval))
        self._last: Counters | None = None
        self.cost_every = cost_every
        self._marks: collections.deque = collections.deque(maxlen=int(cost_window / cost_every) + 1)

    def sample(self, c: Counters) -> None:
        last = self._last
        self._last = c
        if not self._marks or c.t - self._marks[-1][0] >= self.cost_every - 1e-6:
            self._marks.append((c.t, c.usd_by_service))
        if last is None:
            return
        dt = c.t - last.t
        if dt <= 0:
            return
        decided = c.traces_decided - last.traces_decided
        lat = [(le, n - n0) for (le, n), (_, n0) in zip(c.latency_buckets, last.latency_buckets)]
        p99 = quantile(lat, 0.99)
        self.points.append((
            round(c.t, 3),
            round((c.spans_in - last.spans_in) / dt, 2),
            round((c.spans_out - last.spans_out) / dt, 2),
            round((c.traces_kept - last.traces_kept) / decided, 4) if decided > 0 else None,
            round(c.buffer_occupancy, 4),
            round(p99, 6) if p99 is not None else None,
            (c.usd_received - last.usd_received) / dt,
            (c.usd_exported - last.usd_exported) / dt,
        ))

    def since(self, t: float = 0.0) -> dict:
        """The points newer than ``t`` (all with 0), as columns + rows."""
        pts = self.points
        if t > 0 and pts:
            # points are in time order: skip from the right end
            i = len(pts)
            while i > 0 and pts[i - 1][0] > t:
                i -= 1
            rows = [pts[j] for j in range(i, len(pts))]
        else:
            rows = list(pts)
        return {"columns": list(COLUMNS), "interval_s": self.interval, "window_s": self.window,
                "points": rows}

    def forecast(self, budget_usd: float) -> dict:
        """Monthly cost per service at the rate of the last cost window."""
        if len(self._marks) < 2:
            return monthly({}, 0.0, budget_usd, "live")
        (t0, first), (t1, now) = self._marks[0], self._marks[-1]
        zero = (0.0, 0.0)
        deltas = {svc: (i - first.get(svc, zero)[0], o - first.get(svc, zero)[1])
                  for svc, (i, o) in now.items()}
        return monthly(deltas, t1 - t0, budget_usd, "live")
