"""The hand-off between service.workers: frames of [length][spans][record
bytes][request, then its span records] over a Unix socket, cut correctly
out of pieces of any size, the parts of one loop tick sent as one frame in
one write, a peer that is down waited for, and a frame cut off by its
sender dying counted as lost."""
import asyncio
import random
import socket
import struct

from traceo_sampler import workers
from traceo_sampler.telemetry import Metrics


def _frame(body: bytes, spans: int, recs: int = 0) -> bytes:
    return struct.pack(">III", len(body), spans, recs) + body


def test_frames_cut_out_of_any_pieces():
    rnd = random.Random(3)
    frames = [(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300))), rnd.randrange(1000),
               rnd.randrange(2) * 48) for _ in range(60)]
    stream = b"".join(_frame(b, s, r) for b, s, r in frames)
    for trial in range(30):
        r = workers.FrameReader()
        got, pos = [], 0
        while pos < len(stream):
            step = 1 if trial == 0 else rnd.randrange(1, 700)
            got += r.feed(stream[pos:pos + step])
            pos += step
        assert got == frames
        assert r.cut() == (0, 0)


def test_an_unfinished_frame_is_reported_with_its_spans():
    r = workers.FrameReader()
    assert r.feed(_frame(b"abc", 3) + _frame(b"defgh", 7)[:13]) == [(b"abc", 3, 0)]
    assert r.cut() == (13, 7)
    r.feed(b"\x00\x00")            # not even a header
    assert r.cut() == (2, -1)


class _Pipe:
    def __init__(self):
        self.got = []

    def ingest(self, data):
        if data == b"bad":
            raise ValueError("bad part")
        self.got.append(data)


