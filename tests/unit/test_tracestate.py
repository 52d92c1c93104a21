"""OpenTelemetry consistent probability sampling values (tracestate.py).

Thresholds from percentages, th encoding, randomness from rv or the trace
ID, and the merge of ``ot=th:`` into an incoming tracestate."""
from __future__ import annotations

import math
import random

import pytest

from traceo_sampler import tracestate as ts
from traceo_sampler.tracestate import (
    MAX_T, decode_th, encode_th, merge_threshold, ot_subkeys, probability, randomness,
    threshold_for_percentage,
)


def test_max_t():
    assert MAX_T == 2 ** 56


# ------------------------------------------------------------- thresholds
@pytest.mark.parametrize("pct,t", [
    (100, 0),
    (150, 0),                     # clamped
    (0, MAX_T),
    (-5, MAX_T),                  # clamped
    (50, 0x80000000000000),
    (25, 0xC0000000000000),
    (75, 0x40000000000000),
    (12.5, 0xE0000000000000),
    (10, 0xE6666666666666),       # 2**56 * 0.9 = 0xe6666666666666.6 -> rounded
    (1, 0xFD70A3D70A3D71),
    (0.5, 0xFEB851EB851EB8),       # 2**56 * 0.005 = ...639.68: rounded, not truncated
])
def test_threshold_for_percentage(pct, t):
    assert threshold_for_percentage(pct) == t


@pytest.mark.parametrize("pct", [100 / 3, 200 / 3, 0.1, 99.9, 7.77])
def test_threshold_for_percentage_within_float_precision(pct):
    """Non-dyadic probabilities: T = 2**56 * (1 - p) up to double precision
    (2**56 * p carries 53 significant bits, so a few units in the last place)."""
    from fractions import Fraction
    exact = MAX_T * (1 - Fraction(pct) / 100)
    assert abs(threshold_for_percentage(pct) - exact) <= 16


@pytest.mark.parametrize("pct", [100, 99.9, 75, 50, 33.3, 10, 1, 0.1, 0.001, 1e-9])
def test_probability_inverts_threshold(pct):
    t = threshold_for_percentage(pct)
    assert 0 <= t <= MAX_T
    assert probability(t) == pytest.approx(pct / 100, rel=1e-9)


