"""OTLP/HTTP exporter (protobuf): POST {endpoint}/v1/traces, as Tempo, Jaeger
and the Collector accept it."""
from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
import time
from email.utils import parsedate_to_datetime

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..config import OtlpExporter as OtlpCfg
from .base import Exporter
from .tls import ssl_context, uses_tls

log = logging.getLogger("traceo_sampler.exporters")
# The OTLP/HTTP specification's retryable status codes.
RETRYABLE = {429, 502, 503, 504}


class HttpError(Exception):
    def __init__(self, status: int, body: str, retry_after: float | None):
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def traces_url(endpoint: str) -> str:
    ep = endpoint if "://" in endpoint else "http://" + endpoint
    scheme, rest = ep.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}/{path or 'v1/traces'}"


class OtlpHttpExporter(Exporter):
    name = "otlp_http"

    def __init__(self, cfg: OtlpCfg, metrics, name: str = "otlp_http"):
        super().__init__(metrics, cfg.queue_max_bytes, cfg.batch_max_spans, cfg.batch_max_bytes,
                         cfg.queue_full, cfg.retry)
        self.name = name
        self.cfg = cfg
        self.url = traces_url(cfg.endpoint)
        if uses_tls(cfg.endpoint, cfg.tls):
            self.url = self.url.replace("http://", "https://", 1)
            self._ssl: ssl.SSLContext | bool = ssl_context(cfg.tls)
        else:
            self.url = self.url.replace("https://", "http://", 1)
            self._ssl = False
        self.headers = {"Content-Type": "application/x-protobuf", **cfg.headers}
        if cfg.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.timeout = aiohttp.ClientTimeout(total=cfg.timeout.seconds)
        # the name the backend's certificate is checked for (SNI too), when
        # it is not the endpoint's host (an IP, or a name behind a proxy)
        self._server_hostname = (cfg.tls.server_name_override or None) if cfg.tls else None
        self._session: aiohttp.ClientSession | None = None

    async def send(self, payload: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        # zlib lets go of the GIL: compressing a batch does not hold up the loop
        body = (await asyncio.to_thread(gzip.compress, payload, 5)
                if self.cfg.compression == "gzip" else payload)
        async with self._session.post(self.url, data=body, headers=self.headers,
                                      ssl=self._ssl,
                                      server_hostname=self._server_hostname) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise HttpError(resp.status, data.decode("utf-8", "replace"),
                                parse_retry_after(resp.headers.get("Retry-After")))
        if data:
            try:
                ps = ExportTraceServiceResponse.FromString(data).partial_success
            except Exception:  # noqa: BLE001 - a 200 with an odd body still succeeded
                return
            self.partial_success(ps)

    def retryable(self, exc: Exception) -> bool:
        if isinstance(exc, HttpError):
            return exc.status in RETRYABLE
        # connection refused, reset, timeouts: the backend may come back
        return isinstance(exc, (aiohttp.ClientError, TimeoutError, OSError))

    def refused(self, exc: Exception) -> bool:
        return isinstance(exc, HttpError) and exc.status == 400

    def retry_after(self, exc: Exception) -> float | None:
        return exc.retry_after if isinstance(exc, HttpError) else None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
