"""Throughput through Kafka, on a real broker: OTLP client -> router ->
topic (4 partitions) -> 2 sampler members in one group -> a capturing OTLP
sink. Prints one JSON line. Usage: python benchmarks/bench_kafka.py [TRACES]
(4 spans per trace; reuses the integration tests' load and checks)."""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "src"), os.path.join(ROOT, "tests"),
                os.path.join(ROOT, "tests", "integration")]
os.environ["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
from tests.support.kafka import KafkaBroker
from test_kafka_group import Stream, member_cfg, router_cfg, _name, verdict
from support_otlp import CaptureSink
from support_serve import Serve
N = int(sys.argv[1]) if len(sys.argv) > 1 else 40000
with KafkaBroker(num_partitions=4) as broker:
    topic, group = _name("bench"), _name("g")
    broker.create_topic(topic, 4)
    with CaptureSink() as sink:
        members = [Serve(member_cfg(broker.bootstrap, topic, group, sink)) for _ in range(2)]
        for m in members: m.__enter__()
        time.sleep(5)   # group formed
        with Serve(router_cfg(broker.bootstrap, topic)) as router:
            st = Stream(router.endpoint, N)
            spans = N * 4
            t0 = time.monotonic()
            st.start(); st.join()
            t_router = time.monotonic() - t0
            while True:
                got = sum(m.metric("traceo_sampler_spans_received_total") for m in members)
                if got >= spans or time.monotonic() - t0 > 300: break
                time.sleep(0.2)
            t_in = time.monotonic() - t0
        while verdict(st, sink)["lost"] and time.monotonic() - t0 < 300:
            time.sleep(0.2)
        t_out = time.monotonic() - t0
        v = verdict(st, sink)
        for m in members: m.stop()
print(json.dumps({"benchmark": "kafka", "load_avg": os.getloadavg(), "traces": N, "spans": spans, "router_spans_per_s": round(spans / t_router),
                  "group_ingest_spans_per_s": round(spans / t_in),
                  "end_to_end_seconds_to_last_error_trace": round(t_out, 2),
                  "end_to_end_spans_per_s": round(spans / t_out), "lost": v["lost"], "split": v["split"],
                  "dup_spans": v["duplicate_spans"]}))
