"""The write-ahead log against ``kill -9`` (issue 12): steady load through
``serve`` (a subprocess) with ``sampler.wal``, killed with SIGKILL at a
random moment three times and restarted each time; then drained. Every
span the client got an OTLP success for, of every trace the policies keep,
must reach the sink; every error trace arrives whole; spans the sink got
twice are no more than the duplicates the sampler counted.

The policies are deterministic (status_code, and probabilistic, which
compares the trace ID's randomness with a threshold), so which traces must
be kept is known from the trace IDs. Without the log the same run loses the
traces buffered at each kill (tests/e2e/test_kill9_direct_path.py).

``fsync: interval`` is checked the same way: a process kill loses nothing
either, since what was written before the answer is in the page cache; only
a machine crash can lose up to ``fsync_interval`` of it, which a test
process cannot cause."""
import collections
import os
import random
import signal
import tempfile
import threading
import time

import grpc
import pytest

from support_otlp import CaptureSink, make_request
from support_serve import Serve
from traceo_sampler.tracestate import randomness, threshold_for_percentage

pytestmark = pytest.mark.integration

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PERCENT = 20
T = threshold_for_percentage(PERCENT)
ERROR = 2


class Load:
    """A client sending traces continuously: each trace's two children in
    one request, its root and a third child in the next (20 ms later), so
    there are always traces buffered and traces waiting to be exported."""

    def __init__(self, endpoint: str, seed: int):
        self.endpoint = endpoint
        self.rng = random.Random(seed)
        self.acked: dict[bytes, set[bytes]] = collections.defaultdict(set)
        self.errors: set[bytes] = set()          # traces an error span was sent for
        self.acked_errors: set[bytes] = set()    # ... and acknowledged
        self.sent = self.ok = self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _trace(self):
        tid = self.rng.randbytes(16)
        root = self.rng.randbytes(8)
        err = self.rng.random() < 0.1
        now = time.time_ns()
        def span(sid, parent, status=0):
            return {"trace_id": tid, "span_id": sid, "parent": parent, "start": now,
                    "end": now + 1000, "status": status}
        first = [span(self.rng.randbytes(8), root, ERROR if err else 0),
                 span(self.rng.randbytes(8), root)]
        second = [span(root, b""), span(self.rng.randbytes(8), root)]
        if err:
            self.errors.add(tid)
        return first, second

    def _send(self, call, spans) -> None:
        self.sent += 1
        try:
            call(make_request([spans]), timeout=5)
        except grpc.RpcError:
            self.failed += 1      # not acknowledged: nothing is owed for these
            return
        self.ok += 1
        for s in spans:
            self.acked[s["trace_id"]].add(s["span_id"])
            if s["status"] == ERROR:
                self.acked_errors.add(s["trace_id"])

    def _run(self) -> None:
        pending: list = []
        # reconnect at once after a restart (gRPC's default backoff grows to minutes)
        opts = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 200)]
        with grpc.insecure_channel(self.endpoint, options=opts) as ch:
            call = ch.unary_unary(METHOD)
            while not self.stop.is_set():
                fresh = [self._trace() for _ in range(5)]
                spans = [s for first, _ in fresh for s in first]
                spans += [s for _, second in pending for s in second]
                pending = fresh
                self._send(call, spans)
                time.sleep(0.02)
            self._send(call, [s for _, second in pending for s in second])

    def kept(self, tid: bytes) -> bool:
        """Must be kept: its error span was acknowledged, or the probabilistic rule."""
        return tid in self.acked_errors or randomness(tid, "") >= T

    def may_be_kept(self, tid: bytes) -> bool:
        """May be kept: an error span was sent (it may have been received
        without its answer reaching the client before a kill)."""
        return tid in self.errors or randomness(tid, "") >= T


def _restart(srv: Serve) -> None:
    srv.returncode = None
    srv.__enter__()


@pytest.mark.parametrize("fsync,workers", [("always", 1), ("interval", 2)])
def test_kill_9_loses_no_acknowledged_span_of_a_kept_trace(fsync, workers):
    """(Two runs, to stay under a minute: each fsync mode once, one with
    service.workers: 2.) With 2 workers the supervisor is killed (its workers die with it);
    each worker logs its own shard, and a part handed to another worker is
    answered once that worker logged it."""
    rng = random.Random()
    wal_dir = tempfile.mkdtemp(prefix="traceo-wal-")
    with CaptureSink() as sink:
        srv = Serve({
            "sampler": {"root_wait": "1s", "idle_timeout": "2s", "decision_wait": "5s",
                        "policies": [
                            {"name": "errors", "type": "status_code",
                             "status_code": {"status_codes": ["ERROR"]}},
                            {"name": "some", "type": "probabilistic",
                             "probabilistic": {"sampling_percentage": PERCENT}}],
                        "wal": {"dir": wal_dir, "fsync": fsync, "fsync_interval": "10ms"}},
            "service": {"workers": workers, "shutdown_timeout": "10s"},
            "exporters": {"otlp": {"endpoint": sink.endpoint, "compression": "none",
                                   "retry": {"initial_interval": "50ms", "max_interval": "200ms"}}}})
        srv.__enter__()
        load = Load(srv.endpoint, rng.randrange(1 << 30))
        load.thread.start()
        duplicates = replayed = 0
        try:
            for _ in range(3):
                time.sleep(rng.uniform(0.8, 2.0))
                srv.stop(signal.SIGKILL)
                _restart(srv)
                duplicates += srv.metric("traceo_sampler_wal_duplicate_export_spans_total")
                replayed += srv.metric("traceo_sampler_wal_replayed_spans_total")
            time.sleep(1.0)
        finally:
            load.stop.set()
            load.thread.join(10)
        assert srv.stop(signal.SIGTERM) == 0, srv.stderr[-3000:]
        # a clean drain leaves nothing to replay
        for i in range(workers):
            assert [f for f in os.listdir(os.path.join(wal_dir, f"worker-{i}"))
                    if f.endswith(".wal")] == []

        got: dict[bytes, collections.Counter] = collections.defaultdict(collections.Counter)
        for tid, sp, _res, _scope in sink.spans():
            got[tid][sp.span_id] += 1
    assert load.ok > 50 and replayed > 0, (load.ok, replayed)
    kept = [t for t in load.acked if load.kept(t)]
    lost = {t: load.acked[t] - set(got.get(t, ())) for t in kept}
    lost = {t: s for t, s in lost.items() if s}
    assert not lost, f"{sum(map(len, lost.values()))} acknowledged spans of {len(lost)} kept traces lost"
    # every error trace whole (each of its acknowledged spans), none kept that should not be
    errors = load.acked_errors
    assert errors and all(load.acked[t] <= set(got[t]) for t in errors)
    assert all(load.may_be_kept(t) for t in got)
    # spans the sink has twice: kept traces exported before a kill but not
    # acknowledged, exported again after it; each counted by the sampler
    twice = sum(n - 1 for c in got.values() for n in c.values() if n > 1)
    assert twice <= duplicates, (twice, duplicates)
