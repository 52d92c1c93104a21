"""What-if: two policy sets over the same capture in one pass
(``simulate -c current.yaml --compare proposed.yaml``), joined trace by
trace: which traces each keeps that the other does not (by the keeping
set's attributed policy and by service), the monthly cost difference at the
capture's rate, and whether every error trace is still kept.

A trace is joined on its ID and the order of its decisions, so the two sets
may decide it at different times (different timers). When their timers or
limits split a trace differently (one decides it twice, the other once), the
decisions left without a partner are counted as ``unpaired``.
"""
from __future__ import annotations

from .replay import MAX_LISTED, Recorder, TraceFact

SIDES = ("current", "proposed")


class _Only:
    """Traces one side keeps and the other does not."""

    def __init__(self):
        self.traces = 0
        self.spans = 0
        self.bytes = 0
        self.by_policy: dict[str, int] = {}
        self.by_service: dict[str, int] = {}

    def add(self, f: TraceFact) -> None:
        self.traces += 1
        self.spans += f.spans
        self.bytes += f.span_bytes
        self.by_policy[f.policy] = self.by_policy.get(f.policy, 0) + 1
        for svc in f.services:
            self.by_service[svc] = self.by_service.get(svc, 0) + 1

    def as_dict(self) -> dict:
        return {"traces": self.traces, "spans": self.spans, "bytes": self.bytes,
                "by_policy": dict(sorted(self.by_policy.items(), key=lambda kv: -kv[1])),
                "by_service": dict(sorted(self.by_service.items(), key=lambda kv: -kv[1]))}


class Join:
    """Pairs the decisions two recorders make of the same trace."""

    def __init__(self, current: Recorder, proposed: Recorder):
        self.pending: tuple[dict, dict] = ({}, {})
        self.only = (_Only(), _Only())
        self.both = 0
        self.neither = 0
        self.error_traces = 0
        self.errors_kept = [0, 0]
        self.errors_lost: list[str] = []     # kept by current, not by proposed
        current.sink = lambda tid, f: self._add(0, tid, f)
        proposed.sink = lambda tid, f: self._add(1, tid, f)

    def _add(self, side: int, tid: bytes, fact: TraceFact) -> None:
        other = self.pending[1 - side]
        waiting = other.get(tid)
        if not waiting:
            self.pending[side].setdefault(tid, []).append(fact)
            return
        f2 = waiting.pop(0)
        if not waiting:
            del other[tid]
        a, b = (fact, f2) if side == 0 else (f2, fact)
        self._pair(tid, a, b)

    def _pair(self, tid: bytes, a: TraceFact, b: TraceFact) -> None:
        if a.kept and b.kept:
            self.both += 1
        elif a.kept:
            self.only[0].add(a)
        elif b.kept:
            self.only[1].add(b)
        else:
            self.neither += 1
        if a.error or b.error:
            self.error_traces += 1
            self.errors_kept[0] += a.kept
            self.errors_kept[1] += b.kept
            if a.kept and not b.kept and len(self.errors_lost) < MAX_LISTED:
                self.errors_lost.append(tid.hex())

    @property
    def unpaired(self) -> tuple[int, int]:
        a, b = (sum(len(v) for v in side.values()) for side in self.pending)
        return a, b

    def diff(self, current: dict, proposed: dict) -> dict:
        """The comparison, from the join and the two runs' reports."""
        ua, ub = self.unpaired
        fa, fb = current["forecast"], proposed["forecast"]
        ma, mb = fa["usd_exported_month"], fb["usd_exported_month"]
        policies = sorted(set(current["per_policy"]) | set(proposed["per_policy"]))
        services = sorted(set(current["per_service"]) | set(proposed["per_service"]))

        def pol(rep, name):
            return rep["per_policy"].get(name, {}).get("traces", 0)

        def svc(rep, name, key):
            return rep["per_service"].get(name, {}).get(key, 0)

        def svc_month(f, name):
            return (f["services"].get(name) or {}).get("usd_exported_month")

        return {
            "traces": current["traces"],
            "traces_kept": {"current": current["traces_kept"], "proposed": proposed["traces_kept"],
                            "change": proposed["traces_kept"] - current["traces_kept"]},
            "spans_after": {"current": current["spans_after"], "proposed": proposed["spans_after"],
                            "change": proposed["spans_after"] - current["spans_after"]},
            "kept_by_both": self.both,
            "kept_by_neither": self.neither,
            "only_current": self.only[0].as_dict(),
            "only_proposed": self.only[1].as_dict(),
            "unpaired_decisions": {"current": ua, "proposed": ub},
            "per_policy": {p: {"current": pol(current, p), "proposed": pol(proposed, p)} for p in policies},
            "per_service": {s: {"spans_after_current": svc(current, s, "spans_after"),
                                "spans_after_proposed": svc(proposed, s, "spans_after"),
                                "usd_month_current": svc_month(fa, s),
                                "usd_month_proposed": svc_month(fb, s)} for s in services},
            "cost_month": {"current": ma, "proposed": mb,
                           "change": round(mb - ma, 6) if ma is not None and mb is not None else None,
                           "budget_usd_month": fa["budget_usd_month"]},
            "errors": {"traces": self.error_traces,
                       "kept_current": self.errors_kept[0], "kept_proposed": self.errors_kept[1],
                       "all_kept_current": self.errors_kept[0] == self.error_traces,
                       "all_kept_proposed": self.errors_kept[1] == self.error_traces,
                       "lost_by_proposed_trace_ids": list(self.errors_lost)},
        }
