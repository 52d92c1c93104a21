"""TLS and SASL of the Kafka clients (``receivers.kafka``, ``exporters.kafka``
in both modes): the one place turning a block's ``tls`` and ``auth.sasl``
into each client's options, so the consumer (aiokafka), the default producer
(confluent-kafka, librdkafka) and the aiokafka producer connect alike.

As the Collector's configkafka: a ``tls`` block means TLS unless
``insecure: true`` (the system's CAs when ``ca_file`` is empty), SASL runs
over TLS when there is TLS and in plaintext otherwise. The password may be
``${env:NAME}``, read when a client is built, so a file (and the workers'
copy of it) need not hold it; it is never logged.
"""
from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any

from .config import KafkaSasl, Tls
from .exporters.tls import ssl_context as client_context

_ENV = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def env_password(text: str, environ=None) -> tuple[str, str]:
    """(the password with ``${env:NAME}``, ``${NAME}``, ``${env:NAME:-default}``
    substituted, why it cannot be used or '')."""
    import os
    env = os.environ if environ is None else environ
    unset: list[str] = []

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        val = env.get(m.group(1))
        if val is None:
            if m.group(2) is not None:
                return m.group(2)
            unset.append(m.group(1))
            return ""
        return val

    value = _ENV.sub(sub, text)
    if unset:
        return value, f"the environment variable {unset[0]} is not set"
    if not value:
        return value, "must not be empty"
    return value, ""


def _tls(blk) -> Tls | None:
    t = blk.tls
    return t if t is not None and not t.insecure else None


def _sasl(blk) -> KafkaSasl | None:
    return blk.auth.sasl if blk.auth is not None else None


def security_protocol(blk) -> str:
    """Kafka's name for how ``blk`` connects: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL."""
    tls, sasl = _tls(blk), _sasl(blk)
    if sasl is None:
        return "SSL" if tls else "PLAINTEXT"
    return "SASL_SSL" if tls else "SASL_PLAINTEXT"


def describe(blk) -> str:
    """For log lines: the protocol, mechanism and user (no password)."""
    sasl = _sasl(blk)
    proto = security_protocol(blk)
    return proto if sasl is None else f"{proto}, {sasl.mechanism} as {sasl.username}"


class _NamedContext(ssl.SSLContext):
    """Verifies the broker's certificate for (and sends as SNI) a fixed host
    name instead of the one connected to: asyncio hands every connection's
    host name to ``wrap_bio``."""

    server_name = ""

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None,
                 session=None):
        return super().wrap_bio(incoming, outgoing, server_side=server_side,
                                server_hostname=self.server_name or server_hostname,
                                session=session)


def ssl_context(tls: Tls) -> ssl.SSLContext:
    ctx = client_context(tls, _NamedContext)
    assert isinstance(ctx, _NamedContext)
    ctx.server_name = tls.server_name_override
    return ctx


def aiokafka_options(blk) -> dict[str, Any]:
    """Keyword arguments of AIOKafkaConsumer / AIOKafkaProducer for ``blk``'s
    tls and auth (none for plaintext without SASL: the old path, unchanged)."""
    tls, sasl = _tls(blk), _sasl(blk)
    if tls is None and sasl is None:
        return {}
    out: dict[str, Any] = {"security_protocol": security_protocol(blk)}
    if tls is not None:
        out["ssl_context"] = ssl_context(tls)
    if sasl is not None:
        out["sasl_mechanism"] = sasl.mechanism
        out["sasl_plain_username"] = sasl.username
        out["sasl_plain_password"] = env_password(sasl.password)[0]
    return out


def librdkafka_options(blk) -> dict[str, Any]:
    """librdkafka configuration properties (confluent-kafka) for ``blk``'s
    tls and auth."""
    tls, sasl = _tls(blk), _sasl(blk)
    if tls is None and sasl is None:
        return {}
    out: dict[str, Any] = {"security.protocol": security_protocol(blk).lower()}
    if tls is not None:
        # "probe": the system's CA bundle, wherever this OS keeps it (the
        # wheel's own OpenSSL does not know the distribution's path)
        out["ssl.ca.location"] = tls.ca_file or "probe"
        if tls.cert_file:
            out["ssl.certificate.location"] = tls.cert_file
            out["ssl.key.location"] = tls.key_file or tls.cert_file
        if tls.insecure_skip_verify:
            out["enable.ssl.certificate.verification"] = False
            out["ssl.endpoint.identification.algorithm"] = "none"
        else:
            out["ssl.endpoint.identification.algorithm"] = "https"
    if sasl is not None:
        out["sasl.mechanisms"] = sasl.mechanism
        out["sasl.username"] = sasl.username
        out["sasl.password"] = env_password(sasl.password)[0]
    return out


class KafkaRefused(OSError):
    """The brokers answered and refused this client: its SASL credentials
    or its TLS (an untrusted certificate). No retry helps until the config
    or the brokers change."""


class KafkaUnreachable(OSError):
    """No broker could be connected to (down, wrong address or protocol)."""


async def diagnose(blk, timeout: float = 5.0) -> tuple[str, bool]:
    """(why a connection to ``blk.brokers`` fails, in words, or '' when one
    succeeds; whether the brokers refused it: credentials or TLS).
    aiokafka's start only says it could not bootstrap and librdkafka's
    metadata request only times out: the cause is in their own logs. This
    connects once to each broker, as the clients do, to say it."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError, KafkaError
    opts = aiokafka_options(blk)
    why, refused = "", False
    for b in blk.brokers:
        host, _, port = b.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(
                host.strip("[]"), int(port), request_timeout_ms=int(timeout * 1000), **opts),
                timeout)
        except ssl.SSLCertVerificationError as exc:
            why = f"{b}: TLS: the broker's certificate is not trusted: {exc.verify_message}"
            refused = True
        except ssl.SSLError as exc:
            why = f"{b}: TLS handshake failed: {exc.reason or exc}"
            refused = True
        except KafkaConnectionError as exc:
            why = f"{b}: the broker closed the connection ({exc})"
            tls = _tls(blk)
            if tls is not None and not tls.cert_file:
                why += "; does the listener require a client certificate (tls.cert_file)?"
        except KafkaError as exc:
            name = type(exc).__name__
            if "Sasl" in name or "Authentication" in name:
                sasl = _sasl(blk)
                who = f" ({sasl.mechanism}, user {sasl.username})" if sasl else ""
                why = f"{b}: the broker refused the SASL credentials{who}: {exc}"
                refused = True
            else:
                why = f"{b}: {name}: {exc}"
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            why = f"{b}: cannot connect ({security_protocol(blk)}): {exc or type(exc).__name__}"
        else:
            conn.close()
            return "", False
    return why, refused


async def connect_error(blk, exc: BaseException) -> OSError:
    """What to raise when a client of ``blk`` failed to start with ``exc``:
    KafkaRefused or KafkaUnreachable, saying why."""
    if isinstance(exc, (KafkaRefused, KafkaUnreachable)):
        return exc
    why, refused = await diagnose(blk)
    return (KafkaRefused if refused else KafkaUnreachable)(why or f"{type(exc).__name__}: {exc}")
