"""service.workers' whole path in one process, for N = 1 and N = 2 (or any
list): what the group spends per span beyond one worker, measured so that
the machine's noise cannot move it (``--callgrind``: instructions counted
by valgrind).

On serve's event loop (uvloop when installed). Per worker: the real
``Pipeline`` (fused ingest, the decision ticks every 50 ms of its clock,
the decider, ``finish``), its own ``Metrics`` and an
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

``--grpc``: the requests come instead over gRPC, from client processes
(two per worker, not counted), into each worker's real OTLP receiver, so
the receive side is in the count too. Not in it either way: the exporter's
gRPC call (the payload stops at ``send``), the kernel's side of the sockets
(callgrind counts user space only), and the workers' time-driven
bookkeeping (history, /metrics snapshots, the supervisor);
benchmarks/run.py --workers 1,2 has all of it, on the real processes.
Copies weigh more in the count than in time: callgrind counts every
iteration of a ``rep movsb`` copy, one per byte (100 copies of 1 MiB
counted 105 M instructions in libc's memcpy), where the hardware moves tens
of bytes a cycle; so the count is also given without libc's memcpy,
memmove and memset (``*_excluding_copies``, via callgrind_annotate).

    .venv/bin/python benchmarks/bench_workers_path.py [--spans 200000] [--workers 1,2]
    .venv/bin/python benchmarks/bench_workers_path.py --callgrind [--grpc] [--spans 100000]
        [--keep DIR]    (then: callgrind_annotate --inclusive=no DIR/cg-2.out)

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
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
sys.path.insert(0, SRC)

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
    """The pipelines' clock: arrival time moves with the spans received
    (``rate`` spans/s), and the decision ticks (every TICK) run as it
    passes them, whatever the real speed (valgrind's is 50x slower)."""

    def __init__(self, pipes: list, rate: float) -> None:
        self.now = 1000.0
        self.pipes = pipes
        self.rate = rate
        self.next_tick = self.now + TICK

    def __call__(self) -> float:
        return self.now

    def received(self, spans: int) -> None:
        self.now += spans / self.rate
        while self.now >= self.next_tick:
            for p in self.pipes:
                p.tick()
            self.next_tick += TICK


class _Clocked:
    """What a receiver sees: the worker's front, the clock moved on by each
    request it takes in."""

    def __init__(self, front, clock: _Clock) -> None:
        self.front = front
        self.clock = clock
        self.RETRY_AFTER = front.RETRY_AFTER
        self.accepted = 0

    def backpressure(self) -> bool:
        return self.front.backpressure()

    def ingest(self, data: bytes):
        res = self.front.ingest(data)
        self.accepted += res.accepted
        self.clock.received(res.accepted)
        return res


_CLIENT = """
import asyncio, pickle, sys
from traceo_sampler import loadgen
reqs = pickle.load(open(sys.argv[1], "rb"))
n, i, ep = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# valgrind slows the receiver 50x: few in flight, and a long deadline, so none is refused
asyncio.run(loadgen.send(ep, reqs[i::n], None, None, 2, channels=1, timeout_s=3600))
"""


async def run(reqs: list[bytes], n: int, per_tick: int, rate: float, rundir: str,
              grpc_load: str | None = None) -> dict:
    """The whole path of ``reqs`` through n workers; returns its counts.
    ``grpc_load``: the requests (pickled there) come over gRPC instead,
    from two client processes into each worker's real OTLP receiver."""
    cfg = loads(CONFIG)
    pipes: list = []
    clock = _Clock(pipes, rate)
    metrics = [Metrics() for _ in range(n)]
    exps = [_Taker(m) for m in metrics]
    pipes += [Pipeline(cfg, m, [e], clock=clock) for m, e in zip(metrics, exps)]
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
    receivers: list = []
    if grpc_load is not None:
        from traceo_sampler.receivers.otlp_grpc import OtlpGrpcReceiver
        for i in range(n):
            rec = OtlpGrpcReceiver("127.0.0.1:0", _Clocked(fronts[i], clock), metrics[i])
            await rec.start()
            receivers.append(rec)
    t0 = time.process_time()
    if grpc_load is not None:
        if reqs:
            clients = [await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CLIENT, grpc_load, str(2 * n), str(c),
                f"127.0.0.1:{receivers[c % n].port}", env={**os.environ, "PYTHONPATH": SRC})
                for c in range(2 * n)]
            for c in clients:
                if await c.wait() != 0:
                    raise RuntimeError("a load client failed")
        spans = sum(r.pipeline.accepted for r in receivers)
        if spans != sum(_count(r) for r in reqs):
            raise RuntimeError("a request was refused: the counts are not of the whole load")
        while held() < spans:      # the last hand-off frames
            await asyncio.sleep(0.001)
    else:
        for k, data in enumerate(reqs):
            res = fronts[k % n].ingest(data)
            spans += res.accepted
            clock.received(res.accepted)
            if k % per_tick == per_tick - 1 or k == len(reqs) - 1:
                # one event loop tick: the hand-off frames go out and are read
                while held() < spans:
                    await asyncio.sleep(0)
    # the rest is decided as the timers come due
    while any(p.buffer.ntraces for p in pipes):
        clock.now = clock.next_tick
        clock.received(0)
        await asyncio.sleep(0)
    for e in exps:
        await e.flush(60.0)
    cpu = time.process_time() - t0
    for ps in peers:
        for p in ps.values():
            await p.close(5.0)
    for inb in inbounds:
        await inb.stop()
    for rec in receivers:
        await rec.stop(0)
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


