"""Paths of the span, spanevent, resource and instrumentation-scope contexts
(pkg/ottl/contexts/internal/ctx{span,spanevent,resource,scope}, v0.161.0),
read from decoded OTLP protobuf messages.

A path resolves, when the condition is compiled, to a getter ``f(ctx)``; an
unknown segment, a segment too many, or keys on a path that is not indexed
is a compile error naming the path, as in the Collector.
"""
from __future__ import annotations

from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span as _PbSpan

from ..tracestate import parse_w3c
from ..wire import field
from .values import Opaque, SpanID, Time, TraceID

_SpanFromString = _PbSpan.FromString


class CompileError(ValueError):
    pass


class EvalError(Exception):
    """A condition failed while evaluating (the error modes decide what
    follows)."""


class TypeErr(EvalError):
    """Go's ottl.TypeError: a value of the wrong type for a typed argument
    (IsString and friends answer false on it instead of failing)."""


# --------------------------------------------------------------- AnyValue
def any_value(v):
    """An OTLP AnyValue as OTTL sees it (ottlcommon.GetValue): raw types,
    nil for an empty value."""
    k = v.WhichOneof("value")
    if k == "string_value":
        return v.string_value
    if k == "int_value":
        return v.int_value
    if k == "double_value":
        return v.double_value
    if k == "bool_value":
        return v.bool_value
    if k == "bytes_value":
        return v.bytes_value
    if k == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if k == "kvlist_value":
        return kv_map(v.kvlist_value.values)
    return None


def kv_map(kvs) -> dict:
    # pcommon.Map.Get returns the first entry of a key
    d: dict = {}
    for kv in kvs:
        if kv.key not in d:
            d[kv.key] = any_value(kv.value)
    return d


def kv_get(kvs, key: str):
    for kv in kvs:
        if kv.key == key:
            return True, any_value(kv.value)
    return False, None


def index_value(val, keys, ctx):
    """ctxutil getIndexableValue on raw values: a map takes string keys, a
    slice int keys within bounds."""
    for k in keys:
        t = type(val)
        if t is dict:
            s = k(ctx)
            if type(s) is not str:
                raise EvalError("unable to resolve a string index in map: could not resolve key "
                                f"for map/slice, expecting 'string' but got '{_tn(s)}'")
            if s not in val:
                return None
            val = val[s]
        elif t is list:
            i = k(ctx)
            if type(i) is not int:
                raise EvalError("unable to resolve an integer index in slice: could not resolve "
                                f"key for map/slice, expecting 'int64' but got '{_tn(i)}'")
            if i >= len(val) or i < 0:
                raise EvalError(f"index {i} out of bounds")
            val = val[i]
        else:
            raise EvalError(f"type {_vt(val)} does not support string indexing")
    return val


def _tn(v):
    from .values import type_name
    return type_name(v)


def _vt(v):
    return {str: "Str", bool: "Bool", int: "Int", float: "Double", bytes: "Bytes",
            type(None): "Empty"}.get(type(v), _tn(v))


# --------------------------------------------------------------- context
class Ctx:
    """What one evaluation looks at: a span (and, in the spanevent
    context, one of its events) with its scope and resource."""

    __slots__ = (
        "_span",
        "event",
        "event_index",
        "memo",
        "raw",
        "res_kv",
        "resource",
        "resource_schema",
        "scope",
        "scope_kv",
        "scope_schema",
    )

    def __init__(self, span, scope, scope_schema, resource, resource_schema,
                 event=None, event_index=-1, res_kv=None, scope_kv=None, memo=None):
        self._span = span
        self.scope = scope
        self.scope_schema = scope_schema
        self.resource = resource
        self.resource_schema = resource_schema
        self.event = event
        self.event_index = event_index
        # one-element lists shared by the spans of one resource (scope):
        # its attributes indexed once, on first use (see _shared_attrs)
        self.res_kv = res_kv if res_kv is not None else [None]
        self.scope_kv = scope_kv if scope_kv is not None else [None]
        # values of the sub-conditions that read only the resource and the
        # scope, shared by the spans of one (resource, scope) pair
        self.memo = memo if memo is not None else {}
        # the span's encoding, when known: a fast "absent" for attribute
        # keys, and the span decoded only when a path reads it
        self.raw = None

    def set_raw(self, raw: bytes, span=None) -> None:
        """Move to the span encoded as ``raw``: ``span`` if already decoded,
        else decoded on first read."""
        self.raw = raw
        self._span = span

    @property
    def span(self):
        sp = self._span
        if sp is None:
            sp = self._span = _SpanFromString(self.raw)
        return sp


_KIND_STR = ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"]
_KIND_DEPRECATED = ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                    "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"]

ENUMS = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
    "STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2,
}


