"""Synthetic load (traceo_sampler.loadgen) and the benchmark sink (benchmarks/sink.py)."""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("traceo_sampler") is None:
    sys.path.insert(0, str(ROOT / "src"))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from traceo_sampler import loadgen  # noqa: E402


def _load_sink():
    spec = importlib.util.spec_from_file_location("bench_sink", ROOT / "benchmarks" / "sink.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sinkmod = _load_sink()
NOW = 1_790_000_000_000_000_000  # fixed clock: byte-identical output per seed


def _attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


def _parse(reqs):
    """[(request_index, service, span)] over all requests."""
    out = []
    for i, data in enumerate(reqs):
        req = ExportTraceServiceRequest.FromString(data)
        for rs in req.resource_spans:
            service = _attrs(rs.resource.attributes)["service.name"]
            for ss in rs.scope_spans:
                assert ss.scope.name
                for sp in ss.spans:
                    out.append((i, service, sp))
    return out


@pytest.fixture(scope="module")
def load2000():
    gen = loadgen.TraceGenerator(42, now_ns=NOW)
    reqs = gen.build_requests(2000, spans_per_request_target=256)
    return reqs, _parse(reqs)


def test_requests_parse_with_protobuf(load2000):
    reqs, spans = load2000
    assert isinstance(reqs, list) and all(isinstance(b, bytes) for b in reqs)
    assert len(spans) == reqs.n_spans == sum(reqs.span_counts)
    for data, n in zip(reqs, reqs.span_counts):
        assert loadgen.count_spans(data) == n
        assert ExportTraceServiceRequest.FromString(data).SerializeToString() == data  # canonical encoding
    kinds = Counter()
    for _i, _svc, sp in spans:
        assert len(sp.trace_id) == 16 and any(sp.trace_id)
        assert len(sp.span_id) == 8 and any(sp.span_id)
        assert len(sp.parent_span_id) in (0, 8)
        assert sp.name
        assert sp.start_time_unix_nano < sp.end_time_unix_nano
        assert abs(sp.end_time_unix_nano - NOW) < 3600 * 10**9  # around "now"
        kinds[sp.kind] += 1
        a = _attrs(sp.attributes)
        if "http.status_code" in a:
            assert isinstance(a["http.status_code"], int)
    assert kinds[1] and kinds[2] and kinds[3]  # INTERNAL, SERVER, CLIENT
    keys = {kv.key for _i, _s, sp in spans for kv in sp.attributes}
    assert {"http.route", "http.status_code", "db.system", "rpc.system"} <= keys
    # requests are about the target size; a request mixes traces, a trace spans requests
    assert max(reqs.span_counts) <= 256
    per_req = defaultdict(set)
    per_trace = defaultdict(set)
    for i, _s, sp in spans:
        per_req[i].add(sp.trace_id)
        per_trace[sp.trace_id].add(i)
    assert max(len(v) for v in per_req.values()) > 1
    assert max(len(v) for v in per_trace.values()) > 1


def test_at_least_five_services_with_resources(load2000):
    reqs, spans = load2000
    services = {svc for _i, svc, _sp in spans}
    assert len(services) >= 5
    assert {"frontend", "checkout", "payment", "cart", "inventory"} <= services
    req = ExportTraceServiceRequest.FromString(reqs[0])
    res = _attrs(req.resource_spans[0].resource.attributes)
    assert {"service.name", "service.version", "host.name", "deployment.environment"} <= res.keys()
    # past the catalogue, extra services appear
    many = _parse(loadgen.TraceGenerator(3, services=20, now_ns=NOW).build_requests(600))
    assert len({svc for _i, svc, _sp in many}) == 20


def test_parents_are_nested_in_the_same_trace(load2000):
    _reqs, spans = load2000
    traces = defaultdict(dict)
    req_of = defaultdict(list)
    for i, _svc, sp in spans:
        traces[sp.trace_id][sp.span_id] = sp
        req_of[sp.trace_id].append(i)
    assert len(traces) == 2000
    for tid, by_id in traces.items():
        roots = [sp for sp in by_id.values() if not sp.parent_span_id]
        assert len(roots) == 1
        for sp in by_id.values():
            if sp.parent_span_id:
                parent = by_id.get(sp.parent_span_id)
                assert parent is not None, "parent must be in the same trace"
                assert parent.start_time_unix_nano < sp.start_time_unix_nano
                assert sp.end_time_unix_nano < parent.end_time_unix_nano
                assert sp.kind != 2 or parent.kind == 3  # a SERVER span is called by a CLIENT span
    # spans are exported as they end: a root never comes before its children
    for i, _svc, sp in spans:
        if not sp.parent_span_id:
            assert i == max(req_of[sp.trace_id])


def test_error_share_close_to_error_rate(load2000):
    reqs, spans = load2000
    errors = Counter(sp.trace_id for _i, _s, sp in spans if sp.status.code == 2)
    assert all(n == 1 for n in errors.values()), "one ERROR span per error trace"
    share = len(errors) / 2000
    assert abs(share - 0.05) < 0.015, share
    assert reqs.stats()["error_traces"] == len(errors)
    for _i, _s, sp in spans:
        if sp.status.code == 2:
            assert sp.status.message
            assert sp.events and sp.events[0].name == "exception"
    none = loadgen.TraceGenerator(1, error_rate=0.0, now_ns=NOW).build_requests(300)
    assert not any(sp.status.code == 2 for _i, _s, sp in _parse(none))


def test_latency_has_a_tail(load2000):
    _reqs, spans = load2000
    durations = sorted(sp.end_time_unix_nano - sp.start_time_unix_nano
                       for _i, _s, sp in spans if not sp.parent_span_id)
    slow = sum(1 for d in durations if d > 1_000_000_000) / len(durations)
    assert 0.005 <= slow <= 0.10, slow
    assert durations[len(durations) // 2] < 200_000_000  # median well under 1 s
    assert durations[-1] > 2_000_000_000  # heavy tail


def test_deterministic_per_seed():
    a = loadgen.TraceGenerator(7, now_ns=NOW).build_requests(50)
    b = loadgen.TraceGenerator(7, now_ns=NOW).build_requests(50)
    c = loadgen.TraceGenerator(8, now_ns=NOW).build_requests(50)
    assert list(a) == list(b)
    assert {t.trace_id for t in a.traces}.isdisjoint({t.trace_id for t in c.traces})


def test_layout_and_replay_with_fresh_trace_ids():
    reqs = loadgen.TraceGenerator(5, now_ns=NOW).build_requests(300, spans_per_request_target=100)
    # offsets found while encoding agree with a walk of the wire format
    assert reqs.layouts() == [loadgen.scan_layout(b) for b in reqs]
    assert 0 < reqs.mean_span_bytes() < reqs.n_bytes / reqs.n_spans
    it = reqs.cycle()
    first = [next(it) for _ in reqs]
    second = [next(it) for _ in reqs]
    assert [d for d, _n in first] == list(reqs)
    s1, s2 = _parse([d for d, _ in first]), _parse([d for d, _ in second])
    assert [n for _d, n in second] == reqs.span_counts
    ids1 = {sp.trace_id for _i, _s, sp in s1}
    ids2 = {sp.trace_id for _i, _s, sp in s2}
    assert len(ids2) == len(ids1) == 300 and ids1.isdisjoint(ids2)
    # the same spans, one new ID per trace, times moved forward by one delta
    mapping = {}
    deltas = set()
    for (_i, _s, a), (_j, _t, b) in zip(s1, s2):
        assert mapping.setdefault(a.trace_id, b.trace_id) == b.trace_id
        assert (a.span_id, a.parent_span_id, a.name) == (b.span_id, b.parent_span_id, b.name)
        deltas.add(b.start_time_unix_nano - a.start_time_unix_nano)
        deltas.add(b.end_time_unix_nano - a.end_time_unix_nano)
    assert len(deltas) == 1 and deltas.pop() > 0
    # kept on disk and sent later: a pickled load moved to a new "now"
    again = pickle.loads(pickle.dumps(reqs)).retimed(NOW + 10**12)
    assert again.newest_time() == NOW + 10**12 and again.span_counts == reqs.span_counts
    assert again.layouts() == [loadgen.scan_layout(b) for b in again]


def test_sdk_batching_one_resource_per_request():
    reqs = loadgen.TraceGenerator(9, now_ns=NOW).build_requests(200, 64, batching="sdk")
    for data in reqs:
        assert len(ExportTraceServiceRequest.FromString(data).resource_spans) == 1
    assert len({t.trace_id for t in reqs.traces}) == 200


# ------------------------------------------------------------------ sending

def test_send_delivers_everything_to_the_sink():
    reqs = loadgen.TraceGenerator(11, now_ns=NOW).build_requests(400, spans_per_request_target=128)

    async def main():
        sink = sinkmod.Sink(mode="parse")
        port = await sink.start()
        try:
            res = await loadgen.send(f"127.0.0.1:{port}", reqs, None, None, concurrency=4)
            stats = sink.stats()
            sink.reset()
            plain = await loadgen.send(f"127.0.0.1:{port}", list(reqs), None, None, concurrency=2,
                                       compression="gzip")
            stats_plain = sink.stats()
        finally:
            await sink.stop()
        return res, stats, plain, stats_plain

    res, stats, plain, stats_plain = asyncio.run(main())
    assert res["requests_ok"] == res["requests"] == len(reqs)
    assert res["requests_failed"] == 0 and res["errors"] == {}
    assert res["spans"] == reqs.n_spans and res["bytes"] == reqs.n_bytes
    assert stats["requests"] == len(reqs)
    assert stats["bytes"] == reqs.n_bytes
    assert stats["spans"] == reqs.n_spans
    assert stats["traces"] == 400
    assert stats["error_traces"] == reqs.stats()["error_traces"]
    assert stats["slow_traces_over_1s"] == reqs.stats()["slow_traces_over_1s"]
    # a plain list of bytes (spans counted by a wire walk), gzip-compressed on the wire
    assert plain["spans"] == reqs.n_spans and stats_plain["spans"] == reqs.n_spans


def test_send_paced_and_for_a_duration():
    reqs = loadgen.TraceGenerator(12, now_ns=NOW).build_requests(200, spans_per_request_target=50)

    async def main():
        sink = sinkmod.Sink(mode="parse")
        port = await sink.start()
        try:
            rate = reqs.n_spans / 0.6  # the whole load in ~0.6 s
            paced = await loadgen.send(f"127.0.0.1:{port}", reqs, rate, None, concurrency=4)
            sink.reset()
            timed = await loadgen.send(f"127.0.0.1:{port}", reqs, reqs.n_spans / 0.3, 0.8, concurrency=2)
            timed_stats = sink.stats()
        finally:
            await sink.stop()
        return paced, timed, timed_stats

    paced, timed, timed_stats = asyncio.run(main())
    assert paced["spans"] == reqs.n_spans
    assert paced["elapsed_s"] >= 0.45
    # replayed past the end of the pool with fresh trace IDs, stopped by the clock
    assert timed["spans"] > reqs.n_spans
    assert 0.5 <= timed["elapsed_s"] < 3.0
    assert timed_stats["traces"] > 200
    assert timed_stats["spans"] == timed["spans"]


class _PushBack:
    """An OTLP gRPC server answering the first ``n`` calls RESOURCE_EXHAUSTED
    (with RetryInfo when ``hint``), then OK."""

    def __init__(self, n: int, hint: bool):
        self.n, self.hint, self.calls = n, hint, 0

    async def start(self) -> int:
        import grpc

        from traceo_sampler.receivers.otlp_grpc import retry_info_trailer

        async def export(request: bytes, context):
            self.calls += 1
            if self.calls <= self.n:
                if self.hint:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "full",
                                        retry_info_trailer("full", 0.02))
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too large")
            return b""
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(export)})
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port


