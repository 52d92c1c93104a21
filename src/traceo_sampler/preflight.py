"""Start-up checks beyond the config's shape, run by ``validate`` and by
``serve`` (and on hot reload): files the config names must exist and
parse, sizes must fit this machine, and ``serve`` reports a listener it
cannot open in the same ``field.path: message`` form. Nothing here starts
anything; a failure is a ConfigError, never a traceback."""
from __future__ import annotations

import errno
import os
import socket
import ssl

from .config import Config, ConfigError, kafka_mode, split_endpoint

# lower bounds of what one remembered decision costs (buffer.py): a kept
# trace ID with its attribution, a dropped one's 64-bit fingerprint
_SAMPLED_ENTRY_BYTES = 100
_NOT_SAMPLED_ENTRY_BYTES = 8


def listeners(cfg: Config):
    """(field path, block with endpoint/tls/auth) of every listener."""
    otlp = cfg.receivers.otlp
    if otlp is not None:
        for proto in ("grpc", "http"):
            if getattr(otlp, proto) is not None:
                yield f"receivers.otlp.{proto}", getattr(otlp, proto)
    if cfg.admin is not None:
        yield "admin", cfg.admin


def machine_memory() -> int:
    """Physical memory, or the cgroup's limit when lower (containers)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                v = fh.read().strip()
        except OSError:
            continue
        if v.isdigit():
            total = min(total, int(v))
    return total


def _gib(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _readable(path: str) -> str:
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return ""


def _unreadable(tls, attrs: tuple[str, ...], path: str, problems: list[str]) -> bool:
    """Reports each named TLS file that is set but cannot be read; True when any."""
    bad = False
    for attr in attrs:
        f = getattr(tls, attr)
        why = _readable(f) if f else ""
        if why:
            problems.append(f"{path}.tls.{attr}: {f!r} {why}")
            bad = True
    return bad


def _server_tls(tls, path: str, problems: list[str]) -> None:
    if _unreadable(tls, ("cert_file", "key_file", "client_ca_file"), path, problems):
        return
    before = len(problems)
    _pem(tls.cert_file, "CERTIFICATE", f"{path}.tls.cert_file", problems)
    _pem(tls.key_file, "PRIVATE KEY", f"{path}.tls.key_file", problems)
    if tls.client_ca_file:
        _pem(tls.client_ca_file, "CERTIFICATE", f"{path}.tls.client_ca_file", problems)
    if len(problems) > before:
        return
    from .receivers.security import ssl_context
    try:
        ssl_context(tls)
    except ValueError as exc:
        problems.append(f"{path}.tls.{exc}")


def _pem(file: str, kind: str, path: str, problems: list[str]) -> None:
    with open(file, "rb") as fh:
        data = fh.read()
    if f"-----BEGIN {kind}".encode() not in data and \
            not (kind == "PRIVATE KEY" and b"PRIVATE KEY-----" in data):
        problems.append(f"{path}: {file!r} is not a PEM {kind.lower()}")


def _client_tls(tls, path: str, problems: list[str]) -> None:
    if _unreadable(tls, ("ca_file", "cert_file", "key_file"), path, problems):
        return
    if tls.ca_file:
        try:
            ssl.create_default_context(cafile=tls.ca_file)
        except (ssl.SSLError, ValueError) as exc:
            problems.append(f"{path}.tls.ca_file: {tls.ca_file!r} holds no PEM CA certificate: "
                            f"{getattr(exc, 'reason', None) or exc}")
    if tls.cert_file:
        try:
            ssl.create_default_context().load_cert_chain(tls.cert_file, tls.key_file or None)
        except ssl.SSLError as exc:
            problems.append(f"{path}.tls.cert_file: {tls.cert_file!r} and key_file are not a PEM "
                            f"certificate and its key: {exc.reason or exc}")


def _writable(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path):
        return "" if os.access(path, os.W_OK) else "is not writable"
    d = os.path.dirname(path)
    while not os.path.exists(d):        # serve creates missing directories
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        return f"cannot be created: {d!r} is not a directory"
    return "" if os.access(d, os.W_OK | os.X_OK) else f"cannot be created: {d!r} is not writable"


def check(cfg: Config) -> list[str]:
    """Every problem, ``field.path: message`` each."""
    problems: list[str] = []
    mode = kafka_mode(cfg.exporters, cfg.receivers)
    if not cfg.sampler.policies and (mode is None or mode[0] != "router"):
        problems.append("sampler.policies: empty: a sampler without policies keeps no trace at all; "
                        "add {name: all, type: always_sample} to keep every trace")
    for path, blk in listeners(cfg):
        if blk.tls is not None:
            _server_tls(blk.tls, path, problems)
        if blk.auth is not None:
            from .receivers.security import BearerTokens
            try:
                BearerTokens(blk.auth)
            except ValueError as exc:
                problems.append(f"{path}.auth.bearer_tokens_file: {exc}")
    otlp = cfg.exporters.otlp
    if otlp is not None and otlp.tls is not None and not otlp.tls.insecure:
        _client_tls(otlp.tls, "exporters.otlp", problems)
    for path, kafka in (("receivers.kafka", cfg.receivers.kafka),
                        ("exporters.kafka", cfg.exporters.kafka),
                        ("sampler.shared_decisions", cfg.sampler.shared_decisions)):
        if kafka is not None and kafka.tls is not None and not kafka.tls.insecure:
            _client_tls(kafka.tls, path, problems)
    if cfg.exporters.file is not None:
        why = _writable(cfg.exporters.file.path)
        if why:
            problems.append(f"exporters.file.path: {cfg.exporters.file.path!r} {why}")
    mem = machine_memory()
    dc = cfg.sampler.decision_cache
    for field, n, per in (("sampled", dc.sampled, _SAMPLED_ENTRY_BYTES),
                          ("not_sampled", dc.not_sampled, _NOT_SAMPLED_ENTRY_BYTES)):
        if n * per > mem:
            problems.append(f"sampler.decision_cache.{field}: {n} entries need at least "
                            f"{_gib(n * per)}, more than this machine's memory ({_gib(mem)})")
    for field, mib in (("sampler.memory_limit_mib", cfg.sampler.memory_limit_mib),
                       ("service.memory_limit_mib", cfg.service.memory_limit_mib)):
        if mib << 20 > mem:
            problems.append(f"{field}: {mib} MiB is more than this machine's memory ({_gib(mem)})")
    return problems


def require(cfg: Config) -> None:
    problems = check(cfg)
    if problems:
        raise ConfigError(problems)


def probe_listeners(cfg: Config) -> None:
    """``serve``, before starting anything (and before the workers of
    service.workers exist): every listener's host resolves and its port is
    free, else ConfigError naming the field."""
    problems = []
    for path, blk in listeners(cfg):
        if blk.endpoint.startswith("unix:"):
            continue
        why = _bind_problem(blk.endpoint)
        if why:
            problems.append(f"{path}.endpoint: cannot listen on {blk.endpoint!r}: {why}")
    if problems:
        raise ConfigError(problems)


def _bind_problem(endpoint: str) -> str:
    host, port = split_endpoint(endpoint)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as gexc:
        return f"host {host!r} does not resolve ({gexc.strerror})"
    for family, _t, _p, _c, addr in infos[:1]:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # as the servers do: a port only in TIME_WAIT is not "in use"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as bexc:
                return {errno.EADDRINUSE: "address already in use",
                        errno.EADDRNOTAVAIL: "address not available on this machine",
                        errno.EACCES: "permission denied (a port below 1024 needs privileges)",
                        }.get(bexc.errno or 0, bexc.strerror or str(bexc))
    return ""


def listen_error(path: str, endpoint: str, exc: BaseException) -> ConfigError:
    """A listener that could not be opened, as ``path.endpoint: why``."""
    why = _bind_problem(endpoint) or str(exc) or type(exc).__name__
    return ConfigError([f"{path}.endpoint: cannot listen on {endpoint!r}: {why}"])
