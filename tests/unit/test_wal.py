"""The write-ahead log (wal.py) without a server: the segment format, a torn
tail after a crash, replay into a fresh pipeline (arrival times, decisions
not taken twice, kept-but-unacknowledged traces exported again), segment
deletion by the offset tracker's accounting, group commit, max_bytes and
disk errors."""
import asyncio
import os
import time

import pytest

from support_otlp import ItemSink, make_request, trace
from traceo_sampler.config import loads
from traceo_sampler.pipeline import Pipeline
from traceo_sampler.telemetry import Metrics
from traceo_sampler.wal import (ACKS, DECISIONS, MAGIC, SPANS, WalFront, WalTracker,
                                WriteAheadLog, decode_decisions, read_segment, recover)

ERROR = 2
POLICIES = """
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
"""


def _cfg(tmp, fsync="never", extra=""):
    return loads(f"""sampler:
  root_wait: 2s
  idle_timeout: 5s
  decision_wait: 30s
  wal: {{dir: {tmp}, fsync: {fsync}, fsync_interval: 5ms, max_bytes: {64 << 20}{extra}}}
""" + POLICIES)


class Node:
    """One 'process': a pipeline on a settable clock, its log, its sink."""

    def __init__(self, tmp, fsync="never", extra="", t0=1000.0):
        self.cfg = _cfg(tmp, fsync, extra)
        self.now = [t0]
        self.sink = ItemSink()
        self.metrics = Metrics()
        self.wal = WriteAheadLog(self.cfg.sampler.wal, self.metrics, str(tmp))
        self.tracker = WalTracker(self.wal, None)
        self.p = Pipeline(self.cfg, self.metrics, [self.sink], clock=lambda: self.now[0],
                          tracker=self.tracker)
        self.tracker.cached = self.p.buffer.cached
        self.front = WalFront(self.p, self.wal, self.tracker)
        self.old = self.wal.open()

    def crash(self):
        """What kill -9 leaves: nothing flushed beyond the page cache, the
        process's files (and its lock on the log) closed by the kernel."""
        for fd in [self.wal._fd, self.wal._lock_fd] + self.wal._sealed:
            if fd >= 0:
                os.close(fd)
        self.wal._fd = self.wal._lock_fd = -1
        self.wal._sealed = []

    def metric(self, name):
        return self.metrics.registry.get_sample_value("traceo_sampler_" + name) or 0


def _req(n_traces=3, error=False, spans=3):
    tr = [trace(spans, status=ERROR if error else 0) for _ in range(n_traces)]
    return make_request(tr), [t[0]["trace_id"] for t in tr]


def test_segment_format_round_trip(tmp_path):
    n = Node(tmp_path)
    data, tids = _req()
    seq = n.wal.append_spans(data, 123)
    n.wal.note_decision(tids[0], True, "errors", 7)
    n.wal.note_decision(tids[1], False, "", 0)
    n.wal.note_acked([tids[0]])
    n.wal._write_small()
    records, torn = read_segment(n.wal.path(seq))
    assert not torn
    assert [k for k, _ in records] == [SPANS, DECISIONS, ACKS]
    assert records[0][1][8:] == data and int.from_bytes(records[0][1][:8], "little") == 123
    assert list(decode_decisions(records[1][1])) == [(tids[0], True, "errors", 7),
                                                      (tids[1], False, "", 0)]
    assert records[2][1] == tids[0]
    with open(n.wal.path(seq), "rb") as fh:
        assert fh.read(len(MAGIC)) == MAGIC


def test_torn_tail_and_corrupt_record(tmp_path):
    n = Node(tmp_path)
    d1, _ = _req()
    d2, _ = _req()
    seq = n.wal.append_spans(d1, 1)
    n.wal.append_spans(d2, 2)
    path = n.wal.path(seq)
    size = os.path.getsize(path)
    # a crash in the middle of the second record's write
    os.truncate(path, size - 10)
    records, torn = read_segment(path)
    assert torn and len(records) == 1 and records[0][1][8:] == d1
    # a flipped byte in the first record: nothing after it is trusted
    with open(path, "r+b") as fh:
        fh.seek(len(MAGIC) + 20)
        b = fh.read(1)
        fh.seek(len(MAGIC) + 20)
        fh.write(bytes((b[0] ^ 0xFF,)))
    records, torn = read_segment(path)
    assert torn and records == []
    # only the header's first bytes
    os.truncate(path, len(MAGIC) + 3)
    assert read_segment(path) == ([], True)


