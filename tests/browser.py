"""A real headless Chromium driven over the DevTools protocol (CDP), for the HTML report tests.

:class:`Browser` starts Debian's ``chromium`` with a fresh profile on a free DevTools port, and
:meth:`Browser.load` opens a page and returns what a person's browser would have shown: the
console messages and uncaught exceptions, every network request, values of JavaScript
expressions evaluated in the page, and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1600",
)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        msg = "chromium is not installed: run scripts/install-servers (apt-get install chromium)"
        raise FileNotFoundError(msg)
    return path


@dataclass
class PageLoad:
    """What loading one page gave."""

    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # URLs the page asked for
    values: dict[str, Any] = field(default_factory=dict)  # expression -> value
    screenshot: bytes = b""

    @property
    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions (what "no console errors" means)."""
        return [t for level, t in self.console if level == "error"] + self.exceptions


class Browser:
    def __init__(self, profile: Path, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self._stderr.append(line)
                lines.put(line)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.close()
                msg = f"chromium gave no DevTools address: {''.join(self._stderr)[-2000:]}"
                raise RuntimeError(msg)
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if "DevTools listening on " in line:
                url = line.split("DevTools listening on ", 1)[1].strip()
        self.ws: ClientConnection = connect(url, max_size=None, open_timeout=timeout)
        self._id = 0

    def close(self) -> None:
        if hasattr(self, "ws"):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._pump.join(timeout=20)  # stderr ends once chromium's helpers have gone too
        if self.proc.stderr is not None and not self._pump.is_alive():
            self.proc.stderr.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        return self._id

    def _until(self, done: Any, on_event: Any) -> dict[str, Any]:
        """Read messages, handing events to ``on_event``, until ``done(msg)`` is true."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                msg = "chromium did not answer in time"
                raise TimeoutError(msg)
            msg = json.loads(self.ws.recv(timeout=left))
            if "method" in msg:
                on_event(msg)
            if done(msg):
                if "error" in msg:
                    raise RuntimeError(f"CDP error: {msg['error']}")
                return dict(msg)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        on_event: Any = None,
    ) -> dict[str, Any]:
        n = self._send(method, params, session)
        reply = self._until(lambda m: m.get("id") == n, on_event or (lambda _m: None))
        return dict(reply.get("result", {}))

    def load(self, url: str, expressions: tuple[str, ...] = ()) -> PageLoad:
        out = PageLoad()
        loaded = threading.Event()  # (a flag: the load event may come before navigate's reply)

        def on_event(msg: dict[str, Any]) -> None:
            method, p = msg["method"], msg.get("params", {})
            if method == "Page.loadEventFired":
                loaded.set()
            elif method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
                out.console.append((str(p["type"]), text))
            elif method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.exceptions.append(str(d.get("exception", {}).get("description", d["text"])))
            elif method == "Log.entryAdded":
                out.console.append((str(p["entry"]["level"]), str(p["entry"]["text"])))
            elif method == "Network.requestWillBeSent":
                out.requests.append(str(p["request"]["url"]))

        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        try:
            for domain in ("Runtime", "Log", "Network", "Page"):
                self.call(f"{domain}.enable", session=session, on_event=on_event)
            self.call("Page.navigate", {"url": url}, session=session, on_event=on_event)
            if not loaded.is_set():
                self._until(lambda _m: loaded.is_set(), on_event)
            for expr in expressions:
                res = self.call(
                    "Runtime.evaluate",
                    {"expression": expr, "returnByValue": True},
                    session=session,
                    on_event=on_event,
                )
                out.values[expr] = res["result"].get("value")
            shot = self.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session=session,
                on_event=on_event,
            )
            out.screenshot = base64.b64decode(shot["data"])
        finally:
            self.call("Target.closeTarget", {"targetId": target})
        return out
