"""Configuration, declared once as msgspec structs (DESIGN.md §4).

The YAML is converted with unknown keys rejected; every problem is reported
as ``field.path: message`` (``sampler.policies[2].latency.threshold_ms: must
be >= 0``). Sections are validated one by one, and each policy on its own, so
a broken file yields one line per problem rather than only the first.
"""
from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

import msgspec
import yaml

from .cfgtypes import (Duration, Fraction, NonNeg, NonNegFloat, Percent, Positive,  # noqa: F401
                       PositiveFloat, _Base, _dec_hook, _enc_hook)
from .policies import POLICY_STRUCTS, REGISTRY, PolicyCfg, block_attr

# ---------------------------------------------------------------- receivers
class ServerTls(_Base):
    """TLS of a listener (a receiver, the admin endpoint); with
    ``client_ca_file`` clients must present a certificate it signed (mTLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""


class Auth(_Base):
    """Bearer tokens, as the Collector's bearertokenauth checks them: the
    ``authorization`` header must be ``<scheme> <token>``; the file holds one
    token per line and is read again when it changes."""

    bearer_tokens_file: str
    scheme: str = "Bearer"


# gRPC's message size limit is a signed 32-bit byte count
GRPC_MAX_MIB = (2**31 - 1) >> 20


class Endpoint(_Base):
    endpoint: str
    max_recv_msg_size_mib: Positive = 16
    tls: ServerTls | None = None
    auth: Auth | None = None


class OtlpReceiver(_Base):
    grpc: Endpoint | None = None
    http: Endpoint | None = None


class KafkaReceiver(_Base):
    brokers: list[str]
    topic: str = "otlp_spans"
    group_id: str = "traceo-sampler"
    encoding: Literal["otlp_proto"] = "otlp_proto"
    # where a group with no committed offset starts
    initial_offset: Literal["earliest", "latest"] = "earliest"
    # how often offsets are committed (only up to what is decided and acked)
    commit_interval: Duration = msgspec.field(default_factory=lambda: Duration("1s"))
    session_timeout: Duration = msgspec.field(default_factory=lambda: Duration("10s"))
    # size limit of the handoff written with each commit; keep it below the
    # brokers' offset.metadata.max.bytes (default 4096). Raising both lets a
    # new owner skip every trace the previous one decided, even after kill -9
    handoff_max_bytes: Annotated[int, msgspec.Meta(ge=256)] = 3900


class Receivers(_Base):
    otlp: OtlpReceiver | None = None
    kafka: KafkaReceiver | None = None


# ---------------------------------------------------------------- sampler
class DecisionCache(_Base):
    sampled: NonNeg = 100_000
    not_sampled: NonNeg = 1_000_000


class Sampler(_Base):
    decision_wait: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    root_wait: Duration = msgspec.field(default_factory=lambda: Duration("2s"))
    idle_timeout: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    max_spans_per_trace: Positive = 10_000
    memory_limit_mib: Positive = 1024
    decision_cache: DecisionCache = msgspec.field(default_factory=DecisionCache)
    # append attribute traceo.sampling.policy (the attributed policy) to kept spans
    record_policy: bool = False
    policies: list[PolicyCfg] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------- exporters
class Tls(_Base):
    """TLS for an exporter. ``insecure: true`` turns TLS off (plaintext)
    even for an ``https://`` endpoint, as in the Collector's configtls."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False
    insecure_skip_verify: bool = False
    server_name_override: str = ""


class Retry(_Base):
    enabled: bool = True
    initial_interval: Duration = msgspec.field(default_factory=lambda: Duration("100ms"))
    max_interval: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    max_elapsed: Duration = msgspec.field(default_factory=lambda: Duration("5m"))


class OtlpExporter(_Base):
    endpoint: str
    # grpc (default, port 4317) or http/protobuf (port 4318, path /v1/traces)
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    compression: Literal["none", "gzip"] = "none"
    timeout: Duration = msgspec.field(default_factory=lambda: Duration("10s"))
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    tls: Tls | None = None
    retry: Retry = msgspec.field(default_factory=Retry)
    batch_max_spans: Positive = 2048
    batch_max_bytes: Positive = 4 * 1024 * 1024
    queue_max_bytes: Positive = 256 * 1024 * 1024
    # block: receivers push back (RESOURCE_EXHAUSTED / HTTP 429) while the
    # queue is full; drop_oldest: make room by dropping (counted)
    queue_full: Literal["block", "drop_oldest"] = "block"