def test_replay_after_crash(tmp_path):
    """Undecided traces come back at their arrival times; a trace decided
    not sampled is not decided again; a kept one acknowledged is not
    exported again; a kept one not acknowledged is, counted."""
    a = Node(tmp_path)
    pending, pending_ids = _req(3)
    dropped, dropped_ids = _req(2)
    acked, acked_ids = _req(2, error=True)
    unacked, unacked_ids = _req(2, error=True, spans=4)
    for d in (dropped, acked):
        a.front.ingest(d)
    a.now[0] += 10                     # past root_wait: decided
    a.p.tick()
    a.sink.ack_all()                   # the first kept pair acknowledged
    a.front.ingest(unacked)
    a.now[0] += 10
    a.p.tick()                         # the second kept pair: not acknowledged
    assert set(a.sink.trace_ids()) == set(acked_ids) | set(unacked_ids)
    t_pending = time.time_ns()
    a.front.ingest(pending)
    a.wal._write_small()
    # kill -9: nothing closed, nothing flushed beyond the page cache

    a.crash()
    b = Node(tmp_path, t0=5000.0)
    assert b.old == [0]
    rec = recover(b.wal, b.old, b.p, b.tracker)
    assert rec.traces == 3 and rec.spans == 9
    assert rec.reexported_traces == 2 and rec.reexported_spans == 8
    assert b.metric("wal_duplicate_export_traces_total") == 2
    assert b.metric("wal_replayed_spans_total") == 9
    # exported again at once, with the remembered decision (tracestate th:0)
    assert set(b.sink.trace_ids()) == set(unacked_ids)
    assert all(b.p.holds(t) for t in pending_ids)
    assert not any(b.p.holds(t) for t in dropped_ids + acked_ids)
    # their late spans would follow the remembered decisions
    assert b.p.buffer.cached(dropped_ids[0]) is False
    assert b.p.buffer.cached(acked_ids[0])[0] == "errors"
    # original arrival time: the trace arrived (now - age) on the new clock
    t = b.p.buffer.traces[pending_ids[0]]
    age = (time.time_ns() - t_pending) / 1e9
    assert 5000.0 - age - 1.0 <= t.first_arrival <= 5000.0


def test_replay_decides_overdue_traces_at_once(tmp_path):
    a = Node(tmp_path)
    err, err_ids = _req(2, error=True)
    a.front.ingest(err)
    a.wal._write_small()
    # arrived "40 s ago": past decision_wait
    a.crash()
    b = Node(tmp_path, t0=100.0)
    recover(b.wal, b.old, b.p, b.tracker, wall=lambda: time.time_ns() + 40 * 10**9)
    assert b.p.tick() == 2
    assert set(b.sink.trace_ids()) == set(err_ids)


def test_segments_deleted_once_decided_and_acknowledged(tmp_path):
    n = Node(tmp_path)
    n.wal.segment_max = 1          # a segment per request
    reqs = [_req(2, error=(i % 2 == 0)) for i in range(6)]
    for d, _ in reqs:
        n.front.ingest(d)
    assert len(n.wal.existing()) == 7       # 6 full + the active one
    assert n.wal.collect() == 0             # nothing decided yet
    n.now[0] += 10
    n.p.tick()
    n.wal._write_small()
    assert n.wal.collect() == 0             # kept traces not acknowledged yet
    n.sink.ack_all()
    assert n.wal.collect() == 6
    assert n.wal.existing() == [n.wal.seq]
    assert n.metric("wal_segments") == 1


