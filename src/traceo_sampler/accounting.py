"""What the sampler counted, in one object, and every view of it.

A :class:`Pipeline` keeps one :class:`Account`; ``/api/status`` (and so the
``/status`` page), the shutdown summary and ``simulate``'s report all render
it (:meth:`Account.status`, :meth:`Account.simulate`), so the totals shown in
those places are the same fields put through the same arithmetic and cannot
disagree. With ``service.workers`` > 1 the supervisor reads each worker's
status back into an Account (:meth:`Account.from_status`, the inverse of the
rendering), merges them (:meth:`Account.merge`) and renders the group's the
same way.

Invariants the views rely on (tests/unit/test_accounting.py):
``traces_kept + traces_not_kept == decided`` (a trace the dropped grace
brings back moves from not kept to kept), the triggers sum to ``decided``,
and the per-service rows sum to the totals: spans exported == spans kept at
decision + late spans forwarded.

Hot-path cost: the pipeline hands over one decision batch's counts at once
(:meth:`Account.decisions`), not one call per trace; the per-service rows
change once per request and once per export item.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Iterable

import msgspec

from .tracestate import decode_th, encode_th

# the last kept traces kept for /api/status (recent_kept)
RECENT = 50
ERROR_BIT = 1 << 2          # status code ERROR in Trace.status_mask

# outcome labels of a decision (as in traceo_sampler_traces_decided_total)
SAMPLED = "sampled"


class Prices:
    """Dollars per byte by service label (``cost`` block)."""

    __slots__ = ("usd_per_gib", "_per_byte", "_overrides")

    def __init__(self, usd_per_gib: float, per_service: dict[str, float] | None = None):
        self.usd_per_gib = usd_per_gib
        self._per_byte = usd_per_gib / float(1 << 30)
        self._overrides = {svc: usd / float(1 << 30) for svc, usd in (per_service or {}).items()}

    @classmethod
    def of(cls, cost) -> Prices:
        """From a config's ``cost`` block."""
        return cls(cost.usd_per_gib, cost.per_service)

    def per_byte(self, service: str) -> float:
        return self._overrides.get(service, self._per_byte)


class ServiceRow(msgspec.Struct, gc=False):
    """One service label's spans and bytes: received, and of those the
    exported ones (bytes as received, so exported <= received)."""

    spans_received: int = 0
    bytes_received: int = 0
    spans_exported: int = 0
    bytes_exported: int = 0

    def add(self, other: ServiceRow) -> None:
        self.spans_received += other.spans_received
        self.bytes_received += other.bytes_received
        self.spans_exported += other.spans_exported
        self.bytes_exported += other.bytes_exported


class Kept(msgspec.Struct, gc=False):
    """One kept trace as ``recent_kept`` lists it, stored raw (rendered only
    when a view asks: a kept trace costs one of these, no formatting)."""

    trace_id: bytes
    policy: str
    trigger: str
    spans: int
    services: Iterable[str]       # its service names (a dict's keys will do)
    threshold: int
    at: float                     # unix seconds it was kept
    root_service: str
    root_name: str
    duration_ns: int
    status_mask: int

    def render(self) -> dict:
        return {"trace_id": self.trace_id.hex(), "policy": self.policy, "trigger": self.trigger,
                "spans": self.spans, "services": sorted(self.services),
                "threshold": encode_th(self.threshold), "at": self.at,
                "root": f"{self.root_service} {self.root_name}".strip(),
                "duration_ms": round(max(0, self.duration_ns) / 1e6, 3),
                "error": bool(self.status_mask & ERROR_BIT)}

    @classmethod
    def parse(cls, d: dict) -> Kept:
        """The inverse of :meth:`render` (``render(parse(x)) == x``)."""
        th = decode_th(d.get("threshold", "0"))
        return cls(bytes.fromhex(d.get("trace_id", "")), d.get("policy", ""),
                   d.get("trigger", ""), d.get("spans", 0), tuple(d.get("services", ())),
                   th if th is not None else 0, d.get("at", 0.0), d.get("root", ""), "",
                   round(d.get("duration_ms", 0.0) * 1e6), ERROR_BIT if d.get("error") else 0)


def _ratio(a: float, b: float, nd: int = 4) -> float:
    return round(a / b, nd) if b else 0.0


def _add_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for k, n in other.items():
        into[k] = into.get(k, 0) + n


