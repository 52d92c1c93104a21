"""An OpenTelemetry Collector config file, run as it is (README "Coming from
the Collector").

A file is taken for a Collector one by its shape: top-level ``receivers`` /
``processors`` / ``exporters`` / ``service`` (with ``service.pipelines``),
none of our own sections. It must hold a ``tail_sampling`` processor in a
``traces`` pipeline; that pipeline's receivers and exporters are mapped onto
ours, its ``tail_sampling`` block becomes ``sampler:`` with
``semantics: collector`` (decide as the Collector v0.161.0 does), and every
other component is listed with what happens to it. Components that would
change what is kept or lose data if skipped (a processor that rewrites
spans, another pipeline, a connector) are refused unless the user passes
``--ignore-unsupported``; the ones Traceo does not need (``batch``,
``memory_limiter``, ``debug``, extensions) are listed and skipped.

``${env:VAR}``, ``${VAR}`` and ``${env:VAR:-default}`` are substituted in
the text before it is parsed, as the Collector's env provider does (an
unset variable without a default becomes empty, ``$$`` is a literal ``$``).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

COLLECTOR_SECTIONS = frozenset({"receivers", "processors", "exporters", "service",
                                "extensions", "connectors"})

_ENV = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# processors and exporters Traceo does not need: (what happens)
NOT_NEEDED = {
    "processors": {
        "batch": "not needed: Traceo batches its exports itself (exporters.*.batch_max_spans)",
        "memory_limiter": "not needed: the buffer is bounded by sampler.memory_limit_mib "
                          "and decides traces early under pressure",
    },
    "exporters": {
        "debug": "not run: Traceo has no console exporter (the admin /status page shows kept traces)",
        "logging": "not run: Traceo has no console exporter (the admin /status page shows kept traces)",
        "nop": "not run: nothing to do",
    },
    "receivers": {
        "nop": "not run: nothing to do",
    },
}
EXTENSION_NOTES = {
    "health_check": "not run: Traceo's admin endpoint serves /healthz and /readyz",
    "pprof": "not run",
    "zpages": "not run: Traceo's admin endpoint serves /status",
}


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        val = env.get(m.group(1))
        if val is None:
            return m.group(2) if m.group(2) is not None else ""
        return val

    return _ENV.sub(sub, text)


def looks_like_collector(raw: Any) -> bool:
    if not isinstance(raw, dict) or not raw:
        return False
    if not set(raw) <= COLLECTOR_SECTIONS:
        return False
    svc = raw.get("service")
    return "processors" in raw or (isinstance(svc, dict) and "pipelines" in svc)


def _kind(component_id: str) -> str:
    """``otlp/backend`` → ``otlp``."""
    return str(component_id).split("/", 1)[0]


class Translation:
    """The config of ours a Collector file became, and what happened to
    each of its components (``mapping``: (component path, what happens))."""

    def __init__(self):
        self.config: dict[str, Any] = {}
        self.mapping: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self.problems: list[str] = []
        # our config path prefix → the Collector file's, for error messages
        self.prefixes: dict[str, str] = {}

    def collector_path(self, problem: str) -> str:
        """``sampler.policies[0]...: msg`` → ``processors.tail_sampling.policies[0]...: msg``."""
        for ours in sorted(self.prefixes, key=len, reverse=True):
            if problem == ours or problem.startswith((ours + ".", ours + ":", ours + "[")):
                return self.prefixes[ours] + problem[len(ours):]
        return problem

    def note(self, where: str, what: str) -> None:
        self.mapping.append((where, what))

    def refuse(self, where: str, what: str) -> None:
        self.refused.append(where)
        self.mapping.append((where, what))

    def lines(self) -> list[str]:
        width = max((len(w) for w, _ in self.mapping), default=0)
        return [f"{w.ljust(width)}  {what}" for w, what in self.mapping]


def translate(raw: dict, ignore_unsupported: bool = False) -> Translation:
    tr = Translation()
    receivers = raw.get("receivers") or {}
    processors = raw.get("processors") or {}
    exporters = raw.get("exporters") or {}
    service = raw.get("service") or {}
    for name, val in (("receivers", receivers), ("processors", processors),
                      ("exporters", exporters), ("service", service)):
        if not isinstance(val, dict):
            tr.problems.append(f"{name}: must be a mapping")
    if tr.problems:
        return tr
    pipelines = service.get("pipelines") or {}
    if not isinstance(pipelines, dict):
        tr.problems.append("service.pipelines: must be a mapping")
        return tr
    chosen = None
    for pid, p in pipelines.items():
        if not isinstance(p, dict):
            tr.problems.append(f"service.pipelines.{pid}: must be a mapping")
            continue
        procs = p.get("processors") or []
        if _kind(pid) == "traces" and any(_kind(x) == "tail_sampling" for x in procs):
            if chosen is not None:
                tr.refuse(f"service.pipelines.{pid}",
                          f"not run: a second traces pipeline with tail_sampling "
                          f"(Traceo runs one: service.pipelines.{chosen})")
                continue
            chosen = pid
    if chosen is None:
        tr.problems.append("service.pipelines: no traces pipeline with a tail_sampling processor "
                           "(a Collector file is run for its tail_sampling)")
        return tr
    pipe = pipelines[chosen]
    tr.note(f"service.pipelines.{chosen}", "run")
    for pid, p in pipelines.items():
        if pid != chosen and f"service.pipelines.{pid}" not in tr.refused:
            tr.refuse(f"service.pipelines.{pid}",
                      "not supported: Traceo runs only the traces pipeline with tail_sampling")

    used = {"receivers": set(pipe.get("receivers") or []),
            "processors": set(pipe.get("processors") or []),
            "exporters": set(pipe.get("exporters") or [])}
    for section, comps in (("receivers", receivers), ("processors", processors),
                           ("exporters", exporters)):
        for cid in used[section]:
            if cid not in comps:
                tr.problems.append(f"service.pipelines.{chosen}.{section}: "
                                   f"{cid!r} is not defined under {section}")
        for cid in comps:
            if cid not in used[section]:
                tr.note(f"{section}.{cid}", f"not run: not in service.pipelines.{chosen}")

    out = tr.config
    _receivers(tr, receivers, [c for c in pipe.get("receivers") or [] if c in receivers], out)
    _processors(tr, processors, [c for c in pipe.get("processors") or [] if c in processors], out)
    _exporters(tr, exporters, [c for c in pipe.get("exporters") or [] if c in exporters], out)
    for ext in (raw.get("extensions") or {}):
        tr.note(f"extensions.{ext}", EXTENSION_NOTES.get(_kind(ext), "not run"))
    for conn in (raw.get("connectors") or {}):
        tr.refuse(f"connectors.{conn}", "not supported")
    for key in service:
        if key not in ("pipelines", "extensions", "telemetry"):
            tr.note(f"service.{key}", "not read")
    if "telemetry" in service:
        tr.note("service.telemetry", "not read: Traceo's own metrics are on the admin endpoint "
                                     "(admin.endpoint, off unless configured)")
    if tr.refused and not ignore_unsupported:
        for where in tr.refused:
            what = dict(tr.mapping)[where]
            tr.problems.append(f"{where}: {what} (pass --ignore-unsupported to run without it)")
    elif tr.refused:
        tr.mapping = [(w, what + " — skipped (--ignore-unsupported)" if w in tr.refused else what)
                      for w, what in tr.mapping]
    return tr


def _receivers(tr: Translation, comps: dict, ids: list, out: dict) -> None:
    from .config import Endpoint
    rec: dict[str, Any] = {}
    for cid in ids:
        blk = comps.get(cid)
        blk = blk if isinstance(blk, dict) else {}
        kind = _kind(cid)
        where = f"receivers.{cid}"
        if kind == "otlp":
            if "otlp" in rec:
                tr.refuse(where, "not supported: a second otlp receiver")
                continue
            protos = blk.get("protocols") or {}
            otlp: dict[str, Any] = {}
            for proto, default in (("grpc", "localhost:4317"), ("http", "localhost:4318")):
                if proto not in protos:
                    continue
                p = protos[proto] or {}
                ep: dict[str, Any] = {"endpoint": p.get("endpoint") or default}
                if "max_recv_msg_size_mib" in p:
                    ep["max_recv_msg_size_mib"] = p["max_recv_msg_size_mib"]
                if p.get("tls") is not None:
                    if "tls" in Endpoint.__struct_fields__:
                        ep["tls"] = {k: v for k, v in p["tls"].items()
                                     if k in ("cert_file", "key_file", "client_ca_file")}
                    else:
                        tr.refuse(f"{where}.protocols.{proto}.tls",
                                  "not supported: receiver TLS is not available in this version")
                for k in p:
                    if k not in ("endpoint", "max_recv_msg_size_mib", "tls"):
                        tr.note(f"{where}.protocols.{proto}.{k}", "not read")
                otlp[proto] = ep
                tr.note(f"{where}.protocols.{proto}", f"receivers.otlp.{proto}.endpoint: {ep['endpoint']}")
            rec["otlp"] = otlp
            tr.prefixes["receivers.otlp"] = where + ".protocols"
        elif kind == "kafka":
            _kafka_receiver(tr, blk, where, rec)
        elif kind in NOT_NEEDED["receivers"]:
            tr.note(where, NOT_NEEDED["receivers"][kind])
        else:
            tr.refuse(where, "not supported: Traceo receives OTLP (gRPC, HTTP) and Kafka")
    out["receivers"] = rec


# the kafkareceiver's keys (v0.161.0) that decide what is read, not only how
_KAFKA_READ = ("brokers", "traces", "topic", "encoding", "group_id", "initial_offset",
               "session_timeout")


def _kafka_receiver(tr: Translation, blk: dict, where: str, rec: dict) -> None:
    """The Collector's kafkareceiver → receivers.kafka, with the Collector's
    defaults where they differ from ours (initial_offset latest, group
    otel-collector: a file that ran on the Collector resumes its group)."""
    traces = blk.get("traces") or {}
    traces = traces if isinstance(traces, dict) else {}
    kcfg: dict[str, Any] = {"brokers": blk.get("brokers") or ["localhost:9092"]}
    # traces.topics (a list) in v0.161.0; older releases' traces.topic and topic
    topics = traces.get("topics")
    if topics is None:
        one = traces.get("topic") or blk.get("topic")
        topics = [one] if one else ["otlp_spans"]     # the Collector's default traces topic
    if isinstance(topics, str):
        topics = [topics]
    topics = [str(t) for t in topics]
    if len(topics) != 1 or topics[0].startswith("^"):
        tr.refuse(f"{where}.traces.topics", f"not supported: {topics!r} (receivers.kafka "
                                            "reads one topic, named, not a pattern)")
    kcfg["topic"] = topics[0] if topics else "otlp_spans"
    kcfg["group_id"] = blk.get("group_id") or "otel-collector"
    kcfg["initial_offset"] = blk.get("initial_offset") or "latest"
    if blk.get("session_timeout") is not None:
        kcfg["session_timeout"] = _duration(blk["session_timeout"])
    rec["kafka"] = kcfg
    tr.prefixes["receivers.kafka"] = where
    tr.note(where, f"receivers.kafka: topic {kcfg['topic']} on {', '.join(kcfg['brokers'])}, "
                   f"group {kcfg['group_id']}, initial_offset {kcfg['initial_offset']}")
    enc = traces.get("encoding") or blk.get("encoding") or "otlp_proto"
    if enc != "otlp_proto":
        tr.refuse(f"{where}.traces.encoding", f"not supported: encoding {enc!r} (only otlp_proto)")
    _kafka_security(tr, blk, where, kcfg, "receivers.kafka")
    for k in blk:
        if k not in _KAFKA_READ and k not in ("tls", "auth"):
            tr.note(f"{where}.{k}", "not read")
    for k in traces:
        if k not in ("topics", "topic", "encoding"):
            tr.note(f"{where}.traces.{k}", "not read")


# configtls.ClientConfig keys that Traceo's Tls reads, as they are
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure", "insecure_skip_verify",
             "server_name_override")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _kafka_security(tr: Translation, blk: dict, where: str, out: dict, ours: str) -> None:
    """configkafka's ``tls`` and ``auth`` (v0.161.0) → our block's ``tls``
    and ``auth.sasl``: PLAIN and SCRAM (and the deprecated
    ``auth.plain_text`` / ``auth.tls``); Kerberos, OAUTHBEARER, AWS MSK IAM
    and inline PEM are refused, each named."""
    a = blk.get("auth")
    auth: dict = a if isinstance(a, dict) else {}
    tls = blk.get("tls")
    tls_where = f"{where}.tls"
    if tls is None and isinstance(auth.get("tls"), dict):
        # deprecated since v0.124.0, read when tls is not set (as the Collector)
        tls, tls_where = auth["tls"], f"{where}.auth.tls"
    if isinstance(tls, dict):
        out["tls"] = {k: v for k, v in tls.items() if k in _TLS_KEYS}
        for k in tls:
            if k in ("ca_pem", "cert_pem", "key_pem"):
                tr.refuse(f"{tls_where}.{k}", f"not supported: inline PEM; put it in a file "
                                              f"and set {k[:-4]}_file")
            elif k not in _TLS_KEYS:
                tr.note(f"{tls_where}.{k}", "not read")
        tr.note(tls_where, "plaintext (tls.insecure)" if tls.get("insecure") is True
                else f"{ours}.tls: TLS to the brokers")
        if tls.get("server_name_override") and ours == "exporters.kafka":
            # librdkafka has no such option; aiokafka's producer does it
            out["client"] = "aiokafka"
            tr.note(f"{tls_where}.server_name_override", "exporters.kafka.client: aiokafka "
                                                         "(librdkafka cannot override the name)")
    sasl = auth.get("sasl")
    plain = auth.get("plain_text")
    if not isinstance(sasl, dict) and isinstance(plain, dict):
        # deprecated since v0.123.0: SASL/PLAIN
        sasl = {"mechanism": "PLAIN", **plain}
        tr.note(f"{where}.auth.plain_text", f"{ours}.auth.sasl with mechanism PLAIN")
    if isinstance(sasl, dict):
        mech = sasl.get("mechanism")
        if mech not in _SASL_MECHANISMS:
            tr.refuse(f"{where}.auth.sasl.mechanism",
                      f"not supported: {mech!r} (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        else:
            # the file was env-expanded already: a '$' left in it is literal
            pw = str(sasl.get("password") or "").replace("$", "$$")
            out["auth"] = {"sasl": {"mechanism": mech, "username": str(sasl.get("username") or ""),
                                    "password": pw}}
            tr.note(f"{where}.auth.sasl", f"{ours}.auth.sasl: {mech} as "
                                          f"{sasl.get('username') or '(no user)'}")
        for k in sasl:
            if k in ("aws_msk", "oauthbearer_token_source") and mech in _SASL_MECHANISMS:
                tr.refuse(f"{where}.auth.sasl.{k}", "not supported: only PLAIN and SCRAM")
            elif k not in ("mechanism", "username", "password"):
                tr.note(f"{where}.auth.sasl.{k}", "not read")
    for k in auth:
        if k == "kerberos":
            tr.refuse(f"{where}.auth.kerberos", "not supported: Kerberos (GSSAPI); Traceo "
                                                "authenticates with SASL PLAIN or SCRAM")
        elif k not in ("sasl", "plain_text", "tls"):
            tr.note(f"{where}.auth.{k}", "not read")


def _processors(tr: Translation, comps: dict, ids: list, out: dict) -> None:
    seen_ts = False
    for cid in ids:
        kind = _kind(cid)
        where = f"processors.{cid}"
        if kind == "tail_sampling":
            if seen_ts:
                tr.refuse(where, "not supported: a second tail_sampling in the pipeline")
                continue
            seen_ts = True
            blk = comps.get(cid) or {}
            if not isinstance(blk, dict):
                tr.problems.append(f"{where}: must be a mapping")
                continue
            out["sampler"] = _sampler(tr, blk, where)
            _workers(tr, blk, where, out)
            tr.prefixes["sampler"] = where
            tr.note(where, "sampler (semantics: collector)")
        elif kind in NOT_NEEDED["processors"]:
            tr.note(where, NOT_NEEDED["processors"][kind])
        else:
            tr.refuse(where, "not supported: Traceo does not run it, so the spans would "
                             "reach the policies and the backend without it")


def _sampler(tr: Translation, blk: dict, where: str) -> dict:
    s = dict(blk)
    s["semantics"] = "collector"
    if "tail_storage" in s:
        tr.refuse(f"{where}.tail_storage", "not supported: Traceo's buffer is in memory "
                                            "(sampler.wal is its durable option)")
        s.pop("tail_storage")
    # The Collector's defaults where they differ from ours.
    s.setdefault("decision_wait", "30s")
    num_traces = s.get("num_traces", 50_000)
    dc = dict(s.get("decision_cache") or {})
    if not dc.get("sampled_cache_size") and not dc.get("non_sampled_cache_size"):
        # no decision cache there: a decided trace stays in the Collector's
        # map, so late spans follow its decision, until num_traces newer
        # traces push it out; the same reach here
        dc = {"sampled_cache_size": num_traces, "non_sampled_cache_size": num_traces}
        tr.note(f"{where}.decision_cache", f"sampled and not sampled: {num_traces} "
                                           "(num_traces, how long the Collector remembers)")
    s["decision_cache"] = dc
    for k, what in (("num_traces", "no effect: the buffer is bounded in bytes "
                                   "(sampler.memory_limit_mib); no undecided trace is evicted"),
                    ("expected_new_traces_per_sec", "no effect: an allocation hint"),
                    ("block_on_overflow", "no effect: nothing is evicted, see num_traces")):
        if k in s:
            tr.note(f"{where}.{k}", what)
    return s


def _workers(tr: Translation, blk: dict, where: str, out: dict) -> None:
    """num_shards: the Collector's parallel event loops, each owning the
    traces whose ID hashes to it, limits divided among them — Traceo's
    service.workers. Its default, 1, is one process, as the Collector's one
    loop."""
    n = blk.get("num_shards") or 1
    if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 256:
        out["service"] = {"workers": n}
        tr.note(f"{where}.num_shards", f"service.workers: {n}")


def _exporters(tr: Translation, comps: dict, ids: list, out: dict) -> None:
    exp: dict[str, Any] = {}
    for cid in ids:
        blk = comps.get(cid)
        blk = blk if isinstance(blk, dict) else {}
        kind = _kind(cid)
        where = f"exporters.{cid}"
        if kind in ("otlp", "otlp_grpc", "otlphttp", "otlp_http"):
            if "otlp" in exp:
                tr.refuse(where, "not supported: a second OTLP exporter (Traceo has one)")
                continue
            e = _otlp_exporter(tr, blk, where, http=kind in ("otlphttp", "otlp_http"))
            exp["otlp"] = e
            tr.prefixes["exporters.otlp"] = where
            tr.note(where, f"exporters.otlp ({e['protocol']}): {e['endpoint']}")
        elif kind == "file":
            if "file" in exp:
                tr.refuse(where, "not supported: a second file exporter")
                continue
            exp["file"] = {"path": blk.get("path", "")}
            tr.prefixes["exporters.file"] = where
            for k in blk:
                if k != "path":
                    tr.note(f"{where}.{k}", "not read (Traceo writes OTLP JSON lines)")
            tr.note(where, f"exporters.file: {blk.get('path', '')}")
        elif kind in NOT_NEEDED["exporters"]:
            tr.note(where, NOT_NEEDED["exporters"][kind])
        elif kind == "kafka":
            if "kafka" in exp:
                tr.refuse(where, "not supported: a second Kafka exporter")
                continue
            k = _kafka_exporter(tr, blk, where)
            exp["kafka"] = k
            tr.prefixes["exporters.kafka"] = where
            tr.note(where, f"exporters.kafka (mode sampled: the kept traces): topic "
                           f"{k['topic']} on {', '.join(k['brokers'])}")
        else:
            tr.refuse(where, "not supported: Traceo exports OTLP (gRPC, HTTP) and files")
    out["exporters"] = exp


def _duration(v: Any) -> Any:
    """The Collector also takes a bare number of nanoseconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{int(v)}ns"
    return v