async def _until(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


def _count(m, outcome):
    return m.worker_forwarded_spans_total.labels(outcome)._value.get()


def test_parts_of_one_tick_go_as_one_frame_in_one_write(tmp_path):
    async def main():
        m = Metrics()
        pipe = _Pipe()
        inb = workers.Inbound(str(tmp_path / "w1.sock"), pipe, m)
        await inb.start()
        peer = workers.Peer(1, str(tmp_path / "w1.sock"), m)
        peer.start()
        await _until(lambda: peer.connected)
        writes = []
        t = peer.conn.transport
        orig = t.writelines
        t.writelines = lambda chunks: (writes.append(len(chunks)), orig(chunks))
        parts = [bytes([k]) * (1000 + k) for k in range(20)]
        for k, p in enumerate(parts):
            peer.send(p, k + 1)
        await _until(lambda: len(pipe.got) == 1)
        # one frame, one write, one ingest for the whole tick
        assert pipe.got == [b"".join(parts)] and writes == [21]
        assert _count(m, "sent") == sum(range(1, 21))
        # parts with their span records: the records follow the parts in the
        # same order; a part without them sends the frame without any
        peer.send(b"AA", 1, b"a" * 48)
        peer.send(b"BBB", 2, b"b" * 96)
        await _until(lambda: len(pipe.got) == 2)
        # (not a Pipeline: the records are cut off before its ingest)
        assert pipe.got[1] == b"AABBB"
        frames = []
        t.writelines = lambda chunks: (frames.append(b"".join(chunks)), orig(chunks))
        peer.send(b"CC", 1, b"c" * 48)
        peer.send(b"DD", 1)
        await _until(lambda: len(pipe.got) == 3)
        assert pipe.got[2] == b"CCDD" and frames == [_frame(b"CCDD", 2, 0)]
        peer.send(b"EE", 1, b"e" * 48)
        peer.send(b"FF", 1, b"f" * 48)
        await _until(lambda: len(pipe.got) == 4)
        assert frames[1] == _frame(b"EEFF" + b"e" * 48 + b"f" * 48, 2, 96)
        t.writelines = orig
        del pipe.got[1:]
        peer.send(b"bad", 1)          # an ingest error does not stop the hand-off
        await asyncio.sleep(0.05)
        peer.send(b"last", 2)
        await _until(lambda: len(pipe.got) == 2)
        assert pipe.got[1] == b"last" and _count(m, "sent") == sum(range(1, 21)) + 7 + 3
        await peer.close(2.0)
        await _until(lambda: inb.open == 0)
        await inb.stop()
    asyncio.run(main())


def test_parts_wait_for_a_peer_that_is_down(tmp_path):
    async def main():
        m = Metrics()
        pipe = _Pipe()
        path = str(tmp_path / "w1.sock")
        peer = workers.Peer(1, path, m)
        peer.start()
        await asyncio.sleep(0.1)       # nobody listens yet (restarting)
        assert peer.congested()        # the receivers push back meanwhile
        peer.send(b"early", 5)
        assert peer.pending_bytes == 5 and _count(m, "sent") == 0
        inb = workers.Inbound(path, pipe, m)
        await inb.start()
        await _until(lambda: pipe.got == [b"early"])
        assert _count(m, "sent") == 5 and not peer.congested()
        await peer.close(2.0)
        await inb.stop()
    asyncio.run(main())


def test_a_sender_dying_mid_frame_loses_that_frame_counted(tmp_path):
    async def main():
        m = Metrics()
        pipe = _Pipe()
        path = str(tmp_path / "w0.sock")
        inb = workers.Inbound(path, pipe, m)
        await inb.start()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(_frame(b"whole", 4) + _frame(b"x" * 5000, 9)[:3000])
        await _until(lambda: pipe.got == [b"whole"])
        s.close()                      # as the kernel does when the sender is killed
        await _until(lambda: _count(m, "lost") == 9)
        assert inb.open == 0 and pipe.got == [b"whole"]
        await inb.stop()
    asyncio.run(main())


class _Logged:
    def __init__(self, acked):
        self.acked = acked


class _LogPipe(_Pipe):
    """As the log's front: each ingest answers once its part is logged."""

    def __init__(self):
        super().__init__()
        self.futs = []

    def ingest(self, data):
        super().ingest(data)
        f = asyncio.get_running_loop().create_future()
        self.futs.append(f)
        return _Logged(f)


def test_with_acks_every_part_of_a_frame_is_answered_by_its_one_ack(tmp_path):
    async def main():
        m = Metrics()
        pipe = _LogPipe()
        path = str(tmp_path / "w1.sock")
        inb = workers.Inbound(path, pipe, m, acks=True)
        await inb.start()
        peer = workers.Peer(1, path, m, acks=True)
        peer.start()
        await _until(lambda: peer.connected)
        a, b = peer.send(b"one", 1), peer.send(b"two", 1)    # one tick: one frame
        await _until(lambda: len(pipe.futs) == 1)
        c = peer.send(b"three", 1)                           # the next frame
        await _until(lambda: len(pipe.futs) == 2)
        assert pipe.got == [b"onetwo", b"three"]
        await asyncio.sleep(0.05)
        assert not (a.done() or b.done() or c.done())        # not logged yet
        pipe.futs[1].set_result("")         # answers go in frame order:
        await asyncio.sleep(0.05)
        assert not c.done()                 # the second waits for the first
        pipe.futs[0].set_result("disk full")
        assert await a == "worker 1 could not log its part" and await b == await a
        assert await c == ""
        d = peer.send(b"four", 1)
        await _until(lambda: len(pipe.futs) == 3)
        peer.conn.transport.abort()          # the connection to the owner breaks
        assert "went away" in await asyncio.wait_for(d, 2.0)
        await peer.close(1.0)
        await inb.stop()
    asyncio.run(main())


def test_a_worker_is_ready_only_once_every_peer_is_connected(tmp_path):
    """A worker says ready (so /readyz is 200) only once its hand-off
    reaches every peer: a part for a peer not yet connected makes the
    receivers push back, so a client's first request would be refused. The
    wait is bounded, so a peer that never comes does not stop the start."""
    async def main():
        m = Metrics()
        paths = [str(tmp_path / f"w{k}.sock") for k in (1, 2)]
        peers = [workers.Peer(k, path, m) for k, path in zip((1, 2), paths)]
        for p in peers:
            p.start()
        waiting = asyncio.ensure_future(workers.peers_connected(peers, 5.0))
        first = workers.Inbound(paths[0], _Pipe(), m)
        await first.start()
        await asyncio.sleep(0.3)
        assert not waiting.done()           # one peer is still starting
        assert peers[1].congested()         # and a request now would be pushed back
        second = workers.Inbound(paths[1], _Pipe(), m)
        await second.start()
        assert await asyncio.wait_for(waiting, 2.0) is True
        assert not any(p.congested() for p in peers)
        await second.stop()
        lonely = workers.Peer(3, str(tmp_path / "w3.sock"), m)
        lonely.start()
        t0 = asyncio.get_running_loop().time()
        assert await workers.peers_connected([lonely], 0.3) is False
        assert asyncio.get_running_loop().time() - t0 < 1.0
        for p in (*peers, lonely):
            await p.close(0.5)
        await first.stop()
    asyncio.run(main())
