"""Parse tree (grammar.py) -> Python closures, following pkg/ottl's
parser (boolean_value.go, expression.go, math.go, functions.go, v0.161.0).

A compiled value is a ``G``: a getter ``fn(ctx)`` and, when it is a
literal, its value (the Collector folds literals the same way: a comparison
of two literals is decided at parse time, a literal argument is coerced to
its parameter's type at parse time, so a bad one is a config error).
"""
from __future__ import annotations

import re
from typing import Any

import lark

from . import functions as F
from .grammar import GrammarError, parse
from .paths import (
    CONTEXT_NAMES,
    ENUMS,
    CompileError,
    EvalError,
    index_value,
    path_getter,
)
from .values import OPS, Duration, Time, compare

_NOLIT = object()
_I64 = 1 << 63


class G:
    __slots__ = ("fn", "lit")

    def __init__(self, fn, lit=_NOLIT):
        self.fn = fn
        self.lit = lit

    @property
    def is_lit(self) -> bool:
        return self.lit is not _NOLIT


class KeyFn:
    """A key getter, with its value when it is a literal (a path can look
    for a literal key's bytes before decoding anything)."""

    __slots__ = ("fn", "literal")

    def __init__(self, fn, literal):
        self.fn = fn
        self.literal = literal

    def __call__(self, c):
        return self.fn(c)


def _const(v) -> G:
    return G(lambda c: v, v)


_ESC = re.compile(r'\\(?:([abfnrtv\\"\'])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})'
                  r'|U([0-9a-fA-F]{8})|([0-7]{3}))')
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", '"': '"', "'": "'"}


def go_unquote(tok: str) -> str:
    """strconv.Unquote of a double-quoted Go string literal (participle's
    Unquote("String") in the Collector's parser)."""
    body = tok[1:-1]
    out = []
    pos = 0
    raw = bytearray()

    def flush():
        if raw:
            out.append(raw.decode("utf-8", "surrogateescape"))
            raw.clear()
    while True:
        i = body.find("\\", pos)
        if i < 0:
            flush()
            out.append(body[pos:])
            break
        if i > pos:
            flush()
            out.append(body[pos:i])
        m = _ESC.match(body, i)
        if m is None:
            raise CompileError(f"invalid escape in string literal {tok}")
        simple, x, u4, u8, octal = m.groups()
        if simple:
            flush()
            out.append(_SIMPLE[simple])
        elif x or octal:
            raw.append(int(x, 16) if x else int(octal, 8) & 0xFF)
        else:
            flush()
            out.append(chr(int(u4 or u8, 16)))
        pos = m.end()
    return "".join(out)


