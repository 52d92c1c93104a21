"""Protobuf wire-format encoding shared by the pure-Python writers (the buffer's
re-encoder, the shard splitter, the OTLP/JSON transcoder). The decoding walk
lives in scan.py; the compiled twins have their own in ext/_wire.pxi."""
from __future__ import annotations


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


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its one-byte tag, the length, the payload."""
    return bytes((tag,)) + varint(len(payload)) + payload