def test_a_held_segment_keeps_the_later_ones(tmp_path):
    """Deletion is a prefix, as a commit point: decision records always
    come after the spans they decide, so they are never deleted first."""
    n = Node(tmp_path)
    n.wal.segment_max = 1
    slow, slow_ids = _req(1)
    n.front.ingest(slow)
    n.now[0] += 1
    for _ in range(3):
        n.front.ingest(_req(1)[0])
    n.p.buffer.discard(slow_ids[0])         # not decided; still held
    n.now[0] += 10
    n.p.tick()
    assert n.wal.collect() == 0
    n.tracker.done(slow_ids[0])
    assert n.wal.collect() == 4


def test_group_commit_always(tmp_path):
    async def run():
        n = Node(tmp_path, fsync="always")
        await n.wal.start()
        futs = []
        for _ in range(50):
            res = n.front.ingest(_req(1)[0])
            futs.append(res.acked)
        assert all(f is not None and not f.done() for f in futs)
        assert await asyncio.gather(*futs) == [""] * 50
        h = n.metrics.registry.get_sample_value("traceo_sampler_wal_fsync_seconds_count")
        await n.wal.close()
        return h
    fsyncs = asyncio.run(run())
    assert 1 <= fsyncs <= 3                  # 50 requests, one or two fsyncs


def test_interval_and_never_answer_without_waiting(tmp_path):
    async def run(mode, sub):
        n = Node(tmp_path / sub, fsync=mode)
        await n.wal.start()
        res = n.front.ingest(_req(1)[0])
        assert res.acked is None
        await asyncio.sleep(0.05)
        c = n.metrics.registry.get_sample_value("traceo_sampler_wal_fsync_seconds_count") or 0
        await n.wal.close()
        return c
    assert asyncio.run(run("interval", "i")) >= 1
    assert asyncio.run(run("never", "n")) == 0


def test_max_bytes_pushes_back(tmp_path):
    n = Node(tmp_path, extra=", max_bytes: 1048576")
    assert not n.front.backpressure()
    big = make_request([trace(400, name="x" * 3000)])
    n.front.ingest(big)
    assert n.wal.full() and n.front.backpressure()
    assert n.front.pushback_reason() == "write-ahead log full (sampler.wal.max_bytes)"
    n.wal._gauges()
    assert n.metric("wal_full") == 1


@pytest.mark.parametrize("on_error", ["refuse", "continue"])
def test_disk_error_is_loud(tmp_path, on_error):
    async def run():
        n = Node(tmp_path, extra=f", on_error: {on_error}")
        os.close(n.wal._fd)                  # the disk goes away under the log
        res = n.front.ingest(_req(1)[0])
        assert not n.wal.healthy and "write" in n.wal.error
        assert n.metrics.registry.get_sample_value(
            "traceo_sampler_wal_errors_total", {"op": "write"}) == 1
        assert n.metric("wal_healthy") == 0
        if on_error == "refuse":
            assert await res.acked == n.wal.error and n.p.account.spans_received == 0
        else:
            assert n.p.account.spans_received == 3
        n.wal._fd = -1
    asyncio.run(run())


def test_invalid_spans_are_not_logged(tmp_path):
    n = Node(tmp_path)
    good = trace(2)
    bad = trace(1)
    bad[0]["span_id"] = b"\x01"             # not 8 bytes: rejected
    seq = n.wal.seq
    res = n.front.ingest(make_request([good, bad]))
    assert res.accepted == 2 and res.rejected == 1
    (kind, payload), = read_segment(n.wal.path(seq))[0]
    from traceo_sampler.scan import scan
    assert len(scan(payload[8:], frozenset()).spans) == 2


