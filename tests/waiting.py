"""Waiting on observable conditions (never on fixed sleeps) and processes whose output we watch.

Deadlines are generous on purpose: they only bound how long a *failing* test hangs; a passing
test returns as soon as the condition holds, however busy the machine is.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Default deadline of a wait: far above what any condition needs on an idle machine.
GENEROUS_S = 120.0


def wait_until(
    condition: Callable[[], T], what: str, *, timeout_s: float = GENEROUS_S, every_s: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout_s:.0f} s waiting for {what}"
            raise AssertionError(msg)
        time.sleep(every_s)


class WatchedProcess:
    """A child process whose stderr lines are collected by a thread, so a test can wait for a
    line without blocking on a pipe (a hung child cannot hang the test past its deadline)."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines: list[str] = []
        self._stdout: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._lines), daemon=True),
            threading.Thread(
                target=self._drain, args=(self.proc.stdout, self._stdout), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, stream: object, into: list[str]) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                into.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._lines)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._stdout)

    def wait_for_line(self, text: str, *, timeout_s: float = GENEROUS_S) -> str:
        """The first stderr line containing ``text``; fails if the process exits first."""

        def found() -> str | None:
            with self._lock:
                hit = next((line for line in self._lines if text in line), None)
            if hit is None and self.proc.poll() is not None:
                for thread in self._threads:
                    thread.join(timeout=10)
                msg = f"{self.argv[:4]} exited ({self.proc.returncode}) before logging {text!r}:\n"
                raise AssertionError(msg + self.stderr[-3000:])
            return hit

        hit = wait_until(found, f"{text!r} on the stderr of {self.argv[:4]}", timeout_s=timeout_s)
        assert hit is not None
        return hit

    def finish(self, *, timeout_s: float = GENEROUS_S) -> int:
        """Wait for the exit (killing it past the deadline); the exit code."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._close()
        return code

    def kill(self) -> None:
        """Kill it if still running (for ``finally:``), and release its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for thread in self._threads:
            thread.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
