"""ottl_condition against the real Collector v0.161.0: one Collector config
with one ``and(tenant = tN, ottl_condition(cond N))`` policy per condition,
the same traces (typed, nested and missing attributes, kinds, statuses,
tracestates, events with attributes, short names that make converters
fail) fed to the Collector and to ``traceo-sampler serve -c`` at once; the
kept trace IDs must be identical, so each condition decides as the
Collector's on its share of the traces (about 300 each), error modes
included. Uses the harness of test_collector_differential.py."""
from __future__ import annotations

import random
import time

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from support.otelcol import Otelcol
from support.procs import free_ports
from test_collector_differential import EXPORT, Sink, Traceo, collector_file

pytestmark = pytest.mark.integration

# (span conditions, spanevent conditions, error_mode)
CONDITIONS = [
    (['attributes["k.int"] > 5'], [], "ignore"),
    (['attributes["k.int"] == 7.0'], [], "ignore"),
    (['attributes["k.str"] != "a"'], [], "ignore"),
    (['attributes["k.str"] == nil'], [], "ignore"),
    (['IsMatch(attributes["k.str"], "^[a-z]+$")'], [], "ignore"),
    (['ToUpperCase(attributes["k.str"]) == "ABC"'], [], "silent"),
    (['Len(attributes["k.str"]) >= 3'], [], "ignore"),
    (['Int(attributes["k.int"]) == 10'], [], "ignore"),
    (['Double(attributes["k.str"]) > 1'], [], "ignore"),
    (['String(attributes["k.int"]) == "10"'], [], "ignore"),
    (['attributes["k.map"]["x"] >= 2'], [], "ignore"),
    (['attributes["k.list"][1] == "b"'], [], "ignore"),
    (['kind == SPAN_KIND_CLIENT or kind.string == "Producer"'], [], "ignore"),
    (['status.code == STATUS_CODE_ERROR and not IsRootSpan()'], [], "ignore"),
    (['trace_state["vendor"] == "gold"'], [], "ignore"),
    (['Substring(name, 0, 3) == "get"'], [], "ignore"),
    (['end_time_unix_nano - start_time_unix_nano > 50000000'], [], "ignore"),
    (['resource.attributes["service.name"] == "checkout" and scope.name == "difftest"'], [],
     "ignore"),
    (['Concat([name, attributes["k.str"]], ":") == "get:a"'], [], "ignore"),
    (['HasPrefix(name, "po") and IsString(attributes["k.str"])'], [], "ignore"),
    (['IsInt(attributes["k.int"]) and not IsDouble(attributes["k.int"])'], [], "ignore"),
    (['IsMap(attributes["k.map"]) and IsList(attributes["k.list"])'], [], "ignore"),
    (['ContainsValue(attributes["k.list"], "c")'], [], "ignore"),
    ([], ['name == "exception" and attributes["exception.type"] == "Timeout"'], "ignore"),
    ([], ['span.name == "post" and event_index >= 1'], "ignore"),
    (['attributes["k.bytes"] == 0x0102'], [], "ignore"),
    (['Split(attributes["k.str"], "b")[0] == "a"'], [], "ignore"),
    (['(attributes["k.int"] + 1) * 2 == 22'], [], "ignore"),
    # propagate: the first failing span stops the policy, even where a later
    # span would match
    (['Len(attributes["k.str"]) > 100', 'name == "post"'], [], "propagate"),
    (['Len(attributes["k.str"]) > 100', 'name == "post"'], [], "ignore"),
]
# the comparison and conversion rules at their edges
MORE_CONDITIONS = [
    (['attributes["k.int"] < true'], [], "ignore"),
    (['attributes["k.str"] > "a"'], [], "ignore"),
    (['attributes["k.map"] == {"x": 1}'], [], "ignore"),
    (['attributes["k.list"] == ["a", "b"]'], [], "ignore"),
    (['attributes["k.int"] != nil and attributes["k.list"] != nil'], [], "ignore"),
    (['String(attributes["k.map"]) == "{\\"x\\":1}"'], [], "ignore"),
    (['String(attributes["k.list"]) == "[\\"a\\"]"'], [], "ignore"),
    (['String(attributes["k.int"]) == "7"'], [], "ignore"),
    (['String(attributes["k.bytes"]) == "0102"'], [], "ignore"),
    (['Bool(attributes["k.int"])'], [], "ignore"),
    (['Int(attributes["k.str"]) > 1'], [], "ignore"),
    (['IsEmpty(attributes["k.str"]) or IsEmpty(attributes["k.list"])'], [], "ignore"),
    (['Len(attributes["k.list"]) == 2 or Len(attributes["k.map"]) == 1'], [], "ignore"),
    (['TrimPrefix(name, "g") == "et"'], [], "ignore"),
    (['kind.deprecated_string == "SPAN_KIND_SERVER"'], [], "ignore"),
    (['parent_span_id.string == "0000000000000000" and status.code > 0'], [], "ignore"),
    (['trace_state == "vendor=gold"'], [], "ignore"),
    (['trace_state["x"] == "1"'], [], "ignore"),
    (['start_time < end_time and end_time_unix_nano > 1700000000500000000'], [], "ignore"),
    (['Double(attributes["k.int"]) == 10.5'], [], "ignore"),
    (['attributes["k.int"] * 2 > 15'], [], "ignore"),
    (['attributes["k.int"] / 2 == 3'], [], "ignore"),
    (['-attributes["k.int"] < -6'], [], "ignore"),
    (['ToLowerCase(attributes["k.str"]) == "b"'], [], "ignore"),
    (['IsMatch(attributes["k.int"], "^1")'], [], "ignore"),
    (['Substring(attributes["k.str"], 1, 1) == "b"'], [], "ignore"),
    (['HasSuffix(attributes["k.str"], "c")'], [], "propagate"),
    (['Concat(["x", attributes["k.int"]], "") == "x7"'], [], "ignore"),
    (['ContainsValue(attributes["k.list"], 1)'], [], "ignore"),
    (['resource.attributes["service.name"] != "cart" and not (kind == 2)'], [], "ignore"),
    ([], ['attributes["exception.type"] != "Timeout" and span.kind == SPAN_KIND_SERVER'],
     "ignore"),
    ([], ['IsMatch(name, "^exc") or span.attributes["k.str"] == "a"'], "propagate"),
    (['Milliseconds(end_time - start_time) > 50'], [], "ignore"),
    (['end_time - start_time > Duration("75.5ms")'], [], "ignore"),
    (['Seconds(end_time - start_time) < 0.02'], [], "ignore"),
    (['UnixMilli(start_time) > 1700000000500'], [], "ignore"),
    (['Index(name, "t") == 2 or Index(attributes["k.list"], "b") == 1'], [], "ignore"),
    (['Trim(attributes["k.str"], "a") == "b"'], [], "ignore"),
]
NEGATED = max(len(CONDITIONS), len(MORE_CONDITIONS))   # tenant of not(propagate(...))
FLAGS = NEGATED + 1                                    # tenant of trace_flags


