"""accounting.Account: what the pipeline counted, its views (/api/status,
the summary, simulate) and the merge of several workers' accounts."""
import json

from support_otlp import ItemSink, make_request, trace
from traceo_sampler import workers
from traceo_sampler.accounting import RECENT, Account, Kept, Prices
from traceo_sampler.config import loads
from traceo_sampler.pipeline import Pipeline
from traceo_sampler.telemetry import Metrics

PRICES = Prices(0.5, {"db": 2.0})


def _kept(i: int, at: float, **kw) -> Kept:
    d = dict(trace_id=bytes([i]) * 16, policy="errors", trigger="root", spans=3,
             services={"front": 1, "db": 2}, threshold=0, at=at, root_service="front",
             root_name="GET /x", duration_ns=1_234_567, status_mask=4)
    d.update(kw)
    return Kept(**d)


def _account(scale: int = 1, at: float = 0.0) -> Account:
    a = Account()
    a.received(100 * scale, 10_000 * scale)
    for label, n, nb in (("front", 60, 6000), ("db", 40, 4000)):
        row = a.service(label)
        row.spans_received += n * scale
        row.bytes_received += nb * scale
    a.decisions({("sampled", "errors", "root"): 2 * scale, ("not_sampled", "", "root"): 5 * scale,
                 ("dropped", "", "memory"): 1 * scale}, 30 * scale)
    a.rescued("errors", 4 * scale)
    a.late(3 * scale, 7 * scale)
    a.exported({"front": [20 * scale, 2000 * scale], "db": [17 * scale, 1700 * scale]})
    for i in range(3):
        a.recent.append(_kept(i, at + i))
    return a


def test_counts_keep_their_invariants():
    a = _account()
    assert a.decided == 8 and a.traces_kept + a.traces_not_kept == a.decided
    # the rescued trace moved from not kept to kept, decided once
    assert a.traces_kept == 3 and a.traces_not_kept == 5 and a.by_policy == {"errors": 3}
    assert sum(a.by_trigger.values()) == a.decided == 8
    assert a.spans_kept == 34 and a.spans_exported == 37
    assert sum(r.spans_exported for r in a.services.values()) == a.spans_exported
    assert a.bytes_exported == 3700


def test_status_view():
    st = _account().status(PRICES)
    assert st["traces_decided"] == 8 and st["traces_kept"] == 3 and st["traces_not_kept"] == 5
    # spans_kept is every kept span exported, late ones included (as simulate's spans_after)
    assert st["spans_kept"] == 37 and st["keep_ratio_spans"] == 0.37
    assert st["keep_ratio_traces"] == 0.375
    assert st["kept_by_policy"] == {"errors": {"traces": 3, "share_of_decided": 0.375}}
    assert st["decisions_by_trigger"] == {"memory": 1, "root": 7}
    assert st["late_spans"] == {"sampled": 3, "not_sampled": 7}
    db = st["services"]["db"]
    assert db["spans_exported"] == 17 and db["keep_ratio"] == 0.425
    # db has its own price (2 $/GiB), front the default
    assert db["usd_received"] == round(4000 * 2.0 / 2**30, 6)
    usd_in = (4000 * 2.0 + 6000 * 0.5) / 2**30
    usd_out = (1700 * 2.0 + 2000 * 0.5) / 2**30
    assert st["cost"] == {"usd_per_gib": 0.5, "usd_received": round(usd_in, 6),
                          "usd_exported": round(usd_out, 6),
                          "saving_ratio": round(1 - usd_out / usd_in, 4)}
    assert [r["at"] for r in st["recent_kept"]] == [2.0, 1.0, 0.0]
    assert st["recent_kept"][0] == {
        "trace_id": "02" * 16, "policy": "errors", "trigger": "root", "spans": 3,
        "services": ["db", "front"], "threshold": "0", "at": 2.0, "root": "front GET /x",
        "duration_ms": 1.235, "error": True}
    assert set(st) == Account.STATUS_KEYS
    assert "recent_kept" not in _account().status(PRICES, recent=False)


def test_simulate_view_has_the_status_numbers():
    a = _account()
    st, sim = a.status(PRICES), a.simulate(PRICES)
    assert (sim["traces"], sim["traces_kept"], sim["keep_rate_traces"]) == \
        (st["traces_decided"], st["traces_kept"], st["keep_ratio_traces"])
    assert (sim["spans_before"], sim["spans_after"], sim["bytes_before"]) == \
        (st["spans_received"], st["spans_kept"], st["bytes_received"])
    assert sim["bytes_after"] == sum(r["bytes_exported"] for r in st["services"].values())
    assert {k: v["traces"] for k, v in sim["per_policy"].items()} == \
        {k: v["traces"] for k, v in st["kept_by_policy"].items()}
    assert sim["per_trigger"] == st["decisions_by_trigger"] and sim["late_spans"] == st["late_spans"]
    for svc, row in st["services"].items():
        s = sim["per_service"][svc]
        assert (s["spans_before"], s["spans_after"], s["bytes_before"], s["bytes_after"]) == \
            (row["spans_received"], row["spans_exported"], row["bytes_received"], row["bytes_exported"])
        assert round(s["usd_before"], 6) == row["usd_received"]
    assert round(sim["cost"]["usd_after"], 6) == st["cost"]["usd_exported"]


