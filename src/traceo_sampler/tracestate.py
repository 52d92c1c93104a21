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


# ------------------------------------------------------------ composition
def threshold_for_probability(p: float) -> int:
    """Rejection threshold T keeping probability ``p`` (0..1)."""
    if p >= 1.0:
        return 0
    if p <= 0.0:
        return MAX_T
    return MAX_T - round(MAX_T * p)


def compose(t_in: int, fraction: float) -> int:
    """Threshold keeping ``fraction`` of the traces that already passed ``t_in``.

    A limiter's probability is relative to what reaches it: when the traces
    it sees were already filtered by ``R >= t_in`` (an upstream sampler's
    ``th``, or an earlier part of an ``and``), keeping a fraction ``f`` of
    them means the absolute probability ``p_in * f``, i.e. the threshold
    returned here; kept traces still satisfy ``R >= T`` and ``T >= t_in``.
    """
    if fraction >= 1.0:
        return t_in
    if fraction <= 0.0:
        return MAX_T
    kept = round((MAX_T - t_in) * fraction)
    return MAX_T - kept if kept > 0 else MAX_T


def upstream_threshold(trace_state: str) -> int:
    """The ``th`` an upstream sampler recorded (0 when none or invalid)."""
    if not trace_state or "th:" not in trace_state:
        return 0
    t = decode_th(ot_subkeys(trace_state).get("th", ""))
    return 0 if t is None else t


# ------------------------------------------------------------ W3C tracestate
_MAX_MEMBERS = 32
_LC = frozenset("abcdefghijklmnopqrstuvwxyz")
_KEY_CHARS = _LC | frozenset("0123456789_-*/")


def _valid_key(k: str) -> bool:
    tenant, at, system = k.partition("@")
    if not at:
        return 1 <= len(k) <= 256 and k[0] in _LC and all(c in _KEY_CHARS for c in k)
    return (1 <= len(tenant) <= 241 and (tenant[0] in _LC or tenant[0].isdigit())
            and tenant.isascii() and all(c in _KEY_CHARS for c in tenant)
            and 1 <= len(system) <= 14 and system[0] in _LC
            and all(c in _KEY_CHARS for c in system))


def _valid_value(v: str) -> bool:
    if not 1 <= len(v) <= 256 or v[-1] == " ":
        return False
    return all(0x20 <= ord(c) <= 0x7E and c not in ",=" for c in v)


def parse_w3c(trace_state: str) -> dict[str, str] | None:
    """The W3C tracestate list as {key: value}, or None when it is invalid.

    Rules as the W3C Trace Context spec (and Go's ``trace.ParseTraceState``,
    which the Collector uses): members separated by commas with optional
    spaces or tabs around them, empty members ignored, at most 32 members,
    keys ``lcalpha *(lcalpha / digit / _-*/)`` or ``tenant@system``, values
    printable ASCII without ``,`` or ``=`` and not ending in a space, no
    duplicate keys.
    """
    out: dict[str, str] = {}
    if not trace_state:
        return out
    for member in trace_state.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        k, eq, v = member.partition("=")
        if not eq or not _valid_key(k) or not _valid_value(v) or k in out:
            return None
        out[k] = v
        if len(out) > _MAX_MEMBERS:
            return None
    return out
