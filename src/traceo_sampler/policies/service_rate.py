"""``service_rate`` (ours): a sampling percentage per service, with an
optional spans/s cap, and a ``default`` for services not listed.

```yaml
service_rate:
  match: any_span            # or root
  services:
    checkout: {sampling_percentage: 50, spans_per_second: 2000}
    search:   {sampling_percentage: 5}
  default: {sampling_percentage: 10}
```

Which services a trace belongs to: with ``match: any_span`` (default) the
``service.name`` of every span (``trace.services``), with ``match: root``
only the root span's (a trace whose root has not arrived counts as
unlisted). Each of those services applies its entry (an unlisted one the
``default``; without ``default`` unlisted services are left to other
policies) and the trace is kept when any of them keeps it — consistently,
so the most permissive one decides: kept iff ``R >= min T``, recording that
T.

An entry's threshold: ``sampling_percentage`` as ``probabilistic``; with
``spans_per_second`` the spans arriving for that entry (every trace it
applies to) are measured and its probability lowered to
``min(percentage, spans_per_second / arriving)`` — a consistent limiter as
in _limiting.py, with a token bucket of ``burst_capacity`` (default twice
the cap) on top. ``default`` has one budget shared by all unlisted
services.
"""
from __future__ import annotations

import time
from typing import Literal

import msgspec

from ..cfgtypes import NonNeg, Percent, _Base

from ..tracestate import threshold_for_percentage
from ._limiting import Limiter, incoming_threshold
from .base import NO, SAMPLED

TYPE = "service_rate"


class ServiceRateEntry(_Base):
    # share of the service's traces kept, consistently (as probabilistic)
    sampling_percentage: Percent = 100
    spans_per_second: NonNeg | None = None    # omitted: no cap
    burst_capacity: NonNeg | None = None      # default: 2 x spans_per_second


class ServiceRateCfg(_Base):
    # per service.name: its sampling_percentage, optional spans_per_second cap and
    # burst_capacity
    services: dict[str, ServiceRateEntry] = msgspec.field(default_factory=dict)
    # unlisted services; omitted: this policy does not sample them
    default: ServiceRateEntry | None = None
    # any_span: a trace belongs to the service of every span; root: to its root span's
    # service only
    match: Literal["any_span", "root"] = "any_span"


Config = ServiceRateCfg


def precheck(raw, path: str, problems: list[str], convert) -> bool:
    """Entries one by one first: msgspec names a bad dict entry
    "services[...]", this names the service."""
    ok = True
    if isinstance(raw, dict) and isinstance(raw.get("services"), dict):
        for svc, entry in raw["services"].items():
            if convert(entry, ServiceRateEntry, f"{path}.services.{svc}", problems) is None:
                ok = False
    return ok


class _Rule:
    __slots__ = ("t_pct", "limiter")

    def __init__(self, entry):
        self.t_pct = threshold_for_percentage(entry.sampling_percentage)
        self.limiter = (Limiter(entry.spans_per_second, entry.burst_capacity)
                        if entry.spans_per_second is not None else None)

    def threshold(self, cost: int, now: float, t_up: int) -> int:
        t = self.t_pct
        if self.limiter is not None:
            tc = self.limiter.threshold(cost, now, t_up)
            if tc > t:
                t = tc
        return t


class ServiceRate:
    def __init__(self, name, services: dict, default=None, match="any_span",
                 clock=time.monotonic):
        self.name = name
        self.rules = {s: _Rule(e) for s, e in services.items()}
        self.default = _Rule(default) if default is not None else None
        self.root_only = match == "root"
        self.clock = clock

    def attribute_keys(self) -> set[str]:
        return set()

    def _matched(self, trace) -> list[_Rule]:
        if self.root_only:
            svcs = (trace.root_service,) if trace.root_seen and trace.root_service else ()
        else:
            svcs = trace.services
        out: list[_Rule] = []
        unlisted = not svcs
        for s in svcs:
            r = self.rules.get(s)
            if r is None:
                unlisted = True
            elif r not in out:
                out.append(r)
        if unlisted and self.default is not None:
            out.append(self.default)
        return out

    def evaluate(self, trace):
        return self.evaluate_after(trace, 0)

    def evaluate_after(self, trace, t_in):
        rules = self._matched(trace)
        if not rules:
            return NO
        now = self.clock()
        cost = trace.span_count
        t_up = incoming_threshold(trace, t_in)
        cands = sorted(((r.threshold(cost, now, t_up), i) for i, r in enumerate(rules)))
        r_val = trace.randomness
        for t, i in cands:
            if r_val < t:
                break
            lim = rules[i].limiter
            if lim is None or lim.take(cost, now):
                return (SAMPLED, t)
        return NO


def build(cfg, build_sub, clock=None):
    c = cfg.service_rate
    return ServiceRate(cfg.name, c.services, c.default, c.match, clock or time.monotonic)
