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


def test_what_if_in_process_twice_and_against_simulate(tmp_path):
    import struct

    from traceo_sampler import config
    from traceo_sampler.loadgen import TraceGenerator
    from traceo_sampler.simulate import simulate, what_if
    reqs = TraceGenerator(2, services=3, traces_per_s=100).build_requests(n_traces=200)
    cap = tmp_path / "c.pb"
    cap.write_bytes(b"".join(struct.pack(">I", len(r)) + r for r in reqs))
    a = tmp_path / "a.yaml"
    a.write_text("sampler:\n  policies:\n    - {name: e, type: status_code, status_code: {status_codes: [ERROR]}}\n")
    b = tmp_path / "b.yaml"
    b.write_text("sampler:\n  policies:\n    - {name: r, type: probabilistic, probabilistic: {sampling_percentage: 30}}\n")
    ca, cb = config.load(str(a)), config.load(str(b))
    first = what_if(ca, cb, [str(cap)])
    second = what_if(ca, cb, [str(cap)])                   # the same function, the same answer
    assert first == second
    assert first["current"] == simulate(ca, [str(cap)])
    assert first["proposed"]["traces_kept"] == simulate(cb, [str(cap)])["traces_kept"]
    d = first["diff"]
    assert d["kept_by_both"] + d["only_current"]["traces"] == first["current"]["traces_kept"]
    assert d["kept_by_both"] + d["only_proposed"]["traces"] == first["proposed"]["traces_kept"]
    assert d["kept_by_both"] + d["kept_by_neither"] + d["only_current"]["traces"] + \
        d["only_proposed"]["traces"] == 200
