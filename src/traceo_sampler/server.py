"""``serve``: wires receivers → pipeline → exporters, runs until a signal,
then drains: receivers stop, every buffered trace is decided and exported."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from . import exporters as _exporters
from .admin import Admin
from .config import Config
from .pipeline import Pipeline
from .telemetry import Metrics

log = logging.getLogger("traceo_sampler")
TICK = 0.05          # how often due traces are looked for


class App:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.metrics = Metrics(cfg.telemetry.max_services, cfg.cost.usd_per_gib)
        self.exporters = _exporters.build(cfg.exporters, self.metrics)
        self.pipeline = Pipeline(cfg, self.metrics, self.exporters)
        self.receivers: list = []
        self.admin: Admin | None = None
        self.started = time.time()
        self._stop = asyncio.Event()
        self._ticker: asyncio.Task | None = None

    # ----------------------------------------------------------- status
    def ready(self) -> tuple[bool, str]:
        b = self.pipeline.buffer
        if b.nbytes > 0.9 * b.memory_limit:
            return False, "buffer above 90% of its memory limit"
        if not self.receivers:
            return False, "receivers not listening"
        return True, ""

    def status(self) -> dict:
        p = self.pipeline
        b = p.buffer
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "spans_received": p.spans_in,
            "bytes_received": p.bytes_in,
            "spans_kept": p.spans_kept,
            "traces_kept": p.traces_kept,
            "traces_not_kept": p.traces_dropped,
            "late_spans": {"sampled": p.late_kept, "not_sampled": p.late_dropped},
            "decisions_by_trigger": p.by_trigger,
            "kept_by_policy": p.by_policy,
            "buffer": {"spans": b.nspans, "traces": b.ntraces, "bytes": b.nbytes,
                       "limit_bytes": b.memory_limit},
            "exporters": {e.name: {"sent_spans": e.sent_spans, "dropped_spans": e.dropped_spans,
                                   "queued_bytes": e.queued_bytes} for e in self.exporters},
        }

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        from .receivers.otlp_grpc import OtlpGrpcReceiver
        from .receivers.otlp_http import OtlpHttpReceiver
        for e in self.exporters:
            e.start()
        r = self.cfg.receivers
        if r.otlp is not None and r.otlp.grpc is not None:
            g = r.otlp.grpc
            self.receivers.append(OtlpGrpcReceiver(g.endpoint, self.pipeline, self.metrics,
                                                   g.max_recv_msg_size_mib))
        if r.otlp is not None and r.otlp.http is not None:
            h = r.otlp.http
            self.receivers.append(OtlpHttpReceiver(h.endpoint, self.pipeline, self.metrics,
                                                   h.max_recv_msg_size_mib))
        if r.kafka is not None:
            raise NotImplementedError("receivers.kafka is not available yet")
        for rec in self.receivers:
            await rec.start()
        if self.cfg.admin is not None:
            self.admin = Admin(self.cfg.admin.endpoint, self)
            await self.admin.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        p = self.pipeline
        while not self._stop.is_set():
            try:
                p.tick()
            except Exception:  # a bug here must not stop deciding forever
                log.exception("decision tick failed")
            await asyncio.sleep(TICK)

    async def shutdown(self) -> None:
        log.info("draining: receivers stop, every buffered trace is decided")
        for rec in self.receivers:
            await rec.stop(grace=1.0)
        self._stop.set()
        if self._ticker is not None:
            await self._ticker
        n = self.pipeline.drain()
        log.info("decided %d buffered traces on shutdown", n)
        for e in self.exporters:
            await e.close(self.cfg.service.shutdown_timeout.seconds)
        if self.admin is not None:
            await self.admin.stop()

    def summary(self) -> dict:
        s = self.status()
        s["keep_ratio_spans"] = round(s["spans_kept"] / s["spans_received"], 4) if s["spans_received"] else 0.0
        return s


async def _serve(cfg: Config, ready_file: str | None) -> int:
    app = App(cfg)
    await app.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("traceo-sampler serving; Ctrl-C or SIGTERM drains and exits")
    if ready_file:
        with open(ready_file, "w") as fh:
            fh.write(json.dumps({"grpc_port": next(
                (r.port for r in app.receivers if r.name == "otlp_grpc"), None)}))
    await stop.wait()
    await app.shutdown()
    print(json.dumps({"summary": app.summary()}), file=sys.stderr, flush=True)
    return 0


def serve(cfg: Config, ready_file: str | None = None) -> int:
    try:
        import uvloop
        return uvloop.run(_serve(cfg, ready_file))
    except ImportError:
        return asyncio.run(_serve(cfg, ready_file))
