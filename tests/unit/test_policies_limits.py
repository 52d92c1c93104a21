"""The limiting policies over time (rate_limiting, bytes_limiting,
service_rate caps, composite budgets), driven by a fake clock.

Two things are checked. Under their limits they decide exactly as the
Collector's token buckets and per-second counters do (sequence tables, with
the worst randomness R = 0 so no probability can be hiding behind a "kept").
Over their limits they keep the configured rate as a consistent probability:
every kept trace records the threshold it was kept with, and Σ 1/p over the
kept traces estimates what arrived (the Collector's token bucket keeps the
same rate but records nothing, so its kept spans would count 1 each).
"""
from __future__ import annotations

import random

import pytest

from test_policies import (ERR_BIT, MAX_T, NO, T50, YES, Summary, and_, bl, composite, named,
                           pol, prob, rl, sc, svc_rate)
from traceo_sampler import policies
from traceo_sampler.policies import SAMPLED
from traceo_sampler.tracestate import compose, probability, threshold_for_probability


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def build(cfg, clock):
    return policies.build(cfg, clock)


KEPT = "kept"      # sampled, whatever the threshold


def run_table(cfg, rows):
    clock = Clock()
    p = build(cfg, clock)
    start = clock.t
    for i, (t, trace, expected) in enumerate(rows):
        clock.t = start + t
        got = p.evaluate(trace)
        if expected == KEPT:
            assert got[0] == SAMPLED, (i, t, got)
        else:
            assert got == expected, (i, t, got, expected)


def spans(n, r=0, **kw):
    return Summary(span_count=n, randomness=r, **kw)


def sized(nbytes, r=0):
    return Summary(span_count=1, encoded_size=nbytes, randomness=r)


# (seconds since start, trace, expected verdict)
SEQUENCES = [
    # rate_limiting 100 spans/s, bucket 20: golang.org/x/time/rate semantics
    # (the arrivals stay under 120 in the second, one second's budget plus the
    # bucket, below which the probability never starts).
    ("rate/bucket", rl(100, 20), [
        (0.0, spans(15), YES),
        (0.0, spans(6), NO),            # 5 tokens left
        (0.0, spans(5), YES),           # exactly the rest
        (0.0, spans(1), NO),
        (0.0625, spans(6), YES),        # refilled 6.25 in 1/16 s
        (0.0625, spans(1), NO),         # 0.25 left
        (0.078125, spans(1), YES),      # + 1.5625
        (0.078125, spans(21), NO),      # larger than the bucket: never
    ]),
    ("rate/refill-caps-at-burst", rl(10, 20), [
        (0.0, spans(20), YES),
        (100.0, spans(20), YES),        # 100 s refill, but the bucket holds 20
        (100.0, spans(1), NO),
    ]),
    ("rate/zero", rl(0), [
        (0.0, spans(1, MAX_T - 1), NO),
        (5.0, spans(1, MAX_T - 1), NO),
    ]),
    # bytes_limiting 1000 B/s, bucket 1500
    ("bytes/bucket", bl(1000, 1500), [
        (0.0, sized(1000), YES),
        (0.0, sized(501), NO),
        (0.0, sized(500), YES),
        (0.25, sized(250), YES),
        (0.25, sized(1), NO),
        (0.25, Summary(span_count=0, encoded_size=None), YES),       # 0 spans x 200 B
        (0.3, Summary(span_count=1, randomness=0), NO),        # 200 B fallback, 50 B left
    ]),
    # composite: errs 50 of 100 spans/s, rest the other 50; counters reset
    # every clock second, as the Collector's.
    ("composite/per-second-counters",
     composite(100, [named(sc("ERROR"), "errs"), named(pol("always_sample"), "rest")],
               alloc={"errs": 50}), [
        (0.0, spans(30, status_mask=ERR_BIT), YES),
        (0.2, spans(30, status_mask=ERR_BIT), NO),     # 60 > 50, and no fall-through to rest
        (0.3, spans(20, status_mask=ERR_BIT), YES),    # a smaller one still fits
        (0.4, spans(50), YES),
        (0.5, spans(1), NO),
        (0.99, spans(1, status_mask=ERR_BIT), NO),
        (1.0, spans(30, MAX_T - 1, status_mask=ERR_BIT), KEPT),   # a new second
        (1.1, spans(30, MAX_T - 1), KEPT),
    ]),
    # service_rate caps: checkout 10 spans/s (bucket 20), the rest 100 %.
    ("service_rate/cap-bucket",
     svc_rate({"checkout": {"spans_per_second": 10}}, default={"sampling_percentage": 100}), [
        (0.0, spans(20, services={"checkout"}, root_service="checkout"), YES),
        (0.0, spans(1, services={"checkout"}, root_service="checkout"), NO),
        (0.0, spans(50, services={"frontend"}), YES),
        (0.0, spans(1, services={"checkout", "frontend"}), YES),   # default also applies
        (0.5, spans(5, services={"checkout"}, root_service="checkout"), YES),
    ]),
]


