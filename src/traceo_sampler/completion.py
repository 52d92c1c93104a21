"""When a trace is complete, fitted to how its senders deliver (docs/design.md §2).

SDKs batch: the OpenTelemetry SDK's BatchSpanProcessor sends what ended in
the last 5 s, each process on its own timer, so the spans of one trace reach
the sampler spread over several seconds, and a downstream service's batch
can arrive well after the root's. This module measures that spread and sets
the waits from it:

* **Lags.** The buffer counts, per span, how long after its trace's first
  span and after its root it arrived (``TraceBuffer.take_lags``); late spans
  (after the decision) are added here from a small table of recently
  decided traces (``_probe``). Both go to ``span_arrival_lag_seconds``.
* **Learned waits** (``root_wait: auto``, ``idle_timeout: auto``). Each
  decided trace is one observation: its *tail* (last arrival minus root
  arrival) for root_wait, its longest gap between two arrivals for
  idle_timeout; a late span replaces the censored value of its trace by the
  lag it really had (once per trace). Observations go into log buckets (5 %
  wide) over a sliding window of ``auto_wait.window`` in ten slices, per
  root service and for all. Every ``_ADJUST`` seconds the wait becomes
  quantile × (1 + headroom) within [floor, decision_wait] — per root service
  with ``min_traces`` observations in the window, else the default's — and
  moves toward it: up by half the distance, down by a tenth, not at all
  within 5 %, so it settles instead of oscillating. Before there is data
  the initial values hold (6 s / 10 s: safe for a 5 s export delay).
* **Late spans that would have changed a decision.** A late span of a trace
  decided not sampled that is an error (a ``status_code`` policy asks for
  it) or makes the trace's duration pass a ``latency`` policy's threshold
  is counted in ``late_spans_would_change_total``: the waits are too short.
* **Dropped grace** (``sampler.dropped_grace``, off by default). Traces
  decided not sampled keep their spans for ``duration`` within ``max_bytes``
  (oldest released first); late spans of such a trace are held with it, and
  one that would change the decision brings the whole trace back to the
  pipeline, which decides it again and exports it as one kept trace.
"""
from __future__ import annotations

import collections
import math
from bisect import bisect_left

from .buffer import (
    LATE_DROPPED_END, LATE_DROPPED_SERVICE, LATE_DROPPED_SPAN, LATE_DROPPED_START,
    LATE_DROPPED_STATUS, LATE_DROPPED_TRACE_ID, LATE_KEPT_SERVICE, LATE_KEPT_TRACE_ID, NLAG,
    lag_bucket,
)
from .config import timers
from .policies.latency import Latency
from .policies.status_code import StatusCode

# Estimator buckets: upper bounds BASE * RATIO**i.
_BASE = 0.001
_RATIO = 1.05
_LOG_RATIO = math.log(_RATIO)
_SLICES = 10
_ADJUST = 5.0             # seconds between wait adjustments
_DEAD_BAND = 0.05         # relative change below which a wait stays put
_UP, _DOWN = 0.5, 0.1     # share of the distance moved per adjustment
_FOLD = 1.0               # seconds between lag folds into the metric
# Recently decided traces remembered for their late spans' lags: bounded,
# oldest first out, and never older than decision_wait.
PROBE_MAX = 65536
ALL = "*"


def _upper(i: int) -> float:
    return _BASE * _RATIO ** i


# upper bounds of the estimator buckets, 1 ms .. ~2 days
_BOUNDS = [_upper(i) for i in range(int(math.log(2e5 / _BASE) / _LOG_RATIO) + 2)]


def _bucket(x: float) -> int:
    return bisect_left(_BOUNDS, x)


class Window:
    """Counts per log bucket over a sliding window of ``_SLICES`` slices;
    ``cur`` is the newest slice (bucket -> count), added to directly."""

    __slots__ = ("slices", "cur")

    def __init__(self):
        self.cur: dict[int, int] = {}
        self.slices: collections.deque = collections.deque([self.cur])

    def add(self, x: float) -> None:
        cur = self.cur
        b = bisect_left(_BOUNDS, x)
        cur[b] = cur.get(b, 0) + 1

    @property
    def total(self) -> int:
        return sum(sum(sl.values()) for sl in self.slices)

    def rotate(self) -> None:
        self.cur = {}
        self.slices.append(self.cur)
        while len(self.slices) > _SLICES:
            self.slices.popleft()

    def merged(self, into: dict[int, int] | None = None) -> dict[int, int]:
        out = {} if into is None else into
        for sl in self.slices:
            for b, n in sl.items():
                out[b] = out.get(b, 0) + n
        return out

    def quantile(self, q: float) -> float | None:
        return _quantile(self.merged(), q)