class FileExporter(_Base):
    path: str
    queue_max_bytes: Positive = 256 * 1024 * 1024
    queue_full: Literal["block", "drop_oldest"] = "block"


class KafkaExporter(_Base):
    """Router mode: serve becomes a stateless front tier producing every
    received span, one message per trace keyed by its trace ID."""
    brokers: list[str]
    topic: str = "otlp_spans_sampled"
    acks: Literal["all", 0, 1] = "all"
    # one message per trace, keyed by the trace ID in lowercase hex (the
    # Collector kafkaexporter's partition_traces_by_id); false: one message
    # per request, no key
    partition_traces_by_id: bool = True
    # how long a request waits for the broker's acks before the client is
    # told to retry (gRPC UNAVAILABLE / HTTP 503)
    timeout: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    linger: Duration = msgspec.field(default_factory=lambda: Duration("5ms"))


class Exporters(_Base):
    otlp: OtlpExporter | None = None
    file: FileExporter | None = None
    kafka: KafkaExporter | None = None


class Admin(_Base):
    endpoint: str = "127.0.0.1:9464"
    # /healthz and /readyz stay open to probes without a token (not without TLS)
    tls: ServerTls | None = None
    auth: Auth | None = None


class Cost(_Base):
    usd_per_gib: Annotated[float, msgspec.Meta(ge=0)] = 0.50
    # per-service prices where a team is billed differently
    per_service: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = msgspec.field(default_factory=dict)
    # monthly budget in dollars for exported bytes; the alert rule compares
    # the exported cost rate against it (0 = no budget)
    monthly_budget_usd: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class Telemetry(_Base):
    max_services: Positive = 200
    # a child starting before / ending after its parent by more than this
    # counts as clock skew
    skew_tolerance: Duration = msgspec.field(default_factory=lambda: Duration("5ms"))


class Service(_Base):
    # process RSS limit: above it the receivers push back (0 = off)
    memory_limit_mib: NonNeg = 0
    # how long a SIGTERM drain may spend sending what is queued
    shutdown_timeout: Duration = msgspec.field(default_factory=lambda: Duration("30s"))


class Config(_Base):
    receivers: Receivers = msgspec.field(default_factory=Receivers)
    sampler: Sampler = msgspec.field(default_factory=Sampler)
    exporters: Exporters = msgspec.field(default_factory=Exporters)
    admin: Admin | None = None
    cost: Cost = msgspec.field(default_factory=Cost)
    telemetry: Telemetry = msgspec.field(default_factory=Telemetry)
    service: Service = msgspec.field(default_factory=Service)


DEFAULT_YAML = """\
# The embedded default: what `traceo-sampler serve` runs with no -c FILE.
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:4317"}
    http: {endpoint: "127.0.0.1:4318"}
sampler:
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
exporters:
  file: {path: ./traceo-data/kept.otlp.jsonl}
admin: {endpoint: "127.0.0.1:9464"}
"""


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one ``path: message`` each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


_MSGSPEC_AT = re.compile(r"^(.*) - at `\$(.*)`$", re.S)


def _problem(prefix: str, exc: msgspec.ValidationError) -> str:
    text = str(exc)
    path = ""
    m = _MSGSPEC_AT.match(text)
    if m:
        text, path = m.group(1), m.group(2)
    text = re.sub(r"^Expected `(?:int|float|number)` >= (\S+)$", r"must be >= \1", text)
    text = re.sub(r"^Expected `(?:int|float|number)` > (\S+)$", r"must be > \1", text)
    text = re.sub(r"^Expected `(?:int|float|number)` <= (\S+)$", r"must be <= \1", text)
    m2 = re.match(r"^Object contains unknown field `(.*)`$", text)
    if m2:
        path += "." + m2.group(1)
        text = "unknown field"
    m3 = re.match(r"^Object missing required field `(.*)`$", text)
    if m3:
        path += "." + m3.group(1)
        text = "required field missing"
    full = (prefix + path).lstrip(".")
    return f"{full}: {text}" if full else text