def _id(raw: bytes, n: int) -> bytes:
    # an ID field left out of the encoding is all zeros in pdata
    return raw if len(raw) == n else bytes(n)


def _kind_str(k: int) -> str:
    return _KIND_STR[k] if 0 <= k < len(_KIND_STR) else ""


def _kind_deprecated(k: int) -> str:
    return _KIND_DEPRECATED[k] if 0 <= k < len(_KIND_DEPRECATED) else ""


def _trace_state_key(keys):
    if len(keys) != 1:
        raise CompileError("must provide exactly 1 key when accessing trace_state")
    k = keys[0]

    def get(c):
        kv = parse_w3c(c.span.trace_state)
        if kv is None:
            return None
        s = k(c)
        if type(s) is not str:
            raise EvalError("trace_state indexing type must be a string")
        return kv.get(s, "")
    return get


def _key_needle(key: str) -> bytes:
    """How KeyValue.key = ``key`` is encoded (field 1, length-delimited)."""
    return field(0x0A, key.encode())


def _attrs(msg_of):
    """attributes / attributes[...] of the message ``msg_of(ctx)`` (the span
    or its event)."""
    def build(keys):
        if not keys:
            return lambda c: kv_map(msg_of(c).attributes)
        first, rest = keys[0], keys[1:]
        lit = getattr(first, "literal", None)
        needle = _key_needle(lit) if type(lit) is str else None

        def get(c):
            if needle is not None and c.raw is not None and needle not in c.raw:
                # the key's bytes are nowhere in the span's encoding (its
                # events included): the attribute is absent, no walk needed
                return None
            s = first(c)
            if type(s) is not str:
                raise EvalError("cannot get map value: unable to resolve a string index in map: "
                                f"could not resolve key for map/slice, expecting 'string' but got "
                                f"'{_tn(s)}'")
            found, v = kv_get(msg_of(c).attributes, s)
            if not found:
                return None
            return index_value(v, rest, c) if rest else v
        return get
    return build


def _shared_attrs(holder_of, msg_of):
    """attributes / attributes[...] of a resource or scope: many spans share
    one, so its key -> AnyValue index is built once per decision."""
    def index(c):
        h = holder_of(c)
        d = h[0]
        if d is None:
            d = h[0] = {}
            for kv in msg_of(c).attributes:
                if kv.key not in d:
                    d[kv.key] = kv.value
        return d

    def build(keys):
        if not keys:
            return lambda c: {k: any_value(v) for k, v in index(c).items()}
        first, rest = keys[0], keys[1:]

        def get(c):
            s = first(c)
            if type(s) is not str:
                raise EvalError("cannot get map value: unable to resolve a string index in map: "
                                f"could not resolve key for map/slice, expecting 'string' but got "
                                f"'{_tn(s)}'")
            av = index(c).get(s)
            if av is None:
                return None
            v = any_value(av)
            return index_value(v, rest, c) if rest else v
        return get
    return build


def _span(c):
    return c.span


def _event(c):
    return c.event


def _scope(c):
    return c.scope


def _resource(c):
    return c.resource


# name -> {sub-name or None: getter}, or a builder taking keys (indexed paths)
_SPAN = {
    "trace_id": {None: lambda c: TraceID(_id(c.span.trace_id, 16)),
                 "string": lambda c: _id(c.span.trace_id, 16).hex()},
    "span_id": {None: lambda c: SpanID(_id(c.span.span_id, 8)),
                "string": lambda c: _id(c.span.span_id, 8).hex()},
    "parent_span_id": {None: lambda c: SpanID(_id(c.span.parent_span_id, 8)),
                       "string": lambda c: _id(c.span.parent_span_id, 8).hex()},
    "name": {None: lambda c: c.span.name},
    "kind": {None: lambda c: int(c.span.kind),
             "string": lambda c: _kind_str(c.span.kind),
             "deprecated_string": lambda c: _kind_deprecated(c.span.kind)},
    "start_time_unix_nano": {None: lambda c: c.span.start_time_unix_nano},
    "end_time_unix_nano": {None: lambda c: c.span.end_time_unix_nano},
    "start_time": {None: lambda c: Time(c.span.start_time_unix_nano)},
    "end_time": {None: lambda c: Time(c.span.end_time_unix_nano)},
    "dropped_attributes_count": {None: lambda c: c.span.dropped_attributes_count},
    "events": {None: lambda c: [Opaque("ptrace.SpanEvent", e.SerializeToString(deterministic=True))
                                for e in c.span.events]},
    "dropped_events_count": {None: lambda c: c.span.dropped_events_count},
    "links": {None: lambda c: [Opaque("ptrace.SpanLink", e.SerializeToString(deterministic=True))
                               for e in c.span.links]},
    "dropped_links_count": {None: lambda c: c.span.dropped_links_count},
    "status": {None: lambda c: Opaque("ptrace.Status", (int(c.span.status.code),
                                                        c.span.status.message)),
               "code": lambda c: int(c.span.status.code),
               "message": lambda c: c.span.status.message},
    "flags": {None: lambda c: c.span.flags},
}
_SPAN_INDEXED = {"attributes": _attrs(_span), "trace_state": None}

