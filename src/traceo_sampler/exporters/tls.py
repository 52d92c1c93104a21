"""Endpoint and TLS rules shared by the OTLP exporters (docs/design.md §4):
``host:port`` or ``http://host:port`` is plaintext, ``https://host:port`` or
a ``tls:`` block means TLS (unless ``tls.insecure: true``)."""
from __future__ import annotations

import ssl

from ..config import Tls


def uses_tls(endpoint: str, tls: Tls | None) -> bool:
    if tls is not None:
        return not tls.insecure
    return endpoint.startswith("https://")


def host_port(endpoint: str) -> str:
    rest = endpoint.split("://", 1)[-1]
    return rest.split("/", 1)[0]


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def grpc_credentials(tls: Tls | None):
    import grpc
    tls = tls or Tls()
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.key_file),
        certificate_chain=_read(tls.cert_file))


def ssl_context(tls: Tls | None, context_class: type[ssl.SSLContext] = ssl.SSLContext
                ) -> ssl.SSLContext:
    """A client context for ``tls``; ``context_class`` for a subclass (the
    Kafka clients' fixed server name)."""
    tls = tls or Tls()
    ctx = context_class(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        ctx.load_verify_locations(cafile=tls.ca_file)
    else:
        ctx.load_default_certs()
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