def _convert(obj: Any, typ: type, prefix: str, problems: list[str]) -> Any:
    try:
        return msgspec.convert(obj, typ, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        problems.append(_problem(prefix, exc))
        return None


POLICY_TYPES = tuple(REGISTRY)


def did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_type(typ: Any, path: str, problems: list[str]) -> None:
    hint = did_you_mean(typ, POLICY_TYPES) if isinstance(typ, str) else ""
    problems.append(f"{path}.type: unknown policy type {typ!r}{hint} "
                    f"(one of {', '.join(POLICY_TYPES)})")


def _check_policy(raw: Any, path: str, problems: list[str],
                  ignored: list[str] | None = None) -> PolicyCfg | None:
    """Validate one policy (sub-policies recursively, each problem with its
    full path); the typed policy, or None after appending its problems.

    A block named after another policy type is an error, unless ``ignored``
    is given (a Collector file: the Collector decodes every type's block into
    every policy and ignores the others), which then lists their paths."""
    if not isinstance(raw, dict):
        return _convert(raw, PolicyCfg, path, problems)
    typ = raw.get("type")
    if typ is None:
        problems.append(f"{path}.type: required field missing")
        return None
    # Checked before the struct conversion: a policy of an unknown type
    # usually carries a block named after it, which would otherwise be
    # reported as an unknown field instead of naming the type.
    if not isinstance(typ, str) or typ not in REGISTRY:
        _unknown_type(typ, path, problems)
        return None
    mod = REGISTRY[typ]
    before = len(problems)
    block = raw.get(typ)
    raw = dict(raw)
    for other in [k for k in raw if k != typ and k in REGISTRY]:
        if ignored is not None:
            ignored.append(f"{path}.{other}")
            del raw[other]
        elif block is not None:
            problems.append(f"{path}.{other}: a {other!r} block in a policy of type {typ!r}")
    if isinstance(block, dict):
        pre = getattr(mod, "precheck", None)
        if pre is not None and not pre(block, f"{path}.{typ}", problems, _convert):
            return None
        subs = getattr(mod, "SUB_POLICIES", {})
        if subs:
            block = dict(block)
            for key, kind in subs.items():
                sp = f"{path}.{typ}.{key}"
                val = block.get(key)
                if kind == "list":
                    if not isinstance(val, list) or not val:
                        problems.append(f"{sp}: must be a non-empty list of policies")
                        continue
                    block[key] = [_check_policy(v, f"{sp}[{i}]", problems, ignored)
                                  for i, v in enumerate(val)]
                else:
                    if not isinstance(val, dict):
                        problems.append(f"{sp}: must be one policy")
                        continue
                    block[key] = _check_policy(val, sp, problems, ignored)
            raw[typ] = block
    if len(problems) > before:
        # still report unknown keys of the policy and its block
        _convert_unknown_keys(raw, typ, mod, path, problems)
        return None
    if block is None:
        if not getattr(mod, "BLOCK_OPTIONAL", False):
            problems.append(f"{path}.{typ}: required for a policy of type {typ!r}")
            return None
        raw = {k: v for k, v in raw.items() if k not in REGISTRY}
    pol = _convert(raw, POLICY_STRUCTS[typ], path, problems)
    if pol is None:
        return None
    blk = pol.block
    if blk is None:
        if not getattr(mod, "BLOCK_OPTIONAL", False):
            problems.append(f"{path}.{typ}: required for a policy of type {typ!r}")
            return None
        # an omitted optional block is its defaults, so builders need no case for it
        blk = mod.Config()
        setattr(pol, block_attr(typ), blk)
    check = getattr(mod, "check", None)
    if check is not None:
        check(blk, f"{path}.{typ}", problems)
        if len(problems) > before:
            return None
    return pol


def _convert_unknown_keys(raw: dict, typ: str, mod, path: str, problems: list[str]) -> None:
    for k in raw:
        if k not in ("name", "type") and k not in REGISTRY:
            problems.append(f"{path}.{k}: unknown field")
    block = raw.get(typ)
    if isinstance(block, dict):
        known = set(mod.Config.__struct_encode_fields__)
        for k in block:
            if k not in known:
                problems.append(f"{path}.{typ}.{k}: unknown field")


def parse_policy(raw: Any, path: str = "policy") -> PolicyCfg:
    """One policy, validated as in a config file; ConfigError otherwise."""
    problems: list[str] = []
    pol = _check_policy(raw, path, problems)
    if pol is None:
        raise ConfigError(problems)
    return pol


def _check_endpoint(ep: str, path: str, problems: list[str]) -> None:
    rest = re.sub(r"^(https?://)", "", ep)
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        problems.append(f"{path}: must be host:port, got {ep!r}")


def parse(raw: Any) -> Config:
    """Validate a loaded YAML document; raise ConfigError with every problem."""
    problems: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"config: must be a mapping, got {type(raw).__name__}"])
    sections = {f: t for f, t in (
        ("receivers", Receivers), ("exporters", Exporters), ("admin", Admin),
        ("cost", Cost), ("telemetry", Telemetry), ("service", Service))}
    values: dict[str, Any] = {}
    for key in raw:
        if key not in sections and key != "sampler":
            problems.append(f"{key}: unknown field")
    for key, typ in sections.items():
        if key in raw:
            values[key] = _convert(raw[key], typ, key, problems)
    sampler_raw = raw.get("sampler") or {}
    if not isinstance(sampler_raw, dict):
        problems.append("sampler: must be a mapping")
        sampler_raw = {}
    pols_raw = sampler_raw.get("policies", [])
    sampler = _convert({k: v for k, v in sampler_raw.items() if k != "policies"},
                       Sampler, "sampler", problems)
    policies: list[PolicyCfg] = []
    if not isinstance(pols_raw, list):
        problems.append("sampler.policies: must be a list")
    else:
        names: set[str] = set()
        for i, p in enumerate(pols_raw):
            pol = _check_policy(p, f"sampler.policies[{i}]", problems)
            if pol is not None:
                if pol.name in names:
                    problems.append(f"sampler.policies[{i}].name: duplicate name {pol.name!r}")
                names.add(pol.name)
                policies.append(pol)
    rec = values.get("receivers")
    if rec is not None and rec.otlp is not None:
        for proto in ("grpc", "http"):
            ep = getattr(rec.otlp, proto)
            if ep is not None:
                _check_endpoint(ep.endpoint, f"receivers.otlp.{proto}.endpoint", problems)
                if ep.max_recv_msg_size_mib > GRPC_MAX_MIB:
                    problems.append(f"receivers.otlp.{proto}.max_recv_msg_size_mib: must be <= "
                                    f"{GRPC_MAX_MIB} (gRPC's limit is 2 GiB - 1 byte)")
    exp = values.get("exporters")
    if exp is not None and exp.otlp is not None:
        _check_endpoint(exp.otlp.endpoint, "exporters.otlp.endpoint", problems)
    if exp is not None and exp.kafka is not None:
        if not exp.kafka.brokers:
            problems.append("exporters.kafka.brokers: must not be empty")
    if rec is not None and rec.kafka is not None and not rec.kafka.brokers:
        problems.append("receivers.kafka.brokers: must not be empty")
    if values.get("admin") is not None:
        _check_endpoint(values["admin"].endpoint, "admin.endpoint", problems)
    if problems:
        raise ConfigError(problems)
    assert sampler is not None
    sampler.policies = policies
    return Config(
        receivers=values.get("receivers") or Receivers(),
        sampler=sampler,
        exporters=values.get("exporters") or Exporters(),
        admin=values.get("admin"),
        cost=values.get("cost") or Cost(),
        telemetry=values.get("telemetry") or Telemetry(),
        service=values.get("service") or Service(),
    )


def loads(text: str, source: str = "config") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"])
    except RecursionError:
        raise ConfigError([f"{source}: YAML nested too deeply to read"]) from None
    try:
        return parse(raw)
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply (policies within policies?)"]) from None


def load(path: str | None) -> Config:
    """Load FILE, or the embedded default when path is None."""
    if path is None:
        return loads(DEFAULT_YAML, "embedded default")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                           f"{exc.start} (line {line})"]) from None
    return loads(text, path)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(msgspec.to_builtins(cfg, enc_hook=_enc_hook), sort_keys=False)


def split_endpoint(ep: str) -> tuple[str, int]:
    rest = re.sub(r"^(https?://)", "", ep)
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