@pytest.mark.parametrize("cfg,rows", [pytest.param(c, r, id=i) for i, c, r in SEQUENCES])
def test_sequence(cfg, rows):
    run_table(cfg, rows)


def test_under_the_limit_everything_is_kept_with_th0():
    """80 % of the limit for a minute, with R = 0 (the hardest randomness):
    nothing is sampled down, every kept trace carries th:0."""
    clock = Clock()
    p = build(rl(100), clock)
    start = clock.t
    for i in range(8 * 60):             # 8 traces of 10 spans per second
        clock.t = start + i / 8
        assert p.evaluate(spans(10, 0)) == YES, i


def overload(policy_cfg, make_trace, seconds=100, per_second=300, seed=1, warmup=5.0):
    """Feed ``per_second`` traces a second; return (arrived, kept cost per
    second after warm-up, Σ cost/p over kept after warm-up, thresholds)."""
    rng = random.Random(seed)
    clock = Clock()
    p = build(policy_cfg, clock)
    start = clock.t
    arrived = kept = weighted = 0.0
    ths = []
    n = seconds * per_second
    for i in range(n):
        clock.t = start + i / per_second
        trace, cost = make_trace(rng)
        d, th = p.evaluate(trace)
        if clock.t - start < warmup:
            continue
        arrived += cost
        if d == SAMPLED:
            kept += cost
            weighted += cost / probability(th)
            ths.append(th)
    return arrived, kept / (seconds - warmup), weighted, ths


def test_rate_limiting_overload_is_a_consistent_probability():
    # 3000 spans/s arriving at a 600 spans/s limit
    arrived, kept_rate, weighted, ths = overload(
        rl(600), lambda rng: (spans(10, rng.getrandbits(56)), 10))
    assert kept_rate == pytest.approx(600, rel=0.10)
    assert weighted == pytest.approx(arrived, rel=0.05)
    # the recorded probability is the limit's share of the traffic
    ps = [probability(t) for t in ths]
    assert min(ps) > 0.15 and max(ps) < 0.25
    # a plain token bucket would record th:0: kept spans counted once each
    assert kept_rate * 95 < 0.3 * arrived


def test_bytes_limiting_overload_is_a_consistent_probability():
    def make(rng):
        n = rng.randint(500, 1500)
        return sized(n, rng.getrandbits(56)), n
    arrived, kept_rate, weighted, ths = overload(bl(60_000), make)   # ~300 kB/s arriving
    assert kept_rate == pytest.approx(60_000, rel=0.10)
    assert weighted == pytest.approx(arrived, rel=0.05)


def test_limiter_inside_and_composes_with_the_parts_before_it():
    """and(probabilistic 50 %, rate_limiting 600): the limiter only sees the
    half that passed (1500 of 3000 spans/s), keeps 600 spans/s of it and
    records the absolute probability (50 % x its 40 %), not its own
    fraction (which would keep everything that passed the 50 %)."""
    cfg = and_(prob(50), rl(600), name="half-then-limit")
    arrived, kept_rate, weighted, ths = overload(cfg, lambda rng: (spans(10, rng.getrandbits(56)), 10))
    assert kept_rate == pytest.approx(600, rel=0.10)
    assert weighted == pytest.approx(arrived, rel=0.05)
    assert all(t > T50 for t in ths)
    ps = [probability(t) for t in ths]
    assert 0.17 < sum(ps) / len(ps) < 0.23      # 0.5 x (600 / 1500)


