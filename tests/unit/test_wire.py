"""The shared wire-format module (traceo_sampler.wire) against protobuf's own
encoding: what it writes protobuf reads, what protobuf writes it reads."""
from __future__ import annotations

import pytest
from google.protobuf.internal import decoder, encoder
from hypothesis import given, strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from traceo_sampler import wire

u64 = st.integers(0, (1 << 64) - 1)


@given(u64)
def test_varint_is_protobufs(n: int) -> None:
    ref = encoder._VarintBytes(n)
    assert wire.varint(n) == ref
    assert wire.varint_len(n) == len(ref)
    assert wire.read_varint(ref + b"\x00", 0, len(ref)) == (n, len(ref))
    assert decoder._DecodeVarint(ref, 0) == (n, len(ref))


@given(st.binary(max_size=300))
def test_field_and_field_len(payload: bytes) -> None:
    f = wire.field(0x2A, payload)  # Span.name: a length-delimited field
    assert len(f) == wire.field_len(len(payload))
    assert wire.read_field(f, 0, len(f)) == (0x2A, len(payload), len(f) - len(payload), len(f))
    if not payload or payload.isascii():
        assert Span.FromString(f).name == payload.decode()


def test_fields_of_a_span() -> None:
    sp = Span(trace_id=b"t" * 16, kind=-3, start_time_unix_nano=7, end_time_unix_nano=9,
              flags=5).SerializeToString()
    got = {tag: (v, body) for tag, v, body, _ in wire.fields(sp, 0, len(sp))}
    assert got[0x0A][0] == 16 and sp[got[0x0A][1]:got[0x0A][1] + 16] == b"t" * 16
    assert wire.int32(got[0x30][0]) == -3          # an enum: int32 on the wire
    assert got[0x39][0] == 7 and got[0x41][0] == 9   # fixed64
    assert got[0x85][0] == 5                         # fixed32 behind a two-byte tag


def test_int64_and_double() -> None:
    assert wire.int64((1 << 64) - 1) == -1
    assert wire.int64(5) == 5
    assert wire.double(0x3FF0000000000000) == 1.0


@pytest.mark.parametrize("data, message", [
    (b"\x80", "truncated varint at byte 0"),
    (b"\xff" * 11, "varint longer than 10 bytes at byte 0"),
    (b"\x02\x00", "invalid field number 0 at byte 0"),
    (b"\x0a\x05ab", "field 1 at byte 0: length 5 runs past the end of its enclosing message (byte 4)"),
    (b"\x09\x00\x00", "field 1 at byte 0: truncated fixed64 (enclosing message ends at byte 3)"),
    (b"\x0d\x00", "field 1 at byte 0: truncated fixed32 (enclosing message ends at byte 2)"),
    (b"\x0b", "field 1 at byte 0: invalid wire type 3"),
    (b"\x80\x80\x80\x80\x10", "field number 536870912 out of range at byte 0"),
])
def test_bad_fields_name_the_byte(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as e:
        wire.read_field(data, 0, len(data))
    assert str(e.value) == message
