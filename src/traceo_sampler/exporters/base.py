"""The exporter interface and the bounded queue every exporter sits behind.

Items are already-encoded ``resource_spans`` fields of one trace (or of late
spans); a batch is their concatenation, which is a valid
``ExportTraceServiceRequest``. The queue is bounded in bytes. What happens
when it is full is the exporter's ``queue_full`` policy:

* ``block`` (default): the receivers push back — gRPC ``RESOURCE_EXHAUSTED``
  with a retry delay, HTTP 429 with ``Retry-After`` — so clients keep the
  spans rather than the sampler accepting what it would drop. Traces already
  buffered are still decided and queued (the buffer bounds that overshoot).
* ``drop_oldest``: the oldest queued items make room; counted and logged.

Nothing is dropped silently: every drop is counted in
``export_dropped_spans_total{exporter}`` and logged with its trace IDs.

A batch the backend refuses permanently *as invalid data* (``refused(exc)``:
gRPC INVALID_ARGUMENT, HTTP 400, an encoding error) is split in halves and
each half sent again, down to the single trace at fault, so one bad trace
does not cost the others of its batch; each trace refused alone is counted
in ``export_refused_traces_total{exporter}`` and logged by ID.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time

log = logging.getLogger("traceo_sampler.exporters")


class Item:
    __slots__ = ("blob", "spans", "services", "trace_ids", "t0", "ack", "parts")

    def __init__(self, blob: bytes, spans: int, services: dict[str, int], trace_ids, t0: float,
                 ack=None, parts=None):
        self.blob = blob
        self.spans = spans
        self.services = services    # service → spans, for per-service counts
        self.trace_ids = trace_ids
        self.t0 = t0                # decision trigger time (monotonic)
        # called once the backend acknowledged the item (never when it is
        # dropped): the Kafka receiver commits offsets on it
        self.ack = ack
        # when the item holds several traces: (end offset in blob, spans,
        # {service: (spans, bytes)}, trace id) of each, in order, so a
        # refused one can be isolated
        self.parts = parts

    def split(self, label) -> list["Item"]:
        """One item per trace (``label``: service → its metric label); the
        item's ack runs once all of them are."""
        left = [len(self.parts)]

        def one_acked() -> None:
            left[0] -= 1
            if left[0] == 0:
                self.ack()

        ack = one_acked if self.ack is not None else None
        out, start = [], 0
        for end, spans, per_service, tid in self.parts:
            services: dict[str, int] = {}
            for svc, (k, _nb) in per_service.items():
                services[label(svc)] = services.get(label(svc), 0) + k
            out.append(Item(self.blob[start:end], spans, services, [tid], self.t0, ack))
            start = end
        return out