def _quantile(merged: dict[int, int], q: float) -> float | None:
    total = sum(merged.values())
    if not total:
        return None
    need, acc = q * total, 0
    for b in sorted(merged):
        acc += merged[b]
        if acc >= need:
            return _BOUNDS[b] if b < len(_BOUNDS) else _BOUNDS[-1]
    return _BOUNDS[min(max(merged), len(_BOUNDS) - 1)]


def _move_obs(old: dict | None, ob: int, w: Window, x: float) -> tuple[dict, int]:
    """Take one observation back from bucket ``ob`` of slice ``old`` (a
    slice that left the window takes nothing back from it) and add ``x``
    to the newest slice; returns where it went."""
    if old is not None and old.get(ob, 0) > 0:
        old[ob] -= 1
    cur = w.cur
    b = bisect_left(_BOUNDS, x)
    cur[b] = cur.get(b, 0) + 1
    return cur, b


def late_criteria(policies) -> tuple[int, list[tuple[int, int]]]:
    """(status mask, [(threshold_ms, upper_ms)]) of the top-level
    ``status_code`` and ``latency`` policies: what a late span must show to
    have changed a not-sampled decision."""
    mask = 0
    lat: list[tuple[int, int]] = []
    for p in policies:
        if isinstance(p, StatusCode):
            mask |= p.mask
        elif isinstance(p, Latency):
            lat.append((p.threshold_ms, p.upper_ms))
    return mask, lat


def _latency_hit(lat, ms: int) -> bool:
    for th, up in lat:
        if (th < ms <= up) if up else ms >= th:
            return True
    return False


