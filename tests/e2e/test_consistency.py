"""Consistency metrics through `serve`: crafted traces plant a known number
of orphans, skewed children, duplicates, rootless traces, late spans and
invalid spans; each counter moves by exactly that number."""
import json
import os
import time

import grpc
import pytest

from support_otlp import CaptureSink, make_request
from support_serve import Serve

pytestmark = pytest.mark.e2e
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MS = 1_000_000


def span(tid, sid, parent=b"", start=0, end=100 * MS, **kw):
    d = {"trace_id": tid, "span_id": sid, "parent": parent, "start": start, "end": end}
    d.update(kw)
    return d


def test_each_consistency_counter_moves_by_exactly_what_was_planted():
    with CaptureSink() as sink:
        cfg = {"sampler": {"root_wait": "200ms", "idle_timeout": "1s", "record_policy": True,
                           "policies": [{"name": "all", "type": "always_sample"}]},
               "telemetry": {"skew_tolerance": "5ms"},
               "exporters": {"otlp": {"endpoint": sink.endpoint}}}
        with Serve(cfg) as srv:
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary(METHOD)
            t0 = 1_700_000_000_000 * MS
            traces = []
            # 1. a clean trace: root + 2 children inside it
            tid, root = os.urandom(16), os.urandom(8)
            traces.append([span(tid, root, start=t0, end=t0 + 100 * MS),
                           span(tid, os.urandom(8), root, t0 + 10 * MS, t0 + 20 * MS),
                           span(tid, os.urandom(8), root, t0 + 30 * MS, t0 + 40 * MS)])
            # 2. orphans: 3 spans whose parent never arrives (trace has a root)
            tid, root = os.urandom(16), os.urandom(8)
            traces.append([span(tid, root, start=t0, end=t0 + 100 * MS)] +
                          [span(tid, os.urandom(8), os.urandom(8), t0, t0 + 1 * MS) for _ in range(3)])
            # 3. skew: 2 children outside their parent by more than 5 ms, 1 within
            tid, root = os.urandom(16), os.urandom(8)
            traces.append([span(tid, root, start=t0, end=t0 + 100 * MS),
                           span(tid, os.urandom(8), root, t0 - 20 * MS, t0 + 10 * MS),
                           span(tid, os.urandom(8), root, t0 + 50 * MS, t0 + 130 * MS),
                           span(tid, os.urandom(8), root, t0 - 3 * MS, t0 + 10 * MS)])
            # 4. duplicates: a span ID sent twice (2 extra copies)
            tid, root, dup = os.urandom(16), os.urandom(8), os.urandom(8)
            traces.append([span(tid, root, start=t0, end=t0 + 100 * MS)] +
                          [span(tid, dup, root, t0 + 1 * MS, t0 + 2 * MS) for _ in range(3)])
            # 5. two traces without a root (their spans point to a missing parent)
            for _ in range(2):
                tid, p = os.urandom(16), os.urandom(8)
                traces.append([span(tid, os.urandom(8), p, t0, t0 + MS)])
            # 6. invalid spans: 1 short trace id, 1 zero span id, 1 end before start
            bad = [span(b"short", os.urandom(8)), span(os.urandom(16), b"\0" * 8),
                   span(os.urandom(16), os.urandom(8), start=t0 + MS, end=t0)]
            export(make_request(traces + [bad]))
            deadline = time.monotonic() + 15
            while srv.metric("traceo_sampler_traces_decided_total") < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv.metric("traceo_sampler_traces_decided_total") == 6
            # 7. late spans: 2 for the clean (kept) trace
            clean_tid, clean_root = traces[0][0]["trace_id"], traces[0][0]["span_id"]
            export(make_request([[span(clean_tid, os.urandom(8), clean_root, t0 + MS, t0 + 2 * MS)
                                  for _ in range(2)]]))
            deadline = time.monotonic() + 10
            while srv.metric("traceo_sampler_late_spans_total") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            m = srv.metric
            assert m("traceo_sampler_orphan_spans_total") == 3 + 2      # + the rootless traces' spans
            assert m("traceo_sampler_orphan_spans_total", service="svc") == 5
            assert m("traceo_sampler_clock_skew_spans_total", service="svc") == 2
            assert m("traceo_sampler_clock_skew_seconds_count", service="svc") == 2
            assert m("traceo_sampler_clock_skew_seconds_sum", service="svc") == pytest.approx(0.05)
            assert m("traceo_sampler_duplicate_spans_total") == 2
            assert m("traceo_sampler_traces_without_root_total") == 2
            assert m("traceo_sampler_invalid_spans_total") == 3
            assert m("traceo_sampler_invalid_spans_total", reason="trace_id_length") == 1
            assert m("traceo_sampler_invalid_spans_total", reason="span_id_zero") == 1
            assert m("traceo_sampler_invalid_spans_total", reason="end_before_start") == 1
            assert m("traceo_sampler_late_spans_total", decision="sampled") == 2
            # nothing was rewritten: times leave as they came, and the kept
            # spans carry the attributed policy
            deadline = time.monotonic() + 10
            while len(sink.spans()) < 19 and time.monotonic() < deadline:
                time.sleep(0.05)
            out = sink.spans()
            assert len(out) == 19
            sent = {s["span_id"]: s for tr in traces for s in tr}
            for _t, sp, _r, _s in out:
                if sp.span_id in sent:
                    assert sp.start_time_unix_nano == sent[sp.span_id]["start"]
                    assert sp.end_time_unix_nano == sent[sp.span_id]["end"]
                assert sp.attributes[-1].key == "traceo.sampling.policy"
                assert sp.attributes[-1].value.string_value == "all"
            status = srv.get("/api/status")
            assert json.loads(status)["consistency"]["duplicate_spans"] == 2
            ch.close()
