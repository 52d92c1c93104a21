"""Configuration, declared once as msgspec structs (docs/design.md §4).

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
                       PositiveFloat, Wait, _Base, _dec_hook, _enc_hook)
from .policies import POLICY_STRUCTS, REGISTRY, PolicyCfg

# ---------------------------------------------------------------- receivers
class ServerTls(_Base):
    """TLS of a listener (a receiver, the admin endpoint); with
    ``client_ca_file`` clients must present a certificate it signed (mTLS)."""

    # the listener's certificate (PEM); read again within a second of a change, for new connections
    cert_file: str
    # the private key of cert_file (PEM)
    key_file: str
    # CA certificates (PEM) that must have signed a client's certificate: mTLS; "" = clients
    # need none
    client_ca_file: str = ""


class Auth(_Base):
    """Bearer tokens, as the Collector's bearertokenauth checks them: the
    ``authorization`` header must be ``<scheme> <token>``; the file holds one
    token per line and is read again when it changes."""

    # file of accepted tokens, one per line (blank lines and # comments ignored), read again
    # within a second of a change
    bearer_tokens_file: str
    # the word before the token in the authorization header (compared case-insensitively);
    # "" = the header is the token alone
    scheme: str = "Bearer"


# gRPC's message size limit is a signed 32-bit byte count
GRPC_MAX_MIB = (2**31 - 1) >> 20


class Endpoint(_Base):
    # host:port to listen on (0.0.0.0 for every interface)
    endpoint: str
    # largest request accepted, after decompression for HTTP: larger is gRPC
    # RESOURCE_EXHAUSTED / HTTP 413 (at most 2047, gRPC's limit)
    max_recv_msg_size_mib: Positive = 16
    # serve TLS (mTLS with client_ca_file); null: plaintext
    tls: ServerTls | None = None
    # require a bearer token on every request; null: none
    auth: Auth | None = None


class OtlpReceiver(_Base):
    # the OTLP/gRPC listener (TraceService/Export); null: not started
    grpc: Endpoint | None = None
    # the OTLP/HTTP listener (POST /v1/traces, protobuf or JSON); null: not started
    http: Endpoint | None = None


class KafkaReceiver(_Base):
    # bootstrap brokers, host:port
    brokers: list[str]
    # the topic read (the one the router tier produces to)
    topic: str = "otlp_spans"
    # consumer group the sampler instances join; the topic's partitions are shared among its
    # members
    group_id: str = "traceo-sampler"
    # message format: otlp_proto, one ExportTraceServiceRequest per message (the only one)
    encoding: Literal["otlp_proto"] = "otlp_proto"
    # where a group with no committed offset starts
    initial_offset: Literal["earliest", "latest"] = "earliest"
    # how often offsets are committed (only up to what is decided and acked)
    commit_interval: Duration = msgspec.field(default_factory=lambda: Duration("1s"))
    # a member not heard from for this long leaves the group and its partitions are
    # reassigned (it heartbeats every quarter of it)
    session_timeout: Duration = msgspec.field(default_factory=lambda: Duration("10s"))
    # size limit of the handoff written with each commit; keep it below the
    # brokers' offset.metadata.max.bytes (default 4096). Raising both lets a
    # new owner skip every trace the previous one decided, even after kill -9
    handoff_max_bytes: Annotated[int, msgspec.Meta(ge=256)] = 3900
    # TLS to the brokers (a tls block means TLS unless insecure: true); null: plaintext
    tls: Tls | None = None
    # authentication to the brokers (SASL); null: none
    auth: KafkaAuth | None = None


class KafkaSasl(_Base):
    """SASL authentication to the Kafka brokers, as the Collector's
    configkafka ``auth.sasl`` (over TLS when the block has ``tls``)."""

    # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    # the SASL user
    username: str
    # the SASL password; ${env:NAME} reads it from the environment variable NAME when a
    # client connects (never logged)
    password: str


class KafkaAuth(_Base):
    # SASL PLAIN or SCRAM; null: no authentication
    sasl: KafkaSasl | None = None


class Receivers(_Base):
    # OTLP receivers (gRPC and/or HTTP); null: none
    otlp: OtlpReceiver | None = None
    # consume spans from a Kafka topic as a consumer-group member; null: none
    kafka: KafkaReceiver | None = None


# ---------------------------------------------------------------- sampler
class DecisionCache(_Base):
    # the Collector's spellings sampled_cache_size / non_sampled_cache_size
    # are aliases (DECISION_CACHE_ALIASES)
    sampled: NonNeg = 100_000
    # dropped trace IDs remembered (64-bit fingerprints, two generations of half this each),
    # so their late spans are dropped too
    not_sampled: NonNeg = 1_000_000


class AutoWait(_Base):
    """How ``root_wait: auto`` / ``idle_timeout: auto`` learn their values
    (completion.py): a high quantile of the observed lags over a sliding
    window, per root service once it has ``min_traces`` in the window."""

    # the quantile of the observed lags (root tail, longest gap) a learned wait aims at
    quantile: Fraction = 0.999
    # how far back observations count (a sliding window of ten slices)
    window: Duration = msgspec.field(default_factory=lambda: Duration("5m"))
    # the learned wait is the quantile times (1 + headroom), within
    # [floor, decision_wait]
    headroom: NonNegFloat = 0.25
    # a learned wait never goes below this
    floor: Duration = msgspec.field(default_factory=lambda: Duration("1s"))
    # observations in the window before a learned wait replaces the initial one; a root
    # service with this many gets waits of its own
    min_traces: Positive = 1000
    # before there is data: safe for the OpenTelemetry SDK's default
    # BatchSpanProcessor (a batch every 5 s)
    initial_root_wait: Duration = msgspec.field(default_factory=lambda: Duration("6s"))
    # idle_timeout: auto's value until it has min_traces observations
    initial_idle_timeout: Duration = msgspec.field(default_factory=lambda: Duration("10s"))


class DroppedGrace(_Base):
    """Spans of traces decided not sampled stay this long (within
    ``max_bytes``), so a late span that would have kept the trace (an
    error, a latency over a latency policy's threshold) brings it back."""

    # how long the spans of a trace decided not sampled are held after its decision
    duration: Duration = msgspec.field(default_factory=lambda: Duration("10s"))
    # bytes held at most (on top of memory_limit_mib); past it the oldest held traces are
    # released
    max_bytes: Positive = 64 << 20


DECISION_CACHE_ALIASES = {"sampled_cache_size": "sampled", "non_sampled_cache_size": "not_sampled"}


class SharedDecisions(_Base):
    """Sidecar mode (shared_decisions.py): keep decisions shared between
    sidecars over a Kafka topic, so a trace crossing many pods is kept
    whole by all of them."""
    # bootstrap brokers of the decisions topic, host:port
    brokers: list[str]
    # the decisions topic, read whole by every sidecar (create it beforehand; one partition
    # is plenty)
    topic: str = "traceo_decisions"
    # how long a local "not sampled" waits for a keep from another sidecar:
    # at least the spread of the sidecars' decision times for one trace
    # (idle_timeout when a part ends early) plus the topic's delay
    hold: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    # bytes of held traces; past it the oldest held become final early
    hold_max_mib: Positive = 64
    # publish at least this often (sooner when batch_max keeps are pending)
    flush_interval: Duration = msgspec.field(default_factory=lambda: Duration("20ms"))
    # keeps published in one flush at most; that many pending publishes at once
    batch_max: Positive = 4096
    # a publish not acked within this means the broker is unreachable
    timeout: Duration = msgspec.field(default_factory=lambda: Duration("2s"))
    # an empty message when idle, so an outage is noticed within this + timeout
    heartbeat: Duration = msgspec.field(default_factory=lambda: Duration("1s"))
    # keeps heard from other sidecars remembered for spans still to come
    cache: Positive = 100_000
    # TLS to the brokers (a tls block means TLS unless insecure: true); null: plaintext
    tls: Tls | None = None
    # authentication to the brokers (SASL); null: none
    auth: KafkaAuth | None = None


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$")
_SIZE_UNIT = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
              "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def parse_size(v: int | str) -> int | None:
    """Bytes of ``4294967296``, ``"512MiB"`` or ``"4GiB"``; None if neither."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    m = _SIZE.match(v)
    return int(m.group(1)) * _SIZE_UNIT[m.group(2)] if m else None


class Wal(_Base):
    """The write-ahead log of the direct OTLP path (wal.py): accepted span
    bytes are appended before the client is answered, so ``kill -9`` loses
    no acknowledged span of a kept trace (within what ``fsync`` allows)."""

    # directory of the segment files; each worker process uses dir/worker-N
    dir: str = "./traceo-data/wal"
    # always: answer after the data is on disk (group commit); interval:
    # fsync every fsync_interval (a crash loses at most that much);
    # never: the OS writes back when it likes (a process crash loses
    # nothing, a machine crash what was not written back)
    fsync: Literal["always", "interval", "never"] = "interval"
    # with fsync: interval, how often the log is synced: the most a machine
    # crash can lose of what clients were told was received
    fsync_interval: Duration = msgspec.field(default_factory=lambda: Duration("10ms"))
    # bytes of segments on disk (a number, or a size such as 512MiB, 4GiB; at
    # least 1MiB; with service.workers, the group's, split among them); at
    # this the receivers push back (RESOURCE_EXHAUSTED / 429) until decided
    # and acknowledged traces free some
    max_bytes: int | str = 4 << 30
    # when the disk fails (write or fsync error): refuse (clients are
    # answered UNAVAILABLE / 503 until a restart) or continue without the log
    on_error: Literal["refuse", "continue"] = "refuse"


class Sampler(_Base):
    # the hard maximum: a trace is decided at the latest this long after its first span
    # (Collector semantics: the fixed wait from the first span, on a 1 s tick)
    decision_wait: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    # decide this long after the trace's root span arrived, for stragglers; auto: learned
    # from the observed arrival lags (auto_wait)
    root_wait: Wait = msgspec.field(default_factory=lambda: Wait("auto"))
    # decide a trace once no span of it arrived for this long; auto: learned from the
    # observed gaps between arrivals (auto_wait)
    idle_timeout: Wait = msgspec.field(default_factory=lambda: Wait("auto"))
    # how root_wait: auto and idle_timeout: auto learn their values
    auto_wait: AutoWait = msgspec.field(default_factory=AutoWait)
    # hold the spans of traces decided not sampled for a while, so a late span that would
    # have kept the trace brings it back whole; null: off
    dropped_grace: DroppedGrace | None = None
    # a trace is decided as soon as it holds this many spans
    max_spans_per_trace: Positive = 10_000
    # the buffer's limit: past it the traces that free the most are decided early, down to
    # 90 % (divided among service.workers)
    memory_limit_mib: Positive = 1024
    # decisions remembered after a trace leaves the buffer, so its late spans follow them
    decision_cache: DecisionCache = msgspec.field(default_factory=DecisionCache)
    # append attribute traceo.sampling.policy (the attributed policy) to kept spans
    record_policy: bool = False
    # traceo: our rules; collector: decide as the Collector v0.161.0's
    # tail_sampling (implied by a Collector config file)
    semantics: Literal["traceo", "collector"] = "traceo"
    # ---- the Collector's tail_sampling knobs (README "Coming from the Collector")

    # collector semantics: the decision comes this long after the root span
    # arrived (0: only decision_wait after the first span)
    decision_wait_after_root_received: Duration | None = None
    # stop at the first policy that samples (drop policies are asked first)
    sample_on_first_match: bool = False
    # drain on shutdown drops the traces still pending instead of deciding them
    drop_pending_traces_on_shutdown: bool = False
    # accepted, no effect: Traceo bounds the buffer in bytes
    # (memory_limit_mib) and decides traces early under pressure instead of
    # counting or evicting undecided ones; a Collector file with no decision
    # cache sizes uses num_traces for them (the Collector remembers the
    # decisions of the traces it still holds)
    num_traces: NonNeg | None = None
    expected_new_traces_per_sec: NonNeg = 0   # an allocation hint there; no effect
    block_on_overflow: bool = False           # never needed: see num_traces
    # a trace whose OTLP encoded size exceeds this is dropped at its
    # decision, whatever the policies say (0: no limit)
    maximum_trace_size_bytes: NonNeg = 0
    # only trace-complete (the Collector's default) is available
    sampling_strategy: Literal["trace-complete"] = "trace-complete"
    # in a Collector file it sets service.workers (collector_config.py); here
    # no effect: service.workers is the knob, with the same meaning
    num_shards: Annotated[int, msgspec.Meta(ge=0, le=256)] = 1
    # sidecar mode: decisions shared between sidecars (None: local only)
    shared_decisions: SharedDecisions | None = None
    # the write-ahead log of the direct OTLP path (None: off)
    wal: Wal | None = None
    # the policies deciding each trace, the Collector's tail_sampling list as it is; at
    # least one, except in router mode
    policies: list[PolicyCfg] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------- exporters
class Tls(_Base):
    """TLS for an exporter or a Kafka client. ``insecure: true`` turns TLS
    off (plaintext) even for an ``https://`` endpoint, as in the Collector's
    configtls."""

    # CA certificates (PEM) the backend's certificate is checked against; "" = the system's
    ca_file: str = ""
    # client certificate (PEM) presented to the backend: mTLS
    cert_file: str = ""
    # the private key of cert_file (PEM)
    key_file: str = ""
    # plaintext, even for an https:// endpoint
    insecure: bool = False
    # OTLP/HTTP and Kafka: do not verify the backend's certificate or host name (the gRPC
    # exporter does not read it and always verifies)
    insecure_skip_verify: bool = False
    # the host name the backend's certificate is verified for (and sent as SNI), instead
    # of the endpoint's (Kafka: client: aiokafka and the consumer only; librdkafka has
    # no such option)
    server_name_override: str = ""


class Retry(_Base):
    # retry transient failures (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, ..., HTTP
    # 429/502/503/504, connection errors); false: a failed batch is counted and not sent
    enabled: bool = True
    # first backoff delay; it doubles after each failure, with ±50 % jitter
    initial_interval: Duration = msgspec.field(default_factory=lambda: Duration("100ms"))
    # the backoff delay stops growing here (a server's RetryInfo / Retry-After asking for
    # longer wins)
    max_interval: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    # stop retrying a batch when the next attempt would start later than this after its
    # first; the batch is then given up (logged)
    max_elapsed: Duration = msgspec.field(default_factory=lambda: Duration("5m"))


class OtlpExporter(_Base):
    # the backend: host:port or http://host:port = plaintext, https://host:port = TLS
    # (http/protobuf POSTs to {endpoint}/v1/traces)
    endpoint: str
    # grpc (default, port 4317) or http/protobuf (port 4318, path /v1/traces)
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    # gzip the requests, or none (a Collector file's otlp exporter gets gzip, the
    # Collector's default)
    compression: Literal["none", "gzip"] = "none"
    # deadline of one export request
    timeout: Duration = msgspec.field(default_factory=lambda: Duration("10s"))
    # sent with every request (gRPC metadata, HTTP headers), e.g. Authorization
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # TLS settings; a tls block means TLS unless insecure: true; null: TLS only for https://
    tls: Tls | None = None
    # retries of transient failures, with exponential backoff
    retry: Retry = msgspec.field(default_factory=Retry)
    # an export request is closed before it would pass this many spans (one larger item of
    # kept traces goes alone)
    batch_max_spans: Positive = 2048
    # an export request is closed before it would pass this many encoded bytes
    batch_max_bytes: Positive = 4 * 1024 * 1024
    # bytes of kept traces waiting for this exporter at most; what happens when full is
    # queue_full
    queue_max_bytes: Positive = 256 * 1024 * 1024
    # block: receivers push back (RESOURCE_EXHAUSTED / HTTP 429) while the
    # queue is full; drop_oldest: make room by dropping (counted)
    queue_full: Literal["block", "drop_oldest"] = "block"


class FileExporter(_Base):
    # file kept traces are appended to, as OTLP JSON lines (the Collector's file exporter
    # format)
    path: str
    # bytes of kept traces waiting to be written at most
    queue_max_bytes: Positive = 256 * 1024 * 1024
    # block: receivers push back while the queue is full; drop_oldest: make room by dropping
    # the oldest (counted)
    queue_full: Literal["block", "drop_oldest"] = "block"


class KafkaExporter(_Base):
    """Kafka, in one of two modes (``mode``): ``sampled`` produces the kept
    traces, an exporter beside otlp and file; ``router`` makes serve a
    stateless front tier producing every received span unsampled, every
    trace in the partition of its trace ID (docs/design.md §5)."""
    # bootstrap brokers, host:port
    brokers: list[str]
    # router | sampled; unset: router when exporters.kafka is the only
    # exporter and there is no receivers.kafka (what such a file always
    # meant), else sampled (kafka_mode below; validate prints which)
    mode: Literal["router", "sampled"] | None = None
    # the topic spans are produced to (router: the consumer group's
    # receivers.kafka.topic; sampled: what downstream consumers read)
    topic: str = "otlp_spans_sampled"
    # message encoding: an ExportTraceServiceRequest per message
    encoding: Literal["otlp_proto"] = "otlp_proto"
    # broker acknowledgements a produce waits for: all (every in-sync replica), 1 (the
    # leader), 0 (none)
    acks: Literal["all", 0, 1] = "all"
    # true: one message per trace, keyed by the trace ID in lowercase hex
    # (the Collector kafkaexporter's partition_traces_by_id); false: one
    # message per partition per request (router) or batch (sampled) holding
    # many traces, each whole in the partition murmur2 of its hex trace ID
    # chooses (the same one)
    partition_traces_by_id: bool = False
    # router: how long a request waits for the broker's acks before the
    # client is told to retry (gRPC UNAVAILABLE / HTTP 503); sampled: how
    # long one attempt at a batch waits for them before it is retried
    timeout: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    # how long the producer waits to batch messages before sending
    linger: Duration = msgspec.field(default_factory=lambda: Duration("5ms"))
    # compression of the produced record batches (consumers decompress
    # whatever they get: the Collector's kafkareceiver, receivers.kafka)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    # the producer client: confluent-kafka (librdkafka; measured 0.34-0.74x
    # aiokafka's CPU per message and 1.6-3x its messages/s, same run) or
    # aiokafka (pure Python, the consumer's client)
    client: Literal["confluent-kafka", "aiokafka"] = "confluent-kafka"
    # with acks: all, produce idempotently: the producer's own retries (a
    # lost response, a leader change) write no duplicate; off also with
    # acks 0 or 1 (Kafka's rule)
    idempotent: bool = True
    # sampled mode only: retries of a batch not acked, with exponential backoff
    retry: Retry = msgspec.field(default_factory=Retry)
    # sampled mode only: a batch is closed before it would pass this many spans
    batch_max_spans: Positive = 8192
    # sampled mode only: a batch is closed before it would pass this many
    # bytes; below the brokers' default message.max.bytes (1 MiB), since a
    # batch landing on one partition is one message
    batch_max_bytes: Positive = 1_000_000
    # sampled mode only: bytes of kept traces waiting for the broker at most
    queue_max_bytes: Positive = 256 * 1024 * 1024
    # sampled mode only: block: receivers push back while the queue is
    # full; drop_oldest: make room by dropping (counted)
    queue_full: Literal["block", "drop_oldest"] = "block"
    # TLS to the brokers (a tls block means TLS unless insecure: true); null: plaintext
    tls: Tls | None = None
    # authentication to the brokers (SASL); null: none
    auth: KafkaAuth | None = None


# fields of exporters.kafka that only mode: sampled reads
KAFKA_SAMPLED_ONLY = ("retry", "batch_max_spans", "batch_max_bytes", "queue_max_bytes",
                      "queue_full")


class Exporters(_Base):
    # export kept traces over OTLP (gRPC or HTTP/protobuf) to a backend; null: none
    otlp: OtlpExporter | None = None
    # append kept traces to a local file; null: none
    file: FileExporter | None = None
    # router mode: produce every received span to a Kafka topic by trace ID, no sampling
    # here; null: off
    kafka: KafkaExporter | None = None


class Admin(_Base):
    # host:port of the admin HTTP server: /metrics, /healthz, /readyz, /status, /api/status,
    # /api/history
    endpoint: str = "127.0.0.1:9464"
    # link of a kept trace in the backend's UI, "{trace_id}" replaced by the
    # 32-hex-digit ID (the /status page's "last kept traces"); "" = no links
    trace_url: str = ""
    # /healthz and /readyz stay open to probes without a token (not without TLS)
    tls: ServerTls | None = None
    # require a bearer token (not for /healthz and /readyz); null: none
    auth: Auth | None = None


class Cost(_Base):
    # dollars per GiB of span bytes, for the cost metrics, /status and the forecast
    usd_per_gib: Annotated[float, msgspec.Meta(ge=0)] = 0.50
    # per-service prices where a team is billed differently
    per_service: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = msgspec.field(default_factory=dict)
    # monthly budget in dollars for exported bytes; the alert rule compares
    # the exported cost rate against it (0 = no budget)
    monthly_budget_usd: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class Telemetry(_Base):
    # distinct service label values reported; spans of further services are counted as
    # service="other"
    max_services: Positive = 200
    # a child starting before / ending after its parent by more than this
    # counts as clock skew
    skew_tolerance: Duration = msgspec.field(default_factory=lambda: Duration("5ms"))


class Service(_Base):
    # processes, each owning the traces whose trace-ID hash falls in its
    # shard (workers.py); auto: the CPUs this process may use (affinity and
    # cgroup CPU quota)
    workers: Annotated[int, msgspec.Meta(ge=1)] | Literal["auto"] = "auto"
    # process RSS limit: above it the receivers push back (0 = off)
    memory_limit_mib: NonNeg = 0
    # how long a SIGTERM drain may spend sending what is queued
    shutdown_timeout: Duration = msgspec.field(default_factory=lambda: Duration("30s"))


class Config(_Base):
    # where spans come in; each receiver runs only when its block is present
    receivers: Receivers = msgspec.field(default_factory=Receivers)
    # how traces are completed and decided
    sampler: Sampler = msgspec.field(default_factory=Sampler)
    # where kept traces go: every configured exporter gets every kept trace, each behind its
    # own bounded queue
    exporters: Exporters = msgspec.field(default_factory=Exporters)
    # the admin HTTP endpoint; null: none (the embedded default has one on 127.0.0.1:9464)
    admin: Admin | None = None
    # prices of span bytes, for the cost metrics and forecast
    cost: Cost = msgspec.field(default_factory=Cost)
    # limits and tolerances of the sampler's own metrics
    telemetry: Telemetry = msgspec.field(default_factory=Telemetry)
    # the process: workers, memory limit, shutdown
    service: Service = msgspec.field(default_factory=Service)


def kafka_mode(exporters: Exporters, receivers: Receivers) -> tuple[str, str] | None:
    """(mode, why) of ``exporters.kafka``, None without one. An unset mode
    is router only where exporters.kafka is alone, with no
    receivers.kafka: the one combination that ran before ``mode`` existed,
    so such files mean what they meant; anywhere else it is an exporter of
    kept traces, as docs/design.md §4 shows it beside otlp and file."""
    k = exporters.kafka
    if k is None:
        return None
    if k.mode is not None:
        return k.mode, "set by exporters.kafka.mode"
    others = kafka_companions(exporters, receivers)
    if others:
        return "sampled", f"mode unset, beside {', '.join(others)}"
    return "router", "mode unset, exporters.kafka is the only exporter and there is no receivers.kafka"


def kafka_companions(exporters: Exporters, receivers: Receivers) -> list[str]:
    """The blocks a router could not run beside (it has no sampler)."""
    out = [f"exporters.{n}" for n in ("otlp", "file") if getattr(exporters, n) is not None]
    if receivers.kafka is not None:
        out.append("receivers.kafka")
    return out


def kafka_mode_line(cfg: "Config") -> str | None:
    """What validate prints about exporters.kafka."""
    m = kafka_mode(cfg.exporters, cfg.receivers)
    if m is None:
        return None
    mode, why = m
    k = cfg.exporters.kafka
    assert k is not None
    if mode == "router":
        what = ("router mode: every received span is produced unsampled to topic "
                f"{k.topic} (sampler.policies are not applied); mode: sampled exports "
                "kept traces instead")
    else:
        what = f"mode sampled: kept traces are produced to topic {k.topic}"
    return f"exporters.kafka: {what} ({why})"


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


def _struct_at(typ: Any, path: str) -> Any:
    """The struct type a msgspec error path (``.a.b[0].c``) points into."""
    for part in re.findall(r"\.([^.\[]+)|\[[^\]]*\]", path):
        typ = _unwrap(typ)
        if part == "":      # an index: the element type
            info = msgspec.inspect.type_info(typ)
            typ = getattr(info, "item_type", None) or getattr(info, "value_type", None)
            typ = typ.cls if isinstance(typ, msgspec.inspect.StructType) else typ
            continue
        if not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
            return None
        fields = {f.encode_name: f.type for f in msgspec.structs.fields(typ)}
        if part not in fields:
            return None
        typ = fields[part]
    return _unwrap(typ)


def _unwrap(typ: Any) -> Any:
    """X | None → X; list[X] / dict[str, X] stay (indexed separately)."""
    args = getattr(typ, "__args__", None)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return typ


def _hint(typ: Any, path: str, field: str) -> str:
    try:
        st = _struct_at(typ, path)
    except Exception:   # a hint is a nicety: never let it mask the problem
        return ""
    if isinstance(st, type) and issubclass(st, msgspec.Struct):
        known = [f.encode_name for f in msgspec.structs.fields(st)]
        if st is DecisionCache:
            known += list(DECISION_CACHE_ALIASES)
        return did_you_mean(field, known)
    return ""


def _problem(prefix: str, exc: msgspec.ValidationError, typ: Any = None) -> str:
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
        text = "unknown field" + (_hint(typ, path, m2.group(1)) if typ is not None else "")
        path += "." + m2.group(1)
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
        problems.append(_problem(prefix, exc, typ))
        return None


POLICY_TYPES = tuple(REGISTRY)


def did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_type(typ: Any, path: str, problems: list[str]) -> None:
    hint = did_you_mean(typ, POLICY_TYPES) if isinstance(typ, str) else ""
    problems.append(f"{path}.type: unknown policy type {typ!r}{hint} "
                    f"(one of {', '.join(POLICY_TYPES)})")


# The Collector's policy types, and what each of its containers accepts as a
# sub-policy (config.go: sharedPolicyCfg, AndSubPolicyCfg, NotSubPolicyCfg,
# CompositeSubPolicyCfg); anything else it refuses as an unknown type.
OURS_ONLY = frozenset({"latency_tail", "service_rate", "adaptive"})
_COLLECTOR_CONTAINERS = frozenset({"and", "not", "drop", "composite"})
_COLLECTOR_SUBS = {"and": {"not"}, "drop": {"not"}, "not": set(), "composite": {"and"}}


def _collector_allows(typ: str, parent: str | None) -> bool:
    if typ in OURS_ONLY:
        return False
    if parent is None:
        return True
    return typ not in _COLLECTOR_CONTAINERS or typ in _COLLECTOR_SUBS[parent]


def _check_policy(raw: Any, path: str, problems: list[str], semantics: str = "traceo",
                  ignored: list[str] | None = None,
                  parent: str | None = None) -> PolicyCfg | None:
    """Validate one policy (sub-policies recursively, each problem with its
    full path); the typed policy, or None after appending its problems.

    A block named after another policy type is an error, unless ``ignored``
    is given (a Collector file: the Collector decodes every type's block into
    every policy and ignores the others), which then lists their paths.
    With ``semantics="collector"`` the types and nesting the Collector
    refuses are refused, and a module's ``check_collector`` replaces its
    ``check``."""
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
    if semantics == "collector" and not _collector_allows(typ, parent):
        where = f"inside {parent!r}" if parent and typ not in OURS_ONLY else "with collector semantics"
        problems.append(f"{path}.type: {typ!r} is not accepted {where} (the Collector "
                        "refuses it as an unknown sampling policy type)")
        return None
    mod = REGISTRY[typ]
    before = len(problems)
    block = raw.get(typ)
    raw = dict(raw)
    for other in [k for k in raw if k != typ and k in REGISTRY]:
        if ignored is not None:
            # decoded there into its struct, so its keys must still exist
            ob = raw[other]
            if isinstance(ob, dict):
                known = set(REGISTRY[other].Config.__struct_encode_fields__)
                for k in ob:
                    if k not in known:
                        problems.append(f"{path}.{other}.{k}: unknown field"
                                        + did_you_mean(k, known))
            ignored.append(f"{path}.{other}")
            del raw[other]
        elif block is not None:
            problems.append(f"{path}.{other}: a {other!r} block in a policy of type {typ!r}")
    if block is None and semantics == "collector" and not getattr(mod, "BLOCK_OPTIONAL", False):
        # the Collector decodes an omitted block as its zero value
        block = raw[typ] = _zero_block(mod.Config)
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
                    block[key] = [_check_policy(v, f"{sp}[{i}]", problems, semantics,
                                                ignored, typ)
                                  for i, v in enumerate(val)]
                else:
                    if not isinstance(val, dict):
                        problems.append(f"{sp}: must be one policy")
                        continue
                    block[key] = _check_policy(val, sp, problems, semantics, ignored, typ)
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
        # an omitted optional block is checked as its defaults (and stays
        # omitted, so a dumped config reads back the same)
        blk = mod.Config()
    check = getattr(mod, "check", None)
    if semantics == "collector":
        check = getattr(mod, "check_collector", check)
    if check is not None:
        check(blk, f"{path}.{typ}", problems)
        if len(problems) > before:
            return None
    return pol


def _zero_block(cfg_type: type) -> dict:
    """A block with every required field at Go's zero value."""
    out: dict[str, Any] = {}
    for f in msgspec.structs.fields(cfg_type):
        if f.required:
            t = _unwrap(f.type)
            origin = getattr(t, "__origin__", t)
            out[f.encode_name] = ("" if t is str else 0 if t in (int, float) else False
                                  if t is bool else [] if origin is list else {}
                                  if origin is dict else None)
    return out


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


def parse_policy(raw: Any, path: str = "policy", semantics: str = "traceo") -> PolicyCfg:
    """One policy, validated as in a config file; ConfigError otherwise."""
    problems: list[str] = []
    pol = _check_policy(raw, path, problems, semantics)
    if pol is None:
        raise ConfigError(problems)
    return pol


def _check_endpoint(ep: str, path: str, problems: list[str]) -> None:
    rest = re.sub(r"^(https?://)", "", ep)
    if rest != ep:
        rest = rest.split("/", 1)[0]    # a URL may carry a path
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        problems.append(f"{path}: must be host:port, got {ep!r}")


def _check_kafka_security(blk, path: str, client: str, problems: list[str]) -> None:
    """``tls`` and ``auth.sasl`` of a Kafka block (kafka_security.py turns
    them into the client's options)."""
    from .kafka_security import env_password
    tls = blk.tls
    if tls is not None and not tls.insecure:
        if tls.key_file and not tls.cert_file:
            problems.append(f"{path}.tls.key_file: set without cert_file")
        if tls.server_name_override and client == "confluent-kafka":
            problems.append(f"{path}.tls.server_name_override: not supported by the "
                            "confluent-kafka client (librdkafka verifies the broker's own "
                            "host name); set client: aiokafka, or connect by that name")
    sasl = blk.auth.sasl if blk.auth is not None else None
    if sasl is not None:
        if not sasl.username:
            problems.append(f"{path}.auth.sasl.username: must not be empty")
        _, why = env_password(sasl.password)
        if why:
            problems.append(f"{path}.auth.sasl.password: {why}")


def _check_kafka_mode(exp: Exporters, rec: Receivers, problems: list[str]) -> None:
    m = kafka_mode(exp, rec)
    k = exp.kafka
    if m is None or k is None or m[0] != "router":
        return
    others = kafka_companions(exp, rec)
    if others:
        problems.append(f"exporters.kafka.mode: router forwards every span unsampled and cannot "
                        f"be combined with {', '.join(others)}; mode: sampled exports the kept "
                        "traces to Kafka beside them")
    default = KafkaExporter(brokers=[])
    for f in KAFKA_SAMPLED_ONLY:
        if getattr(k, f) != getattr(default, f):
            problems.append(f"exporters.kafka.{f}: only read with mode: sampled (this "
                            f"exporters.kafka is router mode, {m[1]})")


def parse(raw: Any, ignored_blocks: list[str] | None = None) -> Config:
    """Validate a loaded YAML document; raise ConfigError with every problem.

    ``ignored_blocks``: see _check_policy (a Collector file passes a list)."""
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
    sampler_rest = {k: v for k, v in sampler_raw.items() if k != "policies"}
    dc = sampler_rest.get("decision_cache")
    if isinstance(dc, dict):
        dc = dict(dc)
        for alias, name in DECISION_CACHE_ALIASES.items():
            if alias in dc:
                if name in dc:
                    problems.append(f"sampler.decision_cache.{alias}: "
                                    f"set either {alias} or {name}, not both")
                dc[name] = dc.pop(alias)
        sampler_rest["decision_cache"] = dc
    if sampler_rest.get("sampling_strategy") == "span-ingest":
        problems.append("sampler.sampling_strategy: span-ingest is not supported "
                        "(Traceo decides on the whole trace: trace-complete)")
        sampler_rest.pop("sampling_strategy")
    sampler = _convert(sampler_rest, Sampler, "sampler", problems)
    semantics = sampler.semantics if sampler is not None else "traceo"
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
            pol = _check_policy(p, f"sampler.policies[{i}]", problems,
                                semantics, ignored_blocks)
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
        _check_kafka_mode(exp, rec or Receivers(), problems)
        _check_kafka_security(exp.kafka, "exporters.kafka", exp.kafka.client, problems)
    if sampler is not None and sampler.shared_decisions is not None:
        if not sampler.shared_decisions.brokers:
            problems.append("sampler.shared_decisions.brokers: must not be empty")
        _check_kafka_security(sampler.shared_decisions, "sampler.shared_decisions", "aiokafka",
                              problems)
    if sampler is not None and sampler.wal is not None:
        if rec is not None and rec.kafka is not None:
            problems.append("sampler.wal: not with receivers.kafka (Kafka already keeps what "
                            "is not decided and acknowledged)")
        if exp is not None and exp.kafka is not None:
            problems.append("sampler.wal: not with exporters.kafka (router mode answers once "
                            "the broker acked)")
        size = parse_size(sampler.wal.max_bytes)
        if size is None or size < 1 << 20:
            problems.append("sampler.wal.max_bytes: must be a number of bytes or a size such as "
                            "512MiB or 4GiB, at least 1MiB")
        else:
            sampler.wal.max_bytes = size
        if sampler.wal.fsync_interval.seconds <= 0:
            problems.append("sampler.wal.fsync_interval: must be > 0")
        if not sampler.wal.dir:
            problems.append("sampler.wal.dir: must not be empty")
    if rec is not None and rec.kafka is not None:
        if not rec.kafka.brokers:
            problems.append("receivers.kafka.brokers: must not be empty")
        _check_kafka_security(rec.kafka, "receivers.kafka", "aiokafka", problems)
    if values.get("admin") is not None:
        _check_endpoint(values["admin"].endpoint, "admin.endpoint", problems)
        url = values["admin"].trace_url
        if url and ("{trace_id}" not in url or not url.startswith(("http://", "https://"))):
            problems.append("admin.trace_url: must be an http:// or https:// URL containing "
                            "{trace_id}")
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


# Whether a Collector file's unsupported components are skipped instead of
# refused: the --ignore-unsupported flag, set once by the CLI so that a hot
# reload of the same file reads it the same way.
IGNORE_UNSUPPORTED = False


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError([f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"])
    except RecursionError:
        raise ConfigError([f"{source}: YAML nested too deeply to read"]) from None


def loads_with_mapping(text: str, source: str = "config",
                       ignore_unsupported: bool | None = None) -> tuple[Config, list[str] | None]:
    """(config, mapping lines): the mapping is None for our own format and,
    for an OpenTelemetry Collector file, one line per component saying what
    it became (collector_config.py)."""
    try:
        return _loads_with_mapping(text, source, ignore_unsupported)
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply (policies within policies?)"]) from None


def _loads_with_mapping(text: str, source: str, ignore_unsupported: bool | None):
    from . import collector_config as cc
    raw = _yaml(text, source)
    if not cc.looks_like_collector(raw):
        return parse(raw), None
    raw = _yaml(cc.expand_env(text), source)
    if ignore_unsupported is None:
        ignore_unsupported = IGNORE_UNSUPPORTED
    tr = cc.translate(raw, ignore_unsupported)
    problems = list(tr.problems)
    cfg = None
    ignored: list[str] = []
    try:
        cfg = parse(tr.config, ignored_blocks=ignored)
    except ConfigError as exc:
        problems += [tr.collector_path(p) for p in exc.problems]
    if problems or cfg is None:
        raise ConfigError(problems)
    for path in ignored:
        tr.note(tr.collector_path(path), "ignored: a block of another policy type, "
                                         "as the Collector ignores it")
    return cfg, tr.lines()


def loads(text: str, source: str = "config") -> Config:
    return loads_with_mapping(text, source)[0]


def load_with_mapping(path: str | None,
                      ignore_unsupported: bool | None = None) -> tuple[Config, list[str] | None]:
    """Load FILE (ours or a Collector file), or the embedded default when
    path is None."""
    if path is None:
        return loads_with_mapping(DEFAULT_YAML, "embedded default")
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
    return loads_with_mapping(text, path, ignore_unsupported)


def load(path: str | None) -> Config:
    """Load FILE, or the embedded default when path is None."""
    return load_with_mapping(path)[0]


def dump(cfg: Config) -> str:
    return yaml.safe_dump(msgspec.to_builtins(cfg, enc_hook=_enc_hook), sort_keys=False)


def timers(s: Sampler) -> tuple[float, float | None, float | None]:
    """(decision_wait, root_wait, idle_timeout) in seconds as the buffer
    applies them. Collector semantics: the fixed decision_wait from the
    first span, earlier only decision_wait_after_root_received after the
    root (when set), never on idleness; and as there, in whole seconds
    decided on a 1 s tick (Pipeline.tick): a trace joins the batch of the
    second it arrived in, which is decided decision_wait to decision_wait
    + 1 s after it."""
    dw = s.decision_wait.seconds
    if s.semantics != "collector":
        # None: auto (completion.py learns it)
        return dw, s.root_wait.seconds, s.idle_timeout.seconds
    # idbatcher (internal/idbatcher): the current batch is closed at the
    # next tick and read L = max(1, decision_wait s) ticks after that; a
    # root moves its trace to the batch read decision_wait_after_root_received
    # (whole seconds, truncated) ticks after the next one, when earlier. A
    # deadline of n s after arrival, taken at the first tick at or after it,
    # is that same tick.
    batches = max(1, int(dw))
    after_root = s.decision_wait_after_root_received
    rw = batches
    if after_root is not None and after_root.seconds > 0:
        rw = min(batches, int(after_root.seconds))
    return float(batches), float(rw), float(batches)


def split_endpoint(ep: str) -> tuple[str, int]:
    rest = re.sub(r"^(https?://)", "", ep)
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
