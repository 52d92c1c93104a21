"""Configuration, declared once as msgspec structs (DESIGN.md §4).

The YAML is converted with unknown keys rejected; every problem is reported
as ``field.path: message`` (``sampler.policies[2].latency.threshold_ms: must
be >= 0``). Sections are validated one by one, and each policy on its own, so
a broken file yields one line per problem rather than only the first.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
import yaml

NonNeg = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)\s*$")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Duration:
    """A duration written ``250ms``, ``2s``, ``5m`` (Go/Collector style)."""

    __slots__ = ("seconds", "text")

    def __init__(self, text: str):
        m = _DURATION.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError("must be a duration such as 250ms, 2s or 5m")
        self.text = text.strip()
        self.seconds = float(m.group(1)) * _UNIT[m.group(2)]

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.seconds == self.seconds


class Wait(Duration):
    """``auto`` (learned from the observed arrival lags, completion.py) or a
    fixed duration. ``seconds`` is None for auto."""

    __slots__ = ("auto",)

    def __init__(self, text: str):
        if isinstance(text, str) and text.strip() == "auto":
            self.text = "auto"
            self.seconds = None
            self.auto = True
            return
        try:
            super().__init__(text)
        except ValueError:
            raise ValueError("must be auto or a duration such as 250ms, 2s or 5m") from None
        self.auto = False

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Wait):
            return (other.auto, other.seconds) == (self.auto, self.seconds)
        return isinstance(other, Duration) and not self.auto and other.seconds == self.seconds


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Wait:
        return Wait(obj)
    if typ is Duration:
        return Duration(obj)
    raise NotImplementedError(typ)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Duration):
        return obj.text
    raise NotImplementedError(type(obj))


class _Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


# ---------------------------------------------------------------- receivers
class Endpoint(_Base):
    endpoint: str
    max_recv_msg_size_mib: Positive = 16


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


# ---------------------------------------------------------------- policies
StatusName = Literal["OK", "ERROR", "UNSET"]


class LatencyCfg(_Base):
    threshold_ms: NonNeg = 0
    upper_threshold_ms: NonNeg = 0


class StatusCodeCfg(_Base):
    status_codes: list[StatusName]


class ProbabilisticCfg(_Base):
    sampling_percentage: Percent
    # Accepted so Collector configs load unchanged; consistent sampling uses
    # the trace's randomness value, so the salt cannot change the outcome.
    hash_salt: str = ""


class StringAttributeCfg(_Base):
    key: str
    values: list[str]
    enabled_regex_matching: bool = False
    cache_max_size: NonNeg = 0
    invert_match: bool = False


class NumericAttributeCfg(_Base):
    key: str
    min_value: int | float | None = None   # omitted: no lower bound
    max_value: int | float | None = None   # omitted: no upper bound
    invert_match: bool = False


class BooleanAttributeCfg(_Base):
    key: str
    value: bool
    invert_match: bool = False


class SpanCountCfg(_Base):
    min_spans: NonNeg = 0
    max_spans: NonNeg = 0


NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
# (0, 1): the upper bound is checked in _check_policy, whose message reads
# like the others ("must be < 1")
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]


class RateLimitingCfg(_Base):
    """Collector field names. ``burst_capacity`` defaults to twice
    ``spans_per_second``, as in the Collector."""

    spans_per_second: NonNeg
    burst_capacity: NonNeg | None = None


class BytesLimitingCfg(_Base):
    bytes_per_second: NonNeg
    burst_capacity: NonNeg | None = None


class TraceStateCfg(_Base):
    key: str
    values: list[str]


class RateAllocationCfg(_Base):
    policy: str
    percent: Percent = 0     # 0: an equal share (the Collector's default)


class CompositeCfg(_Base):
    max_total_spans_per_second: NonNeg
    policy_order: list[str] = msgspec.field(default_factory=list)
    # validated recursively, see _check_policy
    composite_sub_policy: list[dict] = msgspec.field(default_factory=list)
    rate_allocation: list[RateAllocationCfg] = msgspec.field(default_factory=list)


class LatencyTailCfg(_Base):
    """Keep traces slower than a running quantile of their key's durations."""

    quantile: Fraction = 0.99
    # fields of the key: root_service (alias service.name), root_name,
    # error, or an attribute key
    key: list[str] = msgspec.field(default_factory=lambda: ["root_service", "root_name"])
    max_keys: Positive = 1000
    warmup_observations: NonNeg = 100
    fallback_threshold_ms: NonNeg = 1000
    half_life: Duration = msgspec.field(default_factory=lambda: Duration("5m"))
    relative_accuracy: Fraction = 0.01
    max_buckets: Annotated[int, msgspec.Meta(ge=16)] = 2048


