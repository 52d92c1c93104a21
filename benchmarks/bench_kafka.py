"""Throughput through Kafka on a real broker, beside the direct path, in one
run on the same pre-encoded load (loadgen traffic, 512 spans per request,
8 requests in flight). Prints one JSON document.

    python benchmarks/bench_kafka.py [--spans N] [--partitions 4] [--members 2]

Stages, each with the CPU seconds per million spans of the processes doing it:
  direct      OTLP client -> serve (OTLP receiver) -> sink: the reference
  router      OTLP client -> serve in router mode -> topic (nothing consuming)
  group       the members of one consumer group reading that backlog -> sink
  end_to_end  client -> router -> new topic -> members running meanwhile -> sink,
              until the members received every span
Every serve runs with ``service.workers: 1`` so a stage's figure is per core.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src"), str(ROOT), str(ROOT / "tests")]
os.environ["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")

import run as bench  # noqa: E402
from tests.support.kafka import KafkaBroker  # noqa: E402
from traceo_sampler import loadgen  # noqa: E402


class Proc:
    """``serve -c cfg`` as a subprocess with its CPU and metrics."""

    def __init__(self, workdir: Path, name: str, cfg: dict):
        self.admin = f"127.0.0.1:{bench.free_port()}"
        cfg = dict(cfg, admin={"endpoint": self.admin})
        cfg.setdefault("service", {})["workers"] = 1
        path = workdir / f"{name}.yaml"
        path.write_text(bench._to_yaml(cfg))
        self.name = name
        self.proc = bench._spawn([sys.executable, "-m", "traceo_sampler", "serve", "-c", str(path)],
                                 workdir, name)
        self.workdir = workdir

    def wait_ready(self, timeout: float = 90) -> None:
        import urllib.request
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{bench.tail(self.workdir / (self.name + '.stderr'))}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready:\n{bench.tail(self.workdir / (self.name + '.stderr'))}")

    def cpu(self) -> float:
        return bench.cpu_seconds(self.proc.pid)

    def metric(self, name: str, **labels) -> float:
        return bench.metric_sum(bench.parse_prometheus(self._get("/metrics")), name, **labels) or 0.0

    def _get(self, path: str) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> dict:
        return bench.stop_process(self.proc, 60)


def _stage(spans: int, seconds: float, cpu: float) -> dict:
    return {"spans": spans, "seconds": round(seconds, 3), "spans_per_s": round(spans / seconds),
            "cpu_s": round(cpu, 3), "cpu_s_per_million_spans": round(cpu / spans * 1e6, 3),
            "cores_busy": round(cpu / seconds, 3)}


def _wait_received(members, n: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if sum(m.metric("traceo_sampler_spans_received_total") for m in members) >= n:
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"members did not receive {n} spans within {timeout:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    reqs = loadgen.build_requests(n_spans=args.spans, spans_per_request_target=512, seed=5)
    n = reqs.n_spans
    workdir = Path(f"/tmp/traceo-bench-kafka-{uuid.uuid4().hex[:8]}")
    workdir.mkdir()
    sampler = {"root_wait": "1s", "idle_timeout": "3s", "decision_wait": "30s",
               "policies": bench.POLICIES}
    out: dict = {"benchmark": "kafka", "machine": {"cpus": os.cpu_count(),
                                                   "load_avg_at_start": os.getloadavg()},
                 "params": {**vars(args), "spans_per_request": 512, "spans_sent": n}}

    def send(endpoint):
        r = bench.send(endpoint, reqs.retimed(), args.concurrency)
        if r["requests_failed"]:
            raise RuntimeError(f"send failed: {r['errors']}")
        return r

    sink = bench.SinkProc(workdir, "discard")
    try:
        # direct path, the reference
        grpc_ep = f"127.0.0.1:{bench.free_port()}"
        d = Proc(workdir, "direct", {"receivers": {"otlp": {"grpc": {"endpoint": grpc_ep}}},
                                     "sampler": sampler, "exporters": {"otlp": {"endpoint": sink.endpoint}}})
        d.wait_ready()
        c0 = d.cpu()
        r = send(grpc_ep)
        _wait_received([d], n, 120)
        out["direct"] = {**_stage(n, r["elapsed_s"], d.cpu() - c0), "client_cpu_s": r["client_cpu_s"]}
        d.stop()

        with KafkaBroker(num_partitions=args.partitions) as broker:
            def kcfg(topic, group):
                return {"receivers": {"kafka": {"brokers": [broker.bootstrap], "topic": topic,
                                                "group_id": group, "handoff_max_bytes": 1000000}},
                        "sampler": sampler, "exporters": {"otlp": {"endpoint": sink.endpoint}}}
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            broker.create_topic(topic, args.partitions)
            rport = bench.free_port()
            router = Proc(workdir, "router", {"receivers": {"otlp": {"grpc": {"endpoint": f"127.0.0.1:{rport}"}}},
                                              "exporters": {"kafka": {"brokers": [broker.bootstrap],
                                                                      "topic": topic}}})
            router.wait_ready()
            c0 = router.cpu()
            r = send(f"127.0.0.1:{rport}")
            out["router"] = {**_stage(n, r["elapsed_s"], router.cpu() - c0),
                             "client_cpu_s": r["client_cpu_s"],
                             "messages": router.metric("traceo_sampler_kafka_produced_messages_total",
                                                       outcome="acked")}
            # the group reads the backlog
            group = f"g-{uuid.uuid4().hex[:8]}"
            members = [Proc(workdir, f"member{i}", kcfg(topic, group)) for i in range(args.members)]
            for m in members:
                m.wait_ready()
            c0 = sum(m.cpu() for m in members)
            t0 = time.monotonic()
            t1 = _wait_received(members, n, 300)
            cpu = sum(m.cpu() for m in members) - c0
            out["group"] = {**_stage(n, t1 - t0, cpu), "members": args.members,
                            "per_member_spans_per_s": round(n / (t1 - t0) / args.members)}
            for m in members:
                m.stop()
            # end to end: members consuming while the router produces
            topic2 = f"bench-{uuid.uuid4().hex[:8]}"
            broker.create_topic(topic2, args.partitions)
            router.stop()
            router = Proc(workdir, "router2", {"receivers": {"otlp": {"grpc": {"endpoint": f"127.0.0.1:{rport}"}}},
                                               "exporters": {"kafka": {"brokers": [broker.bootstrap],
                                                                       "topic": topic2}}})
            group2 = f"g-{uuid.uuid4().hex[:8]}"
            members = [Proc(workdir, f"member2-{i}", kcfg(topic2, group2)) for i in range(args.members)]
            router.wait_ready()
            for m in members:
                m.wait_ready()
            time.sleep(3)    # the group formed
            procs = [router] + members
            c0 = sum(p.cpu() for p in procs)
            t0 = time.monotonic()
            r = send(f"127.0.0.1:{rport}")
            t1 = _wait_received(members, n, 300)
            out["end_to_end"] = {**_stage(n, t1 - t0, sum(p.cpu() for p in procs) - c0),
                                 "router_spans_per_s_meanwhile": r["spans_per_s"]}
            for p in procs:
                p.stop()
    finally:
        sink.stop()
        bench._kill_children()
    direct = out["direct"]["spans_per_s"]
    out["ratios"] = {f"{k}_over_direct_spans_per_s": round(out[k]["spans_per_s"] / direct, 3)
                     for k in ("router", "group", "end_to_end") if k in out}
    if "group" in out:
        out["ratios"]["group_per_member_over_direct_spans_per_s"] = round(
            out["group"]["per_member_spans_per_s"] / direct, 3)
    for k in ("router", "group", "end_to_end"):
        if k in out:
            out["ratios"][f"{k}_over_direct_cpu_s_per_million_spans"] = round(
                out[k]["cpu_s_per_million_spans"] / out["direct"]["cpu_s_per_million_spans"], 3)
    out["machine"]["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
