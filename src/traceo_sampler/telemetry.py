"""Every metric of the sampler, declared in one table (docs/design.md §4).

Names are public: dashboards, alert rules and outside tests read them.
The ``service`` label is capped (``telemetry.max_services``): services past
the cap are reported as ``service="other"``.
"""
from __future__ import annotations

from typing import Generic, TypeVar, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily

PREFIX = "traceo_sampler_"


class CountsHistogram:
    """A histogram fed with bucket counts already gathered elsewhere (the
    buffer counts arrival lags per span in C; observing each span here
    would cost more than buffering it). Same exposition as a Histogram."""

    def __init__(self, name: str, doc: str, labels=(), registry=None, buckets=()):
        self.name, self.doc = name, doc
        self.label_names = tuple(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple, list] = {}
        if registry is not None:
            registry.register(self)

    def add(self, labels: tuple, counts, total: float) -> None:
        """``counts``: one per bucket of ``bounds`` then +Inf (not cumulative)."""
        row = self._children.get(labels)
        if row is None:
            row = self._children[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        c = row[0]
        for i, n in enumerate(counts):
            if n:
                c[i] += n
        row[1] += total

    def quantiles(self, labels: tuple, qs) -> list[float | None]:
        """Upper bucket bounds at the given quantiles (None: no data; +Inf
        past the last bound)."""
        row = self._children.get(labels)
        n = sum(row[0]) if row else 0
        out: list[float | None] = []
        for q in qs:
            if row is None or not n:
                out.append(None)
                continue
            need, acc = q * n, 0
            for i, k in enumerate(row[0]):
                acc += k
                if acc >= need:
                    out.append(self.bounds[i] if i < len(self.bounds) else float("inf"))
                    break
        return out

    def children(self):
        return {k: (list(v[0]), v[1]) for k, v in self._children.items()}

    def describe(self):
        return [HistogramMetricFamily(self.name, self.doc, labels=self.label_names)]

    def collect(self):
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.label_names)
        for labels, (counts, total) in self._children.items():
            acc, buckets = 0, []
            for i, n in enumerate(counts):
                acc += n
                le = repr(self.bounds[i]) if i < len(self.bounds) else "+Inf"
                buckets.append((le, acc))
            fam.add_metric(list(labels), buckets, total)
        yield fam


M = TypeVar("M", Counter, Gauge, Histogram, CountsHistogram)


class Declared(Generic[M]):
    """One row of the table: a metric's kind, help, labels (and buckets),
    declared as a class attribute of ``Metrics`` so that a type checker knows
    every metric and its kind (through ``__get__``). Each ``Metrics()``
    instantiates every row on its own registry as an instance attribute. The
    declarations are taken off the class once collected (``DECLARED``): a
    class attribute of the same name would keep CPython from specializing
    the instance attribute read (measured: 3x slower per metric read)."""

    def __init__(self, kind: type[M], doc: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...] | None = None):
        self.kind: type[M] = kind
        self.doc, self.labels, self.buckets = doc, labels, buckets
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def spec(self) -> tuple:
        """(name, kind, help, labels[, buckets]), the row as ``METRICS`` lists it."""
        head = (self.name, self.kind, self.doc, self.labels)
        return head if self.buckets is None else head + (self.buckets,)

    def create(self, registry: CollectorRegistry) -> M:
        if self.buckets is None:
            return self.kind(PREFIX + self.name, self.doc, self.labels, registry=registry)
        # only histogram() and counts_histogram() pass buckets
        return self.kind(PREFIX + self.name, self.doc, self.labels,  # type: ignore[call-arg]
                         registry=registry, buckets=self.buckets)

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Declared[M]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> M: ...
    def __get__(self, obj: object, objtype: type | None = None) -> Declared[M] | M:
        if obj is None:
            return self
        raise AttributeError(f"metric {self.name} was not instantiated")  # Metrics.__init__ does


