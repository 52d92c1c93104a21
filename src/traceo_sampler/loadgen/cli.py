"""``traceo-sampler loadgen``: :func:`add_arguments` + :func:`run`."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterable, Iterator

from .generator import TraceGenerator
from .sender import send


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="127.0.0.1:4317", help="OTLP gRPC HOST:PORT (default %(default)s)")
    parser.add_argument("--rate", type=float, default=None, metavar="SPANS_PER_S",
                        help="spans per second (default: as fast as possible)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="send for this long (default 10 s unless --spans is given)")
    parser.add_argument("--spans", type=int, default=None, metavar="N",
                        help="send about N spans (whole traces) once, then stop")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random, printed)")
    parser.add_argument("--error-rate", type=float, default=0.05, metavar="F",
                        help="share of traces with an ERROR span (default %(default)s)")
    parser.add_argument("--services", type=int, default=8, metavar="N", help="services (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    parser.add_argument("--channels", type=int, default=1,
                        help="TCP connections to spread the requests over (default %(default)s)")
    parser.add_argument("--spans-per-request", type=int, default=512, metavar="N",
                        help="spans per Export request (default %(default)s)")
    parser.add_argument("--batching", choices=("collector", "sdk"), default="collector",
                        help="requests mix all services (collector) or one per service (sdk)")
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    parser.add_argument("--retries", type=int, default=5, metavar="N",
                        help="times a pushed-back (RESOURCE_EXHAUSTED with RetryInfo) or UNAVAILABLE "
                             "request is sent again, as the OpenTelemetry SDK does; 0: never "
                             "(default %(default)s)")
    parser.add_argument("--pool-spans", type=int, default=200_000, metavar="N",
                        help="spans pre-encoded and replayed with fresh trace IDs (default %(default)s)")


class _LoadBar:
    """A terminal progress bar for ``run``: by time with --duration, by
    spans with --spans; nothing when stderr is not a terminal."""

    def __init__(self, duration: float | None, spans: int | None, pool_spans: int):
        from ..progress import Progress
        self.duration = duration
        self.sent = 0
        if duration is not None:
            self.bar = Progress(duration, "s", "loadgen")
        else:
            self.bar = Progress(spans or pool_spans, "span", "loadgen")

    def __call__(self, n: int, elapsed: float) -> None:
        self.sent += n
        if self.duration is not None:
            self.bar.set(round(elapsed, 1), f"{self.sent:,} spans, {self.sent / max(elapsed, 1e-9):,.0f} spans/s")
        else:
            self.bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Run the load generator; print a one-line JSON summary; 0 when every request was accepted."""
    for name, ok in (("--rate", args.rate is None or args.rate > 0),
                     ("--duration", args.duration is None or args.duration > 0),
                     ("--spans", args.spans is None or args.spans > 0),
                     ("--error-rate", 0.0 <= args.error_rate <= 1.0),
                     ("--services", args.services >= 1),
                     ("--concurrency", args.concurrency >= 1),
                     ("--channels", args.channels >= 1),
                     ("--spans-per-request", args.spans_per_request >= 1)):
        if not ok:
            print(f"traceo-sampler loadgen: invalid {name}", file=sys.stderr)
            return 2
    duration = args.duration
    if duration is None and args.spans is None:
        duration = 10.0
    gen = TraceGenerator(args.seed, services=args.services, error_rate=args.error_rate)
    # The pool: what is needed, at most --pool-spans; replayed with fresh trace IDs past its end.
    target = float(args.pool_spans)
    if args.spans is not None:
        target = min(target, args.spans)
    if args.rate and duration is not None:
        target = min(target, args.rate * duration)
    t_build = time.perf_counter()
    reqs = gen.build_requests(spans_per_request_target=args.spans_per_request, n_spans=max(1, int(target)),
                              batching=args.batching)
    build_s = time.perf_counter() - t_build

    async def main() -> dict:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        if args.spans is not None and duration is None and reqs.n_spans >= args.spans:
            source: Iterable = reqs  # the pool once
        else:
            # replay until the span budget (if any) or the time (if any) is spent
            budget = args.spans

            def limited() -> Iterator[tuple[bytes, int]]:
                sent = 0
                for data, n in reqs.cycle():
                    if budget is not None and sent >= budget:
                        return
                    sent += n
                    yield data, n
            source = limited()
        with _LoadBar(duration, args.spans, reqs.n_spans) as bar:
            return await send(args.endpoint, source, args.rate, duration, args.concurrency,
                              compression=args.compression, stop=stop, channels=args.channels,
                              progress=bar, retries=args.retries)

    result = asyncio.run(main())
    summary = {"command": "loadgen", "seed": gen.seed, "services": args.services, "error_rate": args.error_rate,
               "pool": reqs.stats(), "build_s": round(build_s, 3), **result}
    print(json.dumps(summary, separators=(",", ":")))
    sys.stdout.flush()
    return 0 if result.get("requests_ok", 0) > 0 and not result.get("requests_failed") and \
        "error" not in result else 1


def main(argv: list[str] | None = None) -> int:  # ``python -m traceo_sampler.loadgen`` for convenience
    parser = argparse.ArgumentParser(prog="traceo-sampler loadgen", description="Send synthetic traces over OTLP gRPC.")
    add_arguments(parser)
    return run(parser.parse_args(argv))