class ServiceRateEntry(_Base):
    sampling_percentage: Percent = 100
    spans_per_second: NonNeg | None = None    # omitted: no cap
    burst_capacity: NonNeg | None = None      # default: 2 x spans_per_second


class ServiceRateCfg(_Base):
    services: dict[str, ServiceRateEntry] = msgspec.field(default_factory=dict)
    # unlisted services; omitted: this policy does not sample them
    default: ServiceRateEntry | None = None
    match: Literal["any_span", "root"] = "any_span"


class AdaptiveCfg(_Base):
    """A kept-throughput target shared across keys (exactly one target)."""

    target_spans_per_second: PositiveFloat | None = None
    target_traces_per_second: PositiveFloat | None = None
    # service.name = the root span's service; error = the error flag;
    # anything else is an attribute key
    key_fields: list[str] = msgspec.field(default_factory=lambda: ["service.name"])
    adjustment_interval: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    max_keys: Positive = 1000
    # traces each active key keeps per interval, at least (in expectation)
    min_traces_per_interval: NonNegFloat = 1.0
    # weight of the newest interval in the moving averages (0 < w <= 1)
    smoothing: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5


class PolicyCfg(_Base):
    """One policy, in the Collector's tail_sampling shape: name, type, and a
    block named after the type. Sub-policies are kept as raw dicts and
    validated recursively by :func:`_check_policy` so their errors carry
    their full path."""

    name: str
    type: str
    always_sample: dict | None = None
    latency: LatencyCfg | None = None
    status_code: StatusCodeCfg | None = None
    probabilistic: ProbabilisticCfg | None = None
    string_attribute: StringAttributeCfg | None = None
    numeric_attribute: NumericAttributeCfg | None = None
    boolean_attribute: BooleanAttributeCfg | None = None
    span_count: SpanCountCfg | None = None
    rate_limiting: RateLimitingCfg | None = None
    bytes_limiting: BytesLimitingCfg | None = None
    trace_state: TraceStateCfg | None = None
    composite: CompositeCfg | None = None
    latency_tail: LatencyTailCfg | None = None
    service_rate: ServiceRateCfg | None = None
    adaptive: AdaptiveCfg | None = None
    # composite policies: validated recursively, see _check_policy
    and_: dict | None = msgspec.field(default=None, name="and")
    not_: dict | None = msgspec.field(default=None, name="not")
    drop: dict | None = None


# Types whose config block may be omitted (all their fields have defaults).
_BLOCK_OPTIONAL = {"always_sample", "latency", "span_count", "latency_tail"}


class DecisionCache(_Base):
    sampled: NonNeg = 100_000
    not_sampled: NonNeg = 1_000_000


class AutoWait(_Base):
    """How ``root_wait: auto`` / ``idle_timeout: auto`` learn their values
    (completion.py): a high quantile of the observed lags over a sliding
    window, per root service once it has ``min_traces`` in the window."""

    quantile: Fraction = 0.999
    window: Duration = msgspec.field(default_factory=lambda: Duration("5m"))
    # the learned wait is the quantile times (1 + headroom), within
    # [floor, decision_wait]
    headroom: NonNegFloat = 0.25
    floor: Duration = msgspec.field(default_factory=lambda: Duration("1s"))
    min_traces: Positive = 1000
    # before there is data: safe for the OpenTelemetry SDK's default
    # BatchSpanProcessor (a batch every 5 s)
    initial_root_wait: Duration = msgspec.field(default_factory=lambda: Duration("6s"))
    initial_idle_timeout: Duration = msgspec.field(default_factory=lambda: Duration("10s"))


