"""``serve``: wires receivers → pipeline → exporters, runs until a signal,
then drains: receivers stop, every buffered trace is decided and exported."""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import sys
import time
from typing import Any


from . import exporters as _exporters
from .admin import Admin
from .config import Config, kafka_mode, timers
from .history import Counters, History, histogram_buckets
from .policies import describe
from .pipeline import Pipeline
from .telemetry import Metrics

log = logging.getLogger("traceo_sampler")
TICK = 0.05          # how often due traces are looked for


class App:
    def __init__(self, cfg: Config, *, front=None, adjust=None, before_drain=None,
                 worker: int = 0):
        self.cfg = cfg
        # service.workers (workers.py): ``front(pipeline)`` is what the OTLP
        # receivers feed (it hands other shards' spans to their owners),
        # ``adjust(cfg)`` gives a reloaded config this worker's share, and
        # ``await before_drain(app)`` runs between receivers stopping and the
        # drain (spans still on their way between workers arrive first)
        self._front = front
        self._adjust = adjust
        self._before_drain = before_drain
        self.metrics = Metrics(cfg.telemetry.max_services, cfg.cost.usd_per_gib)
        # exporters.kafka in router mode (exporters/kafka.py) is not an
        # exporter of kept traces: the OTLP receivers feed the router; in
        # mode sampled it is one of the exporters (config.kafka_mode)
        self.router = None
        kmode = kafka_mode(cfg.exporters, cfg.receivers)
        if kmode is not None and kmode[0] == "router":
            from .exporters.kafka import KafkaRouter
            self.router = KafkaRouter(cfg.exporters.kafka, self.metrics)
        self.exporters = _exporters.build(cfg.exporters, self.metrics,
                                          kafka_sampled=kmode is not None and kmode[0] == "sampled")
        # receivers.kafka: its lag clock drives the timers and the policies,
        # its tracker hears of every decision (receivers/kafka.py)
        clock, self._kafka_tracker = time.monotonic, None
        if cfg.receivers.kafka is not None:
            from .receivers.kafka import LagClock, OffsetTracker
            clock, self._kafka_tracker = LagClock(), OffsetTracker()
        # sampler.wal (wal.py): its tracker hears of every decision and ack
        # so that segments are deleted as Kafka offsets are committed; each
        # worker process logs to its own directory (it owns its trace shard)
        self.wal: Any = None         # a wal.WriteAheadLog
        self.recovery: Any = None    # what wal.recover found at start
        tracker: Any = self._kafka_tracker
        if cfg.sampler.wal is not None:
            from .wal import WalTracker, WriteAheadLog
            self.wal = WriteAheadLog(cfg.sampler.wal, self.metrics,
                                     os.path.join(cfg.sampler.wal.dir, f"worker-{worker}"))
            tracker = WalTracker(self.wal, None)
        self.pipeline = Pipeline(cfg, self.metrics, self.exporters, clock=clock,
                                 tracker=tracker)
        # what the receivers (and, with service.workers, the hand-off from
        # other workers) feed: the pipeline, or the log in front of it
        self.intake: Any = self.pipeline
        if self.wal is not None:
            from .wal import WalFront
            tracker.cached = self.pipeline.buffer.cached
            self.intake = WalFront(self.pipeline, self.wal, tracker)
        self.receivers: list = []
        self.admin: Admin | None = None
        self.started = time.time()
        self._stop = asyncio.Event()
        self._ticker: asyncio.Task | None = None
        self._sampler: asyncio.Task | None = None
        self._history: collections.deque = collections.deque(maxlen=11)
        # the /status page's charts and the live cost forecast (history.py)
        self.history = History()
        self._rules = {c.name: describe(c) for c in cfg.sampler.policies}

    # ----------------------------------------------------------- status
    def ready(self) -> tuple[bool, str]:
        b = self.pipeline.buffer
        if not self.receivers or self._stop.is_set():
            return False, "receivers not listening"
        if b.nbytes > 0.9 * b.memory_limit:
            return False, "buffer above 90% of its memory limit"
        if self.wal is not None and not self.wal.healthy:
            return False, self.wal.error
        for e in self.exporters:
            if not e.reachable:
                return False, f"exporter {e.name} unreachable: {e.last_error}"
        if self.router is not None and not self.router.reachable:
            return False, f"kafka (router mode) unreachable: {self.router.last_error}"
        for r in self.receivers:
            # the Kafka receiver's last failed connection ('' once connected)
            if getattr(r, "last_error", ""):
                return False, f"receivers.kafka not connected: {r.last_error}"
        return True, ""

    def _rates(self) -> dict:
        """Spans/s in and out over the last ~10 s of samples."""
        h = self._history
        if len(h) < 2:
            return {"spans_in_per_s": 0.0, "spans_out_per_s": 0.0}
        (t0, i0, o0), (t1, i1, o1) = h[0], h[-1]
        dt = max(t1 - t0, 1e-9)
        return {"spans_in_per_s": round((i1 - i0) / dt, 1),
                "spans_out_per_s": round((o1 - o0) / dt, 1)}

    def status(self) -> dict:
        p = self.pipeline
        b = p.buffer
        # the counts (totals, per policy, trigger, service, cost, recent
        # kept) are the pipeline's Account rendered: the summary, simulate
        # and the workers' merged status render the same object
        counted = p.account.status(p.prices)
        recent = counted.pop("recent_kept")
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "throughput": self._rates(),
            **counted,
            "completion": p.completion.status(),
            "consistency": self.consistency(),
            "buffer": {"spans": b.nspans, "traces": b.ntraces, "bytes": b.nbytes,
                       "limit_bytes": b.memory_limit,
                       "occupancy": round(b.nbytes / b.memory_limit, 4)},
            "exporters": {e.name: {"sent_spans": e.sent_spans, "dropped_spans": e.dropped_spans,
                                   "queued_bytes": e.queued_bytes,
                                   "queue_max_bytes": e.queue_max_bytes}
                          for e in self.exporters},
            "recent_kept": recent,
            "trace_url": self.cfg.admin.trace_url if self.cfg.admin is not None else "",
            "policy_rules": self._rules,
            "forecast": self.history.forecast(self.cfg.cost.monthly_budget_usd),
            **self._kafka_status(),
            **self._wal_status(),
        }

    def _wal_status(self) -> dict:
        w = self.wal
        if w is None:
            return {}
        return {"wal": {"dir": w.dir, "fsync": w.mode, "bytes": w.total, "max_bytes": w.max_bytes,
                        "segments": len(w.sizes), "healthy": w.healthy, "error": w.error,
                        "recovered": self.recovery.as_dict() if self.recovery else None}}

    def _kafka_status(self) -> dict:
        out: dict = {}
        for rec in self.receivers:
            if rec.name == "kafka":
                out["kafka_receiver"] = rec.status()
        if self.router is not None:
            r = self.router
            out["kafka_router"] = {"topic": r.cfg.topic, "messages_acked": r.messages,
                                   "messages_failed": r.failed, "reachable": r.reachable,
                                   "last_error": r.last_error}
        return out

    def consistency(self) -> dict:
        return self.metrics.consistency()

    # ----------------------------------------------------------- lifecycle
    def _gate(self, name: str, blk, limiter):
        """The gate (auth, memory limiter) of one listener, or None."""
        from .receivers.gate import Gate
        from .receivers.security import BearerTokens
        tokens = BearerTokens(blk.auth) if blk.auth is not None else None
        open_paths = frozenset(("/healthz", "/readyz")) if name == "admin" else frozenset()
        gate = Gate(name, self.metrics, tokens, limiter, open_paths)
        return gate if gate else None

    async def _listen(self, path: str, listener) -> None:
        """Start one listener; a failure is a config error naming the field."""
        from .preflight import listen_error
        try:
            await listener.start()
        except (OSError, RuntimeError) as exc:
            ep = getattr(listener, "endpoint", None) or f"{listener.host}:{listener.port}"
            raise listen_error(path, ep, exc) from None

    async def start(self) -> None:
        """Start exporters, receivers and admin; a listener that cannot be
        opened undoes the rest and raises ConfigError naming its field."""
        from .config import ConfigError
        try:
            await self._start()
        except ConfigError:
            await self.abort()
            raise

    async def _start(self) -> None:
        from .receivers.limiter import MemoryLimiter
        from .receivers.otlp_grpc import OtlpGrpcReceiver
        from .receivers.otlp_http import OtlpHttpReceiver
        mem = self.cfg.service.memory_limit_mib
        limiter = MemoryLimiter(mem, self.metrics) if mem else None
        for e in self.exporters:
            e.start()
        if self.wal is not None:
            await self._recover()
        r = self.cfg.receivers
        # what the receivers hand requests to: the pipeline (or the log in
        # front of it), or what stands in front of that (self._front's
        # wrapper, the router)
        front: Any = self.intake
        if self._front is not None and self.router is None:
            front = self._front(self.intake)
        if self.router is not None:
            # router mode: the same receivers, answering once Kafka acked
            from .exporters.kafka import RouterFront
            await self.router.start()
            front = RouterFront(self.router)
        if r.otlp is not None and r.otlp.grpc is not None:
            g = r.otlp.grpc
            self.receivers.append(OtlpGrpcReceiver(g.endpoint, front, self.metrics,
                                                   g.max_recv_msg_size_mib, tls=g.tls,
                                                   gate=self._gate("otlp_grpc", g, limiter)))
        if r.otlp is not None and r.otlp.http is not None:
            h = r.otlp.http
            self.receivers.append(OtlpHttpReceiver(h.endpoint, front, self.metrics,
                                                   h.max_recv_msg_size_mib, tls=h.tls,
                                                   gate=self._gate("otlp_http", h, limiter)))
        if r.kafka is not None:
            from .receivers.kafka import KafkaReceiver, LagClock
            # with a Kafka receiver the pipeline was built on its lag clock and tracker
            assert isinstance(self.pipeline.clock, LagClock) and self._kafka_tracker is not None
            self.receivers.append(KafkaReceiver(r.kafka, self.pipeline, self.metrics,
                                                self.cfg.service.shutdown_timeout.seconds,
                                                clock=self.pipeline.clock,
                                                tracker=self._kafka_tracker, limiter=limiter))
        for rec in self.receivers:
            await self._listen({"otlp_grpc": "receivers.otlp.grpc",
                                "otlp_http": "receivers.otlp.http"}.get(rec.name, "receivers.kafka"),
                               rec)
        if self.pipeline.shared is not None:
            await self.pipeline.shared.start()
        if self.cfg.admin is not None:
            a = self.cfg.admin
            self.admin = Admin(a.endpoint, self, tls=a.tls, gate=self._gate("admin", a, None))
            await self._listen("admin", self.admin)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def _recover(self) -> None:
        """Open the log and replay what a previous run left in it."""
        from .config import ConfigError
        from .wal import WalTracker, recover
        assert self.wal is not None
        try:
            old = self.wal.open()
        except OSError as exc:
            raise ConfigError([f"sampler.wal.dir: cannot use {self.wal.dir!r}: "
                               f"{exc.strerror or exc}"]) from None
        await self.wal.start()
        assert isinstance(self.pipeline.tracker, WalTracker)
        self.recovery = recover(self.wal, old, self.pipeline, self.pipeline.tracker)

    async def _sample(self) -> None:
        p = self.pipeline
        while not self._stop.is_set():
            self._history.append((time.monotonic(), p.account.spans_received,
                                  sum(e.sent_spans for e in self.exporters)))
            try:
                self.history.sample(self.counters())
            except Exception:  # the charts must not stop the sampler
                log.exception("history sample failed")
            await asyncio.sleep(1.0)

    def counters(self) -> Counters:
        """The cumulative figures the history ring derives its rates from."""
        p = self.pipeline
        b = p.buffer
        a = p.account
        by = a.usd(p.prices)
        return Counters(
            time.time(), a.spans_received, sum(e.sent_spans for e in self.exporters), a.decided,
            a.traces_kept, b.nbytes / b.memory_limit if b.memory_limit else 0.0,
            histogram_buckets(self.metrics.decision_latency_seconds),
            sum(i for i, _ in by.values()), sum(o for _, o in by.values()), by)

    async def _tick(self) -> None:
        p = self.pipeline
        while not self._stop.is_set():
            try:
                p.tick()
            except Exception:  # a bug here must not stop deciding forever
                log.exception("decision tick failed")
            await asyncio.sleep(TICK)

    async def abort(self) -> None:
        """Undo a start that failed half-way (nothing was received)."""
        for rec in self.receivers:
            try:
                await rec.stop(grace=0)
            except Exception:  # noqa: BLE001 - it may never have started
                pass
        if self.admin is not None:
            try:
                await self.admin.stop()
            except Exception:  # noqa: BLE001
                pass
        for e in self.exporters:
            await e.close(0)
        if self.wal is not None:
            await self.wal.close()

    async def shutdown(self) -> None:
        log.info("draining: receivers stop, every buffered trace is decided")
        for rec in self.receivers:
            await rec.stop(grace=1.0)
        self._stop.set()
        if self._ticker is not None:
            await self._ticker
        if self._sampler is not None:
            self._sampler.cancel()
        if self._before_drain is not None:
            await self._before_drain(self)
        if self.router is not None:
            await self.router.close(self.cfg.service.shutdown_timeout.seconds)
        n = self.pipeline.drain(shutdown=True)
        log.info("decided %d buffered traces on shutdown", n)
        if self.pipeline.shared is not None:
            await self.pipeline.shared.close(min(5.0, self.cfg.service.shutdown_timeout.seconds))
        for e in self.exporters:
            await e.close(self.cfg.service.shutdown_timeout.seconds)
        if self.wal is not None:
            await self.wal.close()
        if self.admin is not None:
            await self.admin.stop()

    # ----------------------------------------------------------- reload
    def reload(self, new: Config) -> list[str]:
        """Apply a new, already validated config without losing buffered
        traces or the decision cache: policies are rebuilt and the timers
        updated in place. Returns the sections that need a restart to take
        effect (receivers, exporters, admin, cache sizes)."""
        from .decider import Decider
        p = self.pipeline
        from .preflight import require
        require(new)                                              # may raise: nothing changed yet
        # may raise: nothing changed yet
        decider = Decider(new.sampler.policies, clock=p.clock, semantics=new.sampler.semantics,
                          sample_on_first_match=new.sampler.sample_on_first_match,
                          max_trace_bytes=new.sampler.maximum_trace_size_bytes,
                          spans=p.buffer.spans)
        p.decider = decider
        p.attr_keys = decider.attribute_keys
        p.record_policy = new.sampler.record_policy
        b = p.buffer
        s = new.sampler
        b.decision_wait = timers(s)[0]
        p.tick_period = 1.0 if s.semantics == "collector" else 0.0
        p.completion.set_policies(decider.policies)
        p.completion.reload(s)
        b.max_spans = s.max_spans_per_trace
        b.memory_limit = s.memory_limit_mib << 20
        self.metrics.buffer_limit_bytes.set(b.memory_limit)
        old = self.cfg
        # cost: the dollars counted so far were priced as they came (the
        # metrics), so the status (bytes times the prices) keeps the prices
        # it started with rather than reprice the past
        not_applied = [name for name in ("receivers", "exporters", "admin", "service", "cost")
                       if getattr(old, name) != getattr(new, name)]
        if old.sampler.decision_cache != s.decision_cache:
            not_applied.append("sampler.decision_cache")
        if old.sampler.wal != s.wal:
            # the log is opened and recovered once, at start
            not_applied.append("sampler.wal")
        if old.sampler.shared_decisions != s.shared_decisions:
            # its Kafka clients and the hold are built once, at start
            not_applied.append("sampler.shared_decisions")
        self.cfg = new
        self._rules = {c.name: describe(c) for c in new.sampler.policies}
        return not_applied

    def reload_from(self, path: str) -> bool:
        from .config import ConfigError, load
        try:
            new = load(path)
            if self._adjust is not None:
                new = self._adjust(new)
            not_applied = self.reload(new)
        except ConfigError as exc:
            self.metrics.config_reloads_total.labels("rejected").inc()
            for problem in exc.problems:
                log.error("config reload rejected, keeping the running config: %s", problem)
            return False
        except Exception as exc:  # noqa: BLE001 - a bad reload must not kill the process
            self.metrics.config_reloads_total.labels("rejected").inc()
            log.error("config reload failed, keeping the running config: %s", exc)
            return False
        self.metrics.config_reloads_total.labels("applied").inc()
        log.info("config reloaded from %s: %d policies", path, len(new.sampler.policies))
        if not_applied:
            log.warning("changed but applied only after a restart: %s", ", ".join(not_applied))
        return True

    async def watch(self, path: str, interval: float = 1.0) -> None:
        """Reload when the file changes (mtime or size)."""
        def stamp():
            try:
                st = os.stat(path)
                return (st.st_mtime_ns, st.st_size)
            except OSError:
                return None
        last = stamp()
        while not self._stop.is_set():
            await asyncio.sleep(interval)
            cur = stamp()
            if cur is not None and cur != last:
                last = cur
                self.reload_from(path)

    def summary(self) -> dict:
        """What ``serve`` prints when it exits: /api/status without the
        recent kept traces."""
        s = self.status()
        del s["recent_kept"]
        return s


