"""Real Mosquitto and InfluxDB 1.x servers for the test suite, on free loopback ports.

Each server gets its own temporary config and data directory and is stopped afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find(binary: str, *extra: str) -> str:
    found = shutil.which(binary)
    for candidate in (found, *extra):
        if candidate and Path(candidate).exists():
            return candidate
    msg = f"{binary} not found: install it (apt-get install mosquitto influxdb) or run .ci/run"
    raise RuntimeError(msg)


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"server exited with {proc.returncode}: {log.read_text()[-2000:]}"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    msg = f"server did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}"
    raise RuntimeError(msg)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class _Server:
    """A server process we started, listening on ``host:port``, with its output in ``log``."""

    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Mosquitto(_Server):
    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        password_file: Path | None = None,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
        default_queues: bool = False,
    ) -> Mosquitto:
        """Start on ``port`` (default: a free one); ``tls`` = (certificate, key) PEM files.

        ``default_queues`` keeps mosquitto's own queue limits (max_queued_messages 1000,
        max_inflight_messages 20) instead of the suite's generous ones."""
        binary = _find("mosquitto", "/usr/sbin/mosquitto")
        port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {port} 127.0.0.1",
            *([f"certfile {tls[0]}", f"keyfile {tls[1]}"] if tls else []),
            # as root, mosquitto would switch to user "mosquitto", which cannot read our
            # temp dirs (certificates, log file); the broker is loopback-only and short-lived
            *(["user root"] if os.geteuid() == 0 else []),
            "persistence false",
            *([] if default_queues else ["max_queued_messages 100000"]),
            *([] if default_queues else ["max_inflight_messages 100"]),
            "message_size_limit 2000000",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
        ]
        if password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        conf.write_text("\n".join(lines) + "\n")
        log = workdir / "mosquitto.out"
        with log.open("wb") as out:
            proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        _wait_port(port, proc, log)
        return cls("127.0.0.1", port, proc, log)


@dataclass
class InfluxD(_Server):
    #: (user, password) sent with every query once :meth:`create_admin` made that user
    credentials: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        port: int | None = None,
        *,
        auth: bool = False,
        max_body_size: int = 50_000_000,
    ) -> InfluxD:
        """Start on ``port`` (default: a free one). ``auth`` turns on authentication (with no
        user yet: create one with :meth:`create_admin`); ``max_body_size`` is the largest
        ``/write`` body in bytes that the server takes (413 above it)."""
        binary = _find("influxd", "/usr/bin/influxd")
        port, rpc = port or free_port(), free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "influxdb.conf"
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{workdir / "meta"}"
  logging-enabled = false
[data]
  dir = "{workdir / "data"}"
  wal-dir = "{workdir / "wal"}"
  query-log-enabled = false
  cache-max-memory-size = "512m"
  max-series-per-database = 100000
  max-values-per-tag = 10000
[coordinator]
  query-timeout = "60s"
  max-select-point = 50000000
  max-select-series = 10000
  max-select-buckets = 200000
  log-queries-after = "0s"
[retention]
  enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  max-body-size = {max_body_size}
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""
        )
        log = workdir / "influxd.out"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "-config", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        server = cls("127.0.0.1", port, proc, log)
        _wait_port(port, proc, log, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/ping", timeout=2) as resp:
                    if resp.status == 204:
                        break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return server

    def _post(self, path: str, params: dict[str, str], body: bytes | None = None) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=body or b"", method="POST")
        if self.credentials is not None:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = resp.read()
        return json.loads(data) if data else None

    def create_admin(self, user: str, password: str) -> None:
        """Create an admin user (on a server started with ``auth``) and use it from now on."""
        self._post(
            "/query",
            {"q": f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"},
        )
        self.credentials = (user, password)

    def create_database(self, name: str) -> None:
        self._post("/query", {"q": f'CREATE DATABASE "{name}"'})

    def query(self, influxql: str, db: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the ``results`` list (raises on an error in any statement)."""
        out = self._post("/query", {"q": influxql, "db": db, "epoch": "ns"})
        results: list[dict[str, Any]] = out["results"]
        for res in results:
            if "error" in res:
                msg = f"InfluxQL error for {influxql!r}: {res['error']}"
                raise RuntimeError(msg)
        return results

    def series(self, influxql: str, db: str) -> list[dict[str, Any]]:
        """Series of the first statement's result ([] when empty)."""
        return list(self.query(influxql, db)[0].get("series", []))

    def count(self, influxql: str, db: str) -> int:
        series = self.series(influxql, db)
        return int(series[0]["values"][0][1]) if series else 0
