"""Reference docs generated from the code: ``docs/config.md`` from the config
structs (config.py and each policy's ``Config``), ``docs/metrics.md`` from the
metrics table (telemetry.py).

    python -m traceo_sampler.docgen           # rewrite both files
    python -m traceo_sampler.docgen --check   # exit 1 when either is stale, or a
                                              # config field has no description

A field's description is the comment kept on it in its struct: the comment
lines just above the field, or the comment after it on its line. Every field
must have one (both commands name those that do not).
"""
from __future__ import annotations

import argparse
import inspect
import io
import os
import re
import sys
import tokenize
import typing
from typing import Any

import msgspec

from . import config, telemetry
from .cfgtypes import Duration
from .policies import POLICY_STRUCTS, REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What Server.reload (server.py) applies in place: the sampler section (the
# policies, the timers and completion.reload's waits and dropped_grace, the
# limits) but the fields below, which it does not read; everything outside
# the sampler section needs a restart.
HOT_RELOADED = ("sampler.",)
NOT_HOT_RELOADED = ("sampler.decision_cache.", "sampler.num_shards", "sampler.shared_decisions.",
                    "sampler.drop_pending_traces_on_shutdown")


def _comments(cls: type) -> dict[str, str]:
    """field name → its comment in the class's source (the lines just above
    it, else the one after it on its line), joined into one line."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    lines = src.splitlines()
    field = re.compile(r"^\s{4}([a-z_][a-z0-9_]*)\s*:")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        m = field.match(line)
        if m and not line.startswith("     "):
            trailing = _trailing_comment(line)
            text = " ".join(above) if above else trailing
            if text:
                out[m.group(1)] = text
        above = []
    return out


def _trailing_comment(line: str) -> str:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return ""


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Annotated:
        base, *metas = args
        name = _type_name(base)
        bounds = []
        for m in metas:
            if isinstance(m, msgspec.Meta):
                for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    v = getattr(m, attr)
                    if v is not None:
                        bounds.append(f"{sym} {v}")
        return f"{name} ({', '.join(bounds)})" if bounds else name
    if origin is typing.Literal:
        return " \\| ".join(repr(a) if not isinstance(a, str) else f'"{a}"' for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map {_type_name(args[0])} → {_type_name(args[1])}"
    if t is type(None):
        return "null"
    if t is Duration:
        return "duration"
    if isinstance(t, type):
        if issubclass(t, msgspec.Struct):
            return f"[{t.__name__}](#{t.__name__.lower()})"
        return t.__name__
    return str(t)


def _default(f: msgspec.structs.FieldInfo) -> str:
    if f.required:
        return "required"
    v = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
    if isinstance(v, Duration):
        return f"`{v.text}`"
    if isinstance(v, msgspec.Struct):
        return "see its section"
    if v is None:
        return "—"
    return f"`{msgspec.json.encode(v).decode()}`"


def _structs(t: Any, out: list[type]) -> None:
    for a in typing.get_args(t):
        _structs(a, out)
    if isinstance(t, type) and issubclass(t, msgspec.Struct) and t not in out:
        out.append(t)
        for f in msgspec.structs.fields(t):
            _structs(f.type, out)


def _direct_structs(t: Any) -> list[type]:
    """The struct types a field's type names itself (through unions, lists, maps)."""
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return [t]
    return [s for a in typing.get_args(t) for s in _direct_structs(a)]


def _hot(path: str) -> str:
    if any(path.startswith(p) or path == p.rstrip(".") for p in NOT_HOT_RELOADED):
        return "restart"
    return "yes" if any(path.startswith(p) for p in HOT_RELOADED) else "restart"


def _policy_section() -> list[str]:
    types = ", ".join(f"[`{t}`](#{REGISTRY[t].Config.__name__.lower()})" for t in REGISTRY)
    return ["## Policy", "", "An item of `sampler.policies`: its name, its type, and the block "
            "named after the type with that type's settings.", "",
            "| key | type | default | hot reload | description |",
            "| --- | --- | --- | --- | --- |",
            "| `name` | str | required | yes | the policy's name: the `policy` label of the "
            "metrics and the decision's attribution |",
            f"| `type` | one of {types} | required | yes | which policy |",
            "| *type* | that type's block | — | yes | e.g. `latency: {threshold_ms: 500}` |", ""]


def _config_structs() -> list[type]:
    """Every struct reachable from Config (the policy blocks through the policy list)."""
    order: list[type] = []
    _structs(config.Config, order)
    return order


def undocumented(structs: list[type] | None = None) -> list[str]:
    """``Struct.field`` of every config field without a description (the
    policy entry structs are described by their section, not per field)."""
    out = []
    for cls in _config_structs() if structs is None else structs:
        if cls in POLICY_STRUCTS.values():
            continue
        docs = _comments(cls)
        out += [f"{cls.__name__}.{f.name}" for f in msgspec.structs.fields(cls)
                if not docs.get(f.name)]
    return out


def config_md() -> str:
    """docs/config.md: every struct reachable from Config, then each policy type's block."""
    order = _config_structs()
    # where each struct sits (first path reaching it), for the hot-reload column
    paths: dict[type, str] = {config.Config: ""}
    for cls in order:
        for f in msgspec.structs.fields(cls):
            many = "[]" if typing.get_origin(f.type) is list else ""
            for s in _direct_structs(f.type):
                paths.setdefault(s, f"{paths.get(cls, '')}{f.encode_name}{many}.")
    policy_blocks = {mod.Config: typ for typ, mod in REGISTRY.items()}
    w = ["<!-- Generated by `python -m traceo_sampler.docgen` from the config structs "
         "(config.py, policies/*.py); do not edit by hand. -->",
         "# Configuration reference", "",
         "Every key of the YAML config, as declared in the code. *Hot reload*: `yes` when a "
         "SIGHUP or a change of the file applies it in place (buffered traces and the decision "
         "cache are kept), `restart` when it takes effect only after a restart (the log names "
         "the changed sections). Durations are strings such as `500ms`, `30s`, `5m`.", ""]
    for cls in order:
        if cls in POLICY_STRUCTS.values():
            if cls is next(iter(POLICY_STRUCTS.values())):
                w += _policy_section()
            continue
        where = paths.get(cls, "")
        typ = policy_blocks.get(cls)
        w += [f"## {cls.__name__}", ""]
        if typ is not None:
            w += [f"The block `{typ}:` of a policy with `type: {typ}`.", ""]
        elif cls is config.Config:
            w += ["The top level of the file.", ""]
        else:
            w += [f"At `{where.rstrip('.')}`.", ""] if where else []
        w += ["| key | type | default | hot reload | description |",
              "| --- | --- | --- | --- | --- |"]
        docs = _comments(cls)
        for f in msgspec.structs.fields(cls):
            desc = docs.get(f.name, "").replace("|", "\\|")
            w.append(f"| `{f.encode_name}` | {_type_name(f.type)} | {_default(f)} | "
                     f"{_hot(where + f.encode_name)} | {desc} |")
        w.append("")
    return "\n".join(w).rstrip() + "\n"


def metrics_md() -> str:
    """docs/metrics.md: every row of the metrics table."""
    w = ["<!-- Generated by `python -m traceo_sampler.docgen` from the metrics table "
         "(telemetry.py); do not edit by hand. -->",
         "# Metrics reference", "",
         f"Every metric the sampler exposes on the admin endpoint's `/metrics`, each named "
         f"with the prefix `{telemetry.PREFIX}`. The `service` label is capped "
         f"(`telemetry.max_services`): services past the cap are reported as `service=\"other\"`.",
         "", "| metric | kind | labels | description |", "| --- | --- | --- | --- |"]
    for d in telemetry.DECLARED:
        labels = ", ".join(f"`{label}`" for label in d.labels) or "—"
        kind = "histogram" if d.kind is telemetry.CountsHistogram else d.kind.__name__.lower()
        doc = d.doc.replace("|", "\\|")
        w.append(f"| `{telemetry.PREFIX}{d.name}` | {kind} | {labels} | {doc} |")
    return "\n".join(w) + "\n"


DOCS = {"docs/config.md": config_md, "docs/metrics.md": metrics_md}


def stale(root: str = ROOT) -> list[str]:
    """The generated docs whose file differs from what the code generates."""
    out = []
    for rel, gen in DOCS.items():
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as fh:
                if fh.read() == gen():
                    continue
        except FileNotFoundError:
            pass
        out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traceo_sampler.docgen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a generated doc is stale or a config field has no description")
    args = ap.parse_args(argv)
    missing = undocumented()
    for name in missing:
        print(f"config field {name} has no description: add a comment on it in its struct",
              file=sys.stderr)
    if args.check:
        bad = stale()
        for rel in bad:
            print(f"{rel} is stale: regenerate with `python -m traceo_sampler.docgen`",
                  file=sys.stderr)
        return 1 if bad or missing else 0
    for rel, gen in DOCS.items():
        with open(os.path.join(ROOT, rel), "w", encoding="utf-8") as fh:
            fh.write(gen())
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
