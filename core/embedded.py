"""Private PostgreSQL and Mosquitto instances from the installed binaries (demo and tests)."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

log = logging.getLogger(__name__)

# Mosquitto defaults lose data silently (STYLE.md, measured): max_queued_messages 1000 drops the rest
# of a persistent session's backlog, and 20 in-flight QoS-1 messages caps a batch. Raise both.
MOSQUITTO_LIMITS = """\
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
max_packet_size 1048576
persistent_client_expiration 14d
"""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise ConfigError(f"{what} did not open port {port} within {timeout:.0f} s")


def _allow_traverse(path: Path) -> None:
    """Let the postgres user reach a data dir we created as root (adds only the x bit)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            log.info("adding o+x to %s so the postgres user can reach its data directory", parent)
            parent.chmod(mode | 0o001)


def _pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ConfigError("PostgreSQL binaries not found: apt-get install postgresql (or set GRIDWATCH_DATABASE_URL)")


@dataclass
class EmbeddedPostgres:
    """A private cluster in data_dir, owned by the 'postgres' user when we run as root."""

    data_dir: Path
    port: int = 0

    def __post_init__(self) -> None:
        self.bindir = _pg_bindir()
        self.port = self.port or free_port()
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        user = self._user or pwd.getpwuid(os.geteuid()).pw_name
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigError(f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> str:
        """Initialise (first time) and start the cluster; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            shutil.chown(self.data_dir, self._user, self._user)
            self.data_dir.chmod(0o700)
            _allow_traverse(self.data_dir.parent)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                self._user or pwd.getpwuid(os.geteuid()).pw_name,
                "-E",
                "UTF8",
                "--no-sync",
            )
        opts = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=on "
            "-c max_connections=200 -c shared_buffers=256MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        _wait_port(self.port, 30, "PostgreSQL")
        return self.url

    @property
    def pid(self) -> int:
        """The running postmaster's process id (its first line of postmaster.pid)."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster."""
        with contextlib.suppress(ConfigError):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")


@dataclass
class EmbeddedMosquitto:
    """A private broker with persistence and the raised queue limits."""

    data_dir: Path
    port: int = 0
    extra_config: str = ""

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "mosquitto.log"

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\n"
            f"{self.extra_config or 'allow_anonymous true'}\n"
            f"persistence true\npersistence_location {self.data_dir}/\nautosave_interval 1\n"
            f"log_dest file {self.log_file}\nlog_type error\nlog_type warning\nlog_type notice\n"
            f"log_type information\nconnection_messages true\n{MOSQUITTO_LIMITS}",
            encoding="utf-8",
        )
        return conf

    def start(self) -> str:
        """Start the broker; returns its URL."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ConfigError("mosquitto not found: apt-get install mosquitto (or set GRIDWATCH_MQTT_URL)")
        conf = self.write_config()
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 15, "mosquitto", self.proc)
        return self.url

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves its persistence file)."""
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
