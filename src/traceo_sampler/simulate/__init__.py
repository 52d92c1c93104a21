"""``traceo-sampler simulate -c FILE INPUT... [--compare OTHER] [--report OUT.html]``:
replay captured traces through the configured policies offline and report
what they would keep.

Inputs: OTLP JSON lines as the Collector's file exporter (and ours) writes
them, one ExportTraceServiceRequest per line; or length-prefixed OTLP
protobuf (a 4-byte big-endian length, then the request; repeated). The
format is detected per file. Spans go through the same buffer and policies
as ``serve``, on a virtual clock driven by the spans' own end times, so the
completion timers (root_wait, idle_timeout, decision_wait) act as they would
have live; whatever is still buffered at the end is decided as on shutdown.
Nothing is sent anywhere.

The package: ``replay`` (the pass over the capture and what is recorded),
``compare`` (two policy sets joined trace by trace), ``report`` (the HTML
file); the monthly projection is ``traceo_sampler.forecast``.
"""
from __future__ import annotations

import json
import sys

from ..config import Config, ConfigError, load
from ..progress import Progress
from .replay import Clock, Run, read_requests, replay, total_bytes

__all__ = ["simulate", "what_if", "read_requests", "add_arguments", "run"]


def simulate(cfg: Config, inputs: list[str], progress=None) -> dict:
    """The report of one policy set over ``inputs`` (the JSON ``simulate`` prints)."""
    clock = Clock()
    r = Run(cfg, clock)
    invalid = replay([r], inputs, clock, progress)
    return r.report(inputs, invalid)


def what_if(current: Config, proposed: Config, inputs: list[str], progress=None) -> dict:
    """Both policy sets over ``inputs`` in one pass. Bytes are priced with
    ``current``'s cost block for both, so the difference is the policies'."""
    from .compare import Join
    clock = Clock()
    a = Run(current, clock)
    b = Run(proposed, clock, prices=current)
    join = Join(a.recorder, b.recorder)
    invalid = replay([a, b], inputs, clock, progress)
    ra, rb = a.report(inputs, invalid), b.report(inputs, invalid)
    return {"current": ra, "proposed": rb, "diff": join.diff(ra, rb)}


def add_arguments(parser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML config whose policies to replay")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="OTLP JSON lines or length-prefixed OTLP protobuf files")
    parser.add_argument("--compare", metavar="OTHER.yaml",
                        help="also replay this config's policies (the proposal) and compare")
    parser.add_argument("--report", metavar="OUT.html",
                        help="write a self-contained HTML report with charts")


def run(args, cfg: Config) -> int:
    other = None
    if getattr(args, "compare", None):
        try:
            other = load(args.compare)
        except ConfigError as exc:
            for p in exc.problems:
                print(f"{args.compare}: {p}", file=sys.stderr)
            return 1
    if getattr(args, "report", None):
        try:
            open(args.report, "a").close()    # fail before a long replay, not after it
        except OSError as exc:
            print(f"simulate: cannot write the report: {exc}", file=sys.stderr)
            return 1
    try:
        size = total_bytes(args.inputs)
        with Progress(size, "B", "simulate") as bar:
            if other is None:
                out = simulate(cfg, args.inputs, bar.update)
            else:
                out = what_if(cfg, other, args.inputs, bar.update)
    except (OSError, ValueError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "report", None):
        from .report import write
        names = (args.config, args.compare) if other is not None else (args.config,)
        try:
            write(args.report, out, names)
        except OSError as exc:
            print(f"simulate: cannot write the report: {exc}", file=sys.stderr)
            return 1
        out = {**out, "report": args.report}
    print(json.dumps(out, indent=1))
    return 0
