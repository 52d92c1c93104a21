"""``ottl_condition``: keep a trace when one of its spans satisfies one of
the ``span`` conditions, or one of its span events one of the ``spanevent``
conditions, written in OTTL (src/traceo_sampler/ottl/), as the Collector's
tail_sampling does (internal/sampling/ottl.go, v0.161.0).

Spans are visited in arrival order; for each, the span conditions and then
its events' conditions, stopping at the first that holds. The span data is
decoded only for traces that reach this policy (spandata.py): the trace
summary does not hold what conditions read.

``error_mode``: ``ignore`` logs a condition that fails and goes on with the
next, ``silent`` goes on without logging (also what an omitted error_mode
does, as in the Collector), ``propagate`` stops: the policy casts no vote
on that trace (base.PolicyError), which also voids an ``and``/``not``/
``drop``/``composite`` it is part of.
"""
from __future__ import annotations

import msgspec

from ..cfgtypes import _Base
from ..ottl import ERROR_MODES, ConditionError, ConditionSequence, Ctx, EvalError
from .base import NO, SPAN_DATA, YES, PolicyError

TYPE = "ottl_condition"
MAX_GROUPS = 4096


class OttlConditionCfg(_Base):
    """``span`` conditions hold on a span, ``spanevent`` ones on a span
    event; ``error_mode``: ignore, silent, propagate (any case)."""

    # OTTL conditions on spans; the trace is kept when one holds on one of its spans
    span: list[str] = msgspec.field(default_factory=list)
    # OTTL conditions on span events; the trace is kept when one holds on one event of one
    # of its spans
    spanevent: list[str] = msgspec.field(default_factory=list)
    # when a condition fails: ignore (logged, go on), silent (go on; also when omitted),
    # propagate (no vote on that trace)
    error_mode: str | None = None


Config = OttlConditionCfg


def _mode(error_mode: str | None) -> str:
    # the Collector lower-cases it (ottl.ErrorMode.UnmarshalText); left
    # out, neither logged nor propagated: silent
    return "silent" if error_mode is None else error_mode.lower()


def check(c: OttlConditionCfg, path: str, problems: list[str]) -> None:
    """Config problems of an ``ottl_condition`` block, each naming the
    condition (``….span[0]: unknown function Foo``)."""
    if c.error_mode is not None and _mode(c.error_mode) not in ERROR_MODES:
        problems.append(f"{path}.error_mode: unknown error mode {c.error_mode!r} "
                        f"(one of {', '.join(ERROR_MODES)})")
    if not c.span and not c.spanevent:
        problems.append(f"{path}: expected at least one OTTL condition to filter on "
                        "(span or spanevent)")
    for field in ("span", "spanevent"):
        # one by one, so every bad condition of a list is reported
        for i, text in enumerate(getattr(c, field)):
            try:
                ConditionSequence([text], field)
            except ConditionError as exc:
                problems.append(f"{path}.{field}[{i}]: {exc}")


class OttlCondition:
    def __init__(self, name: str, span: list[str], spanevent: list[str], error_mode: str):
        self.name = name
        # (resource header, scope header) -> attribute indexes and the values
        # of the sub-conditions that read only them (compiler._memoized):
        # computed once per resource and scope, not once per span
        self._groups: dict = {}
        self.span = ConditionSequence(span, "span", error_mode) if span else None
        self.spanevent = (ConditionSequence(spanevent, "spanevent", error_mode)
                          if spanevent else None)

    def attribute_keys(self) -> set[str]:
        return {SPAN_DATA}

    def evaluate(self, trace):
        span_seq = self.span
        ev_seq = self.spanevent
        groups = self._groups
        if len(groups) > MAX_GROUPS:
            groups.clear()
        ctx = Ctx(None, None, "", None, "")
        last_rh = last_sh = None
        try:
            # spans are decoded only when a condition reads beyond what the
            # resource, the scope and a key's absence from the bytes tell
            for res, res_schema, scope, scope_schema, span, rh, sh, raw in trace.span_headers:
                if rh is not last_rh or sh is not last_sh:
                    h = groups.get((rh, sh))
                    if h is None:
                        h = groups[(rh, sh)] = ([None], [None], {})
                    ctx.resource, ctx.resource_schema = res, res_schema
                    ctx.scope, ctx.scope_schema = scope, scope_schema
                    ctx.res_kv, ctx.scope_kv, ctx.memo = h
                    last_rh, last_sh = rh, sh
                # one context, moved from span to span
                ctx.set_raw(raw, span)
                ctx.event = None
                if span_seq is not None and span_seq.eval(ctx):
                    return YES
                if ev_seq is not None:
                    # no event_index: the Collector's policy does not set
                    # one, so a condition reading it fails there too
                    for ev in ctx.span.events:
                        ctx.event = ev
                        if ev_seq.eval(ctx):
                            return YES
        except EvalError as exc:
            raise PolicyError(f"ottl_condition {self.name}: {exc}") from None
        return NO


def build(cfg, build_sub=None, clock=None):
    c = cfg.ottl_condition
    return OttlCondition(cfg.name, c.span, c.spanevent, _mode(c.error_mode))