class DroppedGrace(_Base):
    """Spans of traces decided not sampled stay this long (within
    ``max_bytes``), so a late span that would have kept the trace (an
    error, a latency over a latency policy's threshold) brings it back."""

    duration: Duration = msgspec.field(default_factory=lambda: Duration("10s"))
    max_bytes: Positive = 64 << 20


class Sampler(_Base):
    decision_wait: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    root_wait: Wait = msgspec.field(default_factory=lambda: Wait("auto"))
    idle_timeout: Wait = msgspec.field(default_factory=lambda: Wait("auto"))
    auto_wait: AutoWait = msgspec.field(default_factory=AutoWait)
    dropped_grace: DroppedGrace | None = None
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


POLICY_TYPES = (
    "always_sample", "latency", "status_code", "probabilistic",
    "string_attribute", "numeric_attribute", "boolean_attribute",
    "span_count", "and", "not", "drop", "rate_limiting", "bytes_limiting",
    "trace_state", "composite", "latency_tail", "service_rate", "adaptive",
)


def _unknown_type(typ: Any, path: str, problems: list[str]) -> None:
    problems.append(f"{path}.type: unknown policy type {typ!r} "
                    f"(one of {', '.join(POLICY_TYPES)})")


def _check_policy(raw: Any, path: str, problems: list[str]) -> PolicyCfg | None:
    # Checked before the struct conversion: a policy of an unknown type
    # usually carries a block named after it, which would otherwise be
    # reported as an unknown field instead of naming the type.
    if isinstance(raw, dict) and isinstance(raw.get("type"), str) \
            and raw["type"] not in POLICY_TYPES:
        _unknown_type(raw["type"], path, problems)
        return None
    if isinstance(raw, dict) and raw.get("type") == "service_rate":
        # checked one by one first: msgspec names a bad dict entry
        # "services[...]", this names the service
        blk = raw.get("service_rate")
        if isinstance(blk, dict) and isinstance(blk.get("services"), dict):
            before = len(problems)
            for svc, entry in blk["services"].items():
                _convert(entry, ServiceRateEntry, f"{path}.service_rate.services.{svc}", problems)
            if len(problems) > before:
                return None
    pol = _convert(raw, PolicyCfg, path, problems)
    if pol is None:
        return None
    if pol.type not in POLICY_TYPES:
        _unknown_type(pol.type, path, problems)
        return None
    block_attr = {"and": "and_", "not": "not_"}.get(pol.type, pol.type)
    block = getattr(pol, block_attr)
    if block is None and pol.type not in _BLOCK_OPTIONAL:
        problems.append(f"{path}.{pol.type}: required for a policy of type {pol.type!r}")
        return None
    if pol.type == "string_attribute" and pol.string_attribute.enabled_regex_matching:
        for i, v in enumerate(pol.string_attribute.values):
            try:
                re.compile(v)
            except re.error as exc:
                problems.append(f"{path}.string_attribute.values[{i}]: invalid regex: {exc}")
    if pol.type == "numeric_attribute":
        na = pol.numeric_attribute
        if na.max_value is not None and na.min_value is not None and na.max_value < na.min_value:
            problems.append(f"{path}.numeric_attribute.max_value: must be >= min_value")
    if pol.type == "latency" and pol.latency is not None:
        lat = pol.latency
        if lat.upper_threshold_ms and lat.upper_threshold_ms < lat.threshold_ms:
            problems.append(f"{path}.latency.upper_threshold_ms: must be >= threshold_ms")
    if pol.type == "composite":
        _check_composite(pol.composite, f"{path}.composite", problems)
    if pol.type == "adaptive":
        ad = pol.adaptive
        if (ad.target_spans_per_second is None) == (ad.target_traces_per_second is None):
            problems.append(f"{path}.adaptive: set exactly one of target_spans_per_second, "
                            "target_traces_per_second")
        if not ad.key_fields:
            problems.append(f"{path}.adaptive.key_fields: must not be empty")
        if ad.adjustment_interval.seconds <= 0:
            problems.append(f"{path}.adaptive.adjustment_interval: must be > 0")
    if pol.type == "latency_tail":
        lt = pol.latency_tail or LatencyTailCfg()
        if not lt.key:
            problems.append(f"{path}.latency_tail.key: must not be empty")
        for f in ("quantile", "relative_accuracy"):
            if getattr(lt, f) >= 1:
                problems.append(f"{path}.latency_tail.{f}: must be < 1")
        if lt.half_life.seconds <= 0:
            problems.append(f"{path}.latency_tail.half_life: must be > 0")
    subs_key = {"and": "and_sub_policy", "drop": "drop_sub_policy"}.get(pol.type)
    if subs_key is not None:
        unknown = set(block) - {subs_key}
        for k in sorted(unknown):
            problems.append(f"{path}.{pol.type}.{k}: unknown field")
        subs = block.get(subs_key)
        if not isinstance(subs, list) or not subs:
            problems.append(f"{path}.{pol.type}.{subs_key}: must be a non-empty list of policies")
        else:
            for i, sub in enumerate(subs):
                _check_policy(sub, f"{path}.{pol.type}.{subs_key}[{i}]", problems)
    if pol.type == "not":
        unknown = set(block) - {"not_sub_policy"}
        for k in sorted(unknown):
            problems.append(f"{path}.not.{k}: unknown field")
        sub = block.get("not_sub_policy")
        if not isinstance(sub, dict):
            problems.append(f"{path}.not.not_sub_policy: must be one policy")
        else:
            _check_policy(sub, f"{path}.not.not_sub_policy", problems)
    return pol