def _retry_and_queue(tr: Translation, blk: dict, where: str, e: dict) -> None:
    """exporterhelper's retry_on_failure and sending_queue, as every
    Collector exporter has them."""
    retry = blk.get("retry_on_failure")
    if isinstance(retry, dict):
        r: dict[str, Any] = {}
        for src, dst in (("enabled", "enabled"), ("initial_interval", "initial_interval"),
                         ("max_interval", "max_interval"), ("max_elapsed_time", "max_elapsed")):
            if src in retry:
                r[dst] = _duration(retry[src]) if dst != "enabled" else retry[src]
        for k in retry:
            if k not in ("enabled", "initial_interval", "max_interval", "max_elapsed_time"):
                tr.note(f"{where}.retry_on_failure.{k}", "not read")
        e["retry"] = r
    q = blk.get("sending_queue")
    if isinstance(q, dict):
        tr.note(f"{where}.sending_queue", "a queue bounded in bytes (queue_max_bytes, "
                                          "default 256 MiB), full: receivers push back")


# the kafkaexporter's producer.required_acks (default 1) as exporters.kafka.acks
_KAFKA_ACKS = {-1: "all", 0: 0, 1: 1}


def _kafka_exporter(tr: Translation, blk: dict, where: str) -> dict:
    """The Collector's kafkaexporter after tail_sampling: exporters.kafka in
    mode sampled, with the Collector's defaults where Traceo's differ
    (acks 1, timeout 5s, topic otlp_spans)."""
    t = blk.get("traces")
    traces: dict = t if isinstance(t, dict) else {}
    k: dict[str, Any] = {"mode": "sampled",
                         "brokers": blk.get("brokers") or ["localhost:9092"],
                         "topic": traces.get("topic") or blk.get("topic") or "otlp_spans",
                         "partition_traces_by_id": bool(blk.get("partition_traces_by_id", False)),
                         "timeout": _duration(blk.get("timeout", "5s"))}
    enc = traces.get("encoding") or blk.get("encoding") or "otlp_proto"
    if enc != "otlp_proto":
        tr.refuse(f"{where}.traces.encoding", f"not supported: encoding {enc!r} (only otlp_proto)")
    pr = blk.get("producer")
    prod: dict = pr if isinstance(pr, dict) else {}
    acks = prod.get("required_acks", 1)
    if acks in _KAFKA_ACKS:
        k["acks"] = _KAFKA_ACKS[acks]
    else:
        tr.refuse(f"{where}.producer.required_acks", f"must be -1, 0 or 1, got {acks!r}")
    if "max_message_bytes" in prod:
        # a batch on one partition is one message
        k["batch_max_bytes"] = prod["max_message_bytes"]
        tr.note(f"{where}.producer.max_message_bytes",
                f"exporters.kafka.batch_max_bytes: {prod['max_message_bytes']}")
    comp = prod.get("compression") or "none"
    if comp in ("none", "gzip", "snappy", "lz4", "zstd"):
        k["compression"] = comp
    else:
        tr.refuse(f"{where}.producer.compression", f"not supported: {comp!r}")
    for key in prod:
        if key not in ("required_acks", "max_message_bytes", "compression"):
            tr.note(f"{where}.producer.{key}", "not read")
    _kafka_security(tr, blk, where, k, "exporters.kafka")
    if "record_partitioner" in blk or k["partition_traces_by_id"]:
        tr.note(f"{where}.record_partitioner", "each trace goes to the partition murmur2 of its "
                                               "hex trace ID picks (the Java client's "
                                               "partitioner), not the Collector's default "
                                               "sarama_compat hash")
    _retry_and_queue(tr, blk, where, k)
    for key in blk:
        if key not in ("brokers", "topic", "traces", "encoding", "partition_traces_by_id",
                       "timeout", "producer", "tls", "auth", "record_partitioner",
                       "retry_on_failure", "sending_queue"):
            tr.note(f"{where}.{key}", "not read")
    return k


