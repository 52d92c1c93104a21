"""A real Apache Kafka 4.x broker (KRaft, combined broker+controller) for tests.

The broker runs from the jars that ``scripts/kafka.sh fetch`` resolves from
Maven Central (``tools/kafka/pom.xml``) into
``${XDG_CACHE_HOME:-~/.cache}/traceo-sampler/kafka-<version>/libs``; they are
fetched on first use, so only Java 17+ and Maven need to be on the machine.

    with KafkaBroker(num_partitions=4) as broker:
        broker.create_topic("spans", partitions=4)
        ...  # connect clients to broker.bootstrap ("127.0.0.1:<port>")
        broker.kill()      # crash it (SIGKILL)
        broker.restart()   # same ports, same data: back and ready

    # TLS and SASL listeners beside the plaintext one (SecureListeners)
    with KafkaBroker(secure=SecureListeners(tmpdir)) as broker:
        broker.bootstrap_of("SASL_SSL")   # "127.0.0.1:<port>"

Environment knobs:
    TRACEO_KAFKA_LIBS       use this folder of jars instead of fetching
    KAFKA_VERSION           another 4.x release (see scripts/kafka.sh)
    TRACEO_KAFKA_KEEP_DATA  set to 1 to keep the data folder (logs) on close
    TRACEO_KAFKA_FAST_START set to 0 for a JVM with the full JIT and no class-data archive
    JAVA_HOME               the java to run (default: java on PATH)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from .procs import kill as _kill, terminate as _terminate, with_parent_death
from .procs import finalize as _finalize
from .procs import free_ports, port_open as _port_open
from .procs import tail as _tail

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_ROOT / "scripts" / "kafka.sh"

FETCH_TIMEOUT_S = 1500.0  # cold Maven resolution of ~45 jars (about a minute here)
FORMAT_TIMEOUT_S = 180.0
DEFAULT_STARTUP_TIMEOUT_S = 180.0  # a cold JVM on 2 busy cores needs ~10-30 s
STOP_TIMEOUT_S = 30.0

_TOPIC_ALREADY_EXISTS = 36


class KafkaError(RuntimeError):
    """The test broker could not be fetched, formatted, started or used."""


# --------------------------------------------------------------------------- jars


def kafka_libs(timeout: float = FETCH_TIMEOUT_S) -> Path:
    """Folder holding the broker's jars; fetched with scripts/kafka.sh if needed."""
    override = os.environ.get("TRACEO_KAFKA_LIBS")
    if override:
        libs = Path(override).expanduser()
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise KafkaError(f"TRACEO_KAFKA_LIBS={override}: no kafka_2.13-*.jar in it")
        return libs
    if not KAFKA_SH.is_file():
        raise KafkaError(f"missing {KAFKA_SH}")
    try:
        proc = subprocess.run(
            ["bash", str(KAFKA_SH), "fetch"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaError(f"`scripts/kafka.sh fetch` took more than {timeout:.0f}s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise KafkaError(
            f"`scripts/kafka.sh fetch` failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    libs = Path(lines[-1])
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaError(f"`scripts/kafka.sh fetch` printed {libs}, which holds no kafka jar")
    return libs


# ----------------------------------------------------------------------- helpers


def random_cluster_id() -> str:
    """A cluster id as Kafka's Uuid.randomUuid() makes it: url-safe base64, no padding."""
    while True:
        raw = uuid.uuid4().bytes
        cid = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        # Kafka never hands out ids starting with '-' (they read as CLI flags).
        if not cid.startswith("-"):
            return cid


def run_async(factory: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    """Run `factory()` on a private event loop in a helper thread, bounded by `timeout`.

    Works whether or not the caller already runs an event loop.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(asyncio.wait_for(factory(), timeout))
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="kafka-broker-admin", daemon=True)
    thread.start()
    thread.join(timeout + 15)
    if thread.is_alive():
        raise KafkaError(f"Kafka admin call did not finish within {timeout + 15:.0f}s")
    if "error" in box:
        error = box["error"]
        if isinstance(error, asyncio.TimeoutError):
            raise KafkaError(f"Kafka admin call timed out after {timeout:.0f}s") from error
        raise error
    return box.get("value")


# ------------------------------------------------------------- fast JVM start
#
# On two cores a cold broker JVM spends most of its start-up loading and
# JIT-compiling classes. Two standard HotSpot options halve it: C1 only
# (-XX:TieredStopAtLevel=1; fine for tests, not for throughput benchmarks) and
# an application class-data archive (AppCDS): the first broker run dumps the
# classes it loaded at exit (-XX:ArchiveClassesAtExit), later JVMs map it
# (-XX:SharedArchiveFile). The archive lives in the user cache, keyed on the
# java binary and the jar folder; a stale or unusable one only makes HotSpot
# print a warning and load classes as usual.


def _cds_archive(java: str, libs: Path) -> Path:
    marker = libs / ".traceo-kafka-complete"
    java_real = Path(java).resolve()
    parts = [str(java_real), str(java_real.stat().st_mtime_ns), str(libs.resolve())]
    parts += [str(marker.stat().st_mtime_ns)] if marker.exists() else []
    parts += sorted(p.name for p in libs.glob("*.jar"))
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "traceo-sampler" / "cds" / f"kafka-{key}.jsa"


# ------------------------------------------------------- TLS and SASL listeners

SECURE_PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _pkcs8(pem: bytes) -> bytes:
    """A PEM private key as unencrypted PKCS#8 (``BEGIN PRIVATE KEY``), the
    form Kafka's PEM keystore reads (trustme writes the traditional one)."""
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class SecureListeners:
    """Three more listeners of a test broker, on 127.0.0.1: ``SSL`` (mutual
    TLS: the client must present a certificate the CA signed), and
    ``SASL_PLAINTEXT`` and ``SASL_SSL`` (no client certificate) taking
    PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for every user of ``users``
    (SCRAM credentials are written when the storage is formatted).

    A CA (trustme) signs the broker's certificate (for ``localhost`` and
    ``127.0.0.1``) and a client certificate. Files in ``directory``:
    ``ca.pem``; ``broker.pem`` (PKCS#8 key and chain: Kafka's PEM
    keystore); ``client.pem`` / ``client.key``; ``other-ca.pem`` (a CA that
    signed nothing here, for "not trusted")."""

    def __init__(self, directory: str | os.PathLike,
                 users: Mapping[str, str] | None = None) -> None:
        import trustme
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {"traceo": "traceo-secret"})
        ca = trustme.CA()
        self.ca_file = str(self.dir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        trustme.CA().cert_pem.write_to_path(str(self.dir / "other-ca.pem"))
        self.other_ca_file = str(self.dir / "other-ca.pem")
        server = ca.issue_cert("localhost", "127.0.0.1")
        self.keystore = str(self.dir / "broker.pem")
        Path(self.keystore).write_bytes(
            _pkcs8(server.private_key_pem.bytes())
            + b"".join(c.bytes() for c in server.cert_chain_pems))
        client = ca.issue_cert("traceo-client")
        self.cert_file = str(self.dir / "client.pem")
        self.key_file = str(self.dir / "client.key")
        Path(self.cert_file).write_bytes(b"".join(c.bytes() for c in client.cert_chain_pems))
        Path(self.key_file).write_bytes(client.private_key_pem.bytes())

    def properties(self) -> dict[str, Any]:
        """server.properties entries (the listeners themselves are the broker's)."""
        plain_users = "".join(f' user_{u}="{pw}"' for u, pw in self.users.items())
        props: dict[str, Any] = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": self.keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.ca_file,
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        }
        for name in ("sasl_plaintext", "sasl_ssl"):
            props[f"listener.name.{name}.sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
            props[f"listener.name.{name}.plain.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.plain.PlainLoginModule required"
                f"{plain_users};")
            for mech in ("scram-sha-256", "scram-sha-512"):
                props[f"listener.name.{name}.{mech}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        return props

    def format_args(self) -> list[str]:
        """``StorageTool format`` arguments writing the SCRAM credentials."""
        out: list[str] = []
        for mech in SASL_MECHANISMS[1:]:
            for u, pw in self.users.items():
                out += ["--add-scram", f"{mech}=[name={u},password={pw}]"]
        return out


# ------------------------------------------------------------------------ broker


class KafkaBroker:
    """One Kafka 4.x node in KRaft combined mode on 127.0.0.1, for tests.

    ``start()`` (or ``with``) picks two free loopback ports, makes a fresh data
    folder, formats it with ``kafka.tools.StorageTool --standalone``, starts
    ``kafka.Kafka`` and returns once a client gets metadata listing the broker.
    ``stop()``/``kill()`` end the process but keep ports and data, so
    ``restart()`` brings the same broker back with its topics and offsets.
    ``close()`` (end of ``with``) stops it and removes the data folder.
    """

    def __init__(
        self,
        *,
        num_partitions: int = 1,
        node_id: int = 1,
        heap: str = "512m",
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        offsets_topic_partitions: int = 4,
        extra_properties: Mapping[str, Any] | None = None,
        jvm_opts: list[str] | None = None,
        libs_dir: str | os.PathLike | None = None,
        keep_data: bool | None = None,
        fast_start: bool | None = None,
        secure: SecureListeners | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.secure = secure
        self.secure_ports: dict[str, int] = {}
        self.num_partitions = num_partitions
        self.node_id = node_id
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.offsets_topic_partitions = offsets_topic_partitions
        self.extra_properties = dict(extra_properties or {})
        self.jvm_opts = list(jvm_opts or [])
        self.libs_dir = Path(libs_dir) if libs_dir else None
        if keep_data is None:
            keep_data = os.environ.get("TRACEO_KAFKA_KEEP_DATA", "") not in ("", "0")
        self.keep_data = keep_data
        if fast_start is None:
            fast_start = os.environ.get("TRACEO_KAFKA_FAST_START", "1") not in ("", "0")
        self.fast_start = fast_start
        self._cds_dump: tuple[Path, Path] | None = None  # (being written, final name)

        self.port: int | None = None
        self.controller_port: int | None = None
        self.cluster_id: str | None = None
        self.data_dir: Path | None = None
        self._formatted = False
        self.started_count = 0
        self.last_startup_seconds: float | None = None
        self._proc_holder: list[subprocess.Popen | None] = [None]
        self._finalizer = weakref.finalize(self, _finalize, self._proc_holder)

    # ------------------------------------------------------------ properties

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise KafkaError("the broker has not been started")
        return f"{self.host}:{self.port}"

    def bootstrap_of(self, protocol: str) -> str:
        """host:port of the ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL`` listener."""
        if protocol not in self.secure_ports:
            raise KafkaError(f"no {protocol} listener (KafkaBroker(secure=SecureListeners(...)))")
        return f"{self.host}:{self.secure_ports[protocol]}"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self._proc_holder[0]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def server_log(self) -> Path:
        return self._require_data_dir() / "logs" / "server.log"

    @property
    def console_log(self) -> Path:
        return self._require_data_dir() / "logs" / "console.out"

    @property
    def properties_file(self) -> Path:
        return self._require_data_dir() / "server.properties"

    def _require_data_dir(self) -> Path:
        if self.data_dir is None:
            raise KafkaError("the broker has not been started")
        return self.data_dir

    def log_tail(self, lines: int = 60) -> str:
        if self.data_dir is None:
            return "(no data folder yet)"
        return (
            f"--- {self.console_log} (last {lines} lines) ---\n{_tail(self.console_log, lines)}"
            f"--- {self.server_log} (last {lines} lines) ---\n{_tail(self.server_log, lines)}"
        )

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        where = self.bootstrap if self.port else "-"
        return f"<KafkaBroker {where} {state} data={self.data_dir}>"

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> "KafkaBroker":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "KafkaBroker":
        """First start: fetch jars, make and format the data folder, run, wait ready."""
        if self.is_running:
            raise KafkaError(f"{self!r} is already running")
        if self._formatted and self.data_dir is not None:
            return self.restart()
        self.libs_dir = self.libs_dir or kafka_libs()
        ports = free_ports(2 + (len(SECURE_PROTOCOLS) if self.secure else 0), self.host)
        self.port, self.controller_port = ports[:2]
        if self.secure:
            self.secure_ports = dict(zip(SECURE_PROTOCOLS, ports[2:]))
        self.cluster_id = random_cluster_id()
        self.data_dir = Path(tempfile.mkdtemp(prefix="traceo-kafka-"))
        try:
            (self.data_dir / "logs").mkdir()
            self._write_configs()
            self._format()
            self._formatted = True
            self._launch_and_wait()
        except BaseException:
            self.close()
            raise
        return self

    def restart(self, timeout: float | None = None) -> "KafkaBroker":
        """Stop if running, then start again on the same ports with the same data."""
        if not self._formatted or self.data_dir is None:
            return self.start()
        if self.is_running:
            self.stop()
        self._launch_and_wait(timeout)
        return self

    def ensure_running(self) -> "KafkaBroker":
        """Restart the broker if a test left it stopped or killed."""
        if not self.is_running:
            self.restart()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (controlled shutdown), wait up to `timeout`, then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self._settle_cds_dump()
            return proc.returncode if proc else None
        if self._cds_dump is not None:
            timeout += 90.0  # this JVM writes the class-data archive (~50 MB) as it exits
        code = _terminate(proc, timeout)
        if code is None:
            return self.kill()
        self._settle_cds_dump()
        return code

    def kill(self) -> int | None:
        """SIGKILL, as a crash would; data and ports are kept for restart()."""
        proc = self.proc
        if proc is None:
            return None
        code = _kill(proc, STOP_TIMEOUT_S, KafkaError, "broker")
        self._settle_cds_dump()
        return code

    def close(self) -> None:
        """Stop the broker and remove its data folder (unless keep_data)."""
        try:
            self.stop()
        finally:
            self._formatted = False  # a later start() begins afresh
            if self.data_dir is not None and not self.keep_data:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir = None

    # ------------------------------------------------------------ internals

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").exists():
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java")
        if not java:
            raise KafkaError("java not found on PATH (the Kafka 4.x broker needs Java 17+)")
        return java

    def _classpath(self) -> str:
        return f"{self._libs()}/*"

    def _log4j_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self._require_data_dir() / 'log4j2.properties'}"]

    def _fast_start_opts(self, dump: bool) -> list[str]:
        if not self.fast_start:
            return []
        opts = ["-XX:TieredStopAtLevel=1"]
        try:
            archive = _cds_archive(self._java(), self._libs())
        except OSError:
            return opts
        if archive.is_file() and archive.stat().st_size > 0:
            opts.append(f"-XX:SharedArchiveFile={archive}")
        elif dump and self._cds_dump is None:
            archive.parent.mkdir(parents=True, exist_ok=True)
            for stale in archive.parent.glob("*.part"):  # left by a run that was killed
                try:
                    if time.time() - stale.stat().st_mtime > 3600:
                        stale.unlink()
                except OSError:
                    pass
            partial = archive.with_name(f"{archive.name}.{os.getpid()}.{id(self)}.part")
            self._cds_dump = (partial, archive)
            opts.append(f"-XX:ArchiveClassesAtExit={partial}")
        return opts

    def _settle_cds_dump(self) -> None:
        """After the dumping JVM exited: keep its archive if it exited on its own terms."""
        if self._cds_dump is None or self.is_running:
            return
        partial, archive = self._cds_dump
        self._cds_dump = None
        proc = self.proc
        clean_exit = proc is not None and proc.returncode is not None and proc.returncode >= 0
        try:
            if clean_exit and partial.is_file() and partial.stat().st_size > (1 << 20):
                os.replace(partial, archive)
            else:
                partial.unlink(missing_ok=True)
        except OSError:
            pass

    def _libs(self) -> Path:
        if self.libs_dir is None:
            raise KafkaError("no Kafka libs folder yet")
        return self.libs_dir

    def _write_configs(self) -> None:
        data = self._require_data_dir()
        ctrl = f"{self.host}:{self.controller_port}"
        extra = "".join(f",{p}://{self.host}:{port}" for p, port in self.secure_ports.items())
        props: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.bootstrap.servers": ctrl,
            "listeners": f"PLAINTEXT://{self.host}:{self.port}{extra},CONTROLLER://{ctrl}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}{extra},"
                                    f"CONTROLLER://{ctrl}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
                                              + "".join(f",{p}:{p}" for p in self.secure_ports),
            "log.dirs": data / "kraft-logs",
            "num.partitions": self.num_partitions,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": self.offsets_topic_partitions,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": self.offsets_topic_partitions,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # After kill(), the restarted controller refuses the new broker
            # incarnation until the old one's session expires (default 9 s).
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 500,
            # two cores: keep the thread count modest
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.retention.check.interval.ms": 300000,
        }
        if self.secure is not None:
            props.update(self.secure.properties())
        props.update(self.extra_properties)
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        (data / "server.properties").write_text(text)
        log_file = data / "logs" / "server.log"
        (data / "log4j2.properties").write_text(
            "status = warn\n"
            "name = traceo-test-kafka\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {log_file}\n"
            "appender.file.append = true\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
        )

    def _format(self) -> None:
        cmd = [
            self._java(), "-Xmx256m", *self._fast_start_opts(dump=False), *self._log4j_opts(),
            "-cp", self._classpath(),
            "kafka.tools.StorageTool", "format",
            "-t", str(self.cluster_id), "-c", str(self.properties_file), "--standalone",
            *(self.secure.format_args() if self.secure is not None else []),
        ]  # fmt: skip
        try:
            out = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=FORMAT_TIMEOUT_S,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise KafkaError(f"StorageTool format took more than {FORMAT_TIMEOUT_S:.0f}s") from exc
        (self._require_data_dir() / "logs" / "format.out").write_text(out.stdout)
        if out.returncode != 0:
            raise KafkaError(
                f"StorageTool format failed (exit {out.returncode}): {' '.join(cmd)}\n"
                f"{out.stdout[-4000:]}\n{_tail(self.server_log, 40)}"
            )

    def _launch(self) -> None:
        self._settle_cds_dump()  # a previous run that died on its own
        cmd = [
            self._java(),
            f"-Xms{self.heap}", f"-Xmx{self.heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *self._fast_start_opts(dump=True),
            *self._log4j_opts(),
            *self.jvm_opts,
            "-cp", self._classpath(),
            "kafka.Kafka", str(self.properties_file),
        ]  # fmt: skip
        in_main_thread = threading.current_thread() is threading.main_thread()
        with self.console_log.open("ab") as console:
            console.write(f"\n=== {time.strftime('%F %T')} start #{self.started_count + 1}: "
                          f"{' '.join(cmd)}\n".encode())  # fmt: skip
            console.flush()
            argv, extra = with_parent_death(cmd) if in_main_thread else (cmd, {})
            proc = subprocess.Popen(
                argv,
                cwd=self._require_data_dir(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **extra,
            )
        self._proc_holder[0] = proc
        self.started_count += 1

    def _launch_and_wait(self, timeout: float | None = None) -> None:
        t0 = time.monotonic()
        self._launch()
        try:
            self.wait_ready(timeout or self.startup_timeout)
        except BaseException:
            self.kill()
            raise
        self.last_startup_seconds = time.monotonic() - t0

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until a client gets cluster metadata that lists this broker."""
        timeout = timeout or self.startup_timeout
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc else None
                raise KafkaError(f"Kafka broker exited with code {code} while starting\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaError(
                    f"Kafka broker on {self.bootstrap} not ready after {timeout:.0f}s "
                    f"(last error: {last_error!r})\n{self.log_tail()}"
                )
            if _port_open(self.host, self.port):  # skip the client's noise until it listens
                try:
                    brokers = run_async(self._probe, min(10.0, max(remaining, 1.0)))
                    if self.node_id in brokers:
                        return
                    last_error = KafkaError(f"metadata lists brokers {brokers}, not {self.node_id}")
                except Exception as exc:
                    last_error = exc
            time.sleep(0.25)

    async def _probe(self) -> list[int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            info = await admin.describe_cluster()
            return [b["node_id"] for b in info.get("brokers", [])]
        finally:
            await admin.close()

    # ---------------------------------------------------------------- topics

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        exist_ok: bool = False,
        timeout: float = 60.0,
    ) -> None:
        """Create a topic and wait until every partition has a leader."""
        if not self.is_running:
            raise KafkaError(f"create_topic({name!r}): {self!r} is not running")
        run_async(
            lambda: self._create_topic(name, partitions, replication_factor, config, exist_ok, timeout),
            timeout + 10,  # the inner deadline reports first, with the topic's state
        )

    async def _create_topic(self, name, partitions, replication_factor, config, exist_ok, timeout):
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        deadline = time.monotonic() + timeout
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=int(min(timeout, 30) * 1000)
        )
        try:
            await admin.start()
            topic = NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=dict(config or {}),
            )
            response = await admin.create_topics([topic])
            for entry in response.topic_errors:
                code, message = entry[1], (entry[2] if len(entry) > 2 else None)
                if code == _TOPIC_ALREADY_EXISTS and exist_ok:
                    continue
                if code != 0:
                    raise KafkaError(f"create_topic({name!r}) failed: error {code} {message or ''}")
            while True:
                (meta,) = await admin.describe_topics([name])
                parts = meta.get("partitions", [])
                complete = len(parts) == partitions or (exist_ok and len(parts) > 0)
                if meta.get("error_code", 0) == 0 and complete:
                    if all(p["leader"] >= 0 for p in parts):
                        return
                if time.monotonic() > deadline:
                    raise KafkaError(f"topic {name!r} has no leaders after {timeout:.0f}s: {meta}")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()


def topic_name(prefix: str) -> str:
    """A topic (or group) name no other test on the same broker uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def java_partition(key: bytes, n: int) -> int:
    """The Java client's default partition of a keyed record (Traceo's too)."""
    from aiokafka.partitioner import murmur2
    return (murmur2(key) & 0x7FFFFFFF) % n


async def _read_records(bootstrap: str, topic: str, expected: int, settle: float,
                        timeout: float) -> list:
    from aiokafka import AIOKafkaConsumer
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic_name("check"),
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=300)
            for recs in got.values():
                out.extend(recs)
            if got:
                quiet_since = time.monotonic()
            elif len(out) >= expected and time.monotonic() - quiet_since >= settle:
                break
    finally:
        await c.stop()
    return out


def read_records(bootstrap: str, topic: str, expected: int = 0, settle: float = 2.0,
                 timeout: float = 60.0) -> list:
    """Every record of ``topic`` from the start: read until ``expected`` are
    there and nothing more came for ``settle`` seconds (or ``timeout``)."""
    return run_async(lambda: _read_records(bootstrap, topic, expected, settle, timeout),
                     timeout + 60)
