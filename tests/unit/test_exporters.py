"""Exporter queue: bounded in bytes, never blocking the caller; what it
drops is counted; the file exporter writes Collector-style OTLP JSON."""
import asyncio
import json


from support_otlp import CaptureSink, make_request, trace
from traceo_sampler.config import FileExporter as FileCfg
from traceo_sampler.config import OtlpExporter as OtlpCfg
from traceo_sampler.exporters.base import Exporter, Item
from traceo_sampler.exporters.file import FileExporter
from traceo_sampler.exporters.otlp_grpc import OtlpGrpcExporter
from traceo_sampler.telemetry import Metrics


def item(raw: bytes, spans=1):
    # a request's bytes are a valid sequence of resource_spans fields
    return Item(raw, spans, {"svc": spans}, [b"\x01" * 16], 0.0)


class Stuck(Exporter):
    name = "stuck"

    def __init__(self, m, cap, queue_full):
        super().__init__(m, cap, queue_full=queue_full)
        self.release = asyncio.Event()
        self.sent = []

    async def send(self, payload):
        await self.release.wait()
        self.sent.append(payload)


def test_drop_oldest_makes_room_and_counts_without_blocking():
    async def main():
        m = Metrics()
        exp = Stuck(m, cap=3000, queue_full="drop_oldest")
        exp.start()
        raws = [make_request([trace(2)]) for _ in range(100)]
        for r in raws:
            assert exp.submit(item(r, 2))
            await asyncio.sleep(0)
        assert not exp.blocking
        dropped = exp.dropped_spans
        assert dropped > 0
        assert m.export_dropped_spans_total.labels("stuck")._value.get() == dropped
        exp.release.set()
        await exp.close(5)
        sent = b"".join(exp.sent)
        assert sent.endswith(raws[-1])          # the newest survived
        assert raws[1] not in sent               # an old one made room
        assert exp.sent_spans + dropped == 200
    asyncio.run(main())


def test_block_accepts_decided_traces_and_signals_backpressure():
    async def main():
        m = Metrics()
        exp = Stuck(m, cap=3000, queue_full="block")
        exp.start()
        for _ in range(50):
            exp.submit(item(make_request([trace(2)]), 2))
        assert exp.blocking and exp.dropped_spans == 0
        exp.release.set()
        assert await exp.flush(5)
        assert not exp.blocking and exp.sent_spans == 100
        await exp.close(1)
    asyncio.run(main())


def test_close_gives_up_after_timeout_and_counts():
    async def main():
        m = Metrics()
        exp = Stuck(m, cap=1 << 20, queue_full="block")
        exp.start()
        for _ in range(5):
            exp.submit(item(make_request([trace(3)]), 3))
        await asyncio.sleep(0.05)
        await exp.close(0.2)      # the backend never answers
        assert exp.dropped_spans >= 12   # everything not in flight, counted
    asyncio.run(main())


def test_otlp_exporter_sends_and_gives_up_when_down():
    async def main():
        m = Metrics()
        with CaptureSink() as sink:
            exp = OtlpGrpcExporter(OtlpCfg(endpoint=sink.endpoint, compression="gzip"), m)
            exp.start()
            raw = make_request([trace(3)])
            exp.submit(item(raw, 3))
            assert await exp.flush(10)
            await exp.close(5)
            assert sink.requests == [raw]
            assert m.spans_exported_total.labels("svc", "otlp")._value.get() == 3
        # nothing listens any more: retried, then counted as failed and dropped
        exp = OtlpGrpcExporter(OtlpCfg(endpoint=sink.endpoint), m)
        exp.retry_max_elapsed = 0.5
        exp.retry_initial = 0.05
        exp.start()
        exp.submit(item(raw, 3))
        assert await exp.flush(10)
        await exp.close(1)
        assert exp.dropped_spans == 3
        assert m.export_failures_total.labels("otlp")._value.get() >= 2
    asyncio.run(main())