def test_status_reads_back_into_the_same_account():
    a = _account()
    st = json.loads(json.dumps(a.status(PRICES)))      # as a worker serves it
    b = Account.from_status(st)
    assert b.status(PRICES) == a.status(PRICES)
    assert b.spans_kept == a.spans_kept and b.late_kept == a.late_kept
    # a summary (no recent_kept) reads back too
    assert Account.from_status(a.status(PRICES, recent=False)).recent_kept() == []
    assert Account.from_status({}).status(PRICES)["traces_decided"] == 0


def test_merge_sums_and_keeps_the_newest_recent():
    a, b = _account(1, at=10.0), _account(2, at=0.0)
    m = a.merge(b)
    assert m.decided == 24 and m.traces_kept == 8 and m.spans_exported == 111
    assert m.by_policy == {"errors": 8} and m.by_trigger == {"root": 21, "memory": 3}
    assert m.services["db"].spans_received == 120 and m.services["front"].bytes_exported == 6000
    assert [k.at for k in m.recent] == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    # the inputs are untouched, and the order of merging does not matter
    assert a.decided == 8 and b.decided == 16
    assert b.merge(a).status(PRICES) == m.status(PRICES)
    assert Account().merge(a).status(PRICES) == a.status(PRICES)
    st = m.status(PRICES)
    assert st["keep_ratio_traces"] == 0.3333 and st["services"]["db"]["keep_ratio"] == 0.425


def test_merge_of_many_is_bounded_and_newest_last():
    many = Account.merged(_account(1, at=100.0 * i) for i in range(30))
    ats = [k.at for k in many.recent]
    assert len(ats) == RECENT and ats == sorted(ats)
    every = sorted(100.0 * i + j for i in range(30) for j in range(3))
    assert ats == every[-RECENT:]


def test_relabel_adds_rows_that_share_a_label():
    a = _account()
    r = a.relabel(lambda s: "other")
    assert list(r.services) == ["other"]
    assert r.services["other"].spans_received == 100 and r.services["other"].bytes_exported == 3700
    assert r.decided == a.decided and len(r.recent) == 3
    assert list(a.services) == ["front", "db"]


def test_workers_merge_status_is_the_accounts_merge():
    a, b = _account(1, at=10.0), _account(3, at=0.0)

    def status(acct, buf_bytes, uptime):
        return json.loads(json.dumps({
            "uptime_s": uptime, **acct.status(PRICES),
            "buffer": {"spans": 1, "traces": 1, "bytes": buf_bytes, "limit_bytes": 100,
                       "occupancy": buf_bytes / 100},
            "exporters": {"otlp": {"sent_spans": 5, "dropped_spans": 0}}}))
    m = workers.merge_status([status(a, 10, 5.0), status(b, 70, 7.0)], PRICES)
    want = a.merge(b).status(PRICES)
    assert {k: m[k] for k in Account.STATUS_KEYS} == want
    assert m["uptime_s"] == 7.0 and m["buffer"]["occupancy"] == 0.4
    assert m["exporters"]["otlp"]["sent_spans"] == 10
    # summaries (no recent_kept) merge without one; the group's labels apply
    s = workers.merge_status([a.status(PRICES, recent=False), b.status(PRICES, recent=False)],
                             PRICES, lambda svc: "all")
    assert "recent_kept" not in s and list(s["services"]) == ["all"]
    assert s["services"]["all"]["spans_received"] == 400


def test_pipeline_counts_into_its_account():
    cfg = loads("sampler:\n  root_wait: 1s\n  idle_timeout: 1s\n  policies:\n"
                "    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n")
    now = [0.0]
    sink = ItemSink()
    p = Pipeline(cfg, Metrics(), [sink], clock=lambda: now[0])
    err, ok = trace(3, status=2), trace(2)
    p.ingest(make_request([err, ok], service="front") + make_request([trace(2)], service="db"))
    now[0] = 2.0
    p.tick()
    late = trace(1, root=False, tid=err[0]["trace_id"])
    p.ingest(make_request([late], service="db"))
    p.drain()
    a = p.account
    assert (a.decided, a.traces_kept, a.traces_not_kept) == (3, 1, 2)
    assert a.spans_received == 8 and a.spans_exported == 4 == sink.spans
    assert a.late_kept == 1 and sum(a.by_trigger.values()) == 3
    assert a.services["front"].spans_exported == 3 and a.services["db"].spans_exported == 1
    assert sum(r.spans_received for r in a.services.values()) == a.spans_received
    assert sum(r.bytes_received for r in a.services.values()) == a.bytes_received
    assert a.recent[-1].trace_id == err[0]["trace_id"] and a.recent[-1].spans == 3


def test_shutdown_drop_counts_its_trigger():
    cfg = loads("sampler:\n  drop_pending_traces_on_shutdown: true\n  policies:\n"
                "    - {name: all, type: always_sample}\n")
    p = Pipeline(cfg, Metrics(), [ItemSink()], clock=lambda: 0.0)
    p.ingest(make_request([trace(2), trace(2)]))
    p.drain(shutdown=True)
    st = p.account.status(p.prices)
    assert st["traces_decided"] == 2 == st["traces_not_kept"]
    assert st["decisions_by_trigger"] == {"shutdown": 2}


def test_a_reloaded_price_waits_for_a_restart():
    from traceo_sampler.server import App
    base = "sampler: {policies: [{name: all, type: always_sample}]}\n"
    app = App(loads(base + "cost: {usd_per_gib: 0.5}\n"))
    assert "cost" in app.reload(loads(base + "cost: {usd_per_gib: 2.0}\n"))
    # the status keeps pricing with what the counted dollars were priced at
    assert app.status()["cost"]["usd_per_gib"] == 0.5
