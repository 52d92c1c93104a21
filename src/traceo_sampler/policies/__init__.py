"""Policies: one module per config ``type``, all behind policies.base.Policy.

To change a policy, open the module named after its type (``and``/``not``
are ``and_.py``/``not_.py`` since those names are Python keywords)."""
from __future__ import annotations

import importlib
import time
from typing import Any, Callable

import msgspec

from ..config import PolicyCfg, _dec_hook
from .base import DROPPED, INVERT_NOT_SAMPLED, NOT_SAMPLED, SAMPLED, Policy

_MODULES = {
    "always_sample": "always_sample", "latency": "latency",
    "status_code": "status_code", "probabilistic": "probabilistic",
    "string_attribute": "string_attribute", "numeric_attribute": "numeric_attribute",
    "boolean_attribute": "boolean_attribute", "span_count": "span_count",
    "and": "and_", "not": "not_", "drop": "drop",
    "rate_limiting": "rate_limiting", "bytes_limiting": "bytes_limiting",
    "trace_state": "trace_state", "composite": "composite",
    "latency_tail": "latency_tail", "service_rate": "service_rate",
    "adaptive": "adaptive", "ottl_condition": "ottl_condition",
    "trace_flags": "trace_flags",
}


def build(cfg: PolicyCfg | dict[str, Any], clock: Callable[[], float] | None = None) -> Policy:
    """Build a policy from a validated config (sub-policies arrive as dicts).

    ``clock`` (seconds, monotonic; default time.monotonic) is what the
    stateful policies — limiters, latency_tail, adaptive — measure rates and
    decay with, sub-policies included; tests pass a fake one."""
    if isinstance(cfg, dict):
        cfg = msgspec.convert(cfg, PolicyCfg, dec_hook=_dec_hook)
    if clock is None:
        clock = time.monotonic
    mod = importlib.import_module(f".{_MODULES[cfg.type]}", __name__)
    return mod.build(cfg, lambda c: build(c, clock), clock)


__all__ = ["build", "Policy", "SAMPLED", "NOT_SAMPLED", "INVERT_NOT_SAMPLED", "DROPPED"]