@pytest.mark.parametrize("t,p", [(0, 1.0), (MAX_T, 0.0), (MAX_T // 2, 0.5), (MAX_T // 4 * 3, 0.25)])
def test_probability(t, p):
    assert probability(t) == p


def test_threshold_monotonic_in_percentage():
    ts_ = [threshold_for_percentage(p) for p in (0, 0.01, 1, 10, 50, 90, 99.99, 100)]
    assert ts_ == sorted(ts_, reverse=True)
    assert len(set(ts_)) == len(ts_)


# --------------------------------------------------------------- encoding
@pytest.mark.parametrize("t,text", [
    (0, "0"),
    (0x80000000000000, "8"),
    (0xC0000000000000, "c"),
    (0xE6666666666666, "e6666666666666"),
    (0xFD70A3D70A3D71, "fd70a3d70a3d71"),
    (0x00010000000000, "0001"),       # leading zeros kept, trailing dropped
    (1, "00000000000001"),
    (0xFFFFFFFFFFFFFF, "ffffffffffffff"),
    (0xAB000000000000, "ab"),
    (0x0A0A0000000000, "0a0a"),
])
def test_encode_decode_th(t, text):
    assert encode_th(t) == text
    assert decode_th(text) == t


@pytest.mark.parametrize("text,t", [
    ("8", 0x80000000000000),
    ("80", 0x80000000000000),            # trailing zeros are allowed on input
    ("80000000000000", 0x80000000000000),
    ("0", 0),
    ("00000000000000", 0),
    ("fd70a3d70a3d71", 0xFD70A3D70A3D71),
])
def test_decode_th(text, t):
    assert decode_th(text) == t


@pytest.mark.parametrize("text", [
    "", "800000000000000",   # empty; 15 digits
    "g", "8x", "zz",         # not hex
    "-1", "+8", " 8", "8 ", "1_0", "0x8",  # int() would accept these; the spec does not
])
def test_decode_th_rejects(text):
    assert decode_th(text) is None


@pytest.mark.parametrize("pct", [100, 90, 75, 50, 33.3, 25, 10, 5, 1, 0.5, 0.01, 1e-6])
def test_percentage_threshold_round_trip(pct):
    t = threshold_for_percentage(pct)
    text = encode_th(t)
    assert 1 <= len(text) <= 14
    assert text == "0" or not text.endswith("0")
    assert decode_th(text) == t
    assert probability(decode_th(text)) == pytest.approx(pct / 100, rel=1e-9)


def test_random_threshold_round_trip():
    rng = random.Random(7)
    for _ in range(2000):
        t = rng.randrange(0, MAX_T)
        assert decode_th(encode_th(t)) == t


# ------------------------------------------------------------- randomness
def test_randomness_from_trace_id_last_7_bytes_big_endian():
    tid = bytes(range(16))
    assert randomness(tid, "") == 0x090A0B0C0D0E0F
    assert randomness(b"\xff" * 9 + bytes(7), "") == 0
    assert randomness(bytes(9) + b"\xff" * 7, "") == MAX_T - 1
    assert randomness(bytes(15) + b"\x01", "") == 1
    assert randomness(bytes(9) + b"\x01" + bytes(6), "") == 1 << 48


@pytest.mark.parametrize("state,r", [
    ("ot=rv:0123456789abcd", 0x0123456789ABCD),
    ("ot=th:8;rv:0123456789abcd", 0x0123456789ABCD),
    ("ot=rv:0123456789abcd;th:8", 0x0123456789ABCD),
    ("vendor=a,ot=rv:00000000000000", 0),
    ("vendor=a, ot=rv:ffffffffffffff ,other=b", MAX_T - 1),
])
def test_randomness_rv_wins(state, r):
    tid = bytes(range(16))
    assert randomness(tid, state) == r


@pytest.mark.parametrize("state", [
    "",
    "vendor=rv:0123456789abcd",          # rv outside the ot entry
    "ot=th:8",                           # no rv
    "ot=rv:0123456789abc",               # 13 digits
    "ot=rv:0123456789abcde",             # 15 digits
    "ot=rv:0123456789abcg",              # not hex
    "ot=rv:-0000000000001",              # int() accepts it; not 14 hex digits
    "ot=rv:+0000000000001",
    "ot=rv:0x000000000001",
    "ot=rv:0_00000000000a",
])
def test_randomness_falls_back_to_trace_id(state):
    tid = bytes(range(16))
    assert randomness(tid, state) == 0x090A0B0C0D0E0F


def test_randomness_is_never_negative_or_too_big():
    rng = random.Random(3)
    for state in ("", "ot=rv:-0000000000001", "ot=rv:ffffffffffffff", "ot=rv:+fffffffffffff"):
        for _ in range(50):
            r = randomness(rng.randbytes(16), state)
            assert 0 <= r < MAX_T, (state, r)


def test_ot_subkeys():
    assert ot_subkeys("a=b,ot=th:8;rv:0123456789abcd;x:y,c=d") == {
        "th": "8", "rv": "0123456789abcd", "x": "y"}
    assert ot_subkeys("a=b") == {}
    assert ot_subkeys("") == {}


# ---------------------------------------------------------- merge_threshold
@pytest.mark.parametrize("state,t,out", [
    # empty
    ("", 0, "ot=th:0"),
    ("", 0xE6666666666666, "ot=th:e6666666666666"),
    ("", 0x80000000000000, "ot=th:8"),
    # other vendors kept, in order, after ot
    ("a=1", 0, "ot=th:0,a=1"),
    ("a=1,b=2", 0x80000000000000, "ot=th:8,a=1,b=2"),
    ("a=1, b=2 ,c=3", 0, "ot=th:0,a=1,b=2,c=3"),
    # an existing ot entry moves to the front, its other sub-keys kept
    ("a=1,ot=rv:0123456789abcd,b=2", 0, "ot=th:0;rv:0123456789abcd,a=1,b=2"),
    ("ot=rv:0123456789abcd;x:1", 0x80000000000000, "ot=th:8;rv:0123456789abcd;x:1"),
    ("a=1,ot=x:1;th:0;rv:0123456789abcd", 0xC0000000000000, "ot=th:c;x:1;rv:0123456789abcd,a=1"),
    # upstream th stricter than ours is kept (the span survived both)
    ("ot=th:e", 0x80000000000000, "ot=th:e"),
    ("ot=th:e6666666666666;rv:0123456789abcd", 0, "ot=th:e6666666666666;rv:0123456789abcd"),
    ("a=1,ot=th:c", 0x80000000000000, "ot=th:c,a=1"),
    # less strict upstream th is replaced by ours
    ("ot=th:8", 0xE6666666666666, "ot=th:e6666666666666"),
    ("ot=th:0;rv:0123456789abcd", 0xC0000000000000, "ot=th:c;rv:0123456789abcd"),
    ("a=1,ot=th:4,b=2", 0x80000000000000, "ot=th:8,a=1,b=2"),
    # equal: unchanged
    ("ot=th:8", 0x80000000000000, "ot=th:8"),
    # an invalid upstream th is replaced
    ("ot=th:zz;rv:0123456789abcd", 0x80000000000000, "ot=th:8;rv:0123456789abcd"),
    ("ot=th:-1", 0x80000000000000, "ot=th:8"),
])
def test_merge_threshold(state, t, out):
    got = merge_threshold(state, t)
    assert got == out
    assert decode_th(ot_subkeys(got)["th"]) == max(t, decode_th(ot_subkeys(state).get("th", "")) or 0)


def test_merge_threshold_is_idempotent():
    s = merge_threshold("a=1,ot=rv:0123456789abcd,b=2", 0xE6666666666666)
    assert merge_threshold(s, 0xE6666666666666) == s
    assert merge_threshold(s, 0) == s


def test_merged_randomness_still_read():
    s = merge_threshold("a=1,ot=rv:0123456789abcd", 0x80000000000000)
    assert randomness(bytes(16), s) == 0x0123456789ABCD


# ------------------------------------------------------------- statistics
def _binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


@pytest.mark.parametrize("pct", [10, 1, 50, 90])
def test_share_kept_matches_percentage(pct):
    n = 20_000
    rng = random.Random(20240601 + pct)
    t = threshold_for_percentage(pct)
    kept = sum(randomness(rng.randbytes(16), "") >= t for _ in range(n))
    lo, hi = _binomial_bounds(n, pct / 100)
    assert lo <= kept <= hi, (pct, kept, lo, hi)


def test_share_kept_from_rv_matches_percentage():
    n = 20_000
    rng = random.Random(99)
    t = threshold_for_percentage(10)
    kept = 0
    for _ in range(n):
        # A trace ID that alone would always be kept: rv must be what counts.
        state = "ot=rv:%014x" % rng.randrange(MAX_T)
        kept += randomness(b"\xff" * 16, state) >= t
    lo, hi = _binomial_bounds(n, 0.10)
    assert lo <= kept <= hi, kept


def test_consistency_nested_thresholds():
    """A trace kept at 10 % is also kept at every higher percentage."""
    rng = random.Random(5)
    ts10, ts50 = threshold_for_percentage(10), threshold_for_percentage(50)
    for _ in range(5000):
        r = randomness(rng.randbytes(16), "")
        if r >= ts10:
            assert r >= ts50


def test_module_exports():
    assert ts.MAX_T == MAX_T
