"""The sampling path, independent of any transport: raw request bytes in,
encoded kept traces out to the exporters (docs/design.md §1).

Everything here runs on the event loop thread, so the buffer needs no lock.
The clock is injectable so tests can drive the completion model without
sleeping.
"""
from __future__ import annotations

import logging
import time
from typing import Callable


from .accounting import Account, Kept, Prices
from .buffer import (
    LATE_DROPPED_RESOURCE, LATE_DROPPED_SCOPE, LATE_DROPPED_SERVICE, LATE_DROPPED_SPAN,
    LATE_DROPPED_TRACE_STATE, LATE_KEPT_SERVICE, LATE_KEPT_SPAN, LATE_KEPT_TRACE_ID, TraceBuffer,
    encode_late, policy_attribute,
)
from .completion import Completion, Merged
from .config import Config, timers
from .decider import Decider
from .otlp_size import encoded_size
from .exporters.base import Exporter, Item
from .tracestate import MAX_T

log = logging.getLogger("traceo_sampler")
# Kept traces decided together are handed to the exporters as one item of
# about this size (the exporter batches items further).
EXPORT_ITEM_BYTES = 1 << 20


class IngestResult:
    __slots__ = ("accepted", "rejected", "errors", "parts", "counts", "recs")

    def __init__(self, accepted: int, rejected: int, errors: list[str],
                 parts: list[bytes] | None = None, counts: list[int] | None = None,
                 recs: list[bytes] | None = None):
        self.accepted = accepted
        self.rejected = rejected
        self.errors = errors
        # ingest with shards: each other shard's request and span count
        self.parts = parts
        self.counts = counts
        # and its span records (TraceBuffer.ingest), or None
        self.recs = recs


class _Spans:
    """Scan-shaped view of a subset of a request's spans."""

    __slots__ = ("groups", "spans")

    def __init__(self, groups, spans):
        self.groups = groups
        self.spans = spans


