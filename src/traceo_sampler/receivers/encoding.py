"""Request bodies of the OTLP/HTTP receiver: ``Content-Encoding`` gzip,
deflate and zstd, decoded exactly once and never past the size limit.

aiohttp's own decompression is switched off on the receiver (it would
inflate without our bound, and the body was then inflated a second time).
The compressed body is read first, bounded by the limit itself; it is then
inflated in one bounded step that stops at ``limit + 1`` bytes, so a small
body that would inflate to gigabytes costs at most the limit in memory and
is answered 413. Inflating runs on the event loop: one body at a time, so
many such requests at once still hold at most one inflated body each while
they are ingested (no pile-up of half-inflated buffers).
"""
from __future__ import annotations

import zlib

ENCODINGS = ("gzip", "deflate", "zstd")


class BodyError(Exception):
    """A body the receiver refuses: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(limit: int, what: str = "body") -> BodyError:
    return BodyError(413, f"{what} larger than max_recv_msg_size_mib ({limit >> 20} MiB)")


def _zlib_members(body: bytes, limit: int, gzip: bool) -> bytes:
    """Inflate gzip (every member, RFC 1952 allows several) or deflate
    (zlib-wrapped as RFC 9110 says; raw deflate, which some clients send,
    is recognised by its missing zlib header)."""
    name = "gzip" if gzip else "deflate"
    if gzip:
        wbits = 31
    else:
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = 15 if zlib_header else -15
    out: list[bytes] = []
    produced = 0
    data = body
    while True:
        d = zlib.decompressobj(wbits)
        try:
            chunk = d.decompress(data, limit + 1 - produced)
        except zlib.error as exc:
            raise BodyError(400, f"body is not valid {name} data: {exc}") from None
        produced += len(chunk)
        out.append(chunk)
        if produced > limit:
            raise too_large(limit, "decompressed body")
        if not d.eof:
            raise BodyError(400, f"body is not valid {name} data: truncated (no end of stream)")
        data = d.unused_data
        if not data:
            break
        if not gzip or data[:2] != b"\x1f\x8b":
            raise BodyError(400, f"body is not valid {name} data: "
                                 f"{len(data)} bytes after the end of the stream")
    return b"".join(out)


def _zstd_frames(body: bytes, limit: int) -> bytes:
    from backports.zstd import DecompressionParameter, ZstdDecompressor, ZstdError
    # a frame may ask for a window up to 2 GiB; nothing larger than the body
    # limit is ever needed, so a frame asking for more is refused before the
    # decoder allocates it
    window_log = max(10, min(31, (max(limit, 1) - 1).bit_length()))
    out: list[bytes] = []
    produced = 0
    data = body
    while True:
        d = ZstdDecompressor(options={DecompressionParameter.window_log_max: window_log})
        try:
            chunk = d.decompress(data, limit + 1 - produced)
        except ZstdError as exc:
            msg = str(exc)
            if "memory" in msg.lower() or "window" in msg.lower():
                raise too_large(limit, "zstd window of the body") from None
            raise BodyError(400, f"body is not valid zstd data: {msg}") from None
        produced += len(chunk)
        out.append(chunk)
        if produced > limit:
            raise too_large(limit, "decompressed body")
        if not d.eof:
            raise BodyError(400, "body is not valid zstd data: truncated (no end of frame)")
        data = d.unused_data
        if not data:
            break
    return b"".join(out)


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before ``encoding``; raises BodyError (400, 413, 415)."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        if len(body) > limit:
            raise too_large(limit)
        return body
    if enc == "gzip" or enc == "x-gzip":
        return _zlib_members(body, limit, gzip=True)
    if enc == "deflate":
        return _zlib_members(body, limit, gzip=False)
    if enc == "zstd":
        return _zstd_frames(body, limit)
    raise BodyError(415, f"unsupported Content-Encoding {encoding!r}; "
                         f"supported: {', '.join(ENCODINGS)} or none")


async def read_body(request, limit: int) -> bytes:
    """Read an aiohttp request's body (still encoded), refusing with 413 as
    soon as it passes ``limit`` bytes instead of buffering it all."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
