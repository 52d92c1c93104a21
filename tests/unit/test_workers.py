"""service.workers pieces that need no processes: each worker's share of
the budgets adds up to the configured totals; merged metrics and status."""
import os

from traceo_sampler import config, workers

YAML = """
sampler:
  memory_limit_mib: 1001
  policies:
    - {name: rl, type: rate_limiting, rate_limiting: {spans_per_second: 1001, burst_capacity: 3}}
    - {name: bl, type: bytes_limiting, bytes_limiting: {bytes_per_second: 10}}
    - {name: ad, type: adaptive, adaptive: {target_spans_per_second: 300.0}}
    - {name: sr, type: service_rate, service_rate: {services: {a: {sampling_percentage: 50, spans_per_second: 7}}, default: {spans_per_second: 5}}}
    - name: both
      type: and
      and: {and_sub_policy: [{name: inner, type: rate_limiting, rate_limiting: {spans_per_second: 9}}]}
    - name: comp
      type: composite
      composite:
        max_total_spans_per_second: 100
        policy_order: [c1]
        composite_sub_policy: [{name: c1, type: always_sample}]
exporters: {otlp: {endpoint: "127.0.0.1:1", queue_max_bytes: 300000000}}
service: {workers: 3}
"""


def test_shares_add_up_to_the_totals():
    cfg = config.loads(YAML)
    shares = [workers.share(cfg, 3, i, "unix:/tmp/x") for i in range(3)]
    pol = lambda c, k: c.sampler.policies[k]
    assert sum(pol(c, 0).rate_limiting.spans_per_second for c in shares) == 1001
    assert sum(pol(c, 0).rate_limiting.burst_capacity for c in shares) == 3
    assert sum(pol(c, 1).bytes_limiting.bytes_per_second for c in shares) == 10
    assert abs(sum(pol(c, 2).adaptive.target_spans_per_second for c in shares) - 300) < 1e-9
    assert sum(pol(c, 3).service_rate.services["a"].spans_per_second for c in shares) == 7
    assert all(pol(c, 3).service_rate.services["a"].sampling_percentage == 50 for c in shares)
    assert sum(pol(c, 3).service_rate.default.spans_per_second for c in shares) == 5
    assert sum(pol(c, 4).and_.and_sub_policy[0].rate_limiting.spans_per_second
               for c in shares) == 9
    assert sum(pol(c, 5).composite.max_total_spans_per_second for c in shares) == 100
    assert sum(c.sampler.memory_limit_mib for c in shares) == 1001
    assert sum(c.exporters.otlp.queue_max_bytes for c in shares) == 300000000
    assert all(c.service.workers == 1 and c.admin.endpoint == "unix:/tmp/x" for c in shares)


def test_config_round_trips_to_the_workers():
    cfg = config.loads(YAML)
    assert config.loads(config.dump(cfg)) == cfg
    d = config.load(None)
    assert config.loads(config.dump(d)) == d


def test_workers_field():
    assert config.loads("service: {workers: 2}").service.workers == 2
    assert config.loads("{}").service.workers == "auto"
    try:
        config.loads("service: {workers: 0}")
    except config.ConfigError as exc:
        assert exc.problems[0].startswith("service.workers")
    else:
        raise AssertionError("workers: 0 accepted")


def test_auto_is_the_cpus_this_process_may_use():
    n = workers.cpus_available()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    assert workers.worker_count(config.loads("{}")) == n


def test_merged_metrics_sum_and_parse_back():
    from prometheus_client.parser import text_string_to_metric_families
    from traceo_sampler.telemetry import Metrics
    from prometheus_client import generate_latest
    parts = []
    for k in (1, 2):
        m = Metrics()
        m.spans_received_total.labels("a").inc(10 * k)
        m.buffer_spans.set(k)
        m.decision_latency_seconds.observe(0.01 * k)
        m.config_reloads_total.labels("applied").inc()
        m.cost_budget_usd_monthly.set(50)
        parts.append(workers.parse_metrics(generate_latest(m.registry).decode()))
    text = workers.render_metrics(*workers.merge_metrics(parts))
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert got[("traceo_sampler_spans_received_total", (("service", "a"),))] == 30
    assert got[("traceo_sampler_buffer_spans", ())] == 3
    assert got[("traceo_sampler_decision_latency_seconds_count", ())] == 2
    assert got[("traceo_sampler_decision_latency_seconds_bucket", (("le", "0.025"),))] == 2
    # one group-wide event per worker, and a setting: not summed
    assert got[("traceo_sampler_config_reloads_total", (("outcome", "applied"),))] == 1
    assert got[("traceo_sampler_cost_budget_usd_monthly", ())] == 50
    assert not any(n.endswith("_created") for n, _ in got)


def test_parse_metrics_is_prometheus_clients_parse():
    """The supervisor's line walk gives what prometheus_client's parser
    gives, odd label values included."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from traceo_sampler.telemetry import Metrics
    m = Metrics()
    for svc in ("a", 'q"uote', "back\\slash", "new\nline", "br{ace}s, =x"):
        m.spans_received_total.labels(svc).inc(7)
        m.cost_usd_total.labels(svc, "received").inc(0.25)
    m.buffer_spans.set(12)
    m.decision_latency_seconds.observe(0.3)
    m.invalid_spans_total.labels("trace_id_length").inc(2)
    text = generate_latest(m.registry).decode()
    want_s: dict = {}
    want_f: dict = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.endswith("_created"):
            continue
        want_f[fam.name] = (fam.type, fam.documentation, [])
        for s in fam.samples:
            if not s.name.endswith("_created"):
                key = (s.name, tuple(sorted(s.labels.items())))
                want_s[key] = s.value
                want_f[fam.name][2].append(key)
    got = workers.parse_metrics(text)
    assert got["samples"] == want_s and got["families"] == want_f
    assert got["samples"][("traceo_sampler_spans_received_total", (("service", "new\nline"),))] == 7
