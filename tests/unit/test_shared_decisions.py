"""Sidecar mode's decision sharing without a broker (shared_decisions.py):
the hold of local not-sampled traces, remote keeps (held, ahead, later
spans), expiry, the byte bound, fallback while the broker is down, and the
message format. tests/integration/test_sidecar.py runs it on a real broker."""
from __future__ import annotations

import os

import pytest

from support_otlp import ItemSink, make_request, trace
from traceo_sampler.config import ConfigError, loads
from traceo_sampler.pipeline import Pipeline
from traceo_sampler.shared_decisions import decode, encode
from traceo_sampler.telemetry import Metrics

CFG = """
sampler:
  root_wait: 1s
  idle_timeout: 2s
  shared_decisions: {brokers: ["127.0.0.1:1"], hold: 3s, hold_max_mib: 1}
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 50}}
"""


def _tid(keep: bool) -> bytes:
    # the low 56 bits are the randomness: high keeps at 50 %, low does not
    return os.urandom(9) + (b"\xff" * 7 if keep else b"\x00" * 7)


def _pipeline(text=CFG, up=True):
    now = [0.0]
    sink = ItemSink()
    m = Metrics()
    p = Pipeline(loads(text), m, [sink], clock=lambda: now[0])
    p.shared.up = up
    return p, sink, now, m


def _val(m, name, **labels):
    total = 0.0
    for fam in getattr(m, name).collect():
        for s in fam.samples:
            if s.name.endswith(("_total", "")) and all(s.labels.get(k) == v for k, v in labels.items()) \
                    and not s.name.endswith("_created"):
                total += s.value
    return total


def test_not_sampled_is_held_then_final_when_nobody_keeps_it():
    p, sink, now, m = _pipeline()
    observed = []
    real = p.completion.decided
    p.completion.decided = lambda items, at: (observed.extend(items), real(items, at))
    tid = _tid(keep=False)
    p.ingest(make_request([trace(3, tid=tid)]))
    now[0] = 1.5
    p.tick()
    assert sink.items == [] and p.account.traces_not_kept == 0
    assert m.shared_decisions_held_traces._value.get() == 1
    now[0] = 4.4
    p.tick()
    assert p.account.traces_not_kept == 0
    now[0] = 4.6
    p.tick()
    assert p.account.traces_not_kept == 1 and sink.items == []
    assert _val(m, "shared_decisions_held_total", outcome="expired") == 1
    # the completion model observed it once, when it was first decided
    assert len(observed) == 1
    # decided once, with its own trigger
    assert p.account.by_trigger == {"root": 1}


def test_remote_keep_releases_the_held_part_and_later_spans_follow():
    p, sink, now, m = _pipeline()
    tid = _tid(keep=False)
    p.ingest(make_request([trace(3, tid=tid)]))
    now[0] = 1.5
    p.tick()
    assert p.shared.on_keep(tid, "errors") == "held"
    p.tick()
    assert sink.trace_ids() == [tid] and p.account.by_policy == {"errors": 1}
    # a span arriving after the decision follows it
    p.ingest(make_request([trace(1, root=False, tid=tid)]))
    assert p.account.late_kept == 1 and len(sink.items) == 2


def test_remote_keep_ahead_of_the_spans():
    p, sink, now, m = _pipeline()
    tid = _tid(keep=False)
    assert p.shared.on_keep(tid, "slow") == "ahead"
    # its spans follow the remembered keep at once, without waiting
    p.ingest(make_request([trace(2, tid=tid)]))
    assert set(sink.trace_ids()) == {tid} and p.account.late_kept == 2 and p.buffer.ntraces == 0
    assert p.shared.on_keep(tid, "slow") == "duplicate"


def test_only_non_probabilistic_keeps_are_published():
    p, sink, now, m = _pipeline()
    err, lucky = _tid(keep=False), _tid(keep=True)
    p.ingest(make_request([trace(2, tid=err, status=2), trace(2, tid=lucky)]))
    now[0] = 1.5
    p.tick()
    assert sorted(sink.trace_ids()) == sorted([err, lucky])
    assert p.shared._pending == [(err, "errors")]


def test_too_late_keep_is_counted():
    p, sink, now, m = _pipeline()
    tid = _tid(keep=False)
    p.ingest(make_request([trace(2, tid=tid)]))
    now[0] = 1.5
    p.tick()
    now[0] = 5.0
    p.tick()
    assert p.account.traces_not_kept == 1
    assert p.shared.on_keep(tid, "errors") == "too_late"


def test_hold_is_bounded_in_bytes():
    p, sink, now, m = _pipeline()
    big = "x" * 20_000
    for _ in range(80):    # 80 x 3 x 20 kB > hold_max_mib (1 MiB)
        p.ingest(make_request([trace(3, tid=_tid(keep=False), name=big)]))
    now[0] = 1.5
    p.tick()
    assert p.shared.held_bytes <= 1 << 20
    assert _val(m, "shared_decisions_held_total", outcome="evicted") > 0
    p.tick()    # the evicted are final at the next tick
    assert p.account.traces_not_kept == _val(m, "shared_decisions_held_total", outcome="evicted")


def test_fallback_decides_locally_and_counts():
    p, sink, now, m = _pipeline(up=False)
    drop, err = _tid(keep=False), _tid(keep=False)
    p.ingest(make_request([trace(2, tid=drop), trace(2, tid=err, status=2)]))
    now[0] = 1.5
    p.tick()
    assert p.account.traces_not_kept == 1 and sink.trace_ids() == [err]
    assert m.shared_decisions_fallback_traces_total._value.get() == 2
    assert p.shared._pending == []


def test_drain_releases_the_held():
    p, sink, now, m = _pipeline()
    p.ingest(make_request([trace(2, tid=_tid(keep=False))]))
    now[0] = 1.5
    p.tick()
    p.drain(shutdown=True)
    assert p.account.traces_not_kept == 1 and p.shared.held_bytes == 0


def test_message_round_trip_and_bad_messages():
    items = [(os.urandom(16), "errors"), (os.urandom(16), "slow"), (os.urandom(16), "errors")]
    msg = encode(b"12345678", 42, items)
    assert decode(msg) == (b"12345678", 42, items)
    assert len(msg) == 17 + 1 + (1 + 6) + (1 + 4) + 17 * 3
    assert decode(encode(b"12345678", 1, [])) == (b"12345678", 1, [])
    for bad in (b"", msg[:-1], b"\x09" + msg[1:]):
        with pytest.raises(ValueError):
            decode(bad)


def test_config_requires_brokers():
    with pytest.raises(ConfigError) as e:
        loads("sampler: {shared_decisions: {brokers: []}}")
    assert "sampler.shared_decisions.brokers: must not be empty" in e.value.problems
    with pytest.raises(ConfigError) as e:
        loads("sampler: {shared_decisions: {brokers: [a:1], hold: soon}}")
    assert e.value.problems[0].startswith("sampler.shared_decisions.hold")


def test_reload_says_shared_decisions_need_a_restart():
    from traceo_sampler.server import App
    app = App(loads(CFG))
    changed = loads(CFG.replace("hold: 3s", "hold: 4s"))
    assert "sampler.shared_decisions" in app.reload(changed)
    assert "sampler.shared_decisions" not in app.reload(loads(CFG.replace("hold: 3s", "hold: 4s")))
