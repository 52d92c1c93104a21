"""OpenTelemetry consistent-probability sampling values (``ot=th:…;rv:…``).

R, the randomness value, is 56 bits: the ``rv`` sub-key of the ``ot``
tracestate entry when present, else the low 56 bits (last 7 bytes) of the
trace ID. A trace is kept at threshold T when ``R >= T``; its probability is
``1 - T / 2**56`` and its adjusted count the inverse of that. ``th:0`` means
kept unconditionally.
"""
from __future__ import annotations

MAX_T = 1 << 56
# 14 hex digits is the full 56-bit precision; trailing zeros are dropped as
# the specification asks.
_TH_DIGITS = 14
# int(x, 16) also accepts a sign, surrounding whitespace, "0x" and "_"; the
# specification allows hex digits only (1-14 for th, exactly 14 for rv).
_HEX = frozenset("0123456789abcdefABCDEF")


def _is_hex(s: str) -> bool:
    return bool(s) and all(c in _HEX for c in s)


def threshold_for_percentage(pct: float) -> int:
    """Rejection threshold T for a sampling percentage (0..100)."""
    if pct >= 100:
        return 0
    if pct <= 0:
        return MAX_T
    return MAX_T - round(MAX_T * pct / 100.0)


def probability(t: int) -> float:
    return (MAX_T - t) / MAX_T


def encode_th(t: int) -> str:
    if t <= 0:
        return "0"
    return format(t, "014x").rstrip("0") or "0"


def decode_th(s: str) -> int | None:
    if not s or len(s) > _TH_DIGITS or not _is_hex(s):
        return None
    return int(s.ljust(_TH_DIGITS, "0"), 16)


def randomness(trace_id: bytes, trace_state: str) -> int:
    """R for a trace: explicit ``rv`` wins over the trace ID's low 56 bits."""
    if trace_state and "rv:" in trace_state:
        rv = ot_subkeys(trace_state).get("rv")
        if rv is not None and len(rv) == 14 and _is_hex(rv):
            return int(rv, 16)
    return int.from_bytes(trace_id[9:16], "big")


def _entries(trace_state: str) -> list[str]:
    return [e.strip() for e in trace_state.split(",") if e.strip()]


def ot_subkeys(trace_state: str) -> dict[str, str]:
    for e in _entries(trace_state):
        if e.startswith("ot="):
            out = {}
            for part in e[3:].split(";"):
                k, sep, v = part.partition(":")
                if sep:
                    out[k] = v
            return out
    return {}


def merge_threshold(trace_state: str, t: int) -> str:
    """Return trace_state with ``ot=th:`` set to the effective threshold.

    An upstream threshold already on the span composes with ours: the span
    survived both, so the effective threshold is the larger (stricter) one.
    The ``ot`` entry moves to the front (W3C: a modified entry goes first);
    its other sub-keys and every other vendor's entry are kept as they were.
    """
    entries = _entries(trace_state) if trace_state else []
    ot = ""
    others = []
    for e in entries:
        if e.startswith("ot=") and not ot:
            ot = e[3:]
        else:
            others.append(e)
    parts = []
    for part in ot.split(";") if ot else []:
        k, sep, v = part.partition(":")
        if k == "th" and sep:
            up = decode_th(v)
            if up is not None and up > t:
                t = up
            continue
        parts.append(part)
    parts.insert(0, "th:" + encode_th(t))
    return ",".join(["ot=" + ";".join(parts)] + others)