class Compiler:
    def __init__(self, context: str):
        self.context = context     # "span" or "spanevent"

    # ------------------------------------------------------------- booleans
    def condition(self, text: str):
        """A boolean closure ``f(ctx) -> bool`` (raising EvalError), or a
        bool when the condition is a constant."""
        self.text = text
        try:
            tree = parse(text)
        except GrammarError as exc:
            raise CompileError(f"condition has invalid syntax: {exc}") from None
        return self.bool_expr(tree)

    def bool_expr(self, t):
        terms = [self.term(c) for c in t.children]
        # literal folding, as newOrExprs
        rest = []
        for f in terms:
            if f is True:
                return True
            if f is not False:
                rest.append(f)
        if not rest:
            return False
        if len(rest) == 1:
            return rest[0]

        def or_(c, fs=tuple(rest)):
            for f in fs:
                if f(c):
                    return True
            return False
        return or_

    def term(self, t):
        vals = [self.bool_value(c) for c in t.children]
        rest = []
        for f in vals:
            if f is False:
                return False
            if f is not True:
                rest.append(f)
        if not rest:
            return True
        if len(rest) == 1:
            return rest[0]

        def and_(c, fs=tuple(rest)):
            for f in fs:
                if not f(c):
                    return False
            return True
        return and_

    def bool_value(self, t):
        kids = t.children
        neg = isinstance(kids[0], lark.Token) and kids[0].type == "NOT"
        node = kids[-1]
        if node.data == "comparison":
            f = self.comparison(node)
        elif node.data == "const_bool":
            f = str(node.children[0]) == "true"
        elif node.data == "converter":
            g = self.converter(node)
            if g.is_lit:
                if type(g.lit) is not bool:
                    raise CompileError("value returned from Converter in constant expression "
                                       f"must be bool but got {F.type_name(g.lit)}")
                f = g.lit
            else:
                fn = g.fn

                def conv(c):
                    v = fn(c)
                    if type(v) is not bool:
                        raise EvalError("value returned from Converter in constant expression "
                                        f"must be bool but got {F.type_name(v)}")
                    return v
                f = conv
        else:
            f = self.bool_expr(node)
        if type(f) is not bool and self._group_level(node):
            f = _memoized(f)
        if not neg:
            return f
        if type(f) is bool:
            return not f
        return lambda c: not f(c)

    def _group_level(self, t) -> bool:
        """Whether a subtree reads only its span's resource and scope (and
        literals): then it has one value for every span of one resource and
        scope, computed once per decision (``Ctx.memo``)."""
        names = CONTEXT_NAMES[self.context]
        for p in t.find_data("path"):
            segs = p.children
            first = str(segs[0].children[0])
            if len(segs) < 2 or first not in ("resource", "scope", "instrumentation_scope") \
                    or first not in names or len(segs[0].children) > 1:
                return False
        for cv in t.find_data("converter"):
            fn = F.FUNCTIONS.get(str(cv.children[0]))
            if fn is None or fn.needs_ctx:
                return False
        return any(True for _ in t.find_data("path"))

    def comparison(self, t):
        left, op_tok, right = t.children
        a = self.value(left)
        b = self.value(right)
        op = OPS[str(op_tok)]
        if a.is_lit and b.is_lit:
            return compare(a.lit, b.lit, op)
        fa, fb = a.fn, b.fn
        return lambda c: compare(fa(c), fb(c), op)

    # ------------------------------------------------------------- values
    def value(self, t) -> G:
        d = t.data
        if d == "nil":
            return _const(None)
        if d == "string_lit":
            return _const(go_unquote(str(t.children[0])))
        if d == "bool_lit":
            return _const(str(t.children[0]) == "true")
        if d == "bytes_lit":
            hx = str(t.children[0])[2:]
            if len(hx) % 2:
                raise CompileError("byte literals must have an even number of hexadecimal "
                                   f"digits, but got 0x{hx}")
            return _const(bytes.fromhex(hx))
        if d == "enum":
            name = str(t.children[0])
            if name not in ENUMS:
                raise CompileError(f"enum symbol, {name}, not found")
            return _const(ENUMS[name])
        if d == "map_lit":
            items = []
            for it in t.children:
                k, v = it.children
                items.append((go_unquote(str(k)), self.value(v)))
            if all(g.is_lit for _, g in items):
                return _const({k: g.lit for k, g in items})
            pairs = tuple((k, g.fn) for k, g in items)
            return G(lambda c: {k: f(c) for k, f in pairs})
        if d == "list_lit":
            gs = [self.value(v) for v in t.children if v is not None]
            if all(g.is_lit for g in gs):
                return _const([g.lit for g in gs])
            fns = tuple(g.fn for g in gs)
            return G(lambda c: [f(c) for f in fns])
        if d == "math_expr":
            return self.math_expr(t)
        raise CompileError(f"unsupported value {d}")

    def math_expr(self, t) -> G:
        kids = t.children
        g = self.add_term(kids[0])
        for i in range(1, len(kids), 2):
            g = _math(g, str(kids[i]), self.add_term(kids[i + 1]))
        return g

    def add_term(self, t) -> G:
        kids = t.children
        g = self.math_value(kids[0])
        for i in range(1, len(kids), 2):
            g = _math(g, str(kids[i]), self.math_value(kids[i + 1]))
        return g

    def math_value(self, t) -> G:
        kids = t.children
        sign = None
        if isinstance(kids[0], lark.Token) and kids[0].type == "ADDSUB":
            sign = str(kids[0])
            kids = kids[1:]
        node = kids[0]
        if node.data == "int_lit" and sign == "-":
            return _const(_int_lit("-" + str(node.children[0])))
        if node.data == "float_lit" and sign == "-":
            return _const(-float(str(node.children[0])))
        g = self.math_expr(node) if node.data == "math_expr" else self.literal(node)
        if sign != "-":
            return g
        fn = g.fn

        def neg(c):
            x = fn(c)
            if type(x) is int or type(x) is float:
                return -x
            raise EvalError(f"unsupported unary minus operation on type {F.type_name(x)}")
        return G(neg)

    def literal(self, t) -> G:
        d = t.data
        if d == "int_lit":
            return _const(_int_lit(str(t.children[0])))
        if d == "float_lit":
            return _const(float(str(t.children[0])))
        if d == "converter":
            return self.converter(t)
        if d == "editor":
            raise CompileError("converter names must start with an uppercase letter but got "
                               f"'{t.children[0]}'")
        return self.path(t)

    def keys(self, nodes):
        out = []
        for k in nodes:
            g = self.value(k.children[0])
            if g.is_lit and type(g.lit) not in (str, int):
                raise CompileError(f"a key must be a string or an int, got {F.type_name(g.lit)}")
            out.append(KeyFn(g.fn, g.lit if g.is_lit else None))
        return out

    def path(self, t) -> G:
        segs = []
        for field in t.children:
            name = str(field.children[0])
            segs.append((name, self.keys(field.children[1:])))
        m = t.meta
        text = self.text[m.start_pos:m.end_pos] if not m.empty else None
        return G(path_getter(segs, self.context, text))

    # ------------------------------------------------------------- converters
    def converter(self, t) -> G:
        name = str(t.children[0])
        rest = t.children[1:]
        args = [a for a in rest if isinstance(a, lark.Tree) and a.data == "arg"]
        keys = self.keys([k for k in rest if isinstance(k, lark.Tree) and k.data == "key"])
        fn = F.FUNCTIONS.get(name)
        if fn is None:
            raise CompileError(f"unknown function {name}")
        if fn.contexts is not None and self.context not in fn.contexts:
            raise CompileError(f"unknown function {name} (not available in the "
                               f"{self.context} context)")
        params = fn.params
        bound: dict[str, Any] = {}   # parameter → its argument's parse tree
        positional = True
        for i, a in enumerate(args):
            if len(a.children) == 2:
                positional = False
                pname = str(a.children[0])
                if pname not in {p[0] for p in params}:
                    raise CompileError(f"{name}: no parameter named {pname!r}")
                if pname in bound:
                    raise CompileError(f"{name}: {pname!r} given twice")
                bound[pname] = a.children[1]
            else:
                if not positional:
                    raise CompileError(f"{name}: unnamed argument after a named one")
                if i >= len(params):
                    raise CompileError(f"{name}: incorrect number of arguments. Expected: "
                                       f"{len(params)} Received: {len(args)}")
                bound[params[i][0]] = a.children[0]
        thunks: list[Any] = []
        for pname, kind, optional in params:
            node = bound.get(pname)
            if node is None:
                if not optional:
                    need = sum(1 for p in params if not p[2])
                    raise CompileError(f"{name}: incorrect number of arguments. Expected: "
                                       f"{need} Received: {len(args)}")
                thunks.append(None)
                continue
            thunks.append(self.argument(name, kind, node))
        impl = fn.impl
        if fn.needs_ctx:
            call = lambda c: impl(c)
        elif fn.fold and all(th is None or th[1] for th in thunks):
            # TraceID(0x…) and SpanID(…) of a literal: decoded once, a bad
            # one is a config error (newIDExprFunc)
            try:
                v = impl(*[None if th is None else th[0](None) for th in thunks])
            except EvalError as exc:
                raise CompileError(str(exc)) from None
            call = lambda c: v
        else:
            # arguments are evaluated (and coerced) in order, then the
            # converter runs on their values
            fns = [(lambda c: None) if th is None else th[0] for th in thunks]
            n = len(fns)
            if n == 1:
                f0 = fns[0]
                call = lambda c: impl(f0(c))
            elif n == 2:
                f0, f1 = fns
                call = lambda c: impl(f0(c), f1(c))
            else:
                fns_t = tuple(fns)

                def call(c):
                    return impl(*[f(c) for f in fns_t])
        if keys:
            inner = call

            def call(c):
                return index_value(inner(c), keys, c)
        return G(call)

    def argument(self, func: str, kind: str, node):
        """(getter that yields the coerced argument, literal?)"""
        if kind == "bool_literal":
            g = self.value(node)
            if not g.is_lit or type(g.lit) is not bool:
                raise CompileError(f"{func}: expected a bool literal")
            v = g.lit
            return (lambda c: v), True
        if kind == "regex":
            g = self.value(node)
            if g.is_lit:
                try:
                    pat = F.compile_regex(F.as_string(g.lit), func)
                except (ValueError, EvalError) as exc:
                    raise CompileError(str(exc)) from None
                return (lambda c: pat), True
            fn = g.fn

            def rx(c):
                p = F.as_string(fn(c))
                try:
                    return F.compile_regex(p, func)
                except ValueError as exc:
                    raise EvalError(str(exc)) from None
            return rx, False
        if kind == "list_string_like":
            if node.data == "list_lit":
                items = tuple(self.argument(func, "string_like", v)[0]
                              for v in node.children if v is not None)
                return (lambda c: [f(c) for f in items]), False
            fn = self.value(node).fn

            def items_of(c):
                v = fn(c)
                if type(v) is not list:
                    raise F.TypeErr(f"expected a slice but got {F.type_name(v)}")
                return [F.as_string_like(x) for x in v]
            return items_of, False
        g = self.value(node)
        conv = F.KINDS[kind]
        if g.is_lit:
            try:
                v = conv(g.lit)
            except EvalError as exc:
                raise CompileError(f"{func}: {exc}") from None
            return (lambda c: v), True
        fn = g.fn
        if conv is F.as_any:
            return fn, False
        return (lambda c: conv(fn(c))), False