def _event_index(c):
    # ottlspanevent GetEventIndex: only a caller that sets the index has one;
    # the Collector's tail_sampling does not, so there it is always an error
    if c.event_index < 0:
        raise EvalError("no 'event_index' property has been set")
    return c.event_index


_SPANEVENT = {
    "time_unix_nano": {None: lambda c: c.event.time_unix_nano},
    "time": {None: lambda c: Time(c.event.time_unix_nano)},
    "name": {None: lambda c: c.event.name},
    "dropped_attributes_count": {None: lambda c: c.event.dropped_attributes_count},
    "event_index": {None: lambda c: _event_index(c)},
}
_SPANEVENT_INDEXED = {"attributes": _attrs(_event)}

_RESOURCE = {
    "dropped_attributes_count": {None: lambda c: c.resource.dropped_attributes_count},
    "schema_url": {None: lambda c: c.resource_schema},
}
_RESOURCE_INDEXED = {"attributes": _shared_attrs(lambda c: c.res_kv, _resource)}

_SCOPE = {
    "name": {None: lambda c: c.scope.name},
    "version": {None: lambda c: c.scope.version},
    "dropped_attributes_count": {None: lambda c: c.scope.dropped_attributes_count},
    "schema_url": {None: lambda c: c.scope_schema},
}
_SCOPE_INDEXED = {"attributes": _shared_attrs(lambda c: c.scope_kv, _scope)}

_CONTEXTS: dict[str, tuple[dict, Any]] = {
    "span": (_SPAN, _SPAN_INDEXED),
    "spanevent": (_SPANEVENT, _SPANEVENT_INDEXED),
    "resource": (_RESOURCE, _RESOURCE_INDEXED),
    "scope": (_SCOPE, _SCOPE_INDEXED),
    "instrumentation_scope": (_SCOPE, _SCOPE_INDEXED),
}

# what each condition list may reference (ottlspan / ottlspanevent
# EnablePathContextNames); the first is the default for paths without one
CONTEXT_NAMES = {
    "span": ("span", "resource", "scope", "instrumentation_scope"),
    "spanevent": ("spanevent", "span", "resource", "scope", "instrumentation_scope"),
}


def _text(segs) -> str:
    return ".".join(name + "[…]" * len(keys) for name, keys in segs)


def path_getter(segs, context: str, text: str | None = None):
    """The getter of a path (``segs``: [(name, [key getters])]) in a
    condition of ``context`` (span or spanevent)."""
    names = CONTEXT_NAMES[context]
    full = text or _text(segs)
    if len(segs) > 1 and segs[0][0] in names and not segs[0][1]:
        ctx_name, rest = segs[0][0], segs[1:]
    else:
        ctx_name, rest = names[0], segs
    plain, indexed = _CONTEXTS[ctx_name]
    name, keys = rest[0]
    if name == "cache" and ctx_name == context:
        # the transform context's cache: a condition cannot write it, so it
        # is always an empty map
        _check_end(rest, 1, full)
        return (lambda c: {}) if not keys else (lambda c: None)
    if name in indexed and name != "trace_state":
        _check_end(rest, 1, full)
        return indexed[name](keys)
    if name == "trace_state" and ctx_name == "span":
        _check_end(rest, 1, full)
        if keys:
            return _trace_state_key(keys)
        return lambda c: c.span.trace_state
    subs = plain.get(name)
    if subs is None:
        raise CompileError(f"unknown path {full!r}: segment {name!r} is not a path of the "
                           f"{ctx_name} context")
    if keys:
        raise CompileError(f"path {full!r}: the keys indexing {name!r} were not used by the "
                           f"context (it is not indexed)")
    if len(rest) > 1 and len(subs) > 1:
        sub, skeys = rest[1]
        g = subs.get(sub)
        if g is None:
            raise CompileError(f"unknown path {full!r}: segment {sub!r} is not a path of the "
                               f"{ctx_name} context")
        if skeys:
            raise CompileError(f"path {full!r}: the keys indexing {sub!r} were not used by the "
                               f"context (it is not indexed)")
        _check_end(rest, 2, full)
        return g
    _check_end(rest, 1, full)
    return subs[None]


def _check_end(rest, used: int, full: str):
    if len(rest) > used:
        raise CompileError(f"path {full!r}: the path section {rest[used][0]!r} was not used by "
                           f"the context (an extra path section)")
