"""simulate's recorder: bounded time buckets, latency bins, the what-if join."""
from traceo_sampler.simulate.compare import Join
from traceo_sampler.simulate.replay import (LAT_BINS, MAX_BUCKETS, Recorder, TimeBuckets, TraceFact,
                                            bin_edges_ms, latency_bin)


def test_time_buckets_double_their_width_instead_of_growing():
    tb = TimeBuckets()
    n = 5 * MAX_BUCKETS
    for s in range(n):
        tb.add(s * 1_000_000_000, kept=s % 4 == 0, spans=3, error=s % 10 == 0)
    cols = tb.columns()
    assert len(cols["traces"]) <= MAX_BUCKETS
    assert cols["bucket_s"] in (8.0, 16.0)       # 1 s doubled until the buckets fit
    assert sum(cols["traces"]) == n and sum(cols["spans"]) == 3 * n
    assert sum(cols["traces_kept"]) == len(range(0, n, 4))
    assert sum(cols["error_traces"]) == len(range(0, n, 10))
    assert cols["start_unix_s"] == sorted(cols["start_unix_s"])


def test_latency_bins_are_log_spaced():
    edges = bin_edges_ms()
    assert len(edges) == LAT_BINS and edges[1] == 0.001 and edges[31] == 1.0 and edges[61] == 1000.0
    assert latency_bin(0) == 0 and latency_bin(999) == 0
    assert latency_bin(1_000_000) == 31                    # exactly 1 ms
    assert latency_bin(1_300_000) == 32
    assert edges[latency_bin(2_500_000_000)] <= 2500 < edges[latency_bin(2_500_000_000) + 1]
    assert latency_bin(10**20) == LAT_BINS - 1


def _fact(kept, policy="p", error=False, services=("a",)):
    return TraceFact(kept, policy, services, 2, 100, error)


def test_join_pairs_decisions_in_either_order():
    a, b = Recorder(), Recorder()
    j = Join(a, b)
    a.sink(b"1", _fact(True, "errors", error=True))
    b.sink(b"1", _fact(False, ""))                         # kept only by current
    b.sink(b"2", _fact(True, "slow", services=("a", "b")))
    a.sink(b"2", _fact(False, ""))                         # kept only by proposed
    a.sink(b"3", _fact(True, "x"))
    b.sink(b"3", _fact(True, "y"))
    a.sink(b"4", _fact(False, ""))                         # never paired
    assert j.both == 1 and j.neither == 0
    assert j.only[0].by_policy == {"errors": 1} and j.only[1].by_service == {"a": 1, "b": 1}
    assert j.unpaired == (1, 0)
    assert j.error_traces == 1 and j.errors_kept == [1, 0] and j.errors_lost == [b"1".hex()]
