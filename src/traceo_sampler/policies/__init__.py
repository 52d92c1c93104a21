"""Policies: one module per config ``type``, all behind policies.base.Policy.

Each policy module declares everything about its type in one place:

* ``TYPE`` — the config ``type`` (``and``/``not`` live in ``and_.py``/
  ``not_.py`` since those names are Python keywords);
* ``Config`` — the msgspec struct of its block (``latency: {...}``);
* ``BLOCK_OPTIONAL`` (optional, default False) — the block may be omitted;
* ``SUB_POLICIES`` (optional) — the block fields holding sub-policies,
  ``"list"`` or ``"one"``, which config.py validates recursively so their
  errors carry their full path;
* ``check(block, path, problems)`` (optional) — validation beyond the
  struct's types, one ``path: message`` line per problem;
* ``precheck(raw_block, path, problems, convert)`` (optional) — validation
  of the raw block before conversion, returning False to stop;
* ``build(policy_cfg, build_sub, clock)`` — the evaluator.

REGISTRY below is the one list of types; the policy union ``PolicyCfg`` (a
tagged union on ``type``, which config.py validates with) is built from it
right here, so the container modules can name it in their sub-policy
fields. Adding a policy type is one new module and one line here.
"""
from __future__ import annotations

import json
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, TypeAlias, Union

import msgspec

from ..cfgtypes import _Base
from . import (adaptive, always_sample, and_, boolean_attribute, bytes_limiting, composite,
               drop, latency, latency_tail, not_, numeric_attribute, ottl_condition,
               probabilistic, rate_limiting, service_rate, span_count, status_code,
               string_attribute, trace_flags, trace_state)
from .base import DROPPED, NOT_SAMPLED, SAMPLED, Policy

REGISTRY: dict[str, ModuleType] = {m.TYPE: m for m in (
    always_sample, latency, status_code, probabilistic, string_attribute,
    numeric_attribute, boolean_attribute, span_count, and_, not_, drop,
    rate_limiting, bytes_limiting, trace_state, composite,
    latency_tail, service_rate, adaptive, ottl_condition, trace_flags,
)}


class PolicyBase(_Base, tag_field="type"):
    """name + the block named after the type (see the per-type structs)."""

    name: str

    @property
    def type(self) -> str:
        return str(self.__struct_config__.tag)

    @property
    def block(self) -> Any:
        return getattr(self, block_attr(self.type))


def block_attr(typ: str) -> str:
    """The Python attribute of a type's block (``and`` → ``and_``)."""
    return typ + "_" if typ in ("and", "not") else typ


def _policy_struct(typ: str, mod: ModuleType) -> type:
    camel = "".join(p.title() for p in typ.split("_"))
    return msgspec.defstruct(
        f"{camel}Policy",
        [(block_attr(typ), mod.Config | None, msgspec.field(default=None, name=typ))],
        bases=(PolicyBase,), tag=typ, module=__name__)


POLICY_STRUCTS: dict[str, type] = {t: _policy_struct(t, m) for t, m in REGISTRY.items()}
if TYPE_CHECKING:
    # the union is built at run time from REGISTRY; a checker sees the shared base
    PolicyCfg: TypeAlias = PolicyBase
else:
    PolicyCfg = Union[tuple(POLICY_STRUCTS.values())]


SEMANTICS = ("traceo", "collector")


def build(cfg: Any, clock: Callable[[], float] | None = None,
          semantics: str = "traceo") -> Policy:
    """Build a policy from a validated config; a dict is validated first
    (config.parse_policy), so a bad one raises ConfigError.

    ``clock`` (seconds, monotonic; default time.monotonic) is what the
    stateful policies — limiters, latency_tail, adaptive — measure rates and
    decay with, sub-policies included; tests pass a fake one.

    ``semantics="collector"`` builds, for the types that decide differently
    there, the module's ``build_collector`` (the Collector v0.161.0's rule);
    every other type is the same in both modes."""
    if isinstance(cfg, dict):
        from ..config import parse_policy
        cfg = parse_policy(cfg, semantics=semantics)
    if clock is None:
        clock = time.monotonic
    mod = REGISTRY[cfg.type]
    builder = mod.build
    if semantics == "collector":
        builder = getattr(mod, "build_collector", builder)
    return builder(cfg, lambda c: build(c, clock, semantics), clock)


__all__ = ["build", "describe", "Policy", "PolicyCfg", "REGISTRY", "SAMPLED", "NOT_SAMPLED",
           "DROPPED"]


def describe(cfg: Any, limit: int = 160) -> str:
    """One line saying what a policy keeps, from its config: its type and
    the fields set in its block (``latency: threshold_ms=1000``); the
    /status page shows it as the policy's "why kept"."""
    from ..cfgtypes import _enc_hook
    block = msgspec.to_builtins(cfg.block, enc_hook=_enc_hook) if cfg.block is not None else {}
    if isinstance(block, dict):
        text = ", ".join(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, (dict, list)) else v}"
                         for k, v in block.items())
    else:
        text = json.dumps(block, separators=(",", ":"))
    line = f"{cfg.type}: {text}" if text else cfg.type
    return line if len(line) <= limit else line[:limit - 1] + "…"