_MISSING = object()


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


def _memoized(f):
    key = object()

    def memo(c):
        m = c.memo
        r = m.get(key, _MISSING)
        if r is _MISSING:
            try:
                r = f(c)
            except EvalError as exc:
                r = _Raised(exc)     # fails again, for each span, as unmemoized
            m[key] = r
        if type(r) is _Raised:
            raise r.exc
        return r
    return memo


def _int_lit(s: str) -> int:
    n = int(s)
    if not -_I64 <= n < _I64:
        raise CompileError(f"integer literal {s} is out of range for int64")
    return n


def _go_div(x: int, y: int) -> int:
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _wrap64(n: int) -> int:
    return (n + _I64) % (1 << 64) - _I64


def _num_op(x, y, op):
    if op == "+":
        r = x + y
    elif op == "-":
        r = x - y
    elif op == "*":
        r = x * y
    else:
        if y == 0:
            raise EvalError("attempted to divide by 0")
        r = _go_div(x, y) if type(x) is int else x / y
    return _wrap64(r) if type(r) is int else r


def _math(lhs: G, op: str, rhs: G) -> G:
    fa, fb = lhs.fn, rhs.fn

    def f(c):
        x = fa(c)
        y = fb(c)
        tx, ty = type(x), type(y)
        if tx is int:
            if ty is int:
                return _num_op(x, y, op)
            if ty is float:
                return _num_op(float(x), y, op)
            raise EvalError(f"{y!r} must be int64 or float64")
        if tx is float:
            if ty is int or ty is float:
                return _num_op(x, float(y), op)
            raise EvalError(f"{y!r} must be int64 or float64")
        if tx is Time:
            if op == "+" and ty is Duration:
                return Time(x.ns + y.ns)
            if op == "-" and ty is Duration:
                return Time(x.ns - y.ns)
            if op == "-" and ty is Time:
                return Duration(x.ns - y.ns)
            raise EvalError(f"only addition and subtraction of a duration are supported "
                            f"on time.Time, got {op} {F.type_name(y)}")
        if tx is Duration:
            if ty is Duration and op in "+-":
                return Duration(x.ns + y.ns if op == "+" else x.ns - y.ns)
            raise EvalError(f"only addition and subtraction of a duration are supported "
                            f"on time.Duration, got {op} {F.type_name(y)}")
        raise EvalError(f"{x!r} must be int64, float64, time.Time or time.Duration")
    if lhs.is_lit and rhs.is_lit:
        # computed once; but the Collector does not fold arithmetic, so one
        # that fails (1 / 0) fails when evaluated, not when compiled
        try:
            v = f(None)
        except EvalError:
            return G(f)
        return G(lambda c: v)
    return G(f)