class Pipeline:
    def __init__(self, cfg: Config, metrics, exporters: list[Exporter],
                 clock: Callable[[], float] = time.monotonic, tracker=None):
        """``clock``: what the timers and the policies measure time with (the
        Kafka receiver's lag clock when reading Kafka); ``tracker``: the
        Kafka receiver's offset tracker, told when a trace is decided not
        kept (``done``) and handed the trace IDs of every kept item
        (``take``, returns the item's ack callback)."""
        s = cfg.sampler
        self.cfg = cfg
        self.metrics = metrics
        self.exporters = exporters
        self.clock = clock
        self.tick_period = 1.0 if s.semantics == "collector" else 0.0
        self._next_tick: float | None = None
        # the waits are set by Completion (fixed, or learned: root_wait: auto)
        self.buffer = TraceBuffer(
            decision_wait=timers(s)[0], root_wait=0.0, idle_timeout=0.0,
            max_spans_per_trace=s.max_spans_per_trace,
            memory_limit=s.memory_limit_mib << 20,
            cache_sampled=s.decision_cache.sampled,
            cache_not_sampled=s.decision_cache.not_sampled)
        self.decider = Decider(s.policies, clock=clock, semantics=s.semantics,
                               sample_on_first_match=s.sample_on_first_match,
                               max_trace_bytes=s.maximum_trace_size_bytes,
                               spans=self.buffer.spans)
        self.attr_keys = self.decider.attribute_keys
        self.completion = Completion(s, self.buffer, metrics, self.decider.policies, clock())
        metrics.buffer_limit_bytes.set(s.memory_limit_mib << 20)
        metrics.cost_budget_usd_monthly.set(cfg.cost.monthly_budget_usd)
        self.prices = Prices.of(cfg.cost)
        # what was counted: /api/status, the summary and simulate render it
        self.account = Account()
        # service label -> its received counters (spans, bytes, cost), each
        # labelled once: labels() per service per request was most of the
        # fixed cost of a small request (service.workers hands many over)
        self._received: dict[str, tuple] = {}
        self.skew_tolerance_ns = int(cfg.telemetry.skew_tolerance.seconds * 1e9)
        self.record_policy = s.record_policy
        self._policy_attrs: dict[str, bytes] = {}
        self.tracker = tracker
        # sidecar mode (shared_decisions.py): reviews every fresh decision
        self.shared = None
        if s.shared_decisions is not None:
            from .shared_decisions import SharedDecisions
            self.shared = SharedDecisions(s.shared_decisions, metrics, self.buffer,
                                          s.policies, clock)
        # called as observer(trace, trigger, decision, finish_result) for
        # every decided trace; simulate's recorders use it (simulate/replay.py)
        # called with (trace, trigger, decision, finish's result) of each decided trace
        self.observer: Callable[..., None] | None = None

    # ------------------------------------------------------------------ in
    RETRY_AFTER = 1.0   # seconds a pushed-back client is asked to wait

    def backpressure(self) -> bool:
        """True while an exporter with ``queue_full: block`` is full: the
        receivers then refuse new spans instead of accepting what would be
        dropped."""
        for e in self.exporters:
            if e.blocking:
                return True
        return False

    def ingest(self, data: bytes, scanned=None, now: float | None = None,
               shards: tuple[int, int] | None = None, checked: bool = False,
               recs: int = 0) -> IngestResult:
        """Scan and buffer one encoded ExportTraceServiceRequest.

        Raises ValueError when the bytes are not a valid request (the buffer
        is then left as it was); invalid spans are counted and reported while
        the valid ones are kept. Memory: the exact size a request adds is
        known only once the buffer's fused scan+insert has run, so room for
        twice its size is made before, and what still exceeds the limit
        after it is decided at once: the buffer never stays above
        memory_limit.

        ``scanned``: the request already scanned (``scan.scan(data,
        attr_keys)``), for callers that need its trace IDs first. ``now``:
        when it arrived, on ``clock`` (the write-ahead log's recovery
        replays requests at their original arrival times).

        ``shards``: (n, i), this pipeline owns shard i of n (service.workers,
        workers.ShardFront): the spans of the other shards are walked once
        here and returned in ``parts`` (one request per shard) instead of
        buffered; ``accepted`` counts them too. Room is made for this
        shard's share of the request.

        ``checked``: the request is another worker's hand-off, built out of
        spans that worker checked (workers.Inbound): only extracted, not
        checked again; ``recs``: the last ``recs`` bytes of ``data`` are the
        span records the sending worker's ingest returned with its part
        (``TraceBuffer.ingest``), so the spans are not walked again.
        """
        if now is None:
            now = self.clock()
        buf = self.buffer
        room = buf.make_room(2 * len(data) // (shards[0] if shards else 1))
        if room:
            self._decide(room, now)
            self._gauges()
        if shards is not None:
            res = buf.ingest(data, self.attr_keys, now, shards[0], shards[1])
        elif scanned is None:
            res = buf.ingest(data, self.attr_keys, now, 1, 0, checked, recs)
        else:
            res = buf.add(scanned, data, now)
        m = self.metrics
        if res.rejected:
            for reason in res.reasons:
                m.invalid_spans_total.labels(reason).inc()
        fwd = sum(res.counts) if res.counts else 0
        if not res.accepted:
            return IngestResult(fwd, res.rejected, res.errors, res.parts, res.counts, res.recs)
        self._after_add(res, now)
        if res.full:
            self._decide([(t, "max_spans") for t in res.full], now)
            if res.overflow:
                # the rest of a trace that filled up within this request now
                # follows its decision, like any late span
                self._after_add(buf.add(_Spans(res.groups, res.overflow), data, now), now)
        if buf.nbytes > buf.memory_limit:
            self._decide(buf.make_room(0), now)
        self.account.received(res.accepted, res.span_bytes)
        self._gauges()
        return IngestResult(res.accepted + fwd, res.rejected, res.errors, res.parts, res.counts,
                            res.recs)

    def holds(self, trace_id: bytes) -> bool:
        """Whether the trace is buffered, undecided."""
        return trace_id in self.buffer.traces

    def discard(self, trace_ids) -> int:
        """Forget these undecided traces without a decision (nothing is
        remembered: a Kafka rebalance hands them whole to the partitions'
        new owner). Returns how many were buffered."""
        n = 0
        for tid in trace_ids:
            if self.buffer.discard(tid):
                n += 1
        self._gauges()
        return n

    async def flush_exports(self, timeout: float) -> None:
        """Wait until every exporter acknowledged what it was handed."""
        for e in self.exporters:
            await e.flush(timeout)

    def usd_per_byte_of(self, service: str) -> float:
        return self.prices.per_byte(service)

    def _after_add(self, res, now: float) -> None:
        m = self.metrics
        received = self._received
        for svc, (n, nb) in res.per_service.items():
            label = m.service(svc)
            c = received.get(label)
            if c is None:
                c = received[label] = (m.spans_received_total.labels(label),
                                       m.bytes_received_total.labels(label),
                                       m.cost_usd_total.labels(label, "received"))
            c[0].inc(n)
            c[1].inc(nb)
            c[2].inc(nb * self.usd_per_byte_of(svc))
            row = self.account.service(label)
            row.spans_received += n
            row.bytes_received += nb
        if res.late_dropped:
            self.account.late(0, res.late_dropped)
            m.late_spans_total.labels("not_sampled").inc(res.late_dropped)
        if res.late_kept:
            n = len(res.late_kept)
            self.account.late(n, 0)
            m.late_spans_total.labels("sampled").inc(n)
            self._export(encode_late(res.late_kept, self.record_policy), n,
                         self._late_services(res.late_kept),
                         [it[LATE_KEPT_TRACE_ID] for it in res.late_kept], now)
        if res.late_kept or res.late_dropped_spans:
            rescued = self.completion.late(res, now)
            if rescued:
                self._rescue(rescued, now)

    def _rescue(self, items, now: float) -> None:
        """Decide again traces a late span brought back from the dropped
        grace; a kept one is exported whole, its late spans with it."""
        m = self.metrics
        finish = self.buffer.finish
        for t, late in items:
            view = Merged(t, late)
            dec = self.decider.decide(view)
            if not dec.sampled:
                finish(t, False, dec.policy, dec.threshold)
                if self.tracker is not None:
                    self.tracker.done(t.trace_id)
                continue
            extra = self._policy_attr(dec.policy) if self.record_policy else b""
            blob, per_service = finish(t, True, dec.policy, dec.threshold, extra)
            tid = t.trace_id
            late_blob = encode_late([(tid, dec.policy, dec.threshold, it[LATE_DROPPED_RESOURCE],
                                      it[LATE_DROPPED_SCOPE], it[LATE_DROPPED_SPAN],
                                      it[LATE_DROPPED_TRACE_STATE], it[LATE_DROPPED_SERVICE])
                                     for it in late], self.record_policy)
            services: dict[str, list] = {}
            for svc, (k, nb) in per_service.items():
                row = services.setdefault(m.service(svc), [0, 0])
                row[0] += k
                row[1] += nb
            for it in late:
                row = services.setdefault(m.service(it[LATE_DROPPED_SERVICE]), [0, 0])
                row[0] += 1
                row[1] += len(it[LATE_DROPPED_SPAN])
            n = t.span_count + len(late)
            self.account.rescued(dec.policy, n)
            self.completion.rescued += 1
            m.traces_rescued_total.labels(dec.policy).inc()
            self.account.recent.append(Kept(tid, dec.policy, "rescued", n, services, dec.threshold,
                                            time.time(), t.root_service, t.root_name,
                                            view.max_end - view.min_start, view.status_mask))
            self._export(blob + late_blob, n, services, [tid], now)

    def _release_grace(self, entries) -> None:
        finish = self.buffer.finish
        for g in entries:
            t, dec = g[0], g[1]
            finish(t, False, dec.policy, dec.threshold)
            if self.tracker is not None:
                self.tracker.done(t.trace_id)

    def _late_services(self, items) -> dict[str, list]:
        # label → [spans, bytes] of late spans, by their group's service
        out: dict[str, list] = {}
        for it in items:
            svc = self.metrics.service(it[LATE_KEPT_SERVICE])
            row = out.get(svc)
            if row is None:
                out[svc] = [1, len(it[LATE_KEPT_SPAN])]
            else:
                row[0] += 1
                row[1] += len(it[LATE_KEPT_SPAN])
        return out

    # ------------------------------------------------------------ decide
    def tick(self) -> int:
        """Decide every trace that is due; returns how many.

        Collector semantics decide once per second, every trace that came
        due since the last time at once, as the Collector's ticker does (its
        limiters then see a second's traces together, so they keep what
        the Collector keeps)."""
        now = self.clock()
        if self.tick_period:
            if self._next_tick is None:
                self._next_tick = now + self.tick_period
            if now < self._next_tick:
                return 0
            while self._next_tick <= now:
                self._next_tick += self.tick_period
        due = self.buffer.due(now)
        if self.shared is not None:
            due += self.shared.due(now)
        if due:
            self._decide(due, now)
            self._gauges()
        c = self.completion
        c.tick(now)
        if c.grace:
            self._release_grace(c.expired(now))
        return len(due)

    def drain(self, shutdown: bool = False) -> int:
        """Decide every buffered trace now. On shutdown with the Collector's
        ``drop_pending_traces_on_shutdown``, they are dropped undecided
        instead, as there (counted as not sampled by trigger shutdown)."""
        items = self.buffer.drain()
        if self.shared is not None:
            items += self.shared.drain()
        if shutdown and self.cfg.sampler.drop_pending_traces_on_shutdown:
            for t, _trigger in items:
                self.buffer.finish(t, False, "", MAX_T)
                if self.tracker is not None:
                    self.tracker.done(t.trace_id)
            if items:
                self.metrics.traces_decided_total.labels("not_sampled", "", "shutdown").inc(len(items))
                self.account.decisions({("not_sampled", "", "shutdown"): len(items)}, 0)
        else:
            self._decide(items, self.clock())
        self._release_grace(self.completion.expired(0.0, everything=True))
        self.completion.fold()
        self._gauges()
        return len(items)

    def _decide(self, items, now: float) -> None:
        # Counts are gathered per call and applied once per label set:
        # prometheus-client's labels()/inc() cost more than a decision.
        m = self.metrics
        decide = self.decider.decide
        buf = self.buffer
        sized = self.decider.needs_size
        finish = buf.finish
        consistency = buf.consistency
        tol = self.skew_tolerance_ns
        record = self.record_policy
        recent = self.account.recent.append
        observer = self.observer
        shared = self.shared
        decided: dict[tuple[str, str, str], int] = {}
        no_root = dups = 0
        orphans: dict[str, int] = {}
        skewed: dict[str, int] = {}
        skew_amounts: list[tuple[str, int]] = []
        blobs: list[bytes] = []
        size = spans = kept_spans = 0
        services: dict[str, list] = {}
        tids: list[bytes] = []
        completion = self.completion
        # sidecar mode: a held trace coming back was observed when first decided
        completion.decided(items if shared is None else shared.fresh(items), now)
        grace = completion.grace_enabled
        parts: list[tuple] = []   # per trace, for an exporter to isolate a refused one
        for t, trigger in items:
            # sidecar mode: a held trace comes back with its final decision
            dec = shared.settled(t) if shared is not None else None
            if dec is None:
                d, orph, skew, missing_root = consistency(t, tol, skew_amounts)
                dups += d
                for svc, k in orph.items():
                    orphans[svc] = orphans.get(svc, 0) + k
                for svc, k in skew.items():
                    skewed[svc] = skewed.get(svc, 0) + k
                if missing_root:
                    no_root += 1
                if sized:
                    t.encoded_size = encoded_size(t, buf)
                dec = decide(t)
                if shared is not None:
                    dec = shared.review(t, dec, now, trigger)
                    if dec is None:
                        continue    # held: not sampled only if nobody keeps it
            extra = self._policy_attr(dec.policy) if record and dec.sampled else b""
            held = grace and not dec.sampled and not dec.dropped
            if held:
                # held for late spans (completion.py): remembered as not
                # sampled now, finished when it leaves the grace
                buf.remember(t.trace_id, False, dec.policy, dec.threshold)
                self._release_grace(completion.hold(t, dec, now))
                out = None
            else:
                out = finish(t, dec.sampled, dec.policy, dec.threshold, extra)
            if observer is not None:
                observer(t, trigger, dec, out)
            if dec.sampled:
                label = "sampled"
                n = t.span_count
                kept_spans += n
                assert out is not None   # finish gives a kept trace's blob
                blob, per_service = out
                for svc, (k, nb) in per_service.items():
                    row = services.get(m.service(svc))
                    if row is None:
                        services[m.service(svc)] = [k, nb]
                    else:
                        row[0] += k
                        row[1] += nb
                blobs.append(blob)
                tids.append(t.trace_id)
                parts.append((size + len(blob), n, per_service, t.trace_id))
                # raw here, rendered only when /api/status asks (recent_kept)
                recent(Kept(t.trace_id, dec.policy, trigger, n, per_service, dec.threshold,
                            time.time(), t.root_service, t.root_name,
                            t.max_end - t.min_start, t.status_mask))
                size += len(blob)
                spans += n
                if size >= EXPORT_ITEM_BYTES:
                    self._export(b"".join(blobs), spans, services, tids, now, parts)
                    blobs, size, spans, services, tids, parts = [], 0, 0, {}, [], []
            else:
                label = "dropped" if dec.dropped else "not_sampled"
                if self.tracker is not None and not held:
                    self.tracker.done(t.trace_id)
            key = (label, dec.policy, trigger)
            decided[key] = decided.get(key, 0) + 1
        if blobs:
            self._export(b"".join(blobs), spans, services, tids, now, parts)
        self.account.decisions(decided, kept_spans)
        for key, n in decided.items():
            m.traces_decided_total.labels(*key).inc(n)
        errors = self.decider.errors
        if errors:
            for name, n in errors.items():
                m.policy_evaluation_errors_total.labels(name).inc(n)
            errors.clear()
        if no_root:
            m.traces_without_root_total.inc(no_root)
        if dups:
            m.duplicate_spans_total.inc(dups)
        for svc, k in orphans.items():
            m.orphan_spans_total.labels(m.service(svc)).inc(k)
        for svc, k in skewed.items():
            m.clock_skew_spans_total.labels(m.service(svc)).inc(k)
        for svc, ns in skew_amounts:
            m.clock_skew_seconds.labels(m.service(svc)).observe(ns / 1e9)

    def _policy_attr(self, policy: str) -> bytes:
        a = self._policy_attrs.get(policy)
        if a is None:
            a = self._policy_attrs[policy] = policy_attribute(policy)
        return a

    def _export(self, blob: bytes, spans: int, services: dict[str, list], trace_ids, now,
                parts=None) -> None:
        """Hand kept spans to every exporter; ``services``: label → [spans,
        span bytes as received]. Cost counts the received bytes of what is
        kept, so exported <= received and the saving ratio is exact."""
        counts = {svc: row[0] for svc, row in services.items()}
        ack = None
        if self.tracker is not None:
            ack = self.tracker.take(trace_ids, len(self.exporters))
        for exp in self.exporters:
            exp.submit(Item(blob, spans, counts, trace_ids, now, ack, parts))
        self.account.exported(services)
        for svc, (n, nb) in services.items():
            self.metrics.cost_usd_total.labels(svc, "exported").inc(nb * self.usd_per_byte_of(svc))

    def _gauges(self) -> None:
        b = self.buffer
        m = self.metrics
        m.buffer_spans.set(b.nspans)
        m.buffer_bytes.set(b.nbytes)
        m.buffer_traces.set(b.ntraces)
        if self.shared is not None:
            self.shared.gauges()
        c = self.completion
        if c.grace_enabled:
            m.dropped_grace_bytes.set(c.grace_bytes)
            m.dropped_grace_traces.set(len(c.grace))
