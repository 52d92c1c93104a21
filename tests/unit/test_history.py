"""The status page's history ring (history.py) and admin.trace_url."""
import pytest

from traceo_sampler import config
from traceo_sampler.forecast import MONTH_S
from traceo_sampler.history import COLUMNS, Counters, History, quantile

INF = float("inf")


def _c(t, spans_in=0, spans_out=0, decided=0, kept=0, occ=0.0, lat=((0.1, 0), (1.0, 0), (INF, 0)),
       usd=None):
    usd = usd or {}
    return Counters(t, spans_in, spans_out, decided, kept, occ, lat,
                    sum(i for i, _ in usd.values()), sum(o for _, o in usd.values()), usd)


def test_quantile_is_prometheus_histogram_quantile():
    b = [(0.1, 50), (1.0, 100), (INF, 100)]
    assert quantile(b, 0.5) == pytest.approx(0.1)
    assert quantile(b, 0.75) == pytest.approx(0.1 + 0.9 * 0.5)
    assert quantile(b, 0.99) == pytest.approx(0.1 + 0.9 * 0.98)
    assert quantile([(0.1, 0), (INF, 0)], 0.99) is None
    assert quantile([(0.1, 0), (1.0, 0), (INF, 5)], 0.99) == 1.0     # above the last bound


def test_points_are_rates_between_samples():
    h = History()
    h.sample(_c(100.0))
    h.sample(_c(101.0, spans_in=500, spans_out=100, decided=40, kept=10, occ=0.25,
                lat=((0.1, 9), (1.0, 10), (INF, 10)), usd={"a": (2.0, 0.5)}))
    h.sample(_c(103.0, spans_in=700, spans_out=100, decided=40, kept=10, occ=0.0,
                lat=((0.1, 9), (1.0, 10), (INF, 10)), usd={"a": (2.0, 0.5)}))
    out = h.since()
    assert out["columns"] == list(COLUMNS)
    p1, p2 = out["points"]
    assert tuple(p1[:5]) == (101.0, 500.0, 100.0, 0.25, 0.25)
    assert p1[5] == pytest.approx(quantile([(0.1, 9), (1.0, 10), (INF, 10)], 0.99))
    assert p1[6] == pytest.approx(2.0) and p1[7] == pytest.approx(0.5)
    assert p2[1] == 100.0 and p2[3] is None and p2[5] is None      # nothing decided: no ratio
    assert [p[0] for p in h.since(101.0)["points"]] == [103.0]
    assert h.since(103.0)["points"] == []


def test_ring_is_bounded():
    h = History(seconds=10, interval=1.0)
    for i in range(50):
        h.sample(_c(float(i), spans_in=i * 10))
    pts = h.since()["points"]
    assert len(pts) == 10 and pts[-1][0] == 49.0 and pts[0][0] == 40.0


def test_live_forecast_projects_the_cost_window():
    h = History(cost_every=10, cost_window=60)
    assert h.forecast(10)["usd_exported_month"] is None
    for i in range(0, 121):
        h.sample(_c(float(i), usd={"a": (0.001 * i, 0.0002 * i), "b": (0.002 * i, 0.0)}))
    f = h.forecast(10.0)
    assert f["basis"] == "live" and f["window_s"] == pytest.approx(60.0)
    assert f["services"]["a"]["usd_received_month"] == pytest.approx(0.001 * MONTH_S)
    assert f["services"]["a"]["usd_exported_month"] == pytest.approx(0.0002 * MONTH_S)
    assert f["usd_received_month"] == pytest.approx(0.003 * MONTH_S)
    assert f["over_budget"] is True                               # 0.0002 $/s is $526 a month


def test_trace_url_needs_the_placeholder(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text('admin: {endpoint: "127.0.0.1:9464", trace_url: "http://jaeger:16686/trace/{trace_id}"}\n')
    assert config.load(str(ok)).admin.trace_url.endswith("{trace_id}")
    bad = tmp_path / "bad.yaml"
    bad.write_text('admin: {trace_url: "http://jaeger:16686/search"}\n')
    with pytest.raises(config.ConfigError) as e:
        config.load(str(bad))
    assert any(p.startswith("admin.trace_url:") and "{trace_id}" in p for p in e.value.problems)


def test_group_counters_are_the_sum_of_the_workers():
    """service.workers: the supervisor's history point is its workers'
    counters (their /api/counters, JSON) added up, services under the
    group's label."""
    import json

    from traceo_sampler.history import counters_from_json, merge_counters
    a = _c(10.0, spans_in=100, spans_out=10, decided=7, kept=2, occ=0.5,
           lat=((0.1, 3), (1.0, 4), (INF, 5)), usd={"a": (1.0, 0.5), "b": (2.0, 0.0)})
    b = _c(10.2, spans_in=50, spans_out=5, decided=3, kept=1, occ=0.1,
           lat=((0.1, 1), (1.0, 1), (INF, 2)), usd={"a": (0.5, 0.25), "c": (4.0, 1.0)})
    wire = [counters_from_json(json.loads(json.dumps(c._asdict()))) for c in (a, b)]
    assert wire == [a, b]
    m = merge_counters(wire, label=lambda s: "other" if s == "c" else s)
    assert (m.spans_in, m.spans_out, m.traces_decided, m.traces_kept) == (150, 15, 10, 3)
    assert m.buffer_occupancy == pytest.approx(0.3)
    assert m.latency_buckets == ((0.1, 4), (1.0, 5), (INF, 7))
    assert m.usd_by_service == {"a": (1.5, 0.75), "b": (2.0, 0.0), "other": (4.0, 1.0)}
    assert m.usd_received == pytest.approx(7.5) and m.usd_exported == pytest.approx(1.75)
