"""TLS (and mTLS) for the receivers and the admin endpoint, and bearer-token
authentication in the shape of the Collector's ``bearertokenauth``: the
``authorization`` header (gRPC metadata) must be ``<scheme> <token>`` with a
token listed in ``bearer_tokens_file``, which is read again when it changes.
The certificate, key and client CA files are read again too when they change
(cert-manager and Kubernetes secrets rotate them in place): new connections
get the new ones, open connections keep theirs.

Tokens are kept as SHA-256 digests and compared in constant time; neither
they nor what a client sent are ever logged.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import time

log = logging.getLogger("traceo_sampler.receivers")


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def ssl_context(tls) -> ssl.SSLContext:
    """A server context for ``tls`` (config.ServerTls); with ``client_ca_file``
    clients must present a certificate it signed (mTLS). Raises ValueError
    naming the file at fault."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for attr in ("cert_file", "key_file", "client_ca_file"):
        path = getattr(tls, attr)
        if path and not os.path.isfile(path):
            raise ValueError(f"{attr}: {path!r} does not exist")
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"{attr}: {path!r} is not readable")
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ValueError(f"cert_file/key_file: {tls.cert_file!r} and {tls.key_file!r} are not a "
                         f"PEM certificate and its private key: {exc.reason or exc}") from None
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"client_ca_file: {tls.client_ca_file!r} holds no PEM CA "
                             f"certificate: {getattr(exc, 'reason', None) or exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class CertificateFiles:
    """The certificate, key and client CA files of one listener, checked for
    changes at most once per ``RECHECK`` seconds when a client connects. A
    change is taken only once the files load together (a rotation writes
    them one at a time); until then the listener keeps the previous ones,
    and the failure is logged once per change. ``on_reload(result)`` is told
    ``ok`` or ``invalid`` (the ``tls_reloads_total`` counter)."""

    RECHECK = 1.0

    def __init__(self, tls, on_reload=None):
        self.tls = tls
        self.on_reload = on_reload
        self.context = ssl_context(tls)     # raises ValueError naming the file
        self.pem = self._read_pem()
        self._stamp = self._stat()
        self._checked = time.monotonic()

    def _paths(self):
        return [p for p in (self.tls.cert_file, self.tls.key_file, self.tls.client_ca_file) if p]

    def _stat(self):
        out = []
        for p in self._paths():
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _read_pem(self) -> tuple[bytes, bytes, bytes | None]:
        t = self.tls
        return (_read(t.cert_file), _read(t.key_file),
                _read(t.client_ca_file) if t.client_ca_file else None)

    def poll(self) -> bool:
        """True when the files changed since the last look and were loaded:
        ``context`` and ``pem`` then hold the new ones."""
        now = time.monotonic()
        if now - self._checked < self.RECHECK:
            return False
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            ctx = ssl_context(self.tls)
            pem = self._read_pem()
        except (ValueError, OSError) as exc:
            log.warning("TLS files of a listener changed but do not load (%s); "
                        "keeping the previous certificate", exc)
            if self.on_reload is not None:
                self.on_reload("invalid")
            return False
        self.context, self.pem = ctx, pem
        log.info("TLS certificate %s reloaded", self.tls.cert_file)
        if self.on_reload is not None:
            self.on_reload("ok")
        return True


def reloading_ssl_context(certs: CertificateFiles) -> ssl.SSLContext:
    """The listening context of an asyncio/aiohttp server: each handshake
    first swaps in the newest context of ``certs`` (OpenSSL calls the
    servername callback on every ClientHello, with or without SNI)."""
    listening = certs.context

    def pick(sslobj, _server_name, _ctx):
        certs.poll()
        if certs.context is not listening:
            sslobj.context = certs.context
        return None

    listening.sni_callback = pick
    return listening


def grpc_credentials(certs: CertificateFiles):
    """Server credentials for ``certs``: gRPC asks for changed files before
    each new connection's handshake."""
    import grpc
    cert, key, ca = certs.pem

    def fetch():
        if not certs.poll():
            return None
        c, k, a = certs.pem
        return grpc.ssl_server_certificate_configuration([(k, c)], root_certificates=a)

    initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
    return grpc.dynamic_ssl_server_credentials(initial, fetch,
                                               require_client_authentication=ca is not None)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class BearerTokens:
    """The tokens of one ``bearer_tokens_file``: one per line, blank lines and
    lines starting with ``#`` ignored. The file is checked for changes at
    most once per ``RECHECK`` seconds, on the request path; a file that
    turns unreadable or empty keeps the tokens it had (logged)."""

    RECHECK = 1.0

    def __init__(self, auth):
        self.path = auth.bearer_tokens_file
        self.prefix = (auth.scheme + " ").encode() if auth.scheme else b""
        self._stamp = None
        self._checked = 0.0
        self._digests: tuple[bytes, ...] = ()
        self._load(initial=True)

    def _load(self, initial: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            text = _read(self.path)
        except OSError as exc:
            if initial:
                raise ValueError(f"{self.path!r}: cannot read: {exc.strerror}") from None
            log.warning("bearer_tokens_file %s unreadable (%s); keeping its previous tokens",
                        self.path, exc.strerror)
            return
        tokens = [ln.strip() for ln in text.splitlines()]
        tokens = [t for t in tokens if t and not t.startswith(b"#")]
        if not tokens:
            if initial:
                raise ValueError(f"{self.path!r}: holds no token (one per line)")
            log.warning("bearer_tokens_file %s holds no token; keeping its previous tokens", self.path)
            return
        self._stamp = stamp
        self._digests = tuple(_digest(t) for t in tokens)
        if not initial:
            log.info("bearer_tokens_file %s reloaded: %d tokens", self.path, len(tokens))

    def check(self, header: str | bytes | None) -> str:
        """'' when the header carries a valid token, else the reason
        (``missing`` or ``invalid``), fit for a metric label."""
        now = time.monotonic()
        if now - self._checked >= self.RECHECK:
            self._checked = now
            self._load()
        if not header:
            return "missing"
        if isinstance(header, str):
            header = header.encode("utf-8", "replace")
        if not header.startswith(self.prefix) and \
                not header[:len(self.prefix)].lower() == self.prefix.lower():
            return "invalid"
        d = _digest(header[len(self.prefix):].strip())
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(d, known)
        return "" if ok else "invalid"