def _count(data: bytes) -> int:
    from traceo_sampler.loadgen.encoding import count_spans
    return count_spans(data)


def _run(coro):
    """On the event loop serve runs on (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


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
        out = _run(run(reqs, args.n, args.per_tick, args.rate, d,
                              args.load if args.grpc else None))
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
        if args.grpc:
            cmd.append("--grpc")
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ,
                           "PYTHONHASHSEED": "0"})
        if r.returncode != 0:
            raise RuntimeError(f"valgrind run failed ({r.returncode}): {r.stderr[-2000:]}")
        if args.keep:
            # for callgrind_annotate: where the instructions went
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(f"{d}/cg.out", os.path.join(
                args.keep, f"cg-{n}{'-empty' if no_load else ''}.out"))
        m = _COLLECTED.search(r.stderr)
        if m is None:
            raise RuntimeError(f"no instruction count in valgrind's output: {r.stderr[-2000:]}")
        return (int(m.group(1)), _copies(f"{d}/cg.out"),
                json.loads(r.stdout.strip().splitlines()[-1]))


_FN_ROW = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S.*?:(\S+)(?: \[|$)")
_COPY_FN = re.compile(r"^__(memcpy|memmove|mempcpy|memset)_")


def _copies(path: str) -> int:
    """Instructions counted in libc's copy and fill routines."""
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100",
                        path], capture_output=True, text=True, check=True)
    n = 0
    for line in r.stdout.splitlines():
        m = _FN_ROW.match(line)
        if m and _COPY_FN.match(m.group(2)):
            n += int(m.group(1).replace(",", ""))
    return n


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
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="with --callgrind: keep each run's callgrind output in DIR")
    ap.add_argument("--grpc", action="store_true",
                    help="the requests come over gRPC into each worker's OTLP receiver (two "
                         "client processes per worker, not counted) instead of being handed "
                         "to the receiving worker's front")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--load", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--no-load", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    counts = [int(x) for x in args.workers.split(",")]
    rows: dict = {}
    reqs = _load(args)
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as fh:
        pickle.dump(reqs, fh)
        load = fh.name
    try:
        if args.callgrind:
            # two at a time: instruction counts do not depend on the machine's load
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                runs = {(n, empty): pool.submit(_callgrind, args, load, n, empty)
                        for n in counts for empty in (True, False)}
            for n in counts:
                base, base_copies, _ = runs[n, True].result()
                total, copies, out = runs[n, False].result()
                out.pop("cpu_s")
                out["instructions"] = total - base
                out["instructions_per_span"] = round((total - base) / out["spans"], 1)
                out["copy_instructions_per_span"] = round((copies - base_copies) / out["spans"], 1)
                out["instructions_per_span_excluding_copies"] = round(
                    (total - base - copies + base_copies) / out["spans"], 1)
                rows[str(n)] = out
            key = "instructions_per_span"
        else:
            for _rep in range(args.reps):
                for n in counts:
                    with tempfile.TemporaryDirectory(prefix="traceo-wpath-") as d:
                        out = _run(run(reqs, n, args.per_tick, args.rate, d,
                                              load if args.grpc else None))
                    cpu = out.pop("cpu_s")
                    row = rows.setdefault(str(n), {**out, "cpu_us_per_span_runs": []})
                    row["cpu_us_per_span_runs"].append(round(cpu / out["spans"] * 1e6, 3))
            for row in rows.values():
                row["cpu_us_per_span"] = min(row["cpu_us_per_span_runs"])
            key = "cpu_us_per_span"
    finally:
        os.unlink(load)
    one = rows.get(str(counts[0]))
    for n, row in rows.items():
        if one is not None and row is not one:
            row[f"over_{counts[0]}_worker"] = round(row[key] / one[key], 3)
            if args.callgrind:
                k2 = "instructions_per_span_excluding_copies"
                row[f"over_{counts[0]}_worker_excluding_copies"] = round(row[k2] / one[k2], 3)
            if row["spans_handed_over"]:
                row[f"extra_{key.split('_per_')[0]}_per_span_handed_over"] = round(
                    (row[key] - one[key]) * row["spans"] / row["spans_handed_over"], 2)
    same = len({r["kept_trace_ids_sha256"] for r in rows.values()}) == 1
    print(json.dumps({"benchmark": "workers-whole-path-in-process",
                      "measure": "instructions (valgrind --tool=callgrind, user space)"
                      if args.callgrind else "time.process_time, one process",
                      "pure_twins": accel.PURE, "load_errors": accel.LOAD_ERRORS,
                      "spans_per_request": 512,
                      "requests_from": "gRPC clients (2 processes per worker, not counted)"
                      if args.grpc else f"handed to the fronts, {args.per_tick} per loop tick",
                      "simulated_rate_spans_per_s": args.rate,
                      "same_kept_traces": same, "by_workers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