def _tenant(i: int) -> dict:
    return {"name": f"t{i}", "type": "string_attribute",
            "string_attribute": {"key": "tenant", "values": [f"t{i}"]}}


def policies_yaml(conditions) -> str:
    pols = []
    for i, (span, ev, mode) in enumerate(conditions):
        blk = {"error_mode": mode}
        if span:
            blk["span"] = span
        if ev:
            blk["spanevent"] = ev
        pols.append({"name": f"c{i}", "type": "and", "and": {"and_sub_policy": [
            _tenant(i), {"name": f"o{i}", "type": "ottl_condition", "ottl_condition": blk}]}})
    failing = {"name": "failing", "type": "ottl_condition", "ottl_condition": {
        "error_mode": "propagate", "span": ['Substring(name, 0, 4) == "post"']}}
    pols.append({"name": "negated", "type": "and", "and": {"and_sub_policy": [
        _tenant(NEGATED),
        {"name": "not-failing", "type": "not", "not": {"not_sub_policy": failing}}]}})
    pols.append({"name": "flagged", "type": "and", "and": {"and_sub_policy": [
        _tenant(FLAGS), {"name": "flags", "type": "trace_flags"}]}})
    text = yaml.safe_dump(pols, sort_keys=False, width=1000)
    return "".join("      " + line + "\n" for line in text.splitlines())


def _set(av, v):
    if isinstance(v, bool):
        av.bool_value = v
    elif isinstance(v, int):
        av.int_value = v
    elif isinstance(v, float):
        av.double_value = v
    elif isinstance(v, bytes):
        av.bytes_value = v
    elif isinstance(v, dict):
        av.kvlist_value.SetInParent()
        for k, x in v.items():
            _set(av.kvlist_value.values.add(key=k).value, x)
    elif isinstance(v, list):
        av.array_value.SetInParent()
        for x in v:
            _set(av.array_value.values.add(), x)
    else:
        av.string_value = v


