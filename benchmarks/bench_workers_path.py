"""service.workers' whole path in one process, for N = 1 and N = 2 (or any
list): what the group spends per span beyond one worker, measured so that
the machine's noise cannot move it (``--callgrind``: instructions counted
by valgrind).

Per worker: the real ``Pipeline`` (fused ingest, the decision ticks every
50 ms of its clock, the decider, ``finish``), its own ``Metrics`` and an
``Exporter`` whose ``send`` only takes the payload (the exporter's queue,
batching and join are real; no backend). With N > 1, every worker is a
real ``workers.ShardFront`` with real ``Peer`` and ``Inbound`` objects
connected over real Unix sockets, all on one event loop: the receiving
worker's one walk, the hand-off frames and ``FrameReader``, the owner's
ingest of what it was handed. Requests are spread over the receiving
workers round-robin (as the kernel spreads connections); ``--per-tick``
requests are received per event loop tick. The clock is simulated
(``--rate`` spans/s of arrival), so timers fire at the same points in the
load whatever the speed.

Not in it (the same per request with 1 or N workers, or time-based): the
gRPC receiver and the client, the exporter's gRPC call, the kernel's side
of the Unix socket (callgrind counts user space only), and the workers'
once-a-second bookkeeping (history, /metrics snapshots, the supervisor);
benchmarks/run.py --workers 1,2 has all of it, on the real processes.

    .venv/bin/python benchmarks/bench_workers_path.py [--spans 200000] [--workers 1,2]
    .venv/bin/python benchmarks/bench_workers_path.py --callgrind [--spans 100000]

Prints one JSON document: per N, CPU µs per span (time.process_time, best
of ``--reps``) or instructions per span (``--callgrind``: the measured run
minus the same run with no load, each under ``valgrind --tool=callgrind``),
spans handed over, frames, export requests, kept traces; the ratio of each
N to one worker; and whether every N kept exactly the same trace IDs.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from traceo_sampler import accel  # noqa: E402
from traceo_sampler.config import loads  # noqa: E402
from traceo_sampler.exporters.base import Exporter  # noqa: E402
from traceo_sampler.pipeline import Pipeline  # noqa: E402
from traceo_sampler.telemetry import Metrics  # noqa: E402
from traceo_sampler.workers import Flags, Inbound, Peer, ShardFront  # noqa: E402

# benchmarks/run.py's policies and phase (b) timers
CONFIG = """
sampler:
  decision_wait: 30s
  root_wait: 2s
  idle_timeout: 5s
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""
TICK = 0.05          # server.TICK: how often a worker looks for due traces


class _Taker(Exporter):
    """The exporter's queue and batches; the payload stops at ``send``."""
    name = "bench"

    def __init__(self, metrics):
        super().__init__(metrics, queue_max_bytes=1 << 40, queue_full="drop_oldest")
        self.requests = 0
        self.payload_bytes = 0
        self.kept = hashlib.sha256()

    async def send(self, payload: bytes) -> None:
        self.requests += 1
        self.payload_bytes += len(payload)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def run(reqs: list[bytes], n: int, per_tick: int, rate: float, rundir: str) -> dict:
    """The whole path of ``reqs`` through n workers; returns its counts."""
    cfg = loads(CONFIG)
    clock = _Clock()
    metrics = [Metrics() for _ in range(n)]
    exps = [_Taker(m) for m in metrics]
    pipes = [Pipeline(cfg, m, [e], clock=clock) for m, e in zip(metrics, exps)]
    kept: list[set] = [set() for _ in range(n)]
    for p, k in zip(pipes, kept):
        p.observer = (lambda k: lambda t, trig, dec, out: dec.sampled and k.add(t.trace_id))(k)
    for e in exps:
        e.start()
    fronts: list = pipes
    inbounds: list[Inbound] = []
    peers: list[dict[int, Peer]] = []
    if n > 1:
        flags = Flags(os.path.join(rundir, "flags"), n, create=True)
        for i in range(n):
            inb = Inbound(os.path.join(rundir, f"w{i}.sock"), pipes[i], metrics[i])
            await inb.start()
            inbounds.append(inb)
        for i in range(n):
            peers.append({j: Peer(j, inbounds[j].path, metrics[i]) for j in range(n) if j != i})
            for p in peers[i].values():
                p.start()
        while not all(p.connected for ps in peers for p in ps.values()):
            await asyncio.sleep(0.001)
        while sum(inb.open for inb in inbounds) < n * (n - 1):
            await asyncio.sleep(0.001)
        fronts = [ShardFront(pipes[i], i, n, peers[i], flags) for i in range(n)]

    def held() -> int:
        return sum(p.account.spans_received for p in pipes)

    spans = 0
    next_tick = clock.now + TICK
    t0 = time.process_time()
    for k, data in enumerate(reqs):
        res = fronts[k % n].ingest(data)
        spans += res.accepted
        clock.now += res.accepted / rate
        if k % per_tick == per_tick - 1 or k == len(reqs) - 1:
            # one event loop tick: the hand-off frames go out and are read
            while held() < spans:
                await asyncio.sleep(0)
        while clock.now >= next_tick:
            for p in pipes:
                p.tick()
            next_tick += TICK
    # the rest is decided as the timers come due
    while any(p.buffer.ntraces for p in pipes):
        clock.now = next_tick
        for p in pipes:
            p.tick()
        next_tick += TICK
        await asyncio.sleep(0)
    for e in exps:
        await e.flush(60.0)
    cpu = time.process_time() - t0
    for ps in peers:
        for p in ps.values():
            await p.close(5.0)
    for inb in inbounds:
        await inb.stop()
    for e in exps:
        await e.close(5.0)
    ids = sorted(t for k in kept for t in k)
    return {
        "cpu_s": cpu,
        "spans": spans,
        "spans_handed_over": int(sum(m.registry.get_sample_value(
            "traceo_sampler_worker_forwarded_spans_total", {"outcome": "sent"}) or 0
            for m in metrics)),
        "export_requests": sum(e.requests for e in exps),
        "exported_spans": sum(e.sent_spans for e in exps),
        "kept_traces": len(ids),
        "kept_trace_ids_sha256": hashlib.sha256(b"".join(ids)).hexdigest()[:16],
    }


