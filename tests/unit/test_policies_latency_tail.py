"""``latency_tail``: keep traces slower than a running quantile of their
key's durations (issue 3, "What it must show"), with a fake clock.

Known distributions: per key a log-normal duration, so the true quantile is
exp(mu + sigma * z_q). The policy must keep >= 95 % of the traces above it,
and of the rest at most the allowance ALLOWANCE(q) = (1 - q) / 2 — half
the share the quantile itself lets through, i.e. the sketch's error may
not add more than half as many false keeps as there are true ones.
"""
from __future__ import annotations

import math
import random
import statistics

import pytest

from test_policies import NS_PER_MS, START, Summary, lt
from traceo_sampler import policies
from traceo_sampler.policies import SAMPLED
from traceo_sampler.policies._sketch import DecayingSketch

KEYS = {                       # (mu, sigma) of ln(duration in ns)
    ("frontend", "GET /"): (math.log(20e6), 0.6),
    ("search", "GET /q"): (math.log(200e6), 1.0),
    ("cache", "get"): (math.log(2e6), 0.3),
}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def trace(key, d_ns):
    svc, name = key
    return Summary(root_service=svc, root_name=name, services={svc},
                   min_start=START, max_end=START + d_ns)


def allowance(q):
    return (1 - q) / 2


@pytest.mark.parametrize("q", [0.99, 0.95, 0.9])
def test_keeps_the_tail_of_a_known_distribution(q):
    rng = random.Random(7)
    clock = Clock()
    p = policies.build(lt(quantile=q, half_life="1m", fallback_threshold_ms=10_000), clock)
    z = statistics.NormalDist().inv_cdf(q)
    true_q = {k: math.exp(mu + s * z) for k, (mu, s) in KEYS.items()}
    keys = list(KEYS)
    above = kept_above = rest = kept_rest = 0
    for i in range(60_000):
        clock.t = i / 1000                   # 1000 traces/s
        k = keys[i % len(keys)]
        mu, s = KEYS[k]
        d = int(math.exp(rng.gauss(mu, s)))
        v = p.evaluate(trace(k, d))
        assert v[1] == 0                     # kept unconditionally: th:0
        if i < 3_000:                        # the first 1000 per key warm up
            continue
        if d > true_q[k]:
            above += 1
            kept_above += v[0] == SAMPLED
        else:
            rest += 1
            kept_rest += v[0] == SAMPLED
    print(f"q={q}: kept {kept_above / above:.4f} of {above} above, "
          f"{kept_rest / rest:.5f} of {rest} below (allowance {allowance(q)})")
    assert kept_above / above >= 0.95
    assert kept_rest / rest <= allowance(q)


def run_shift(half_life, factor, seed=3):
    """500 traces/s of one key for 60 s, then ``factor`` times the duration;
    the kept share in the window 50-60 s after the shift. (A faster service
    needs the old tail's weight well under 1 - q before its own p99 shows:
    with a 5 s half-life, 2**-10 of it is left.)"""
    rng = random.Random(seed)
    clock = Clock()
    p = policies.build(lt(quantile=0.99, half_life=half_life), clock)
    k = ("checkout", "POST /pay")
    kept = n = 0
    for i in range(120 * 500):
        clock.t = i / 500
        mu = math.log(20e6) + (math.log(factor) if clock.t >= 60 else 0.0)
        v = p.evaluate(trace(k, int(math.exp(rng.gauss(mu, 0.5)))))
        if 110 <= clock.t < 120:
            n += 1
            kept += v[0] == SAMPLED
    return kept / n


@pytest.mark.parametrize("factor", [5, 0.2])
def test_decay_follows_a_changing_service(factor):
    share = run_shift("5s", factor)
    print(f"x{factor}: kept share 50-60 s after the shift {share:.4f}")
    assert 0.003 <= share <= 0.03, share


def test_without_decay_a_faster_service_loses_its_tail():
    """The control: with no decay to speak of, the old, slower durations
    keep defining the p99 after the service got 5x faster, so its new tail
    is not kept at all."""
    assert run_shift("10000h", 0.2) < 0.001


def test_warmup_uses_the_fallback_threshold():
    clock = Clock()
    p = policies.build(lt(warmup_observations=5, fallback_threshold_ms=100), clock)
    k = ("svc", "op")
    # below 5 observations: the fixed 100 ms decides
    assert [p.evaluate(trace(k, d * NS_PER_MS))[0] for d in (150, 50, 99, 100, 10)] == [1, 0, 0, 1, 0]
    # from the 6th on, the running p99 of what was seen (about 150 ms)
    assert p.evaluate(trace(k, 120 * NS_PER_MS))[0] == 0
    assert p.evaluate(trace(k, 200 * NS_PER_MS))[0] == 1
    # another key is still warming up
    assert p.evaluate(trace(("svc", "other"), 120 * NS_PER_MS))[0] == 1


def test_keys_are_capped_and_overflow_shares_one_sketch():
    clock = Clock()
    p = policies.build(lt(max_keys=3, warmup_observations=0), clock)
    for i in range(10):
        p.evaluate(trace((f"s{i}", "op"), 1_000_000))
    assert len(p.keys) == 3
    assert p.overflow is not None and p.overflow.sketch.count == 7


def test_key_fields():
    p = policies.build(lt(key=["service.name", "http.route", "error"]))
    assert p.attribute_keys() == {"http.route"}
    a = Summary(root_service="a", attrs={"http.route": {"/x"}})
    assert p.key_of(a) == ("a", "/x", False)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999])
def test_sketch_relative_accuracy(q):
    """Without decay the sketch's quantile is within relative_accuracy of the
    exact one (rank error aside, so it is compared on a large sample)."""
    rng = random.Random(1)
    xs = [math.exp(rng.gauss(15, 2)) for _ in range(200_000)]
    sk = DecayingSketch(0.01, 1e12, 2048, 0.0)
    for x in xs:
        sk.add(x, 0.0)
    xs.sort()
    exact = xs[int(q * (len(xs) - 1))]
    assert sk.quantile(q) == pytest.approx(exact, rel=0.011)
    # the kept side: everything above the lower edge of the quantile bucket
    i = sk.quantile_index(q)
    assert sk.lower_edge(i) <= exact * 1.0001


def test_sketch_bucket_cap_folds_the_low_end():
    sk = DecayingSketch(0.01, 1e12, 64, 0.0)
    rng = random.Random(2)
    xs = [10 ** rng.uniform(0, 9) for _ in range(20_000)]
    for x in xs:
        sk.add(x, 0.0)
    assert len(sk.bins) == 64
    xs.sort()
    exact = xs[int(0.99 * (len(xs) - 1))]
    assert sk.quantile(0.99) == pytest.approx(exact, rel=0.011)   # the top is intact


def test_sketch_decay_halves_weight_per_half_life():
    sk = DecayingSketch(0.01, 10.0, 2048, 0.0)
    sk.add(1000.0, 0.0)
    sk.add(5000.0, 10.0)
    # the newer observation weighs twice the older one
    i_old, i_new = sk.index(1000.0) - sk.offset, sk.index(5000.0) - sk.offset
    assert sk.bins[i_new] == pytest.approx(2 * sk.bins[i_old])
    # and rescaling (weights past 2**40) keeps the ratios
    sk.add(1000.0, 500.0)
    assert sk.t_ref == 500.0
    assert sk.total == pytest.approx(1 + 2 ** -49 + 2 ** -50, rel=1e-9)