@pytest.mark.parametrize("hint, retries, ok, retried", [
    (True, 5, 4, 3),     # pushed back with RetryInfo: sent again, as the SDK does
    (True, 0, 1, 0),     # retries off: the pushed-back requests fail
    (False, 5, 1, 0),    # RESOURCE_EXHAUSTED without RetryInfo (too large): not retried
])
def test_send_retries_pushback_as_the_sdk_does(hint, retries, ok, retried):
    reqs = loadgen.TraceGenerator(13, now_ns=NOW).build_requests(40, spans_per_request_target=100)
    assert len(reqs) >= 4
    reqs = list(reqs)[:4]

    async def main():
        srv = _PushBack(3, hint)
        port = await srv.start()
        try:
            return await loadgen.send(f"127.0.0.1:{port}", reqs, None, None, concurrency=1,
                                      retries=retries)
        finally:
            await srv.server.stop(None)

    res = asyncio.run(main())
    assert (res["requests_ok"], res["requests_retried"]) == (ok, retried), res
    assert res["requests_failed"] == 4 - ok
    assert res["errors"] == ({"RESOURCE_EXHAUSTED": 4 - ok} if ok < 4 else {})


def test_send_reports_unreachable_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    reqs = loadgen.TraceGenerator(1, now_ns=NOW).build_requests(5)
    res = asyncio.run(loadgen.send(f"127.0.0.1:{port}", reqs, None, None, connect_timeout_s=0.5))
    assert res["requests_ok"] == 0 and "error" in res


