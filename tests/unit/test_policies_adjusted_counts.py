"""Adjusted counts everywhere (issue 3 item 5): over 100 000 synthetic
traces through a mix of every kind of policy — unconditional (status_code,
latency_tail), fixed probabilities (probabilistic, service_rate), limiters
(rate_limiting, bytes_limiting inside an ``and``, service_rate's cap,
composite budgets) and adaptive — Σ 1/p over the kept spans of each service
is within ±5 % of the spans it really had. p is the probability of the
threshold the Decider records for the trace (the most permissive of the
policies that sampled it). Deterministic seed and fake clock.
"""
from __future__ import annotations

import math
import random
from collections import Counter

from test_policies import Summary
from traceo_sampler.config import parse
from traceo_sampler.decider import Decider
from traceo_sampler.tracestate import probability

POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency_tail", "latency_tail": {"quantile": 0.99}},
    {"name": "per-service", "type": "service_rate", "service_rate": {
        "services": {"checkout": {"sampling_percentage": 50, "spans_per_second": 1500},
                     "search": {"sampling_percentage": 20}},
        "default": {"sampling_percentage": 10}}},
    {"name": "adaptive", "type": "adaptive", "adaptive": {
        "target_spans_per_second": 3000, "key_fields": ["service.name", "error"]}},
    {"name": "cap", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 1000}},
    {"name": "budgets", "type": "composite", "composite": {
        "max_total_spans_per_second": 1500, "policy_order": ["pay", "rest"],
        "composite_sub_policy": [
            {"name": "pay", "type": "string_attribute",
             "string_attribute": {"key": "http.route", "values": ["/api/pay"]}},
            {"name": "rest", "type": "always_sample"}],
        "rate_allocation": [{"policy": "pay", "percent": 40}]}},
    {"name": "free-tier", "type": "and", "and": {"and_sub_policy": [
        {"name": "tier", "type": "string_attribute", "string_attribute": {"key": "tier", "values": ["free"]}},
        {"name": "bytes", "type": "bytes_limiting", "bytes_limiting": {"bytes_per_second": 100000}}]}},
    {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5}},
]
SERVICES = ["frontend", "checkout", "search", "users", "ads", "mail"]
WEIGHTS = [40, 15, 25, 10, 6, 4]
ROUTES = ["/api/pay", "/api/list", "/api/get", "/health"]
N_TRACES = 100_000
RATE = 2000.0                       # traces/s, ~20 000 spans/s


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def run(seed=2024):
    rng = random.Random(seed)
    clock = Clock()
    d = Decider(parse({"sampler": {"policies": POLICIES}}).sampler.policies, clock)
    sampled_by: dict[str, set[int]] = {p.name: set() for p in d.policies}
    for pol in d.policies:                 # count what each policy samples, and with what T
        def counting(trace, _eval=pol.evaluate, _seen=sampled_by[pol.name]):
            v = _eval(trace)
            if v[0] == 1:
                _seen.add(v[1])
            return v
        pol.evaluate = counting
    true = Counter()
    est = Counter()
    naive = Counter()
    by_policy = Counter()
    thresholds = set()
    t = 0.0
    for _ in range(N_TRACES):
        t += rng.expovariate(RATE)
        clock.t = t
        root = rng.choices(SERVICES, WEIGHTS)[0]
        per = {root: rng.randint(1, 8)}
        for _ in range(rng.randint(0, 3)):
            s = rng.choices(SERVICES, WEIGHTS)[0]
            per[s] = per.get(s, 0) + rng.randint(1, 6)
        err = rng.random() < 0.02
        tr = Summary(
            trace_id=rng.getrandbits(128).to_bytes(16, "big"),
            span_count=sum(per.values()), min_start=0,
            max_end=int(math.exp(rng.gauss(math.log(30e6), 0.8))),
            status_mask=(1 << 2) if err else (1 << 0), services=set(per),
            attrs={"http.route": {rng.choice(ROUTES)}, "tier": {rng.choice(["free", "paid", "paid"])}},
            randomness=rng.getrandbits(56), root_service=root)
        dec = d.decide(tr)
        true.update(per)
        if dec.sampled:
            by_policy[dec.policy] += 1
            thresholds.add(dec.threshold)
            p = probability(dec.threshold)
            for s, c in per.items():
                est[s] += c / p
                naive[s] += c
    return true, est, naive, by_policy, thresholds, sampled_by


def test_adjusted_counts_per_service_within_5_percent():
    true, est, naive, by_policy, thresholds, sampled_by = run()
    ratios = {s: est[s] / true[s] for s in SERVICES}
    print("Σ(1/p) / true per service:", {s: round(r, 4) for s, r in ratios.items()})
    print("kept traces by attributed policy:", dict(by_policy))
    for s in SERVICES:
        assert abs(ratios[s] - 1) <= 0.05, (s, ratios[s])
    # the weights matter: the kept spans alone are a fraction of the truth
    assert all(naive[s] / true[s] < 0.7 for s in SERVICES)
    # the mix is real: every policy sampled traces; the limiters, budgets and
    # adaptive did so with thresholds of their own (probabilities < 1)
    assert all(sampled_by[p["name"]] for p in POLICIES)
    for name in ("per-service", "adaptive", "cap", "budgets", "free-tier"):
        assert len(sampled_by[name] - {0}) > 5, name
    assert len(thresholds) > 100