class Account:
    """The running totals of one pipeline (or, merged, of a group)."""

    __slots__ = ("decided", "traces_kept", "traces_not_kept", "spans_received", "bytes_received",
                 "spans_kept", "late_kept", "late_dropped", "by_trigger", "by_policy",
                 "services", "recent")

    # the /api/status keys this object renders (workers.merge_status merges
    # the rest of a status generically)
    STATUS_KEYS = frozenset((
        "spans_received", "bytes_received", "spans_kept", "traces_decided", "traces_kept",
        "traces_not_kept", "keep_ratio_traces", "keep_ratio_spans", "kept_by_policy",
        "decisions_by_trigger", "late_spans", "services", "cost", "recent_kept"))

    def __init__(self) -> None:
        self.decided = 0
        self.traces_kept = 0
        self.traces_not_kept = 0
        self.spans_received = 0
        self.bytes_received = 0
        # spans of kept traces as decided (rescued ones included); the late
        # spans forwarded after a keep decision are late_kept
        self.spans_kept = 0
        self.late_kept = 0
        self.late_dropped = 0
        self.by_trigger: dict[str, int] = {}
        self.by_policy: dict[str, int] = {}      # kept traces by policy
        self.services: dict[str, ServiceRow] = {}
        # the last kept traces, newest last
        self.recent: collections.deque[Kept] = collections.deque(maxlen=RECENT)

    # ------------------------------------------------------------ counting
    def service(self, label: str) -> ServiceRow:
        row = self.services.get(label)
        if row is None:
            row = self.services[label] = ServiceRow()
        return row

    def received(self, spans: int, nbytes: int) -> None:
        self.spans_received += spans
        self.bytes_received += nbytes

    def decisions(self, counts: dict[tuple[str, str, str], int], spans_kept: int) -> None:
        """One batch of decisions: ``counts`` by (outcome, policy, trigger),
        outcome ``sampled``, ``not_sampled`` or ``dropped`` (the keys of
        traceo_sampler_traces_decided_total); ``spans_kept``: the kept
        traces' spans."""
        by_trigger = self.by_trigger
        by_policy = self.by_policy
        for (outcome, policy, trigger), n in counts.items():
            by_trigger[trigger] = by_trigger.get(trigger, 0) + n
            self.decided += n
            if outcome == SAMPLED:
                self.traces_kept += n
                by_policy[policy] = by_policy.get(policy, 0) + n
            else:
                self.traces_not_kept += n
        self.spans_kept += spans_kept

    def rescued(self, policy: str, spans: int) -> None:
        """A trace decided not kept came back kept (completion's dropped
        grace): its final outcome is kept, its decision counted once."""
        self.traces_not_kept -= 1
        self.traces_kept += 1
        self.by_policy[policy] = self.by_policy.get(policy, 0) + 1
        self.spans_kept += spans

    def late(self, kept: int, dropped: int) -> None:
        self.late_kept += kept
        self.late_dropped += dropped

    def exported(self, services: dict[str, list]) -> None:
        """Kept spans handed to the exporters: label → [spans, bytes as
        received]."""
        for label, (n, nb) in services.items():
            row = self.services.get(label)
            if row is None:
                row = self.services[label] = ServiceRow()
            row.spans_exported += n
            row.bytes_exported += nb

    # ------------------------------------------------------------ merging
    def merge(self, other: Account) -> Account:
        """A new Account with both sets of counts (the group of workers);
        ``recent``: the newest RECENT of both."""
        out = Account()
        for a in (self, other):
            out.decided += a.decided
            out.traces_kept += a.traces_kept
            out.traces_not_kept += a.traces_not_kept
            out.spans_received += a.spans_received
            out.bytes_received += a.bytes_received
            out.spans_kept += a.spans_kept
            out.late_kept += a.late_kept
            out.late_dropped += a.late_dropped
            _add_counts(out.by_trigger, a.by_trigger)
            _add_counts(out.by_policy, a.by_policy)
            for label, row in a.services.items():
                out.service(label).add(row)
        out.recent.extend(sorted((*self.recent, *other.recent), key=lambda k: k.at))
        return out

    @classmethod
    def merged(cls, accounts: Iterable[Account]) -> Account:
        out = cls()
        for a in accounts:
            out = out.merge(a)
        return out

    def relabel(self, label: Callable[[str], str]) -> Account:
        """The same counts with the services renamed by ``label`` (rows that
        get the same name are added: the group's telemetry.max_services)."""
        out = self.merge(Account())
        out.services = {}
        for name, row in self.services.items():
            out.service(label(name)).add(row)
        return out

    # ------------------------------------------------------------ views
    @property
    def spans_exported(self) -> int:
        """Every kept span handed to the exporters (late ones included)."""
        return self.spans_kept + self.late_kept

    @property
    def bytes_exported(self) -> int:
        return sum(r.bytes_exported for r in self.services.values())

    def usd(self, prices: Prices) -> dict[str, tuple[float, float]]:
        """Dollars (received, exported) by service label, unrounded."""
        out = {}
        for svc, r in self.services.items():
            usd = prices.per_byte(svc)
            out[svc] = (r.bytes_received * usd, r.bytes_exported * usd)
        return out

    def status(self, prices: Prices, recent: bool = True) -> dict:
        """The counting part of /api/status (and of the shutdown summary,
        without ``recent_kept``)."""
        decided = max(self.decided, 1)
        usd = self.usd(prices)
        services = {}
        for svc in sorted(self.services):
            r = self.services[svc]
            ui, uo = usd[svc]
            services[svc] = {
                "spans_received": r.spans_received, "bytes_received": r.bytes_received,
                "spans_exported": r.spans_exported, "bytes_exported": r.bytes_exported,
                "keep_ratio": _ratio(r.spans_exported, r.spans_received),
                "usd_received": round(ui, 6), "usd_exported": round(uo, 6)}
        usd_in = sum(i for i, _ in usd.values())
        usd_out = sum(o for _, o in usd.values())
        out = {
            "spans_received": self.spans_received,
            "bytes_received": self.bytes_received,
            "spans_kept": self.spans_exported,
            "traces_decided": self.decided,
            "traces_kept": self.traces_kept,
            "traces_not_kept": self.traces_not_kept,
            "keep_ratio_traces": _ratio(self.traces_kept, decided) if self.decided else 0.0,
            "keep_ratio_spans": _ratio(self.spans_exported, self.spans_received),
            "kept_by_policy": {k: {"traces": v, "share_of_decided": round(v / decided, 4)}
                               for k, v in sorted(self.by_policy.items())},
            "decisions_by_trigger": dict(sorted(self.by_trigger.items())),
            "late_spans": {"sampled": self.late_kept, "not_sampled": self.late_dropped},
            "services": services,
            "cost": {"usd_per_gib": prices.usd_per_gib,
                     "usd_received": round(usd_in, 6), "usd_exported": round(usd_out, 6),
                     "saving_ratio": round(1 - usd_out / usd_in, 4) if usd_in else 0.0},
        }
        if recent:
            out["recent_kept"] = self.recent_kept()
        return out

    def recent_kept(self) -> list[dict]:
        """The last kept traces, newest first (the /status page's table)."""
        return [k.render() for k in reversed(self.recent)]

    def simulate(self, prices: Prices) -> dict:
        """The counting part of simulate's report (its own key names, the
        same fields)."""
        decided = max(self.decided, 1)
        usd = self.usd(prices)
        services = {}
        for svc in sorted(self.services):
            r = self.services[svc]
            ui, uo = usd[svc]
            services[svc] = {"spans_before": r.spans_received, "spans_after": r.spans_exported,
                             "bytes_before": r.bytes_received, "bytes_after": r.bytes_exported,
                             "keep_rate_spans": _ratio(r.spans_exported, r.spans_received),
                             "usd_before": round(ui, 9), "usd_after": round(uo, 9)}
        return {
            "traces": self.decided,
            "traces_kept": self.traces_kept,
            "keep_rate_traces": _ratio(self.traces_kept, decided) if self.decided else 0.0,
            "spans_before": self.spans_received,
            "spans_after": self.spans_exported,
            "bytes_before": self.bytes_received,
            "bytes_after": self.bytes_exported,
            "per_policy": {k: {"traces": v, "share_of_traces": round(v / decided, 4)}
                           for k, v in sorted(self.by_policy.items())},
            "per_trigger": dict(sorted(self.by_trigger.items())),
            "per_service": services,
            "late_spans": {"sampled": self.late_kept, "not_sampled": self.late_dropped},
            "cost": {"usd_per_gib": prices.usd_per_gib,
                     "usd_before": round(sum(i for i, _ in usd.values()), 9),
                     "usd_after": round(sum(o for _, o in usd.values()), 9)},
        }

    @classmethod
    def from_status(cls, st: dict[str, Any]) -> Account:
        """The Account a status (or summary) was rendered from; missing keys
        count zero (a retired worker's status has no ``recent_kept``)."""
        a = cls()
        late = st.get("late_spans") or {}
        a.late_kept = late.get("sampled", 0)
        a.late_dropped = late.get("not_sampled", 0)
        a.decided = st.get("traces_decided", 0)
        a.traces_kept = st.get("traces_kept", 0)
        a.traces_not_kept = st.get("traces_not_kept", 0)
        a.spans_received = st.get("spans_received", 0)
        a.bytes_received = st.get("bytes_received", 0)
        a.spans_kept = st.get("spans_kept", 0) - a.late_kept
        a.by_trigger = dict(st.get("decisions_by_trigger") or {})
        a.by_policy = {k: v.get("traces", 0) for k, v in (st.get("kept_by_policy") or {}).items()}
        for svc, r in (st.get("services") or {}).items():
            a.services[svc] = ServiceRow(r.get("spans_received", 0), r.get("bytes_received", 0),
                                         r.get("spans_exported", 0), r.get("bytes_exported", 0))
        a.recent.extend(Kept.parse(d) for d in reversed(st.get("recent_kept") or ()))
        return a