def test_send_refuses_one_request_given_as_the_list():
    # a bytes object is a sequence (of ints): taken as a list of requests it
    # would fail deep in the walk; it is refused up front instead
    one = loadgen.TraceGenerator(1, now_ns=NOW).build_requests(1)[0]
    with pytest.raises(TypeError, match="not one request's bytes"):
        asyncio.run(loadgen.send("127.0.0.1:1", one))


def test_the_package_keeps_the_public_names():
    # what tests/, benchmarks/ and scripts/ import from traceo_sampler.loadgen
    for name in ("TraceGenerator", "build_requests", "send", "scan_layout", "count_spans",
                 "EncodedRequests", "RequestLayout", "add_arguments", "run", "main"):
        assert name in loadgen.__all__ and getattr(loadgen, name)


def test_loadgen_command_against_sink_process(capsys):
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "sink.py"), "--port", "0",
                             "--mode", "parse"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        endpoint = f"127.0.0.1:{ready['port']}"
        parser = argparse.ArgumentParser()
        loadgen.add_arguments(parser)
        args = parser.parse_args(["--endpoint", endpoint, "--rate", "20000", "--duration", "0.5",
                                  "--seed", "3", "--error-rate", "0.1", "--services", "6"])
        t0 = time.monotonic()
        assert loadgen.run(args) == 0
        assert time.monotonic() - t0 < 30
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1
        summary = json.loads(out[0])
        assert summary["seed"] == 3 and summary["errors"] == {}
        assert 0 < summary["spans"] <= 20000 * 0.5 + 1024
        stats = sinkmod.query_sync(endpoint)
        assert stats["spans"] == summary["spans"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    final = json.loads(rest.strip().splitlines()[-1])
    assert final["event"] == "stopped" and final["spans"] == summary["spans"]