def test_upstream_threshold_composes():
    """Traces sampled upstream at 50 % (ot=th:8; their R >= T50): the limiter
    keeps its share of them and records the product, so Σ 1/p estimates the
    population before the upstream sampler — twice what arrived."""
    def make(rng):
        r = T50 + rng.randrange(MAX_T - T50)
        return Summary(span_count=10, randomness=r, trace_state="ot=th:8"), 10
    arrived, kept_rate, weighted, ths = overload(rl(600), make)
    assert kept_rate == pytest.approx(600, rel=0.10)
    assert weighted == pytest.approx(2 * arrived, rel=0.05)
    assert all(t >= T50 for t in ths)


def test_service_rate_cap_overload():
    """checkout: 50 % but at most 600 spans/s; 3000 spans/s arrive, so the
    cap's 20 % decides, recorded as such; frontend's 10 % is unaffected."""
    cfg = svc_rate({"checkout": {"sampling_percentage": 50, "spans_per_second": 600}},
                   default={"sampling_percentage": 10})

    def make(rng):
        return spans(10, rng.getrandbits(56), services={"checkout"}, root_service="checkout"), 10
    arrived, kept_rate, weighted, ths = overload(cfg, make)
    assert kept_rate == pytest.approx(600, rel=0.10)
    assert weighted == pytest.approx(arrived, rel=0.05)
    assert 0.17 < sum(map(probability, ths)) / len(ths) < 0.23
    p = build(cfg, Clock())
    r = threshold_for_probability(0.10)
    assert p.evaluate(spans(10, r, services={"frontend"})) == (SAMPLED, r)


def test_composite_overload_keeps_budgets_and_counts():
    """max 1000 spans/s: errors get 50 %, the rest the remainder. 1000
    spans/s of errors and 2000 of others arrive: each class keeps about its
    500/s, and Σ 1/p per class matches what arrived."""
    cfg = composite(1000, [named(sc("ERROR"), "errs"), named(pol("always_sample"), "rest")],
                    alloc={"errs": 50})
    rng = random.Random(3)
    clock = Clock()
    p = build(cfg, clock)
    start = clock.t
    arrived = {"err": 0, "ok": 0}
    weighted = {"err": 0.0, "ok": 0.0}
    per_second: dict[tuple[int, str], int] = {}
    seconds = 100
    for i in range(seconds * 300):          # 300 traces of 10 spans a second, 1/3 errors
        clock.t = start + i / 300
        cls = "err" if i % 3 == 0 else "ok"
        tr = spans(10, rng.getrandbits(56), status_mask=ERR_BIT if cls == "err" else 1)
        d, th = p.evaluate(tr)
        sec = int(clock.t)
        if d == SAMPLED:
            per_second[sec, cls] = per_second.get((sec, cls), 0) + 10
        if clock.t - start < 5:
            continue
        arrived[cls] += 10
        if d == SAMPLED:
            weighted[cls] += 10 / probability(th)
    # while the probability holds the budget, a second may take up to two
    assert max(v for (s, c), v in per_second.items() if c == "err") <= 1000
    assert max(v for (s, c), v in per_second.items() if c == "ok") <= 1000
    steady = [s for s in range(int(start) + 5, int(start) + seconds)]
    for cls in ("err", "ok"):
        rate = sum(per_second.get((s, cls), 0) for s in steady) / len(steady)
        assert rate == pytest.approx(500, rel=0.10), cls
        assert weighted[cls] == pytest.approx(arrived[cls], rel=0.05), cls


def test_burst_capped_by_the_bucket():
    """1000 one-span traces at one instant, limit 100/s with a 200 bucket:
    the bucket caps what passes; the probability falls as the burst grows."""
    clock = Clock()
    p = build(rl(100), clock)
    kept = 0
    ths = []
    for _ in range(1000):
        d, th = p.evaluate(spans(1, MAX_T - 1))
        if d == SAMPLED:
            kept += 1
            ths.append(th)
    # the bucket passes its 200, all at th:0 (as the Collector's) ...
    assert kept == 200 and set(ths) == {0}
    # ... and once more arrived than a second's budget plus the bucket, the
    # probability starts: 50 ms later (5 tokens back) one span passes R = max
    # with the fraction the burst leaves, 100 of 1001 spans arrived.
    clock.t += 0.05
    assert p.evaluate(spans(1, MAX_T - 1)) == (SAMPLED, compose(0, 100 / 1001))
    assert p.evaluate(spans(1, 0)) == NO
