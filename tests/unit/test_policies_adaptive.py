"""``adaptive``: a kept-throughput target shared across keys, driven by a
fake clock (issue 3, "What it must show").

The load: 20 keys (root services) whose trace rates are spread
geometrically from 5 to 500 traces/s — the busiest 100x the quietest —
with 1-10 spans a trace (~12 600 spans/s in all), against a target of 5000
kept spans/s, adjusted every 5 s. Kept spans are counted per 5 s interval
of the clock.
"""
from __future__ import annotations

import math
import random

import pytest

from test_policies import Summary, adaptive
from traceo_sampler import policies
from traceo_sampler.policies import SAMPLED
from traceo_sampler.policies.adaptive import water_fill
from traceo_sampler.tracestate import probability

INTERVAL = 5.0
KEYS = 20
BASE_RATES = [5 * 100 ** (i / (KEYS - 1)) for i in range(KEYS)]
NAMES = [f"svc{i:02d}" for i in range(KEYS)]
TARGET = 5000.0
TOLERANCE = 0.10


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def simulate(cfg, intervals, rates_at, seed=11, spans=(1, 10), make=None):
    """Poisson arrivals; rates_at(interval) -> per-key traces/s. Returns per
    interval: kept cost, {key: kept traces}, {key: arrived cost},
    {key: Σ cost/p over kept}."""
    rng = random.Random(seed)
    clock = Clock()
    p = policies.build(cfg, clock)
    per_trace = "target_traces_per_second" in cfg["adaptive"]
    kept = [0.0] * intervals
    kept_keys = [dict() for _ in range(intervals)]
    arrived = [dict() for _ in range(intervals)]
    weighted = [dict() for _ in range(intervals)]
    t = 0.0
    while True:
        iv = int(t // INTERVAL)
        rates = rates_at(iv)
        t += rng.expovariate(sum(rates))
        iv = int(t // INTERVAL)
        if iv >= intervals:
            break
        clock.t = t
        k = rng.choices(range(KEYS), weights=rates)[0]
        n = rng.randint(*spans)
        tr = make(k, n, rng) if make else Summary(span_count=n, root_service=NAMES[k],
                                                  services={NAMES[k]}, randomness=rng.getrandbits(56))
        d, th = p.evaluate(tr)
        cost = 1 if per_trace else n
        arrived[iv][k] = arrived[iv].get(k, 0) + cost
        if d == SAMPLED:
            kept[iv] += cost
            kept_keys[iv][k] = kept_keys[iv].get(k, 0) + 1
            weighted[iv][k] = weighted[iv].get(k, 0.0) + cost / probability(th)
    return kept, kept_keys, arrived, weighted


def settled_from(ratios, start, end):
    """First interval in [start, end) from which every ratio up to end is
    within the tolerance (end if none)."""
    first = end
    for i in range(end - 1, start - 1, -1):
        if abs(ratios[i] - 1) <= TOLERANCE:
            first = i
        else:
            break
    return first


BURST_AT = 10
N_INTERVALS = 25
BURST_KEY = KEYS - 1            # the busiest key: 500 -> 5000 traces/s


def burst_rates(iv):
    r = list(BASE_RATES)
    if iv >= BURST_AT:
        r[BURST_KEY] *= 10
    return r


@pytest.fixture(scope="module")
def burst_run():
    cfg = adaptive(target_spans_per_second=TARGET, key_fields=["service.name"], adjustment_interval="5s")
    return simulate(cfg, N_INTERVALS, burst_rates)


def test_converges_within_5_intervals(burst_run):
    kept = burst_run[0]
    ratios = [k / INTERVAL / TARGET for k in kept]
    print("kept / target per interval:", [round(r, 3) for r in ratios])
    assert ratios[0] > 2           # nothing measured yet: everything kept
    assert settled_from(ratios, 0, BURST_AT) <= 5
    assert all(abs(r - 1) <= TOLERANCE for r in ratios[5:BURST_AT])


def test_recovers_from_a_10x_burst_within_5_intervals(burst_run):
    kept = burst_run[0]
    ratios = [k / INTERVAL / TARGET for k in kept]
    assert ratios[BURST_AT] > 1 + TOLERANCE     # the burst is felt ...
    assert settled_from(ratios, BURST_AT, N_INTERVALS) <= BURST_AT + 5   # ... and absorbed
    assert all(abs(r - 1) <= TOLERANCE for r in ratios[BURST_AT + 5:])


def test_every_key_keeps_traces_every_interval(burst_run):
    kept_keys = burst_run[1]
    for iv in range(1, N_INTERVALS):
        assert set(kept_keys[iv]) == set(range(KEYS)), iv
    # the quietest key keeps everything while the busiest is sampled down
    quiet = sum(kept_keys[iv].get(0, 0) for iv in range(5, BURST_AT))
    busy = sum(kept_keys[iv].get(KEYS - 1, 0) for iv in range(5, BURST_AT))
    assert quiet > 0.9 * BASE_RATES[0] * INTERVAL * (BURST_AT - 5)
    assert busy < 0.5 * BASE_RATES[-1] * INTERVAL * (BURST_AT - 5)


def test_adjusted_counts_per_key_are_exact(burst_run):
    _, _, arrived, weighted = burst_run
    for k in (0, KEYS // 2, KEYS - 1):
        a = sum(arrived[iv].get(k, 0) for iv in range(1, N_INTERVALS))
        w = sum(weighted[iv].get(k, 0.0) for iv in range(1, N_INTERVALS))
        assert w == pytest.approx(a, rel=0.05), k


def test_traces_per_second_target():
    cfg = adaptive(target_traces_per_second=200, key_fields=["service.name"], adjustment_interval="5s")
    kept, kept_keys, _, _ = simulate(cfg, 10, lambda iv: BASE_RATES, seed=5)
    ratios = [k / INTERVAL / 200 for k in kept]
    assert all(abs(r - 1) <= TOLERANCE for r in ratios[2:]), ratios


def test_floors_win_over_an_impossible_target():
    """A target below one trace per key per interval: every active key still
    keeps about min_traces_per_interval (in expectation)."""
    cfg = adaptive(target_traces_per_second=0.5, key_fields=["service.name"], adjustment_interval="5s",
                   min_traces_per_interval=2)
    intervals = 41
    kept, kept_keys, _, _ = simulate(cfg, intervals, lambda iv: [r / 5 for r in BASE_RATES], seed=9)
    for k in range(KEYS):
        total = sum(kept_keys[iv].get(k, 0) for iv in range(1, intervals))
        assert 2 * 40 * 0.6 < total < 2 * 40 * 1.5, (k, total)


def test_key_fields_attributes_and_error():
    p = policies.build(adaptive(target_spans_per_second=10, key_fields=["service.name", "http.route", "error"]))
    assert p.attribute_keys() == {"http.route"}
    a = Summary(attrs={"http.route": {"/a"}})
    b = Summary(attrs={"http.route": {"/b"}})
    e = Summary(attrs={"http.route": {"/a"}}, status_mask=1 << 2)
    assert len({p.key_of(a), p.key_of(b), p.key_of(e)}) == 3
    # several values: the smallest as text, so one key per trace
    assert p.key_of(Summary(attrs={"http.route": {"/b", "/a"}})) == p.key_of(a)


def test_max_keys_overflow_shares_one_key():
    clock = Clock()
    p = policies.build(adaptive(target_spans_per_second=10, max_keys=5), clock)
    for i in range(50):
        p.evaluate(Summary(root_service=f"s{i}"))
    assert len(p.keys) == 6          # 5 own keys and the shared overflow


def test_idle_keys_are_forgotten():
    clock = Clock()
    p = policies.build(adaptive(target_spans_per_second=10), clock)
    p.evaluate(Summary(root_service="gone"))
    for i in range(1, 12):
        clock.t = i * INTERVAL
        p.evaluate(Summary(root_service="stays"))
    assert ("gone",) not in p.keys and ("stays",) in p.keys


@pytest.mark.parametrize("rates,floors,budget,lam,ps", [
    ([1, 10, 100], [0, 0, 0], 1000, math.inf, [1, 1, 1]),            # fits
    ([1, 10, 100], [0, 0, 0], 31, 20, [1, 1, 0.2]),                   # 1 + 10 + 20
    ([1, 10, 100], [0, 0, 0.5], 31, 0, [0, 0, 0.5]),                  # a floor alone exceeds
    ([10, 10], [0, 0], 10, 5, [0.5, 0.5]),
])
def test_water_fill(rates, floors, budget, lam, ps):
    got_lam, got = water_fill(rates, floors, budget)
    if lam in (0, math.inf):
        assert got_lam == lam
    assert got == pytest.approx(ps, rel=1e-6)
    if got_lam not in (0, math.inf):
        assert sum(r * p for r, p in zip(rates, got)) == pytest.approx(budget, rel=1e-6)
