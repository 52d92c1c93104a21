"""Admin HTTP: /metrics, /healthz, /readyz, /api/status, /status."""
from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import json
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("traceo_sampler.admin")

# The /status page: one file refreshed by fetching /api/status and
# /api/history every second; its charts use plotly.js served by this same
# admin server (no CDN); follows the system's light/dark setting.
_PAGE = (importlib.resources.files("traceo_sampler") / "static" / "status.html").read_text()
_PLOTLY_GZ: bytes | None = None


def _plotly_gz() -> bytes:
    from plotly.offline import get_plotlyjs
    return gzip.compress(get_plotlyjs().encode(), 6)


class Admin:
    def __init__(self, endpoint: str, app_state, *, tls=None, gate=None):
        self.tls = tls          # config.ServerTls
        self.gate = gate        # receivers.gate.Gate: bearer tokens
        # "unix:PATH": a Unix socket (a worker's, read by its supervisor)
        self.unix = endpoint[5:] if endpoint.startswith("unix:") else None
        host, _, port = endpoint.split("://", 1)[-1].rpartition(":")
        self.host, self.port = (host, int(port)) if self.unix is None else ("", 0)
        self.state = app_state
        self.runner: web.AppRunner | None = None

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.state.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        ok, why = self.state.ready()
        return web.Response(status=200 if ok else 503, text=("ready" if ok else why) + "\n")

    async def api_status(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.state.status(), indent=1),
                            content_type="application/json")

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=_PAGE, content_type="text/html")

    async def api_history(self, request: web.Request) -> web.Response:
        """The history ring (history.py); ``?since=T`` only points after T."""
        try:
            since = float(request.query.get("since", "0") or 0)
        except ValueError:
            return web.Response(status=400, text="since: must be a number (unix seconds)\n")
        return web.Response(text=json.dumps(self.state.history.since(since), separators=(",", ":")),
                            content_type="application/json")

    async def api_counters(self, request: web.Request) -> web.Response:
        """The cumulative figures the history samples (history.Counters): a
        supervisor of service.workers sums its workers' for the group's
        history, instead of having each render /metrics and /api/status
        every second."""
        return web.Response(text=json.dumps(self.state.counters()._asdict(), separators=(",", ":")),
                            content_type="application/json")

    async def plotly_js(self, request: web.Request) -> web.Response:
        """plotly.js from the installed plotly package, for the page's
        charts: served from here, so the page needs no CDN. Compressed once,
        off the event loop, and cached by the browser."""
        global _PLOTLY_GZ
        if _PLOTLY_GZ is None:
            _PLOTLY_GZ = await asyncio.get_running_loop().run_in_executor(None, _plotly_gz)
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=_PLOTLY_GZ, headers=headers,
                                content_type="application/javascript")
        return web.Response(body=gzip.decompress(_PLOTLY_GZ), headers=headers,
                            content_type="application/javascript")

    async def start(self, overrides: dict | None = None) -> None:
        """``overrides``: route → handler replacing the default one (the
        supervisor of service.workers serves its workers' merged state)."""
        routes = {"/metrics": self.metrics, "/healthz": self.healthz, "/readyz": self.readyz,
                  "/api/status": self.api_status, "/status": self.page,
                  "/api/history": self.api_history, "/assets/plotly.min.js": self.plotly_js,
                  # a worker's private socket: what its supervisor samples each second
                  **({"/api/counters": self.api_counters} if self.unix is not None else {}),
                  **(overrides or {})}
        app = web.Application(middlewares=[self.gate.http_middleware()] if self.gate else [])
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        if self.unix is not None:
            await web.UnixSite(self.runner, self.unix).start()
            return
        ctx = None
        if self.tls is not None:
            from .receivers.security import CertificateFiles, reloading_ssl_context
            counter = self.state.metrics.tls_reloads_total
            ctx = reloading_ssl_context(CertificateFiles(
                self.tls, lambda result: counter.labels("admin", result).inc()))
        await web.TCPSite(self.runner, self.host, self.port, ssl_context=ctx).start()
        log.info("admin listening on %s://%s:%d", "https" if ctx else "http", self.host, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
