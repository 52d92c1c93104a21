"""Hot-path cost of the receivers' gate (bearer token + memory limiter) and
of TLS, as serve CPU seconds per million spans, each against plain gRPC in
the same run.

    python benchmarks/bench_gate.py [--requests 300] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import grpc
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "src"))

from support_otlp import make_request, trace  # noqa: E402
from support_serve import Serve  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def run(variant: str, reqs: list[bytes], pki: dict) -> float:
    cfg = {"sampler": {"policies": [{"name": "none", "type": "probabilistic",
                                     "probabilistic": {"sampling_percentage": 0}}]},
           "exporters": {"file": {"path": "kept.jsonl"}}, "service": {"workers": 1}}
    grpc_opts: dict = {}
    md = ()
    if variant in ("gate", "tls+gate"):
        grpc_opts["auth"] = {"bearer_tokens_file": pki["tokens"]}
        cfg["service"]["memory_limit_mib"] = 4096
        md = (("authorization", "Bearer bench-token"),)
    if variant == "tls+gate":
        grpc_opts["tls"] = {"cert_file": pki["cert"], "key_file": pki["key"]}
    with Serve(cfg, grpc_opts=grpc_opts) as srv:
        if variant == "tls+gate":
            with open(pki["ca"], "rb") as fh:
                ch = grpc.secure_channel(srv.endpoint, grpc.ssl_channel_credentials(fh.read()))
        else:
            ch = grpc.insecure_channel(srv.endpoint)
        export = ch.unary_unary(EXPORT)
        export(reqs[0], metadata=md, timeout=30)
        proc = psutil.Process(srv.proc.pid)
        t0 = proc.cpu_times()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda r: export(r, metadata=md, timeout=60), reqs))
        t1 = proc.cpu_times()
        ch.close()
    return (t1.user + t1.system) - (t0.user + t0.system)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import trustme
    d = tempfile.mkdtemp()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pki = {"tokens": os.path.join(d, "tokens"), "cert": os.path.join(d, "c.pem"),
           "key": os.path.join(d, "k.pem"), "ca": os.path.join(d, "ca.pem")}
    with open(pki["tokens"], "w") as fh:
        fh.write("bench-token\n")
    cert.cert_chain_pems[0].write_to_path(pki["cert"])
    cert.private_key_pem.write_to_path(pki["key"])
    ca.cert_pem.write_to_path(pki["ca"])
    reqs = [make_request([trace(8) for _ in range(64)]) for _ in range(args.requests)]
    spans = args.requests * 512
    out: dict = {"spans_per_round": spans, "spans_per_request": 512}
    for variant in ("plain", "gate", "tls+gate"):
        best = min(run(variant, reqs, pki) for _ in range(args.rounds))
        out[f"{variant}_cpu_s_per_million_spans"] = round(best / spans * 1e6, 3)
    p = out["plain_cpu_s_per_million_spans"]
    out["gate_over_plain"] = round(out["gate_cpu_s_per_million_spans"] / p, 3)
    out["tls_gate_over_plain"] = round(out["tls+gate_cpu_s_per_million_spans"] / p, 3)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
