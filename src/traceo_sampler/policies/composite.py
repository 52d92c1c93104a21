"""``composite``: sub-policies in priority order, each with a share of a
total span budget (the Collector's ``max_total_spans_per_second``,
``policy_order``, ``composite_sub_policy``, ``rate_allocation``).

Semantics, as the Collector documents them:

* sub-policies are evaluated in ``policy_order`` (those it does not name
  follow, in the order listed); the first that samples the trace decides:
  within its budget the trace is sampled, over it the trace is *not* sampled
  (later sub-policies are not asked). A sub-policy's inverted non-match
  (``invert_match``) counts as sampling, an inverted match as not;
* budgets in spans per second: ``percent`` of ``max_total_spans_per_second``
  for each ``rate_allocation`` entry; a sub-policy without an entry, or with
  ``percent: 0``, gets an equal share (total / number of sub-policies), as
  the Collector's getRateAllocationMap gives it (so the shares may add up
  to more than the total);
* spans are counted per clock second, per sub-policy and in total; a trace
  that would take a count over its budget is not sampled.

On top of those counters each budget is met as a consistent probability
(_limiting.py): the span rate arriving at a sub-policy's budget is measured
and the trace kept when ``R >= T``, T composed from the sub-policy's own
threshold and ``f = min(1, budget / arriving)`` (times the total's share
when the budgets together exceed ``max_total_spans_per_second``), and that
T is what the kept trace records. While the traffic fits the budgets
(up to twice a budget arriving in a second) ``f = 1`` and the decisions are
exactly the Collector's. While the probability holds a budget, the
per-second counters allow up to twice it, only catching bursts: at exactly
the budget they would clip the ordinary variance of what the probability
admits and bias the adjusted counts low.

Adjusted counts are exact when the sub-policies decide without the
randomness (attribute, status, latency, span-count filters, always_sample)
or no budget binds. A probabilistic sub-policy whose budget binds is the
exception: a trace it declines for its randomness falls through to the next
sub-policy, so the kept set is no longer one ``R >= T`` interval.
"""
from __future__ import annotations

import math
import time

import msgspec

from .. import policies
from ..cfgtypes import NonNeg, Percent, _Base

from ..tracestate import compose
from ._limiting import RateEstimator, incoming_threshold
from .base import NO, SAMPLED

TYPE = "composite"
SUB_POLICIES = {"composite_sub_policy": "list"}


class RateAllocationCfg(_Base):
    # the composite_sub_policy name this share is for
    policy: str
    percent: Percent = 0     # 0: an equal share (the Collector's default)


class CompositeCfg(_Base):
    # kept spans per second for all sub-policies together
    max_total_spans_per_second: NonNeg
    # sub-policy names in the order they are asked (unnamed ones follow as listed); not read
    # in Collector semantics, as there
    policy_order: list[str] = msgspec.field(default_factory=list)
    # the sub-policies; the first that samples a trace decides it, kept within its budget
    composite_sub_policy: list[policies.PolicyCfg] = msgspec.field(default_factory=list)
    # each sub-policy's budget as a percent of the total; one without an entry gets an equal
    # share
    rate_allocation: list[RateAllocationCfg] = msgspec.field(default_factory=list)


Config = CompositeCfg


def check(c: CompositeCfg, path: str, problems: list[str]) -> None:
    """policy_order and rate_allocation must name sub-policies (the
    Collector silently ignores a misspelt name there, which leaves that
    sub-policy without a budget)."""
    names: list[str] = []
    for i, sp in enumerate(c.composite_sub_policy):
        if sp.name in names:
            problems.append(f"{path}.composite_sub_policy[{i}].name: duplicate name {sp.name!r}")
        names.append(sp.name)
    for i, n in enumerate(c.policy_order):
        if n not in names:
            problems.append(f"{path}.policy_order[{i}]: {n!r} is not a composite_sub_policy name")
    seen: set[str] = set()
    for i, ra in enumerate(c.rate_allocation):
        if ra.policy not in names:
            problems.append(f"{path}.rate_allocation[{i}].policy: "
                            f"{ra.policy!r} is not a composite_sub_policy name")
        elif ra.policy in seen:
            problems.append(f"{path}.rate_allocation[{i}].policy: duplicate {ra.policy!r}")
        seen.add(ra.policy)


# While a budget's probability is below 1 the kept spans already average
# the budget; a per-second cap at exactly the budget would clip every second
# that ordinary variance puts above it (kept rate and adjusted counts low),
# so in that state a second may take up to this many budgets.
OVERLOAD_CAP = 2.0


class _Sub:
    __slots__ = ("name", "policy", "after", "budget", "estimator", "count")

    def __init__(self, name, policy, budget):
        self.name = name
        self.policy = policy
        self.after = getattr(policy, "evaluate_after", None)
        self.budget = float(budget)
        # arrivals up to twice the budget in a second are left to the
        # Collector's counters alone
        self.estimator = RateEstimator(slack=budget)
        self.count = 0


