"""The Kafka receiver's offset bookkeeping, without a broker: commits stop
below the lowest message still holding an undecided or unacknowledged
trace; the handoff metadata round-trips."""
import os

from aiokafka.structs import TopicPartition

from traceo_sampler.receivers.kafka import (MAX_METADATA, OffsetTracker, _fp, _Part,
                                            parse_handoff)


def test_commit_point_waits_for_decision_and_ack():
    tr = OffsetTracker()
    p = _Part(TopicPartition("t", 0))
    a, b, c = os.urandom(16), os.urandom(16), os.urandom(16)
    tr.hold(p, 0, {a})
    tr.hold(p, 1, {b, c})
    tr.hold(p, 2, {a})            # a second message of trace a
    p.next = 3
    assert p.commit_point() == 0
    tr.done(b)                    # b decided, not kept
    assert p.commit_point() == 0
    ack = tr.take([a], 2)         # a kept, handed to two exporters
    assert p.commit_point() == 0 and ack is not None
    ack()
    assert p.commit_point() == 0  # one exporter has not acknowledged
    ack()
    assert p.commit_point() == 1  # c still undecided at offset 1
    tr.settle([c], {})            # c not buffered (late span of a dropped trace)
    assert p.commit_point() == 3 and not p.tids and not tr.holds


def test_take_without_exporters_and_dead_partition():
    tr = OffsetTracker()
    p = _Part(TopicPartition("t", 1))
    a = os.urandom(16)
    tr.hold(p, 5, {a})
    p.next = 6
    assert tr.take([a], 0) is None and p.commit_point() == 6
    tr.hold(p, 6, {a})
    ack = tr.take([a], 1)
    p.dead = True                 # revoked meanwhile: a late ack changes nothing
    ack()
    assert p.outstanding == {6: 1}


def test_handoff_round_trip_and_size_limit():
    p = _Part(TopicPartition("t", 2))
    tr = OffsetTracker()
    tids = [os.urandom(16) for _ in range(50)]
    for i, t in enumerate(tids):
        tr.hold(p, i, {t})
    p.next = 80
    r, keep = parse_handoff(p.handoff())
    assert r == 80 and keep.fps == {_fp(t) for t in tids}
    assert all(t in keep for t in tids)
    assert sum(os.urandom(16) in keep for _ in range(1000)) <= 1
    assert parse_handoff("")[0] == -1 and len(parse_handoff("")[1]) == 0
    assert parse_handoff("traceo1:x:!!")[0] == -1
    assert parse_handoff("traceo1:5:b3:!!")[0] == -1
    # too many for the exact list: a Bloom filter filling the limit
    more = [os.urandom(16) for _ in range(1500)]
    for i, t in enumerate(more):
        tr.hold(p, 100 + i, {t})
    text = p.handoff()
    assert 0 < len(text) <= MAX_METADATA < 4096
    r, keep = parse_handoff(text)
    assert r == 80 and all(t in keep for t in tids + more)
    assert sum(os.urandom(16) in keep for _ in range(5000)) < 100     # < 2 %
    for i in range(20000):        # beyond 1 % false positives: no handoff
        tr.hold(p, 2000 + i, {os.urandom(16)})
    assert p.handoff() == ""
