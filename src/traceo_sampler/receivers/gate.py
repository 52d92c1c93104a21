"""What every receiver request passes before its body is looked at:
bearer-token authentication and the process memory limiter. One gate per
listener; none is installed when neither is configured (no cost then).

gRPC: a server interceptor answering UNAUTHENTICATED, or RESOURCE_EXHAUSTED
with RetryInfo. HTTP: an aiohttp middleware answering 401 with
``WWW-Authenticate``, or 429 with ``Retry-After``. Refusals are counted in
``unauthenticated_requests_total{receiver,reason}`` and
``receiver_requests_total{outcome="memory_limit"}``; no token is logged.
"""
from __future__ import annotations

import grpc
from aiohttp import web


class Gate:
    def __init__(self, name: str, metrics, tokens=None, limiter=None,
                 open_paths: frozenset[str] = frozenset()):
        self.name = name
        self.metrics = metrics
        self.tokens = tokens
        self.limiter = limiter
        # HTTP paths served without a token (the admin's health probes)
        self.open_paths = open_paths

    def __bool__(self) -> bool:
        return self.tokens is not None or self.limiter is not None

    def _unauthenticated(self, header) -> str:
        if self.tokens is None:
            return ""
        why = self.tokens.check(header)
        if why and self.metrics is not None:
            self.metrics.unauthenticated_requests_total.labels(self.name, why).inc()
        return why

    def _over_memory(self) -> bool:
        if self.limiter is not None and self.limiter.over():
            self.metrics.receiver_requests_total.labels(self.name, "memory_limit").inc()
            return True
        return False

    # ------------------------------------------------------------ gRPC
    def grpc_interceptor(self) -> grpc.aio.ServerInterceptor:
        gate = self

        class _Interceptor(grpc.aio.ServerInterceptor):
            async def intercept_service(self, continuation, details):
                header = None
                for k, v in details.invocation_metadata or ():
                    if k == "authorization":
                        header = v
                why = gate._unauthenticated(header)
                if why:
                    return _refuse(grpc.StatusCode.UNAUTHENTICATED,
                                   f"{why} bearer token", ())
                if gate._over_memory():
                    from .otlp_grpc import retry_info_trailer
                    msg = "process memory above service.memory_limit_mib; retry later"
                    return _refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, msg,
                                   retry_info_trailer(msg, gate.limiter.RETRY_AFTER))
                return await continuation(details)
        return _Interceptor()

    # ------------------------------------------------------------ HTTP
    def http_middleware(self):
        gate = self

        @web.middleware
        async def middleware(request: web.Request, handler):
            if request.path not in gate.open_paths:
                why = gate._unauthenticated(request.headers.get("Authorization"))
                if why:
                    return web.Response(status=401, text=f"{why} bearer token\n",
                                        headers={"WWW-Authenticate": "Bearer"})
            if request.method == "POST" and gate._over_memory():
                return web.Response(
                    status=429, text="process memory above service.memory_limit_mib; retry later\n",
                    headers={"Retry-After": str(int(gate.limiter.RETRY_AFTER))})
            return await handler(request)
        return middleware


def _refuse(code: grpc.StatusCode, message: str, trailers: tuple):
    async def refuse(request, context):
        await context.abort(code, message, trailing_metadata=trailers)
    return grpc.unary_unary_rpc_method_handler(refuse)
