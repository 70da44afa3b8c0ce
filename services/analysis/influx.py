"""InfluxDB writer: one policy (batching, retry, spool) over two API dialects.

* InfluxDB 2.x / 3.x: token, org and bucket through ``influxdb-client``'s *synchronous* write
  API, whose errors surface (its default batching writer only logs them).
* InfluxDB 1.x: ``POST /write?db=...&rp=...&precision=ns`` (what Debian's influxdb 1.6 speaks).

Failed batches stay queued and are retried with capped exponential backoff; when the queue grows
past ``max_queued_lines`` the oldest lines are appended to an on-disk spool file (line protocol)
that is replayed first once the server answers again, so nothing accepted is lost.
"""

from __future__ import annotations

import base64
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from services.analysis.errors import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InfluxSettings:
    """Where to write: ``database`` for 1.x, or ``org``, ``bucket`` and ``token`` for 2.x/3.x."""

    url: str
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(self.url, "InfluxDB URL must be http(s)://host:port")
        v1 = self.database is not None
        v2 = self.bucket is not None or self.org is not None or self.token is not None
        if v1 == v2:
            raise StorageError(
                self.url, "give either a database (1.x) or org, bucket and token (2.x/3.x)"
            )
        if v2 and not (self.org and self.bucket and self.token):
            raise StorageError(self.url, "InfluxDB 2.x/3.x needs org, bucket and token")

    @property
    def dialect(self) -> str:
        return "v1" if self.database is not None else "v2"


class Transport(Protocol):
    def write(self, body: str) -> None: ...

    def close(self) -> None: ...


class V1Transport:
    """``/write`` of InfluxDB 1.x."""

    def __init__(self, settings: InfluxSettings) -> None:
        assert settings.database is not None
        params = {"db": settings.database, "precision": "ns"}
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        self._url = f"{settings.url.rstrip('/')}/write?{urllib.parse.urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.username:
            token = f"{settings.username}:{settings.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._timeout = settings.timeout_s
        self._base = settings.url

    def write(self, body: str) -> None:
        req = urllib.request.Request(
            self._url, data=body.encode("utf-8"), headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise StorageError(self._base, f"HTTP {exc.code}: {detail}", status=exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StorageError(self._base, f"cannot reach server: {exc}") from exc

    def close(self) -> None:
        return None


class V2Transport:
    """InfluxDB 2.x/3.x through influxdb-client's synchronous write API."""

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client.client.influxdb_client import (  # noqa: PLC0415 (2.x only)
            InfluxDBClient,
        )
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415

        if not (settings.token and settings.org and settings.bucket):
            raise StorageError(settings.url, "InfluxDB 2.x/3.x needs org, bucket and token")
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.token,
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket: str = settings.bucket
        self._org: str = settings.org
        self._base = settings.url

    def write(self, body: str) -> None:
        from influxdb_client.client.exceptions import InfluxDBError  # noqa: PLC0415
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415

        try:
            self._api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=cast(WritePrecision, WritePrecision.NS),
            )
        except InfluxDBError as exc:
            status = getattr(getattr(exc, "response", None), "status", None)
            raise StorageError(self._base, str(exc), status=status) from exc
        except OSError as exc:
            raise StorageError(self._base, f"cannot reach server: {exc}") from exc

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


def make_transport(settings: InfluxSettings) -> Transport:
    return V1Transport(settings) if settings.dialect == "v1" else V2Transport(settings)


class BufferedWriter:
    """Batches lines, retries failures with backoff, spills to a spool file when over the cap."""

    def __init__(
        self,
        transport: Transport,
        *,
        batch_lines: int = 5000,
        max_queued_lines: int = 500_000,
        spool_path: Path | None = None,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.transport = transport
        self.batch_lines = batch_lines
        self.max_queued_lines = max_queued_lines
        self.spool_path = spool_path
        self.max_backoff_s = max_backoff_s
        self._queue: deque[str] = deque()
        self._failures = 0
        self._next_try = 0.0
        self.written = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, lines: list[str]) -> None:
        self._queue.extend(lines)
        if len(self._queue) > self.max_queued_lines:
            self._spill(len(self._queue) - self.max_queued_lines)
        if len(self._queue) >= self.batch_lines:
            self.flush(block=False)

    def _spill(self, count: int) -> None:
        if self.spool_path is None:
            log.error("write queue full and no spool configured: dropping %d oldest lines", count)
            for _ in range(count):
                self._queue.popleft()
            return
        with self.spool_path.open("a", encoding="utf-8") as fh:
            for _ in range(count):
                fh.write(self._queue.popleft() + "\n")
        log.warning("InfluxDB unreachable: spooled %d lines to %s", count, self.spool_path)

    def _replay_spool(self) -> None:
        if self.spool_path is None or not self.spool_path.exists():
            return
        lines = self.spool_path.read_text(encoding="utf-8").splitlines()
        for start in range(0, len(lines), self.batch_lines):
            self.transport.write("\n".join(lines[start : start + self.batch_lines]))
            self.written += len(lines[start : start + self.batch_lines])
        self.spool_path.unlink()
        log.info("replayed %d spooled lines", len(lines))

    def flush(self, *, block: bool = True, timeout_s: float = 60.0) -> bool:
        """Write everything queued. Returns True when the queue is empty afterwards.

        ``block=False`` makes one attempt (respecting the backoff) and returns;
        ``block=True`` retries until ``timeout_s`` has passed.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now >= self._next_try:
                try:
                    self._replay_spool()
                    while self._queue:
                        n = min(self.batch_lines, len(self._queue))
                        batch = [self._queue[i] for i in range(n)]
                        self.transport.write("\n".join(batch))
                        for _ in range(n):
                            self._queue.popleft()
                        self.written += n
                except StorageError as exc:
                    if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                        # The server refused the data itself: retrying cannot help.
                        log.error("InfluxDB rejected a batch, dropping it: %s", exc)
                        for _ in range(min(self.batch_lines, len(self._queue))):
                            self._queue.popleft()
                        continue
                    self._failures += 1
                    delay = min(self.max_backoff_s, 0.5 * 2 ** min(self._failures, 10))
                    delay *= random.uniform(0.5, 1.0)
                    self._next_try = time.monotonic() + delay
                    log.warning(
                        "InfluxDB write failed (attempt %d, retry in %.1f s, %d lines queued): %s",
                        self._failures,
                        delay,
                        len(self._queue),
                        exc,
                    )
                else:
                    self._failures = 0
                    return True
            if not block or time.monotonic() >= deadline:
                return not self._queue
            time.sleep(min(max(self._next_try - time.monotonic(), 0.01), 1.0))

    def close(self, timeout_s: float = 60.0) -> None:
        try:
            if not self.flush(block=True, timeout_s=timeout_s) and self._queue:
                self._spill(len(self._queue))
        finally:
            self.transport.close()


class FileTransport:
    """Line protocol appended to a local file: storage for ``rekindle demo`` without a server.

    The file can later be loaded into any InfluxDB (``influx write`` / ``POST /write``).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = path.open("a", encoding="utf-8")

    def write(self, body: str) -> None:
        self._fh.write(body + "\n")

    def close(self) -> None:
        self._fh.close()