def _otlp_exporter(tr: Translation, blk: dict, where: str, http: bool) -> dict:
    e: dict[str, Any] = {"protocol": "http/protobuf" if http else "grpc"}
    ep = blk.get("traces_endpoint") if http else None
    if ep:
        e["endpoint"] = ep
    else:
        e["endpoint"] = blk.get("endpoint", "")
        if http and e["endpoint"]:
            e["endpoint"] = e["endpoint"].rstrip("/") + "/v1/traces"
    # the Collector compresses with gzip unless told otherwise
    comp = blk.get("compression", "gzip")
    e["compression"] = "none" if comp in ("", "none", None) else comp
    if "timeout" in blk:
        e["timeout"] = _duration(blk["timeout"])
    if blk.get("headers"):
        e["headers"] = {str(k): str(v) for k, v in blk["headers"].items()}
    tls = blk.get("tls")
    if http and e["endpoint"].startswith("http://"):
        # otlphttp: the scheme decides, tls settings apply to https only
        tls = None
    if isinstance(tls, dict):
        e["tls"] = {k: v for k, v in tls.items()
                    if k in ("ca_file", "cert_file", "key_file", "insecure",
                             "insecure_skip_verify", "server_name_override")}
        for k in tls:
            if k not in e["tls"]:
                tr.note(f"{where}.tls.{k}", "not read")
    elif not http and not e["endpoint"].startswith("http://"):
        # the Collector's gRPC client uses TLS unless tls.insecure is true
        e["tls"] = {}
    _retry_and_queue(tr, blk, where, e)
    for k in blk:
        if k not in ("endpoint", "traces_endpoint", "compression", "timeout", "headers", "tls",
                     "retry_on_failure", "sending_queue"):
            tr.note(f"{where}.{k}", "not read")
    return e