def counter(doc: str, *labels: str) -> Declared[Counter]:
    return Declared(Counter, doc, labels)


def gauge(doc: str, *labels: str) -> Declared[Gauge]:
    return Declared(Gauge, doc, labels)


def histogram(doc: str, *labels: str, buckets: tuple[float, ...]) -> Declared[Histogram]:
    return Declared(Histogram, doc, labels, buckets)


def counts_histogram(doc: str, *labels: str, buckets: tuple[float, ...]
                     ) -> Declared[CountsHistogram]:
    return Declared(CountsHistogram, doc, labels, buckets)


class Metrics:
    """The table, one class attribute per metric (name, help, labels), and its
    instance: every metric on the instance's own registry, with the capped
    ``service`` label."""

    spans_received_total = counter('Valid spans received', 'service')
    bytes_received_total = counter('Encoded span bytes received', 'service')
    spans_exported_total = counter('Spans handed to and acknowledged by an exporter', 'service', 'exporter')
    traces_decided_total = counter('Traces decided, by decision, attributed policy and trigger', 'decision', 'policy', 'trigger')
    policy_evaluation_errors_total = counter('Traces a policy could not evaluate (ottl_condition with error_mode: propagate); it cast no vote on them', 'policy')
    late_spans_total = counter('Spans arriving after their trace was decided', 'decision')
    buffer_spans = gauge('Spans held in the trace buffer')
    buffer_bytes = gauge('Bytes accounted to the trace buffer')
    buffer_traces = gauge('Traces held in the trace buffer')
    buffer_limit_bytes = gauge('Memory limit of the trace buffer')
    decision_latency_seconds = histogram(
        "From a trace's decision trigger to the export acknowledgement",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    orphan_spans_total = counter('Spans whose parent never arrived by decision time', 'service')
    traces_without_root_total = counter('Traces decided without a root span')
    clock_skew_spans_total = counter("Child spans outside their parent's time range", 'service')
    clock_skew_seconds = histogram(
        "How far a skewed child lies outside its parent's time range", 'service',
        buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300, 3600))
    duplicate_spans_total = counter('Span IDs seen twice within a trace')
    invalid_spans_total = counter('Spans rejected as invalid, by reason', 'reason')
    invalid_requests_total = counter('Requests rejected as not decodable', 'receiver')
    receiver_requests_total = counter('Receiver requests by outcome', 'receiver', 'outcome')
    tls_reloads_total = counter('Changed certificate, key or client CA files of a listener: reloaded (ok) or refused, the previous ones kept (invalid)', 'listener', 'result')
    unauthenticated_requests_total = counter('Requests refused for a missing or invalid bearer token (UNAUTHENTICATED / 401)', 'receiver', 'reason')
    memory_limit_bytes = gauge('service.memory_limit_mib in bytes (0 = no process memory limit)')
    process_resident_bytes = gauge('Resident set size of the process, as the memory limiter last read it')
    memory_limiter_refusing = gauge('1 while the receivers push back because RSS is above service.memory_limit_mib')
    export_failures_total = counter('Export attempts that failed', 'exporter')
    export_rejected_spans_total = counter('Spans a backend refused in an OTLP partial success', 'exporter')
    export_dropped_spans_total = counter('Kept spans dropped because an exporter queue was full or gave up', 'exporter')
    export_refused_traces_total = counter('Kept traces a backend refused permanently as invalid, isolated by splitting their batch (logged by trace ID)', 'exporter')
    exporter_queue_bytes = gauge('Bytes waiting in an exporter queue', 'exporter')
    cost_usd_total = counter('Dollars of span bytes, received vs exported', 'service', 'stage')
    config_reloads_total = counter('Config reloads (SIGHUP or file change), applied or rejected', 'outcome')
    cost_budget_usd_monthly = gauge('Configured monthly budget for exported bytes (0 = none)')
    workers = gauge('service.workers: worker processes of this serve')
    worker_restarts_total = counter('Worker processes that died and were restarted')
    worker_lost_spans_total = counter('Spans a worker held in its buffer when it died (its last report), lost with it')
    worker_lost_traces_total = counter('Traces a worker held in its buffer when it died (its last report), lost with it')
    worker_forwarded_spans_total = counter('Spans handed to the worker owning their trace, by outcome (sent, dropped: the owner stayed down too long, lost: cut off when the sending worker died mid-frame)', 'outcome')
    kafka_produced_messages_total = counter('Router mode: messages (one per trace) the broker acked or that failed', 'outcome')
    kafka_messages_total = counter('Kafka receiver: messages consumed, by outcome (ok, partial, invalid, replayed: re-read for a trace a previous owner left undecided or unacknowledged, its spans may be exported twice; replay_skipped)', 'outcome')
    kafka_consumer_lag = gauge('Kafka receiver: high watermark minus the next offset to read, per partition', 'topic', 'partition')
    kafka_uncommitted_messages = gauge('Kafka receiver: messages read but not committable yet (undecided, or kept and not acknowledged), per partition', 'topic', 'partition')
    kafka_producer_replaced_total = counter('exporters.kafka: idempotent producers replaced by a new one after their sequence numbers fell out of step with the broker (a broker restart; aiokafka cannot reset them), by mode (router, sampled)', 'mode')
    kafka_fetch_paused = gauge('Kafka receiver: 1 while fetching is paused because an exporter queue is full or the process memory is above service.memory_limit_mib')
    kafka_commits_total = counter('Kafka receiver: offset commits, by outcome', 'outcome')
    kafka_rebalances_total = counter('Kafka receiver: partitions assigned or revoked', 'event')
    span_arrival_lag_seconds = counts_histogram(
        "How long after its trace's first span (since=first) or its root span (since=root) a span arrived, for spans that came in a later request than those, late spans included", 'service', 'since',
        buckets=(0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0))
    completion_wait_seconds = gauge('The wait in use, fixed or learned (root_wait: auto): timer = root | idle; service = a root service with its own waits, or * for the default', 'service', 'timer')
    late_spans_would_change_total = counter('Late spans of traces decided not sampled that would have kept them (reason = error | latency): the waits are too short', 'service', 'reason')
    traces_rescued_total = counter('Traces decided not sampled, brought back from sampler.dropped_grace by a late span and kept', 'policy')
    dropped_grace_bytes = gauge('Bytes of not-sampled traces held by sampler.dropped_grace')
    dropped_grace_traces = gauge('Not-sampled traces held by sampler.dropped_grace')
    kafka_discarded_traces_total = counter('Kafka receiver: undecided traces of revoked partitions forgotten undecided, for the new owner to re-read whole')
    shared_decisions_kept_total = counter('Sidecar mode: kept traces by how (published: kept here for a non-probabilistic reason and published; remote: kept because another sidecar did)', 'source')
    shared_decisions_messages_total = counter('Sidecar mode: decisions-topic messages, by direction (out, in) and kind (decisions, heartbeat, invalid)', 'direction', 'kind')
    shared_decisions_bytes_total = counter('Sidecar mode: decisions-topic message bytes, by direction and kind', 'direction', 'kind')
    shared_decisions_received_total = counter('Sidecar mode: keeps heard from other sidecars, by what they met here (held, ahead: undecided or not arrived yet, too_late: already final not sampled, duplicate)', 'outcome')
    shared_decisions_held_total = counter('Sidecar mode: locally not-sampled traces released from the hold (kept_remote, expired: final not sampled, evicted: hold_max_mib reached)', 'outcome')
    shared_decisions_held_traces = gauge('Sidecar mode: not-sampled traces held waiting for a keep from another sidecar')
    shared_decisions_held_bytes = gauge('Sidecar mode: bytes of held traces (bounded by hold_max_mib)')
    shared_decisions_lag_messages = gauge('Sidecar mode: decisions-topic high watermark minus the next offset to read, per partition', 'partition')
    shared_decisions_delay_seconds = histogram(
        'Sidecar mode: from another sidecar publishing a keep to this one reading it',
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    shared_decisions_fallback_traces_total = counter('Sidecar mode: traces decided locally only because the broker was unreachable (a keep not shared, a not-sampled not held)')
    shared_decisions_unpublished_total = counter('Sidecar mode: keeps whose publish failed (broker unreachable)')
    shared_decisions_outages_total = counter('Sidecar mode: times the decisions broker became unreachable')
    shared_decisions_broker_up = gauge('Sidecar mode: 1 while decisions are shared, 0 in fallback to local decisions')

    wal_bytes = gauge('Write-ahead log (sampler.wal): bytes of its segment files on disk')
    wal_segments = gauge('Write-ahead log: segment files on disk')
    wal_appended_bytes_total = counter('Write-ahead log: bytes appended, by record kind (spans, decisions, acks)', 'kind')
    wal_fsync_seconds = histogram(
        'Write-ahead log: duration of one fsync (with fsync: always, one fsync answers every request written before it: group commit)',
        buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
    wal_healthy = gauge('Write-ahead log: 1 while it writes, 0 after a disk error (see wal_errors_total; on_error says whether requests are refused)')
    wal_errors_total = counter('Write-ahead log: disk errors, by operation (write, fsync, open, delete)', 'op')
    wal_full = gauge('Write-ahead log: 1 while it holds max_bytes and the receivers push back (RESOURCE_EXHAUSTED / 429, counted in receiver_requests_total{outcome="backpressure"})')
    wal_replayed_spans_total = counter('Write-ahead log: spans read back into the buffer at start (recovery after a crash)')
    wal_replayed_traces_total = counter('Write-ahead log: undecided traces read back into the buffer at start')
    wal_torn_records_total = counter('Write-ahead log: records found incomplete or corrupt at recovery (a torn tail after a crash); the segment is read up to them')
    wal_duplicate_export_traces_total = counter('Write-ahead log: traces kept before a crash but not acknowledged, exported again after recovery (the backend may have them twice)')
    wal_duplicate_export_spans_total = counter('Write-ahead log: spans of those traces exported again after recovery')

    def __init__(self, max_services: int = 200, usd_per_gib: float = 0.5):
        self.registry = CollectorRegistry()
        self.max_services = max_services
        self.usd_per_byte = usd_per_gib / float(1 << 30)
        self._services: set[str] = set()
        for decl in DECLARED:
            vars(self)[decl.name] = decl.create(self.registry)

    def service(self, name: str) -> str:
        """The label value for a service, capped in cardinality."""
        if name in self._services:
            return name
        if len(self._services) < self.max_services:
            self._services.add(name)
            return name
        return "other"

    # consistency findings (docs/design.md §4) as shown by /api/status and simulate
    CONSISTENCY = (("orphan_spans", "orphan_spans_total"),
                   ("traces_without_root", "traces_without_root_total"),
                   ("clock_skew_spans", "clock_skew_spans_total"),
                   ("duplicate_spans", "duplicate_spans_total"),
                   ("invalid_spans", "invalid_spans_total"))

    def consistency(self) -> dict[str, float]:
        """Totals of the consistency counters, over all label values."""
        return {key: int(sum(v for _labels, v in self.counts(name))) for key, name in self.CONSISTENCY}

    def counts(self, name: str) -> list[tuple[dict, float]]:
        """(labels, value) of every ``_total`` sample of counter ``name``."""
        return [(s.labels, s.value) for fam in getattr(self, name).collect()
                for s in fam.samples if s.name.endswith("_total")]


DECLARED: list[Declared] = [d for d in vars(Metrics).values() if isinstance(d, Declared)]
for _d in DECLARED:
    delattr(Metrics, _d.name)
del _d
# name, kind, help, labels[, buckets] of every metric, in declaration order
METRICS: list[tuple] = [d.spec() for d in DECLARED]