async def _serve(cfg: Config, ready_file: str | None, config_path: str | None) -> int:
    from .config import ConfigError
    try:
        app = App(cfg)
    except OSError as exc:
        # what preflight could not foresee (a race, a full disk)
        raise ConfigError([_field_of(cfg, exc)]) from None
    await app.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if config_path is not None:
        # hot reload: SIGHUP, or the file changing on disk
        loop.add_signal_handler(signal.SIGHUP, app.reload_from, config_path)
        watcher = loop.create_task(app.watch(config_path))
    log.info("traceo-sampler serving; Ctrl-C or SIGTERM drains and exits")
    if ready_file:
        with open(ready_file, "w") as fh:
            fh.write(json.dumps({"grpc_port": next(
                (r.port for r in app.receivers if r.name == "otlp_grpc"), None)}))
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    await app.shutdown()
    print(json.dumps({"summary": app.summary()}), file=sys.stderr, flush=True)
    return 0


def _field_of(cfg: Config, exc: OSError) -> str:
    f = cfg.exporters.file
    if f is not None and exc.filename and os.path.abspath(exc.filename) == os.path.abspath(f.path):
        return f"exporters.file.path: {f.path!r} cannot be opened: {exc.strerror}"
    return f"{exc.filename or 'serve'}: {exc.strerror or exc}"


def serve(cfg: Config, ready_file: str | None = None, config_path: str | None = None) -> int:
    from .preflight import probe_listeners
    from .workers import supervise, worker_count
    probe_listeners(cfg)
    n = worker_count(cfg)
    if n > 1:
        return supervise(cfg, n, ready_file, config_path)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(cfg, ready_file, config_path))
    return uvloop.run(_serve(cfg, ready_file, config_path))
