"""Collector compatibility (issue 3 item 8): policy lists written in the
Collector's tail_sampling format (tests/fixtures/collector/*.yaml, each a
Collector ``processors: tail_sampling:`` block) load unchanged through
config.parse and decide as the Collector's documented rules say, on tables
of traces.

The rules, from the processor's README: a ``drop`` decision drops the
trace; otherwise any policy that samples keeps it. An inverted match
(``invert_match``) is a plain not-sampled and an inverted non-match a
plain sampled, everywhere (the current Collector: no veto; issue 11).
``composite`` gives each sub-policy a share of ``max_total_spans_per_second``
and the first sub-policy that samples decides, within its share or not at
all. The limiters pass what their token bucket holds (``burst_capacity``,
default twice the rate) and refill continuously.

Rows run in order against one Decider with a frozen fake clock (``at`` is
seconds since the first row), so the stateful policies see the sequence.
An expected ``threshold`` of None is not compared.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from test_policies import (MAX_T, NS_PER_MS, START, T25, T0_1, T1, Summary)
from traceo_sampler.config import POLICY_TYPES, parse
from traceo_sampler.decider import Decider

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "collector"
OURS = {"latency_tail", "service_rate", "adaptive"}
ERROR = 1 << 2
HI = MAX_T - 1          # randomness any probability keeps


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def collector_policies(name: str) -> list:
    doc = yaml.safe_load((FIXTURES / name).read_text())
    return doc["processors"]["tail_sampling"]["policies"]


def decider(policies_raw, clock):
    cfg = parse({"sampler": {"policies": policies_raw}})
    return Decider(cfg.sampler.policies, clock)


def t(r=0, spans=3, status=1, attrs=None, ms=5, state="", encoded_size=None, services=("frontend",)):
    a = {k: set(v) if isinstance(v, (list, set, tuple)) else {v} for k, v in (attrs or {}).items()}
    return Summary(span_count=spans, status_mask=status, attrs=a, randomness=r,
                   min_start=START, max_end=START + ms * NS_PER_MS, trace_state=state,
                   encoded_size=encoded_size, services=set(services), root_service=services[0])


KEEP = "kept"
DROP = "dropped"
NOT = "not sampled"

# (at, trace, outcome, attributed policy, threshold or None)
README_ROWS = [
    (0, t(), KEEP, "test-policy-1", 0),
    (0, t(attrs={"url.path": "/health"}), DROP, "drop-policy-1", None),
    (0, t(attrs={"url.path": "/api/metrics"}), DROP, "drop-policy-1", None),    # regex: anywhere
    (0, t(attrs={"url.path": "/api"}), KEEP, "test-policy-1", 0),
    (0, t(attrs={"key1": 75, "key2": "value1"}, status=ERROR), KEEP, "test-policy-1", 0),
]

# the README's composite-policy-1 on its own: 1000 spans/s, 50 % to key1 >= 50,
# 25 % to key2 in [value1, value2], always_sample the remaining 25 %
README_COMPOSITE_ROWS = [
    (0, t(spans=400, attrs={"key1": 60}), KEEP, "composite-policy-1", 0),
    (0, t(spans=200, attrs={"key1": 60}), NOT, "", None),         # 600 > 500: no fall-through
    (0, t(spans=100, attrs={"key1": 60, "key2": "value1"}), KEEP, "composite-policy-1", 0),
    (0, t(spans=250, attrs={"key2": "value1"}), KEEP, "composite-policy-1", 0),
    (0, t(spans=1, attrs={"key2": "value2"}), NOT, "", None),
    (0, t(spans=1, attrs={"key1": 10, "key2": "value2"}), NOT, "", None),   # key1 below min
    (0, t(spans=250), KEEP, "composite-policy-1", 0),
    (0, t(spans=1, r=HI), NOT, "", None),
]

TEAM = "service.name"
PRACTICAL_ROWS = [
    # rule 1: not a team_a service -> always
    (0, t(attrs={TEAM: "legacy"}), KEEP, "backwards-compatibility-policy", 0),
    # rule 2: probes at 0.1 %
    (0, t(r=HI, attrs={TEAM: "service-2", "http.route": "/live"}), KEEP, "team_a-probe", T0_1),
    (0, t(r=T0_1, attrs={TEAM: "service-3", "http.route": "/ready"}), KEEP, "team_a-probe", T0_1),
    (0, t(r=T0_1 - 1, attrs={TEAM: "service-2", "http.route": "/live"}), NOT, "", None),
    # rule 3: the noisy endpoint at 1 %
    (0, t(r=HI, attrs={TEAM: "service-1", "http.route": "/v1/name/42"}), KEEP, "team_a-noisy-endpoint-1", T1),
    (0, t(r=T1 - 1, attrs={TEAM: "service-1", "http.route": "/v1/name/42"}), NOT, "", None),
    # rule 4: the rest of service-1 at 100 % (invert_match inside and)
    (0, t(r=0, attrs={TEAM: "service-1", "http.route": "/v1/other"}), KEEP, "team_a-service-1", 0),
    (0, t(r=0, attrs={TEAM: "service-2", "http.route": "/v1/other"}), NOT, "", None),
    # rule 5: errors of the team
    (0, t(status=ERROR, attrs={TEAM: "service-2", "http.route": "/api"}), KEEP, "team_a-status-policy", 0),
    (0, t(r=T1 - 1, status=ERROR, attrs={TEAM: "service-1", "http.route": "/v1/name/1"}),
     KEEP, "team_a-status-policy", 0),
    # rule 6: the escape hatch
    (0, t(attrs={TEAM: "service-3", "http.route": "/api", "app.force_sample": True}),
     KEEP, "team_a-force-sample", 0),
    (0, t(attrs={TEAM: "service-3", "http.route": "/api", "app.force_sample": False}), NOT, "", None),
    # rule 7: do_not_sample beats everything
    (0, t(status=ERROR, attrs={TEAM: "service-1", "http.route": "/v1/other", "app.do_not_sample": True,
                               "app.force_sample": True}), DROP, "do-not-sample", None),
    (0, t(attrs={TEAM: "legacy", "app.do_not_sample": True}), DROP, "do-not-sample", None),
    # nothing applies
    (0, t(attrs={TEAM: "service-3", "http.route": "/api"}), NOT, "", None),
]

NESTED_ROWS = [
    # drop needs every sub-policy: /healthz and at most 2 spans
    (0, t(r=HI, spans=2, status=ERROR, attrs={"http.route": "/healthz"}), DROP, "drop-cheap-health", None),
    (0, t(r=0, spans=3, attrs={"http.route": "/healthz"}), NOT, "", None),
    # and(latency, not(status ERROR))
    (0, t(ms=2000), KEEP, "slow-but-not-failed", 0),
    (0, t(ms=999), NOT, "", None),
    # ... an error is not kept by it; the composite's checkout-errors takes it
    (0, t(ms=2000, status=ERROR, spans=10, attrs={"service.name": "checkout"}), KEEP, "budgeted", 0),
    # trace_state: W3C tracestate, exact value
    (0, t(state="rojo=1,tenant=vip"), KEEP, "vip-tenants", 0),
    (0, t(state="tenant=silver"), NOT, "", None),
    (0, t(state="tenant=vip,tenant=gold"), NOT, "", None),        # invalid: duplicate key
    (0, t(attrs={"http.status_code": 503}), KEEP, "server-errors", 0),
    (0, t(attrs={"http.status_code": 404}), NOT, "", None),
    # composite: 60 / 20 / 20 spans/s of 100, first sampling sub-policy decides
    (0, t(spans=10, attrs={"debug": True}), KEEP, "budgeted", 0),
    (0, t(r=HI, spans=15, attrs={"debug": True}), NOT, "", None),   # 25 > 20, not passed on to rest
    (0, t(r=HI, spans=10), KEEP, "budgeted", T25),                  # rest: probabilistic 25 %
    (0, t(r=T25 - 1, spans=1), NOT, "", None),
    (0, t(r=HI, spans=11), NOT, "", None),                           # rest: 21 > 20
    (0, t(spans=60, status=ERROR, attrs={"service.name": "checkout"}), NOT, "", None),   # 70 > 60
    (0, t(spans=50, status=ERROR, attrs={"service.name": "checkout"}), KEEP, "budgeted", 0),
    # a new second: the composite's counters start again. (25 spans/s came
    # for debug-flag's 20 in the last second, so from now it keeps 80 % of
    # them as a consistent probability: this trace's R passes any.)
    (1, t(r=HI, spans=15, attrs={"debug": True}), KEEP, "budgeted", None),
]

LIMITS_ROWS = [
    # spans-budget: 35 spans/s, bucket 70; volume-control: 1 MiB/s, bucket 5 MiB
    (0, t(spans=70, encoded_size=100), KEEP, "spans-budget", 0),
    (0, t(spans=1, encoded_size=5_242_780), KEEP, "volume-control", 0),    # empties both buckets
    (0, t(spans=1, encoded_size=1), NOT, "", None),
    (0.25, t(spans=8, encoded_size=262_145), KEEP, "spans-budget", 0),     # +8.75 spans, +262 144 B
    (0.25, t(spans=1, encoded_size=262_144), KEEP, "volume-control", 0),
    (0.25, t(spans=1, encoded_size=1), NOT, "", None),
]

TABLES = [
    ("readme_example.yaml", None, README_ROWS),
    ("readme_example.yaml", "composite-policy-1", README_COMPOSITE_ROWS),
    ("practical_example.yaml", None, PRACTICAL_ROWS),
    ("nested.yaml", None, NESTED_ROWS),
    ("limits.yaml", None, LIMITS_ROWS),
]


@pytest.mark.parametrize("fixture,only,rows", [pytest.param(f, o, r, id=f"{f}:{o or 'all'}")
                                               for f, o, r in TABLES])
def test_fixture_decides_as_the_collector(fixture, only, rows):
    raw = collector_policies(fixture)
    if only:
        raw = [p for p in raw if p["name"] == only]
    clock = Clock()
    d = decider(raw, clock)
    start = clock.t
    for i, (at, trace, outcome, policy, threshold) in enumerate(rows):
        clock.t = start + at
        got = d.decide(trace)
        seen = DROP if got.dropped else KEEP if got.sampled else NOT
        assert (seen, got.policy) == (outcome, policy), (i, got)
        if threshold is not None:
            assert got.threshold == threshold, (i, got)


def _types(policies_raw):
    for p in policies_raw:
        yield p["type"]
        for key, sub in (("and", "and_sub_policy"), ("drop", "drop_sub_policy"),
                         ("composite", "composite_sub_policy")):
            if p["type"] == key:
                yield from _types(p[key][sub])
        if p["type"] == "not":
            yield from _types([p["not"]["not_sub_policy"]])


def test_fixtures_cover_every_collector_type_and_load_unchanged():
    seen = set()
    for f in sorted(FIXTURES.glob("*.yaml")):
        raw = collector_policies(f.name)
        parse({"sampler": {"policies": raw}})          # raises ConfigError on any problem
        seen |= set(_types(raw))
    assert seen == set(POLICY_TYPES) - OURS


def test_fixture_rows_can_fail():
    """The tables are not vacuous: the same README policies without the drop
    policy keep what the drop removed."""
    raw = [p for p in collector_policies("readme_example.yaml") if p["type"] != "drop"]
    d = decider(raw, Clock())
    got = d.decide(t(attrs={"url.path": "/health"}))
    assert got.sampled and not got.dropped
