"""Command line: serve, validate, simulate, loadgen (docs/design.md §4)."""
from __future__ import annotations

import argparse
import logging
import sys

from . import config as _config


def _load_or_report(path: str | None, args=None, show_mapping: bool = False
                    ) -> _config.Config | None:
    from . import preflight
    if args is not None and getattr(args, "ignore_unsupported", False):
        _config.IGNORE_UNSUPPORTED = True
    try:
        cfg, mapping = _config.load_with_mapping(path)
        preflight.require(cfg)
    except _config.ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return None
    if mapping is not None:
        # a Collector file: what each of its components became
        if show_mapping:
            print(f"{path}: an OpenTelemetry Collector config, run with Collector semantics:")
            for line in mapping:
                print("  " + line)
        else:
            log = logging.getLogger("traceo_sampler.config")
            log.info("%s: an OpenTelemetry Collector config, run with Collector semantics", path)
            for line in mapping:
                log.info("  %s", line)
    return cfg


def cmd_serve(args) -> int:
    cfg = _load_or_report(args.config, args)
    if cfg is None:
        return 1
    from .server import serve
    try:
        return serve(cfg, args.ready_file, args.config)
    except _config.ConfigError as exc:
        # a listener that cannot be opened, a file that cannot be created
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1


def cmd_validate(args) -> int:
    cfg = _load_or_report(args.config, args, show_mapping=True)
    if cfg is None:
        return 1
    line = _config.kafka_mode_line(cfg)
    if line is not None:
        print(line)
    print(f"{args.config}: ok")
    return 0


def cmd_simulate(args) -> int:
    cfg = _load_or_report(args.config, args)
    if cfg is None:
        return 1
    from . import simulate
    return simulate.run(args, cfg)


def cmd_loadgen(args) -> int:
    from . import loadgen
    return loadgen.run(args)


def _ignore_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ignore-unsupported", action="store_true",
                   help="a Collector config file: skip the components Traceo does not run "
                        "(listed at start-up) instead of refusing the file")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="traceo-sampler",
                                description="Tail-sampling stream processor for OpenTelemetry traces")
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the sampler (embedded default without -c)")
    s.add_argument("-c", "--config", help="YAML config file (ours or an OpenTelemetry Collector's)")
    s.add_argument("--ready-file", help=argparse.SUPPRESS)
    _ignore_flag(s)
    s.set_defaults(func=cmd_serve)
    v = sub.add_parser("validate", help="check a config file")
    v.add_argument("-c", "--config", required=True)
    _ignore_flag(v)
    v.set_defaults(func=cmd_validate)
    sm = sub.add_parser("simulate", help="replay captured traces through the policies offline")
    from . import simulate
    simulate.add_arguments(sm)
    _ignore_flag(sm)
    sm.set_defaults(func=cmd_simulate)
    lg = sub.add_parser("loadgen", help="send synthetic traces over OTLP/gRPC")
    try:
        from . import loadgen
        loadgen.add_arguments(lg)
    except ImportError:
        pass
    lg.set_defaults(func=cmd_loadgen)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
