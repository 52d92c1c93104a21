"""OTLP/HTTP receiver: POST /v1/traces, protobuf or JSON; Content-Encoding
gzip, deflate or zstd (receivers/encoding.py)."""
from __future__ import annotations

import logging

from aiohttp import web
from google.rpc import status_pb2  # shipped with grpcio-status / googleapis-common-protos

from .encoding import BodyError, decode, read_body
from .json_pool import JsonDecoder
from .otlp_grpc import partial_success, pushback_reason

log = logging.getLogger("traceo_sampler.receivers")


def _status(code: int, message: str) -> bytes:
    return status_pb2.Status(code=code, message=message).SerializeToString()


class OtlpHttpReceiver:
    name = "otlp_http"
    # service.workers: every worker listens on the same port
    reuse_port = False

    def __init__(self, endpoint: str, pipeline, metrics, max_recv_mib: int = 16, *,
                 tls=None, gate=None):
        self.tls = tls          # config.ServerTls
        self.gate = gate        # receivers.gate.Gate: auth, memory limiter
        host, _, port = endpoint.split("://", 1)[-1].rpartition(":")
        self.host, self.port = host, int(port)
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_bytes = max_recv_mib << 20
        self.runner: web.AppRunner | None = None
        self.json = JsonDecoder()

    def _bad(self, msg: str, json_req: bool) -> web.Response:
        self.metrics.receiver_requests_total.labels(self.name, "invalid").inc()
        self.metrics.invalid_requests_total.labels(self.name).inc()
        if json_req:
            return web.json_response({"code": 3, "message": msg}, status=400)
        return web.Response(status=400, body=_status(3, msg),
                            content_type="application/x-protobuf")

    async def _traces(self, request: web.Request) -> web.Response:
        ctype = request.content_type
        is_json = ctype == "application/json"
        if ctype not in ("application/x-protobuf", "application/json"):
            return web.Response(status=415, text=f"unsupported content type {ctype!r}")
        if self.pipeline.backpressure():
            self.metrics.receiver_requests_total.labels(self.name, "backpressure").inc()
            return web.Response(status=429, text=pushback_reason(self.pipeline) + "; retry later\n",
                                headers={"Retry-After": str(int(self.pipeline.RETRY_AFTER))})
        try:
            body = decode(await read_body(request, self.max_bytes),
                          request.headers.get("Content-Encoding", ""), self.max_bytes)
        except BodyError as exc:
            if exc.status == 400:
                return self._bad(exc.message, is_json)
            self.metrics.receiver_requests_total.labels(self.name, "refused").inc()
            return web.Response(status=exc.status, text=exc.message + "\n")
        if is_json:
            try:
                body = await self.json.decode(body)
            except ValueError as exc:
                return self._bad(f"invalid OTLP JSON: {exc}", True)
        try:
            res = self.pipeline.ingest(body)
        except ValueError as exc:
            return self._bad(f"not a valid ExportTraceServiceRequest: {exc}", is_json)
        acked = getattr(res, "acked", None)
        if acked is not None:
            # a front that answers once downstream acknowledged (router mode)
            err = await acked
            if err:
                self.metrics.receiver_requests_total.labels(self.name, "unavailable").inc()
                return web.Response(status=503, text=err + "\n", headers={"Retry-After": "1"})
        if res.rejected:
            self.metrics.receiver_requests_total.labels(self.name, "partial").inc()
            out = partial_success(res.rejected, res.errors)
        else:
            self.metrics.receiver_requests_total.labels(self.name, "ok").inc()
            out = b""
        if is_json:
            from ..otlp_json import response_to_json
            return web.json_response(response_to_json(out))
        return web.Response(body=out, content_type="application/x-protobuf")

    async def start(self) -> None:
        middlewares = [self.gate.http_middleware()] if self.gate else []
        app = web.Application(client_max_size=self.max_bytes, middlewares=middlewares)
        app.router.add_post("/v1/traces", self._traces)
        # auto_decompress off: encoding.decode inflates once, bounded
        self.runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self.runner.setup()
        ctx = None
        if self.tls is not None:
            from .security import CertificateFiles, reloading_ssl_context
            counter = self.metrics.tls_reloads_total
            ctx = reloading_ssl_context(CertificateFiles(
                self.tls, lambda result: counter.labels(self.name, result).inc()))
        site = web.TCPSite(self.runner, self.host, self.port, ssl_context=ctx,
                           reuse_port=self.reuse_port or None)
        await site.start()
        log.info("OTLP/HTTP receiver listening on %s:%d", self.host, self.port)

    async def stop(self, grace: float = 2.0) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.json.close()
