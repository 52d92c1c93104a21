"""The protobuf wire format, for the pure-Python code: varints, fields and
fixed-width values, encoded and decoded. Everything in the package that reads
or writes protobuf bytes by hand uses these (the scanner and the splitter,
the buffer's re-encoder, the OTLP/JSON transcoder, the router, the size the
Collector charges, the load generator's layout walk); the compiled twins use
their counterparts in ext/wire.pxd, which decode the same way and raise the
same errors.

Decoding is strict, as protobuf's decoders are: a truncated varint, one
longer than 10 bytes, field number 0 or one above 2^29 - 1, an unknown wire
type, a length past the end of the enclosing message are ``ValueError``s
naming the byte offset (docs/scan-contract.md gives the messages).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NoReturn

# Wire types (the low 3 bits of a tag)
VARINT, I64, LEN, I32 = 0, 1, 2, 5
MASK64 = (1 << 64) - 1

_unpack_u64 = struct.Struct("<Q").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_double = struct.Struct("<d").unpack
_pack_u64 = struct.Struct("<Q").pack


# -- encoding ---------------------------------------------------------------
def varint(n: int) -> bytes:
    """n (>= 0) as a base-128 varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_len(n: int) -> int:
    """How many bytes ``varint(n)`` takes."""
    k = 1
    while n > 0x7F:
        n >>= 7
        k += 1
    return k


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its one-byte tag, the length, the payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def field_len(length: int) -> int:
    """Encoded size of a length-delimited field (one-byte tag) whose payload
    is ``length`` bytes."""
    return 1 + varint_len(length) + length


# -- decoding ---------------------------------------------------------------
def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos`` (it must end before ``end``): (value, next)."""
    if pos >= end:
        raise ValueError(f"truncated varint at byte {pos}")
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    i = pos + 1
    while True:
        if i >= end:
            raise ValueError(f"truncated varint at byte {pos}")
        if i - pos >= 10:
            raise ValueError(f"varint longer than 10 bytes at byte {pos}")
        b = data[i]
        result |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return result & MASK64, i
        shift += 7


def read_field(data: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """Read the field at ``pos`` (< ``end``): returns (tag, value, body, next).

    value: the varint / fixed value, or the length for wire type 2 (whose
    body starts at ``body``; for the fixed types ``body`` is where the value
    starts, for a varint where it ends).
    """
    tag_pos = pos
    b = data[pos]
    if b < 0x80:
        tag = b
        pos += 1
    else:
        tag, pos = read_varint(data, pos, end)
        if tag >> 32:  # protobuf's field numbers end at 2^29 - 1
            raise ValueError(f"field number {tag >> 3} out of range at byte {tag_pos}")
    if tag < 8:
        raise ValueError(f"invalid field number 0 at byte {tag_pos}")
    wt = tag & 7
    if wt == LEN:
        if pos < end and data[pos] < 0x80:
            ln = data[pos]
            pos += 1
        else:
            ln, pos = read_varint(data, pos, end)
        if ln > end - pos:
            raise ValueError(
                f"field {tag >> 3} at byte {tag_pos}: length {ln} runs past the end "
                f"of its enclosing message (byte {end})"
            )
        return tag, ln, pos, pos + ln
    if wt == VARINT:
        v, pos = read_varint(data, pos, end)
        return tag, v, pos, pos
    if wt == I64:
        if end - pos < 8:
            _truncated(tag, tag_pos, 64, end)
        return tag, _unpack_u64(data, pos)[0], pos, pos + 8
    if wt == I32:
        if end - pos < 4:
            _truncated(tag, tag_pos, 32, end)
        return tag, _unpack_u32(data, pos)[0], pos, pos + 4
    raise ValueError(f"field {tag >> 3} at byte {tag_pos}: invalid wire type {wt}")


def _truncated(tag: int, tag_pos: int, bits: int, end: int) -> NoReturn:
    raise ValueError(
        f"field {tag >> 3} at byte {tag_pos}: truncated fixed{bits} "
        f"(enclosing message ends at byte {end})"
    )


def fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Every field of the message body ``data[pos:end]``, as ``read_field``
    reads them; for walks off the hot path (a loop over ``read_field`` is
    faster)."""
    while pos < end:
        f = read_field(data, pos, end)
        yield f
        pos = f[3]


def int32(v: int) -> int:
    """A varint read as int32 (enums: a negative one comes out negative)."""
    v &= 0xFFFFFFFF
    return v - 0x100000000 if v & 0x80000000 else v


def int64(v: int) -> int:
    """A varint read as int64."""
    return v - (1 << 64) if v >> 63 else v


def double(bits: int) -> float:
    """A fixed64 value read as a double."""
    return _unpack_double(_pack_u64(bits))[0]