def test_otlp_exporter_reconnects_within_its_retry_interval_after_an_outage():
    """gRPC's own reconnect backoff grows to 120 s: 20 s into an outage the
    channel's next attempt would be 2-10 s away, every retry failing at once
    meanwhile. It follows retry.max_interval (here 1 s) instead."""
    import socket
    import time

    from traceo_sampler.config import Duration, Retry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        m = Metrics()
        retry = Retry(initial_interval=Duration("100ms"), max_interval=Duration("1s"))
        exp = OtlpGrpcExporter(OtlpCfg(endpoint=f"127.0.0.1:{port}", retry=retry), m)
        exp.start()
        raw = make_request([trace(2)])
        exp.submit(item(raw, 2))
        await asyncio.sleep(20)
        assert exp.sent_spans == 0
        with CaptureSink(port) as sink:
            t0 = time.monotonic()
            assert await exp.flush(30)
            took = time.monotonic() - t0
            await exp.close(5)
            assert sink.requests == [raw]
        return took

    took = asyncio.run(main())
    assert took < 3.0, took


def test_file_exporter_writes_otlp_json_lines(tmp_path):
    async def main():
        m = Metrics()
        path = tmp_path / "out" / "kept.jsonl"
        exp = FileExporter(FileCfg(path=str(path)), m)
        exp.start()
        t = trace(2, status=2)
        exp.submit(item(make_request([t]), 2))
        await exp.close(5)
        lines = path.read_text().splitlines()
        assert len(lines) == 1
        d = json.loads(lines[0])
        spans = d["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert [s["spanId"] for s in spans] == [s["span_id"].hex() for s in t]
        assert spans[0]["traceId"] == t[0]["trace_id"].hex()
        assert spans[1]["parentSpanId"] == t[0]["span_id"].hex()
        assert spans[0]["status"]["code"] == 2
    asyncio.run(main())


def test_file_exporter_isolates_a_batch_it_cannot_encode(tmp_path):
    """A batch holding one trace OTLP JSON cannot hold (a string that is not
    UTF-8: the intake rejects such spans, this is the second line of
    defence) is split; the other traces are written, the bad one is counted
    and logged by its ID."""
    async def main():
        m = Metrics()
        path = tmp_path / "kept.jsonl"
        exp = FileExporter(FileCfg(path=str(path)), m)
        traces = [trace(2) for _ in range(9)]
        traces[4][1]["name"] = "BADNAME"
        items = []
        for t in traces:
            raw = make_request([t]).replace(b"BADNAME", b"\xffADNAME")
            items.append(Item(raw, 2, {"svc": 2}, [t[0]["trace_id"]], 0.0))
        for it in items:   # queued before the exporter runs: one batch
            exp.submit(it)
        exp.start()
        assert await exp.flush(30)
        await exp.close(5)
        written = set()
        for line in path.read_text().splitlines():
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    written.update(sp["traceId"] for sp in ss["spans"])
        want = {t[0]["trace_id"].hex() for i, t in enumerate(traces) if i != 4}
        assert written == want
        assert m.export_refused_traces_total.labels("file")._value.get() == 1
        assert exp.dropped_spans == 2 and exp.sent_spans == 16
    asyncio.run(main())


def test_file_exporter_worker_restarted_when_it_dies(tmp_path):
    """The encoding runs in a worker process; when it dies the batch is
    retried on a new one, nothing lost."""
    import os
    import signal

    async def main():
        m = Metrics()
        path = tmp_path / "kept.jsonl"
        exp = FileExporter(FileCfg(path=str(path)), m)
        exp.start()
        exp.submit(item(make_request([trace(2)]), 2))
        assert await exp.flush(30)
        pid = await exp.worker_pid()
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        exp.submit(item(make_request([trace(3)]), 3))
        assert await exp.flush(30)
        await exp.close(5)
        assert len(path.read_text().splitlines()) == 2
        assert exp.sent_spans == 5 and exp.dropped_spans == 0
    asyncio.run(main())