class Exporter:
    """Subclasses implement ``name`` and ``async send(payload: bytes) -> None``
    (raise on failure); ``retryable(exc)`` says whether to try again and
    ``retry_after(exc)`` the delay the server asked for, if any."""

    name = "exporter"

    def __init__(self, metrics, queue_max_bytes: int, batch_max_spans: int = 2048,
                 batch_max_bytes: int = 4 << 20, queue_full: str = "block",
                 retry=None):
        self.metrics = metrics
        self.queue_max_bytes = queue_max_bytes
        self.queue_full = queue_full
        self.retry_enabled = retry.enabled if retry is not None else True
        self.retry_initial = retry.initial_interval.seconds if retry is not None else 0.1
        self.retry_max_interval = retry.max_interval.seconds if retry is not None else 5.0
        self.retry_max_elapsed = retry.max_elapsed.seconds if retry is not None else 300.0
        self.batch_max_spans = batch_max_spans
        self.batch_max_bytes = batch_max_bytes
        self._q: collections.deque[Item] = collections.deque()
        self.queued_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._abandon_at: float | None = None
        self._inflight: list[Item] = []
        # whether the last attempt reached the backend (for /readyz)
        self.reachable = True
        self.last_error = ""
        self.sent_spans = 0
        self.dropped_spans = 0
        self.failed_batches = 0

    # -------------------------------------------------------------- queue
    @property
    def full(self) -> bool:
        return self.queued_bytes >= self.queue_max_bytes

    @property
    def blocking(self) -> bool:
        """True while receivers should refuse new data for this exporter."""
        return self.queue_full == "block" and self.full

    def submit(self, item: Item) -> bool:
        n = len(item.blob)
        if self.queue_full == "drop_oldest":
            dropped = []
            # queued_bytes includes the batch in flight; only items still
            # waiting in the deque can be dropped
            while self._q and self.queued_bytes + n > self.queue_max_bytes:
                old = self._q.popleft()
                self.queued_bytes -= len(old.blob)
                dropped.append(old)
            if dropped:
                self._drop(dropped, "queue full, oldest dropped")
        self._q.append(item)
        self.queued_bytes += n
        self.metrics.exporter_queue_bytes.labels(self.name).set(self.queued_bytes)
        self._idle.clear()
        self._wake.set()
        return True

    def _drop(self, items: list[Item], why: str) -> None:
        spans = sum(i.spans for i in items)
        self.dropped_spans += spans
        self.metrics.export_dropped_spans_total.labels(self.name).inc(spans)
        ids = [tid.hex() for i in items for tid in i.trace_ids][:20]
        log.warning("exporter %s: dropped %d spans (%s); trace ids: %s", self.name, spans, why,
                    " ".join(ids))

    def _take_batch(self) -> list[Item]:
        batch: list[Item] = []
        spans = size = 0
        q = self._q
        while q:
            it = q[0]
            if batch and (spans + it.spans > self.batch_max_spans
                          or size + len(it.blob) > self.batch_max_bytes):
                break
            q.popleft()
            batch.append(it)
            spans += it.spans
            size += len(it.blob)
        return batch

    # -------------------------------------------------------------- sending
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"export-{self.name}")

    async def _run(self) -> None:
        while True:
            if not self._q:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            self._inflight = batch
            size = sum(len(i.blob) for i in batch)
            sent, failed, refused = await self._deliver(batch)
            self._inflight = []
            self.queued_bytes -= size
            self.metrics.exporter_queue_bytes.labels(self.name).set(self.queued_bytes)
            if sent:
                now = time.monotonic()
                m = self.metrics
                for it in sent:
                    self.sent_spans += it.spans
                    m.decision_latency_seconds.observe(now - it.t0)
                    if it.ack is not None:
                        it.ack()
                    for svc, n in it.services.items():
                        m.spans_exported_total.labels(svc, self.name).inc(n)
            if failed:
                self.failed_batches += 1
                self._drop(failed, "export failed")
            if refused:
                self.metrics.export_refused_traces_total.labels(self.name).inc(
                    sum(len(i.trace_ids) for i in refused))
                self._drop(refused, "refused by the backend as invalid")

    async def _deliver(self, batch: list[Item]) -> tuple[list[Item], list[Item], list[Item]]:
        """Send ``batch``: (sent, failed, refused). A batch refused as invalid
        is split in halves until the items at fault are alone."""
        outcome = await self._send_with_retry(b"".join(i.blob for i in batch))
        if outcome == "ok":
            return batch, [], []
        if outcome == "failed":
            return [], batch, []
        if len(batch) == 1:
            it = batch[0]
            if it.parts is None or len(it.parts) < 2:
                return [], [], batch
            batch = it.split(self.metrics.service)
        mid = len(batch) // 2
        sent, failed, refused = await self._deliver(batch[:mid])
        s2, f2, r2 = await self._deliver(batch[mid:])
        return sent + s2, failed + f2, refused + r2

    async def _send_with_retry(self, payload: bytes) -> str:
        """Outcome: "ok", "refused" (permanently, as invalid data) or "failed"."""
        backoff = self.retry_initial
        deadline = time.monotonic() + self.retry_max_elapsed
        while True:
            try:
                await self.send(payload)
                self.reachable = True
                return "ok"
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                self.metrics.export_failures_total.labels(self.name).inc()
                self.reachable = not self.retryable(exc)
                self.last_error = str(exc)[:200]
                if self.refused(exc):
                    self.reachable = True  # it answered, about this data
                    log.warning("exporter %s: a batch of %d bytes refused as invalid: %s",
                                self.name, len(payload), exc)
                    return "refused"
                if not (self.retry_enabled and self.retryable(exc)):
                    log.error("exporter %s: permanent error, batch of %d bytes not sent: %s",
                              self.name, len(payload), exc)
                    return "failed"
                # exponential backoff with ±50 % jitter; the server's own
                # delay (RetryInfo / Retry-After) wins when it asks for more
                delay = backoff * random.uniform(0.5, 1.5)
                hint = self.retry_after(exc)
                if hint is not None and hint > delay:
                    delay = hint
                if self._stopping and self._abandon_at is not None:
                    deadline = min(deadline, self._abandon_at)
                if time.monotonic() + delay > deadline:
                    log.error("exporter %s: giving up on a batch of %d bytes: %s",
                              self.name, len(payload), exc)
                    return "failed"
                log.warning("exporter %s: %s; retrying in %.2fs", self.name, exc, delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self.retry_max_interval)

    def partial_success(self, ps) -> None:
        """An OTLP ExportTracePartialSuccess: the backend kept the rest; what
        it rejected is counted and logged, not retried."""
        if ps.rejected_spans:
            self.metrics.export_failures_total.labels(self.name).inc()
            self.metrics.export_rejected_spans_total.labels(self.name).inc(ps.rejected_spans)
            log.warning("exporter %s: backend rejected %d spans: %s", self.name,
                        ps.rejected_spans, ps.error_message)

    def retryable(self, exc: Exception) -> bool:
        return False

    def refused(self, exc: Exception) -> bool:
        """True when ``exc`` says the backend will never take this data (it
        is invalid), so a smaller batch without the bad trace may pass."""
        return False

    def retry_after(self, exc: Exception) -> float | None:
        return None

    async def send(self, payload: bytes) -> None:
        raise NotImplementedError

    async def flush(self, timeout: float) -> bool:
        """Wait until everything queued was sent (or given up on)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self, timeout: float) -> None:
        """Send what is queued, retrying until ``timeout``; then count and
        log by trace ID whatever could not be sent."""
        self._stopping = True
        self._abandon_at = time.monotonic() + timeout
        self._wake.set()
        done = await self.flush(timeout)
        if not done:
            left = self._inflight + list(self._q)
            self._inflight = []
            self._q.clear()
            if left:
                self._drop(left, "shutdown timeout")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.aclose()

    async def aclose(self) -> None:
        pass