class Completion:
    def __init__(self, sampler, buffer, metrics, policies, now: float):
        self.buffer = buffer
        self.metrics = metrics
        self._init_timers(sampler)
        buffer.root_wait = self.initial[0] if self.auto_root else self.fixed[0]
        buffer.idle_timeout = self.initial[1] if self.auto_idle else self.fixed[1]
        buffer.late_detail = True
        # root service label ("" for traces without a root) ->
        # (root tail window, gap window)
        self.windows: dict[str, tuple[Window, Window]] = {}
        self._labels: dict[str, str] = {}       # root service -> its label
        self.service_waits: dict[str, tuple[float, float]] = {}
        # trace_id -> [root service label, first, root (-1: none), last
        #  arrival, min_start, max_end, decided at, tail slice, tail bucket,
        #  gap slice, gap bucket], oldest first
        # (an OrderedDict: popping a plain dict's oldest entries again and
        # again makes finding the next one linear)
        self._probe: collections.OrderedDict[bytes, list] = collections.OrderedDict()
        self._late_seen: set[bytes] = set()     # probed traces with a late span
        # trace_id -> [trace, decision, decided at, bytes, late span items]
        self.grace: collections.OrderedDict[bytes, list] = collections.OrderedDict()
        self.grace_bytes = 0
        self.rescued = 0
        self.would_change = 0
        self.set_policies(policies)
        self._slice_at = self._adjust_at = self._fold_at = now
        # late-span lags not yet folded: service -> [first counts, root counts, sums]
        self._late_lags: dict[str, list] = {}
        self._publish()

    def set_policies(self, policies) -> None:
        self.mask, self.latency = late_criteria(policies)

    def reload(self, sampler) -> None:
        """A new config's timers: fixed ones apply now, auto ones keep what
        was learned."""
        was_root, was_idle = self.auto_root, self.auto_idle
        self._init_timers(sampler)
        b = self.buffer
        if not self.auto_root:
            b.root_wait = self.fixed[0]
        elif not was_root:
            b.root_wait = self.initial[0]
        if not self.auto_idle:
            b.idle_timeout = self.fixed[1]
        elif not was_idle:
            b.idle_timeout = self.initial[1]
        for svc, (rw, it) in self.service_waits.items():
            b.set_waits(svc, b.root_wait if not self.auto_root else rw,
                        b.idle_timeout if not self.auto_idle else it)
        self._publish()

    def _init_timers(self, sampler) -> None:
        g = sampler.dropped_grace
        self.grace_s = g.duration.seconds if g is not None else 0.0
        self.grace_max = g.max_bytes if g is not None else 0
        a = sampler.auto_wait
        dw, rw, it = timers(sampler)
        # Collector semantics runs the Collector's fixed timers
        collector = sampler.semantics == "collector"
        self.auto_root = sampler.root_wait.auto and not collector
        self.auto_idle = sampler.idle_timeout.auto and not collector
        self.fixed = (rw, it)
        self.quantile, self.headroom = a.quantile, a.headroom
        self.floor, self.min_traces = a.floor.seconds, a.min_traces
        self.cap = dw
        self.slice_s = a.window.seconds / _SLICES
        self.initial = (min(a.initial_root_wait.seconds, self.cap),
                        min(a.initial_idle_timeout.seconds, self.cap))

    # ------------------------------------------------------------ observations
    def _windows(self, key: str) -> tuple[Window, Window]:
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = (Window(), Window())
        return w

    def decided(self, items, now: float) -> None:
        """The traces of one decision round ``[(trace, trigger)]``: their
        observations (the window of their root service; "" for traces
        without a root) and their probe entries."""
        probe = self._probe
        windows = self.windows
        labels = self._labels
        bounds = _BOUNDS
        for t, _trigger in items:
            if t.root_seen:
                svc = t.root_service
                key = labels.get(svc)
                if key is None:
                    key = labels[svc] = self.metrics.service(svc)
                root = t.root_arrival
            else:
                key = ""
                root = -1.0
            ws = windows.get(key)
            if ws is None:
                ws = windows[key] = (Window(), Window())
            gcur = ws[1].cur
            gb = bisect_left(bounds, t.max_gap)
            gcur[gb] = gcur.get(gb, 0) + 1
            tcur, tb = None, 0
            if root >= 0:
                tcur = ws[0].cur
                tb = bisect_left(bounds, t.last_arrival - root)
                tcur[tb] = tcur.get(tb, 0) + 1
            # where its observations went, for a late span to correct them
            probe[t.trace_id] = [key, t.first_arrival, root, t.last_arrival,
                                 t.min_start, t.max_end, now, tcur, tb, gcur, gb]
        while len(probe) > PROBE_MAX:
            self._late_seen.discard(probe.popitem(last=False)[0])

    def _late_lag(self, svc: str, tid: bytes, p, now: float) -> None:
        row = self._late_lags.get(svc)
        if row is None:
            row = self._late_lags[svc] = [[0] * NLAG, [0] * NLAG, 0.0, 0.0]
        lag = now - p[1]
        if lag > 0.0:
            row[0][lag_bucket(lag)] += 1
            row[2] += lag
        lag = now - p[2]
        if p[2] >= 0 and lag > 0.0:
            row[1][lag_bucket(lag)] += 1
            row[3] += lag
        # The trace's observations were censored by its decision: they
        # become what this span shows (moved, not added: one per trace) --
        # the gap once, with the first late span, the tail whenever a late
        # span comes later than the one before.
        ws = self.windows.get(p[0])
        if ws is None:
            ws = self.windows[p[0]] = (Window(), Window())
        if tid not in self._late_seen:
            self._late_seen.add(tid)
            p[9], p[10] = _move_obs(p[9], p[10], ws[1], now - p[3])
        if p[2] >= 0:
            b = bisect_left(_BOUNDS, now - p[2])
            if p[7] is None or b > p[8]:
                p[7], p[8] = _move_obs(p[7], p[8], ws[0], now - p[2])

    def late(self, res, now: float) -> list[tuple]:
        """The late spans of one ingest: lags, would-change counts, grace.
        Returns the traces brought back from the grace: [(trace, late span
        items)], to be decided again."""
        probe = self._probe
        m = self.metrics
        for it in res.late_kept:
            p = probe.get(it[LATE_KEPT_TRACE_ID])
            if p is not None:
                self._late_lag(m.service(it[LATE_KEPT_SERVICE]), it[LATE_KEPT_TRACE_ID], p, now)
        rescued = []
        mask, lat = self.mask, self.latency
        changed: dict[tuple[str, str], int] = {}
        for it in res.late_dropped_spans:
            tid, svc, code = it[LATE_DROPPED_TRACE_ID], it[LATE_DROPPED_SERVICE], it[LATE_DROPPED_STATUS]
            start, end = it[LATE_DROPPED_START], it[LATE_DROPPED_END]
            label = m.service(svc)
            p = probe.get(tid)
            if p is not None:
                self._late_lag(label, tid, p, now)
            g = self.grace.get(tid)
            if g is not None:
                g[4].append(it)
                g[3] += len(it[LATE_DROPPED_SPAN])
                self.grace_bytes += len(it[LATE_DROPPED_SPAN])
            reason = None
            if 0 <= code < 32 and mask & (1 << code):
                reason = "error"
            elif lat:
                lo, hi = start, end
                if p is not None:
                    lo, hi = min(lo, p[4]), max(hi, p[5])
                if _latency_hit(lat, (hi - lo) // 1_000_000):
                    reason = "latency"
            if reason is None:
                continue
            changed[(label, reason)] = changed.get((label, reason), 0) + 1
            if g is not None:
                del self.grace[tid]
                self.grace_bytes -= g[3]
                rescued.append((g[0], g[4]))
        for key, n in changed.items():
            self.would_change += n
            m.late_spans_would_change_total.labels(*key).inc(n)
        return rescued

    # ------------------------------------------------------------ grace
    @property
    def grace_enabled(self) -> bool:
        return self.grace_max > 0

    def hold(self, t, decision, now: float) -> list:
        """Keep a not-sampled trace in the grace; returns the entries pushed
        out to make room (``[trace, decision, ...]``), to be finished."""
        nb = t.nbytes
        out = []
        if nb > self.grace_max:
            return [[t, decision, now, nb, []]]
        while self.grace and self.grace_bytes + nb > self.grace_max:
            out.append(self._pop_oldest())
        self.grace[t.trace_id] = [t, decision, now, nb, []]
        self.grace_bytes += nb
        return out

    def _pop_oldest(self) -> list:
        g = self.grace.popitem(last=False)[1]
        self.grace_bytes -= g[3]
        return g

    def expired(self, now: float, everything: bool = False) -> list:
        """Grace entries whose time is up (all of them with ``everything``,
        or once a reload turned the grace off)."""
        everything = everything or not self.grace_max
        out = []
        while self.grace:
            g = next(iter(self.grace.values()))
            if not everything and now - g[2] < self.grace_s:
                break
            out.append(self._pop_oldest())
        return out

    # ------------------------------------------------------------ periodic
    def tick(self, now: float) -> None:
        if now - self._fold_at >= _FOLD:
            self._fold_at = now
            self.fold()
        if now - self._slice_at >= self.slice_s:
            self._slice_at = now
            for ws in self.windows.values():
                ws[0].rotate()
                ws[1].rotate()
            self._expire_probe(now)
        if now - self._adjust_at >= _ADJUST:
            self._adjust_at = now
            self.adjust()

    def _expire_probe(self, now: float) -> None:
        probe = self._probe
        horizon = now - self.cap
        while probe:
            tid = next(iter(probe))
            if probe[tid][6] >= horizon:
                break
            del probe[tid]
            self._late_seen.discard(tid)

    def fold(self) -> None:
        """Hand the lag counts gathered since the last fold to the metric."""
        h = self.metrics.span_arrival_lag_seconds
        svc_label = self.metrics.service
        rows: dict[str, list] = {}
        for src in (self.buffer.take_lags(), self._late_lags):
            for svc, (c1, c2, s1, s2) in src.items():
                label = svc if src is self._late_lags else svc_label(svc)
                row = rows.get(label)
                if row is None:
                    rows[label] = [list(c1), list(c2), s1, s2]
                else:
                    for i in range(NLAG):
                        row[0][i] += c1[i]
                        row[1][i] += c2[i]
                    row[2] += s1
                    row[3] += s2
        self._late_lags = {}
        for label, (c1, c2, s1, s2) in rows.items():
            if any(c1):
                h.add((label, "first"), c1, s1)
            if any(c2):
                h.add((label, "root"), c2, s2)

    def _target(self, merged: dict[int, int], floor: float) -> float | None:
        if sum(merged.values()) < self.min_traces:
            return None
        q = _quantile(merged, self.quantile)
        return min(self.cap, max(floor, q * (1 + self.headroom)))

    @staticmethod
    def _move(cur: float, target: float | None) -> float:
        if target is None or abs(target - cur) <= _DEAD_BAND * cur:
            return cur
        return cur + (_UP if target > cur else _DOWN) * (target - cur)

    def adjust(self) -> None:
        """Move the auto waits toward what the window says."""
        b = self.buffer
        # the default learns from all traffic
        all_tail: dict[int, int] = {}
        all_gap: dict[int, int] = {}
        for ws in self.windows.values():
            ws[0].merged(all_tail)
            ws[1].merged(all_gap)
        if self.auto_root:
            b.root_wait = self._move(b.root_wait, self._target(all_tail, self.floor))
        if self.auto_idle:
            b.idle_timeout = self._move(b.idle_timeout, self._target(all_gap, self.floor))
        for svc, ws in self.windows.items():
            if not svc:
                continue
            cur = self.service_waits.get(svc)
            t_root = self._target(ws[0].merged(), self.floor) if self.auto_root else None
            t_idle = self._target(ws[1].merged(), self.floor) if self.auto_idle else None
            if cur is None:
                if t_root is None and t_idle is None:
                    continue
                # a service's own waits start from the default's
                cur = (b.root_wait, b.idle_timeout)
            rw = self._move(cur[0], t_root) if self.auto_root else b.root_wait
            it = self._move(cur[1], t_idle) if self.auto_idle else b.idle_timeout
            self.service_waits[svc] = (rw, it)
            b.set_waits(svc, rw, it)
        self._publish()

    def _publish(self) -> None:
        g = self.metrics.completion_wait_seconds
        b = self.buffer
        g.labels(ALL, "root").set(b.root_wait)
        g.labels(ALL, "idle").set(b.idle_timeout)
        for svc, (rw, it) in self.service_waits.items():
            g.labels(svc, "root").set(rw)
            g.labels(svc, "idle").set(it)
        self.metrics.dropped_grace_bytes.set(self.grace_bytes)
        self.metrics.dropped_grace_traces.set(len(self.grace))

    # ------------------------------------------------------------ status
    def status(self) -> dict:
        b = self.buffer
        h = self.metrics.span_arrival_lag_seconds
        lags: dict[str, dict] = {}
        for (svc, since), (counts, total) in sorted(h.children().items()):
            n = sum(counts)
            # JSON has no infinity: past the last bucket reads "+Inf"
            p50, p99, p999 = (x if x != math.inf else "+Inf"
                              for x in h.quantiles((svc, since), (0.5, 0.99, 0.999)))
            lags.setdefault(svc, {})[since] = {
                "spans": n, "mean_s": round(total / n, 4) if n else 0.0,
                "p50_le_s": p50, "p99_le_s": p99, "p999_le_s": p999}
        per_service = {}
        for svc, ws in sorted(self.windows.items()):
            svc = svc or "(no root)"
            entry = {"traces_in_window": ws[1].total,
                     "tail_quantile_s": _round(ws[0].quantile(self.quantile)),
                     "gap_quantile_s": _round(ws[1].quantile(self.quantile))}
            if svc in self.service_waits:
                rw, it = self.service_waits[svc]
                entry.update(root_wait_s=round(rw, 3), idle_timeout_s=round(it, 3))
            per_service[svc] = entry
        return {
            "root_wait": {"mode": "auto" if self.auto_root else "fixed",
                          "seconds": round(b.root_wait, 3)},
            "idle_timeout": {"mode": "auto" if self.auto_idle else "fixed",
                             "seconds": round(b.idle_timeout, 3)},
            "quantile": self.quantile,
            "per_root_service": per_service,
            "arrival_lag": lags,
            "late_spans_would_change": self.would_change,
            "dropped_grace": {"enabled": self.grace_enabled, "traces": len(self.grace),
                              "bytes": self.grace_bytes, "max_bytes": self.grace_max,
                              "rescued": self.rescued},
        }


def _round(x):
    return round(x, 3) if x is not None else None


class Merged:
    """A held trace's summary with its late spans merged in, for deciding it
    again (the late spans' attributes are not known: only status, times and
    service)."""

    __slots__ = ("trace_id", "span_count", "min_start", "max_end", "status_mask",
                 "root_seen", "services", "attrs", "randomness", "root_name",
                 "root_service", "trace_state")

    def __init__(self, t, late):
        self.trace_id = t.trace_id
        self.span_count = t.span_count + len(late)
        self.min_start = t.min_start
        self.max_end = t.max_end
        self.status_mask = t.status_mask
        self.services = set(t.services)
        for it in late:
            if it[LATE_DROPPED_START] < self.min_start:
                self.min_start = it[LATE_DROPPED_START]
            if it[LATE_DROPPED_END] > self.max_end:
                self.max_end = it[LATE_DROPPED_END]
            code = it[LATE_DROPPED_STATUS]
            if 0 <= code < 32:
                self.status_mask |= 1 << code
            self.services.add(it[LATE_DROPPED_SERVICE])
        self.root_seen = t.root_seen
        self.attrs = t.attrs
        self.randomness = t.randomness
        self.root_name = t.root_name
        self.root_service = t.root_service
        self.trace_state = t.trace_state