def _check_composite(c: CompositeCfg, path: str, problems: list[str]) -> None:
    """Sub-policies recursively; policy_order and rate_allocation must name
    sub-policies (the Collector silently ignores a misspelt name there, which
    leaves that sub-policy without a budget)."""
    if not c.composite_sub_policy:
        problems.append(f"{path}.composite_sub_policy: must be a non-empty list of policies")
        return
    names: list[str] = []
    for i, sub in enumerate(c.composite_sub_policy):
        sp = _check_policy(sub, f"{path}.composite_sub_policy[{i}]", problems)
        if sp is not None:
            if sp.name in names:
                problems.append(f"{path}.composite_sub_policy[{i}].name: duplicate name {sp.name!r}")
            names.append(sp.name)
    if len(names) < len(c.composite_sub_policy):
        return
    for i, n in enumerate(c.policy_order):
        if n not in names:
            problems.append(f"{path}.policy_order[{i}]: {n!r} is not a composite_sub_policy name")
    seen: set[str] = set()
    for i, ra in enumerate(c.rate_allocation):
        if ra.policy not in names:
            problems.append(f"{path}.rate_allocation[{i}].policy: "
                            f"{ra.policy!r} is not a composite_sub_policy name")
        elif ra.policy in seen:
            problems.append(f"{path}.rate_allocation[{i}].policy: duplicate {ra.policy!r}")
        seen.add(ra.policy)


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
    if sampler is not None:
        aw = sampler.auto_wait
        if aw.quantile >= 1:
            problems.append("sampler.auto_wait.quantile: must be < 1")
        if aw.window.seconds <= 0:
            problems.append("sampler.auto_wait.window: must be > 0")
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
    return parse(raw)


def load(path: str | None) -> Config:
    """Load FILE, or the embedded default when path is None."""
    if path is None:
        return loads(DEFAULT_YAML, "embedded default")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"])
    return loads(text, path)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(msgspec.to_builtins(cfg, enc_hook=_enc_hook), sort_keys=False)


def split_endpoint(ep: str) -> tuple[str, int]:
    rest = re.sub(r"^(https?://)", "", ep)
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