def allocations(max_total: float, names: list[str], rate_allocation) -> dict[str, float]:
    """Spans per second for each sub-policy name (see the module doc)."""
    equal = max_total / len(names) if names else 0.0
    pct = {ra.policy: ra.percent for ra in rate_allocation}
    return {n: (pct[n] / 100.0 * max_total if pct.get(n, 0) > 0 else equal) for n in names}


class CollectorComposite:
    """The Collector v0.161.0's composite (internal/sampling/composite.go):
    sub-policies in listed order (``policy_order`` is not read there), the
    first that samples decides: sampled when its spans this clock second
    plus the trace's stay within its int64 allocation and within
    ``max_total_spans_per_second`` (compared with that sub-policy's own
    count: the Collector keeps no total across them), else not sampled."""

    def __init__(self, name, max_total, subs, clock=time.monotonic):
        self.name = name
        self.max_total = int(max_total)
        self.subs = [[n, p, int(b), 0] for n, p, b in subs]
        self.clock = clock
        self.second = None

    def attribute_keys(self) -> set[str]:
        return set().union(*(s[1].attribute_keys() for s in self.subs))

    def evaluate(self, trace):
        sec = math.floor(self.clock())
        if sec != self.second:
            self.second = sec
            for s in self.subs:
                s[3] = 0
        for s in self.subs:
            d, _t = s[1].evaluate(trace)
            if d != SAMPLED:
                continue
            n = s[3] + trace.span_count
            if n <= s[2] and n <= self.max_total:
                s[3] = n
                return (SAMPLED, 0)
            return NO
        return NO


def build_collector(cfg, build_sub, clock=None):
    c = cfg.composite
    subs = [build_sub(sp) for sp in c.composite_sub_policy]
    names = [p.name for p in subs]
    alloc = allocations(c.max_total_spans_per_second, names, c.rate_allocation)
    return CollectorComposite(cfg.name, c.max_total_spans_per_second,
                              [(p.name, p, alloc[p.name]) for p in subs], clock or time.monotonic)


class Composite:
    def __init__(self, name, max_total, subs, clock=time.monotonic):
        """``subs``: [(name, policy, spans_per_second)] in evaluation order."""
        self.name = name
        self.max_total = float(max_total)
        self.subs = [_Sub(n, p, b) for n, p, b in subs]
        self.clock = clock
        self.second = None
        self.total = 0

    def attribute_keys(self) -> set[str]:
        return set().union(*(s.policy.attribute_keys() for s in self.subs))

    def evaluate(self, trace):
        return self.evaluate_after(trace, 0)

    def evaluate_after(self, trace, t_in):
        now = self.clock()
        sec = math.floor(now)
        if sec != self.second:
            self.second = sec
            self.total = 0
            for s in self.subs:
                s.count = 0
        t_up = incoming_threshold(trace, t_in)
        for s in self.subs:
            d, t = s.after(trace, t_up) if s.after is not None else s.policy.evaluate(trace)
            if d != SAMPLED:
                continue
            cost = trace.span_count
            f_sub = s.estimator.fraction(cost, now, s.budget)
            share = self._total_share(now)
            th = compose(t if t > t_up else t_up, f_sub * share)
            if trace.randomness < th:
                return NO
            cap = s.budget if f_sub >= 1.0 else OVERLOAD_CAP * s.budget
            total_cap = self.max_total if share >= 1.0 and f_sub >= 1.0 else OVERLOAD_CAP * self.max_total
            if s.count + cost > cap or self.total + cost > total_cap:
                return NO
            s.count += cost
            self.total += cost
            return (SAMPLED, th)
        return NO

    def _total_share(self, now: float) -> float:
        """When the budgets together would keep more than the total, the
        share of it each gets."""
        expected = 0.0
        for s in self.subs:
            r = s.estimator.rate
            if r is None:
                r = 0.0
            expected += r if r < s.budget else s.budget
        if expected <= self.max_total or expected <= 0:
            return 1.0
        return self.max_total / expected


def build(cfg, build_sub, clock=None):
    c = cfg.composite
    by_name = {}
    listed = []
    for raw in c.composite_sub_policy:
        p = build_sub(raw)
        by_name[p.name] = p
        listed.append(p.name)
    order = [n for n in dict.fromkeys(c.policy_order) if n in by_name]
    order += [n for n in listed if n not in order]
    alloc = allocations(c.max_total_spans_per_second, listed, c.rate_allocation)
    return Composite(cfg.name, c.max_total_spans_per_second,
                     [(n, by_name[n], alloc.get(n, 0.0)) for n in order],
                     clock or time.monotonic)