def test_config_sizes_and_refusals():
    from traceo_sampler.config import ConfigError

    def wal(block):
        return loads("sampler:\n  wal: " + block + POLICIES).sampler.wal
    assert wal("{max_bytes: 4GiB}").max_bytes == 4 << 30
    assert wal("{max_bytes: 512MiB}").max_bytes == 512 << 20
    assert wal("{}").fsync == "interval" and wal("{}").max_bytes == 4 << 30
    for bad, field in (("{max_bytes: 10}", "max_bytes"), ("{max_bytes: lots}", "max_bytes"),
                       ("{fsync: sometimes}", "fsync"), ("{fsync_interval: 0ms}", "fsync_interval"),
                       ("{on_error: ignore}", "on_error")):
        with pytest.raises(ConfigError) as e:
            wal(bad)
        assert any(p.startswith(f"sampler.wal.{field}") for p in e.value.problems), e.value.problems
    with pytest.raises(ConfigError) as e:
        loads("receivers: {kafka: {brokers: [k:9092]}}\nsampler:\n  wal: {}" + POLICIES)
    assert any(p.startswith("sampler.wal: not with receivers.kafka") for p in e.value.problems)


def test_workers_split_max_bytes():
    from traceo_sampler.workers import share
    cfg = loads("sampler:\n  wal: {max_bytes: 3GiB}" + POLICIES)
    parts = [share(cfg, 3, i).sampler.wal.max_bytes for i in range(3)]
    assert sum(parts) == 3 << 30 and len(set(parts)) == 1


def test_replay_over_many_segments_with_a_torn_last_one(tmp_path):
    a = Node(tmp_path)
    a.wal.segment_max = 1                   # one request per segment
    sent = [_req(2) for _ in range(5)]
    for d, _ in sent:
        a.front.ingest(d)
    segs = a.wal.existing()
    assert len(segs) == 6
    last = a.wal.path(segs[-2])             # the last full one: cut in its record
    os.truncate(last, os.path.getsize(last) - 7)
    a.crash()
    b = Node(tmp_path)
    rec = recover(b.wal, b.old, b.p, b.tracker)
    assert rec.segments == 6 and rec.torn == 1 and b.metric("wal_torn_records_total") == 1
    assert rec.traces == 8 and rec.spans == 24
    assert all(b.p.holds(t) for _, ids in sent[:4] for t in ids)
    assert not any(b.p.holds(t) for t in sent[4][1])
    # the replayed traces hold their old segments (and those after them)
    assert b.wal.collect() == 0
    b.now[0] += 60                          # decided (not kept: no error)
    b.p.tick()
    assert b.wal.collect() == 6 and b.wal.existing() == [b.wal.seq]


def test_one_process_per_log(tmp_path):
    a = Node(tmp_path)
    WriteAheadLog.LOCK_WAIT = 0.2
    try:
        with pytest.raises(OSError, match="in use by another process"):
            Node(tmp_path)
        a.crash()                         # the first one dies: its lock goes with it
        assert Node(tmp_path).old == [0]
    finally:
        WriteAheadLog.LOCK_WAIT = 10.0


def test_serve_app_with_the_log(tmp_path):
    """App: the log in front of the pipeline, opened and recovered at start
    (before the receivers), /readyz failing after a disk error, its status,
    a clean shutdown leaving no segment."""
    from traceo_sampler import config
    from traceo_sampler.server import App

    async def main():
        cfg = config.parse({"sampler": {"wal": {"dir": str(tmp_path)}, "policies": [
                                {"name": "errors", "type": "status_code",
                                 "status_code": {"status_codes": ["ERROR"]}}]},
                            "exporters": {"file": {"path": str(tmp_path / "k.jsonl")}}})
        app = App(cfg)
        assert isinstance(app.intake, WalFront) and app.wal.dir == str(tmp_path / "worker-0")
        await app._recover()
        class Listening:
            name = "otlp_grpc"
        app.receivers.append(Listening())
        assert app.ready() == (True, "")
        res = app.intake.ingest(_req(2)[0])
        assert res.accepted == 6 and app.status()["wal"]["segments"] == 1
        app.wal._fail("fsync", OSError(5, "Input/output error"))
        ok, why = app.ready()
        assert not ok and "fsync failed" in why and "Input/output error" in why
        assert app.status()["wal"]["healthy"] is False
        app.wal.error = ""
        app.receivers.clear()
        await app.shutdown()
        assert [f for f in os.listdir(app.wal.dir) if f.endswith(".wal")] == []
    asyncio.run(main())