def _load(args) -> list[bytes]:
    if args.load:
        with open(args.load, "rb") as fh:
            return pickle.load(fh)
    from traceo_sampler import loadgen
    gen = loadgen.TraceGenerator(args.seed, services=8, error_rate=0.05)
    return list(gen.build_requests(n_spans=args.spans, spans_per_request_target=512))


def child(args) -> int:
    """One run (under valgrind with --callgrind): prints its counts."""
    reqs = _load(args)
    if args.no_load:
        reqs = []
    with tempfile.TemporaryDirectory(prefix="traceo-wpath-") as d:
        out = asyncio.run(run(reqs, args.n, args.per_tick, args.rate, d))
    print(json.dumps(out))
    return 0


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _callgrind(args, load: str, n: int, no_load: bool) -> tuple[int, dict]:
    with tempfile.TemporaryDirectory(prefix="traceo-cg-") as d:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out",
               sys.executable, os.path.abspath(__file__), "--child", "--load", load,
               "--n", str(n), "--per-tick", str(args.per_tick), "--rate", str(args.rate)]
        if no_load:
            cmd.append("--no-load")
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                           "PYTHONHASHSEED": "0"})
        if r.returncode != 0:
            raise RuntimeError(f"valgrind run failed ({r.returncode}): {r.stderr[-2000:]}")
        m = _COLLECTED.search(r.stderr)
        if m is None:
            raise RuntimeError(f"no instruction count in valgrind's output: {r.stderr[-2000:]}")
        return int(m.group(1)), json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--per-tick", type=int, default=8,
                    help="requests received per event loop tick (default %(default)s)")
    ap.add_argument("--rate", type=float, default=250_000.0,
                    help="simulated arrival rate, spans/s (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--callgrind", action="store_true",
                    help="count instructions under valgrind instead of timing")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--load", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--no-load", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    counts = [int(x) for x in args.workers.split(",")]
    rows: dict = {}
    if args.callgrind:
        reqs = _load(args)
        with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as fh:
            pickle.dump(reqs, fh)
            load = fh.name
        try:
            # two at a time: instruction counts do not depend on the machine's load
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                runs = {(n, empty): pool.submit(_callgrind, args, load, n, empty)
                        for n in counts for empty in (True, False)}
            for n in counts:
                base, _ = runs[n, True].result()
                total, out = runs[n, False].result()
                out.pop("cpu_s")
                out["instructions"] = total - base
                out["instructions_per_span"] = round((total - base) / out["spans"], 1)
                rows[str(n)] = out
        finally:
            os.unlink(load)
        key = "instructions_per_span"
    else:
        reqs = _load(args)
        for _rep in range(args.reps):
            for n in counts:
                with tempfile.TemporaryDirectory(prefix="traceo-wpath-") as d:
                    out = asyncio.run(run(reqs, n, args.per_tick, args.rate, d))
                cpu = out.pop("cpu_s")
                row = rows.setdefault(str(n), {**out, "cpu_us_per_span_runs": []})
                row["cpu_us_per_span_runs"].append(round(cpu / out["spans"] * 1e6, 3))
        for row in rows.values():
            row["cpu_us_per_span"] = min(row["cpu_us_per_span_runs"])
        key = "cpu_us_per_span"
    one = rows.get(str(counts[0]))
    for n, row in rows.items():
        if one is not None and row is not one:
            row[f"over_{counts[0]}_worker"] = round(row[key] / one[key], 3)
            if row["spans_handed_over"]:
                row[f"extra_{key.split('_per_')[0]}_per_span_handed_over"] = round(
                    (row[key] - one[key]) * row["spans"] / row["spans_handed_over"], 2)
    same = len({r["kept_trace_ids_sha256"] for r in rows.values()}) == 1
    print(json.dumps({"benchmark": "workers-whole-path-in-process",
                      "measure": "instructions (valgrind --tool=callgrind, user space)"
                      if args.callgrind else "time.process_time, one process",
                      "pure_twins": accel.PURE, "load_errors": accel.LOAD_ERRORS,
                      "spans_per_request": 512, "per_tick": args.per_tick,
                      "simulated_rate_spans_per_s": args.rate,
                      "same_kept_traces": same, "by_workers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
