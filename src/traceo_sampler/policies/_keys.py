"""Keys built from configured fields (latency_tail, adaptive).

Field names: ``root_service`` or ``service.name`` — the root span's service;
``root_name`` — the root span's name; ``error`` — whether any span has
status ERROR; anything else — an attribute key, read from the summary's
attribute values (so the policy lists it in attribute_keys()). The summary
keeps an attribute's values over all spans and resources without telling
which span held which, so a trace with several values for the key takes the
smallest (as text): deterministic, and one key per trace.
"""
from __future__ import annotations

from typing import Any, Callable

ERROR_BIT = 1 << 2


def _root_service(t) -> Any:
    return t.root_service


def _root_name(t) -> Any:
    return t.root_name


def _error(t) -> Any:
    return bool(t.status_mask & ERROR_BIT)


def _attr(key: str) -> Callable[[Any], Any]:
    def get(t):
        a = t.attrs
        vals = a.get(key) if a else None
        if not vals:
            return None
        if len(vals) == 1:
            for v in vals:
                return v
        return min(vals, key=str)
    return get


def key_function(fields: list[str]) -> tuple[Callable[[Any], tuple], set[str]]:
    """(trace -> key tuple, attribute keys it reads)."""
    getters: list[Callable[[Any], Any]] = []
    attrs: set[str] = set()
    for f in fields:
        if f in ("root_service", "service.name"):
            getters.append(_root_service)
        elif f == "root_name":
            getters.append(_root_name)
        elif f == "error":
            getters.append(_error)
        else:
            attrs.add(f)
            getters.append(_attr(f))
    if len(getters) == 1:
        g = getters[0]
        return (lambda t: (g(t),)), attrs
    if len(getters) == 2:
        g0, g1 = getters
        return (lambda t: (g0(t), g1(t))), attrs
    gs = tuple(getters)
    return (lambda t: tuple(g(t) for g in gs)), attrs