def make_traces(seed: int, n: int):
    rnd = random.Random(seed)
    base = 1_700_000_000_000_000_000
    out = []
    for _ in range(n):
        tid = rnd.randbytes(16)
        tenant = f"t{rnd.randrange(FLAGS + 1)}"
        svc = rnd.choice(["checkout", "cart", "search"])
        state = rnd.choice(["", "vendor=gold", "vendor=silver", "x=1,vendor=gold", "bad state"])
        flags = 0x100 | (1 if rnd.random() < 0.5 else 0)
        start = base + rnd.randrange(10**9)
        root = rnd.randbytes(8)
        spans = []
        for i in range(rnd.choice([1, 2, 3, 4])):
            attrs = {"tenant": tenant}
            r = rnd.random()
            if r < 0.8:
                attrs["k.str"] = rnd.choice(["a", "B", "abc", "", "10", "ab", "1.5", "zzzz"])
            if rnd.random() < 0.8:
                attrs["k.int"] = rnd.choice([3, 7, 10, 7.0, 10.5, "10", "x", True, 5])
            if rnd.random() < 0.5:
                attrs["k.map"] = rnd.choice([{"x": 1}, {"x": 2.5}, {"x": "2"}, {"y": 3}])
            if rnd.random() < 0.5:
                attrs["k.list"] = rnd.choice([["a"], ["a", "b"], ["c", "b", 1], []])
            if rnd.random() < 0.2:
                attrs["k.bytes"] = rnd.choice([b"\x01\x02", b"\x01"])
            dur = int(rnd.lognormvariate(3.5, 1.2) * 1e6)
            events = []
            for _e in range(rnd.choice([0, 0, 1, 2])):
                events.append((rnd.choice(["exception", "log"]),
                               {"exception.type": rnd.choice(["Timeout", "IOError"])}))
            spans.append({
                "span_id": root if i == 0 else rnd.randbytes(8),
                "parent": b"" if i == 0 else root,
                "name": rnd.choice(["get", "post", "ge", "getx", "po"]),
                "kind": rnd.randrange(6), "status": rnd.choice([0, 0, 1, 2]),
                "start": start, "end": start + dur, "attrs": attrs, "events": events,
                "trace_state": state, "flags": flags})
        out.append((svc, tid, spans))
    return out


def encode(batch) -> bytes:
    req = ExportTraceServiceRequest()
    for svc, tid, spans in batch:
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = svc
        ss = rs.scope_spans.add()
        ss.scope.name = "difftest"
        for s in spans:
            sp = ss.spans.add(trace_id=tid, span_id=s["span_id"], parent_span_id=s["parent"],
                              name=s["name"], kind=s["kind"], start_time_unix_nano=s["start"],
                              end_time_unix_nano=s["end"], trace_state=s["trace_state"],
                              flags=s["flags"])
            sp.status.code = s["status"]
            for k, v in s["attrs"].items():
                _set(sp.attributes.add(key=k).value, v)
            for name, ea in s["events"]:
                ev = sp.events.add(name=name, time_unix_nano=s["start"])
                for k, v in ea.items():
                    _set(ev.attributes.add(key=k).value, v)
    return req.SerializeToString()


def _send(call, raw: bytes) -> None:
    # a pushed-back request is retried, as an OTLP client does
    deadline = time.monotonic() + 60
    while True:
        try:
            call(raw, timeout=30)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("conditions", [pytest.param(CONDITIONS, id="paths-converters-modes"),
                                        pytest.param(MORE_CONDITIONS, id="comparison-edges")])
def test_ottl_conditions_decide_as_the_collector(conditions):
    text = collector_file(policies_yaml(conditions))
    traces = make_traces(20261201, 10_000)
    sink = Sink()
    col_port, tr_port = free_ports(2)
    try:
        col_env = {"RECV_PORT": str(col_port), "SINK_PORT": str(sink.port), "SOURCE": "otelcol"}
        tr_env = {"RECV_PORT": str(tr_port), "SINK_PORT": str(sink.port), "SOURCE": "traceo"}
        with Otelcol(text=text, env=col_env) as col, Traceo(text, tr_env, tr_port) as tr:
            chans = [grpc.insecure_channel(f"127.0.0.1:{p}") for p in (col_port, tr_port)]
            calls = [c.unary_unary(EXPORT) for c in chans]
            for i in range(0, len(traces), 100):
                raw = encode(traces[i:i + 100])
                for call in calls:
                    _send(call, raw)
            time.sleep(2 + 1.5)
            sink.settle(quiet=3.0, timeout=60)
            for c in chans:
                c.close()
            logs = (col.log(), tr.log())
    finally:
        sink.stop()
    col_ids = sink.traces.get("otelcol", set())
    ours = sink.traces.get("traceo", set())
    tenant_of = {tid: spans[0]["attrs"]["tenant"] for _, tid, spans in traces}
    by_tenant: dict[str, list[int]] = {}
    for tid in col_ids ^ ours:
        by_tenant.setdefault(tenant_of[tid], [0, 0])[0 if tid in col_ids else 1] += 1
    assert 0.1 * len(traces) < len(col_ids) < 0.9 * len(traces), logs[0][-2000:]
    # per tenant: [kept only by the Collector, kept only by Traceo]
    assert not by_tenant, (by_tenant, logs[1][-3000:])
    # every condition decided some traces each way (the test can fail)
    kept_tenants = {tenant_of[t] for t in col_ids}
    assert len(kept_tenants) >= len(conditions) - 2, sorted(kept_tenants)
