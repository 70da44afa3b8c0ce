"""A private BlueZ for the tests: dbus-daemon + bluezoo + bless wearables, all subprocesses.

Layout: adapter ``hci0`` is the central that the stock bleak client uses; ``hci1`` and ``hci2``
each host one emulated wearable (:mod:`tests.ble.wearable`). Nothing touches the host's real
system bus: ``DBUS_SYSTEM_BUS_ADDRESS`` points every client at the private daemon.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
CENTRAL = "hci0"
ADAPTERS = {"hci0": "C0:00:00:00:00:00", "hci1": "D0:00:00:00:00:01", "hci2": "D0:00:00:00:00:02"}

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


def _stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_line(stream: IO[bytes], timeout: float, what: str, log: Path) -> str:
    """Read one line from a subprocess pipe, failing after ``timeout``."""
    result: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: result.put(stream.readline()), daemon=True)
    reader.start()
    try:
        return result.get(timeout=timeout).decode().strip()
    except queue.Empty:
        msg = f"{what} not ready within {timeout} s; log: {log.read_text()[-3000:]}"
        raise RuntimeError(msg) from None


@dataclass
class WearableProcess:
    """One emulated wearable; ``events`` fills from its stdout in a reader thread."""

    name: str
    adapter: str
    log: Path
    proc: subprocess.Popen[bytes]
    stderr_log: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def address(self) -> str:
        return ADAPTERS[self.adapter]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()

    def start_reader(self) -> None:
        threading.Thread(target=self._pump, name=f"wearable-{self.name}", daemon=True).start()

    def wait_event(self, event: str, timeout: float = 20.0, after: int = 0) -> dict[str, Any]:
        """Wait for the first ``event`` at index >= ``after`` in :attr:`events`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for ev in self.events[after:]:
                    if ev["event"] == event:
                        return ev
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    msg = (
                        f"{self.name}: no {event!r} within {timeout} s; events {self.events};"
                        f" stderr: {self.stderr_log.read_text()[-3000:]}"
                    )
                    raise RuntimeError(msg)
                self._changed.wait(remaining)

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def samples(self, stream: str) -> list[dict[str, Any]]:
        """Every sample of ``stream`` the wearable generated so far (ground truth)."""
        rows = [json.loads(x) for x in self.log.read_text().splitlines() if x]
        return [r for r in rows if r["s"] == stream]

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.command("quit")
                self.proc.wait(timeout=5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        _stop(self.proc)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@dataclass
class BleEmulation:
    """Private dbus-daemon + bluezoo; :meth:`add_wearable` starts bless peripherals."""

    workdir: Path
    bus_address: str
    daemon: subprocess.Popen[bytes]
    bluezoo: subprocess.Popen[bytes]
    wearables: list[WearableProcess] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address, "PYTHONPATH": str(REPO)}

    @classmethod
    def start(cls, workdir: Path) -> BleEmulation:
        if shutil.which("dbus-daemon") is None:
            msg = "dbus-daemon not found: install Debian's dbus package (apt-get install dbus)"
            raise RuntimeError(msg)
        socket_path = workdir / "system_bus_socket"
        config = workdir / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=socket_path), encoding="utf-8")
        daemon_log = workdir / "dbus-daemon.log"
        with daemon_log.open("wb") as err:
            daemon = subprocess.Popen(
                [
                    "dbus-daemon",
                    f"--config-file={config}",
                    "--nofork",
                    "--nopidfile",
                    "--print-address",
                ],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        assert daemon.stdout is not None
        try:
            address = _read_line(daemon.stdout, 10, "dbus-daemon", daemon_log).split(",")[0]
        except RuntimeError:
            _stop(daemon)
            raise
        daemon.stdout.close()
        bluezoo_log = workdir / "bluezoo.log"
        args = [sys.executable, "-m", "tests.ble.bluezoo_runner"]
        for adapter in ADAPTERS.values():
            args += ["-a", adapter]
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address, "PYTHONPATH": str(REPO)}
        with bluezoo_log.open("wb") as err:
            bluezoo = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO)
        assert bluezoo.stdout is not None
        try:
            line = _read_line(bluezoo.stdout, 20, "bluezoo", bluezoo_log)
        except RuntimeError:
            line = ""
        if line != "READY":
            _stop(bluezoo)
            _stop(daemon)
            raise RuntimeError(f"bluezoo failed to start: {bluezoo_log.read_text()[-3000:]}")
        bluezoo.stdout.close()
        return cls(workdir, address, daemon, bluezoo)

    def add_wearable(
        self, name: str, adapter: str, *extra: str, wait: bool = True
    ) -> WearableProcess:
        """Start a wearable called ``name`` on ``adapter``; returns once it advertises
        (or at once with ``wait=False``)."""
        log = self.workdir / f"wearable-{name}.jsonl"
        stderr_log = self.workdir / f"wearable-{name}.stderr"
        with stderr_log.open("wb") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.ble.wearable",
                    "--adapter",
                    adapter,
                    "--central",
                    CENTRAL,
                    "--name",
                    name,
                    "--log",
                    str(log),
                    *extra,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
                cwd=REPO,
            )
        w = WearableProcess(name, adapter, log, proc, stderr_log)
        self.wearables.append(w)
        w.start_reader()
        if wait:
            w.wait_event("advertising")
        return w

    def stop(self) -> None:
        for w in self.wearables:
            w.stop()
        _stop(self.bluezoo)
        _stop(self.daemon)
