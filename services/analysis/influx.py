"""InfluxDB writer: one policy (batching, retry, spool) over two API dialects.

* InfluxDB 2.x / 3.x: token, org and bucket through ``influxdb-client``'s *synchronous* write
  API, whose errors surface (its default batching writer only logs them).
* InfluxDB 1.x: ``POST /write?db=...&rp=...&precision=ns`` (what Debian's influxdb 1.6 speaks).

Failed batches stay queued and are retried with capped exponential backoff. With a spool path,
the spool is a write-ahead log: :meth:`BufferedWriter.persist` makes every line added so far
durable, either written to InfluxDB or appended to the log and fsynced. The analysis service
acknowledges a message to the broker only after that. The log is replayed first on the next
write (also by a later process that opens the same path, i.e. on start) and removed once
InfluxDB has acknowledged all of it, so nothing accepted is lost. How each answer is acted on
is :func:`classify`: only lines the server refuses on their own (it cannot parse or store them)
are given up, into a dead-letter file with the server's reason.
"""

from __future__ import annotations

import base64
import enum
import http.client
import json
import logging
import os
import random
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from rekindle.analysis.errors import StorageError
from rekindle.credentials import redact, split_userinfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InfluxSettings:
    """Where to write: ``database`` for 1.x, or ``org``, ``bucket`` and ``token`` for 2.x/3.x."""

    url: str
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    org: str | None = None
    bucket: str | None = None
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        # http://user:password@host: the credentials move to username/password (unless given
        # explicitly) and ``url`` keeps no secret, so every message naming it is safe to log.
        clean, user, password = split_userinfo(self.url)
        shown = redact(self.url)
        if clean != self.url:
            object.__setattr__(self, "url", clean)
            if self.username is None:
                object.__setattr__(self, "username", user)
            if self.password is None:
                object.__setattr__(self, "password", password)
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(shown, "InfluxDB URL must be http(s)://host:port")
        v1 = self.database is not None
        v2 = self.bucket is not None or self.org is not None or self.token is not None
        if v1 == v2:
            raise StorageError(
                self.url, "give either a database (1.x) or org, bucket and token (2.x/3.x)"
            )
        if v2 and not (self.org and self.bucket and self.token):
            raise StorageError(self.url, "InfluxDB 2.x/3.x needs org, bucket and token")
        if v2 and (self.username or self.password):
            raise StorageError(
                self.url,
                "InfluxDB 2.x/3.x authenticates with a token: drop the user and password "
                "(from the URL too) and give the token (--influx-token-file)",
            )

    @property
    def dialect(self) -> str:
        return "v1" if self.database is not None else "v2"


class Transport(Protocol):
    def write(self, body: str) -> None: ...

    def close(self) -> None: ...


class V1Transport:
    """``/write`` of InfluxDB 1.x over one persistent HTTP/1.1 connection.

    A new TCP connection per batch cost the worker more than encoding the batch (issue 13's
    profile: 11 % of its wall time blocked in the POST). The connection is opened on the first
    write and kept; when a *reused* connection turns out to be closed by the server (idle
    keep-alive timeout, server restart), the batch is sent once more on a fresh connection
    before the failure counts (a rewrite overwrites the same points, so it is safe).
    """

    def __init__(self, settings: InfluxSettings) -> None:
        assert settings.database is not None
        params = {"db": settings.database, "precision": "ns"}
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        parts = urllib.parse.urlsplit(settings.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = f"{parts.path.rstrip('/')}/write?{urllib.parse.urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.username:
            token = f"{settings.username}:{settings.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._timeout = settings.timeout_s
        self._base = settings.url
        self._conn: http.client.HTTPConnection | None = None
        #: TCP connections opened so far (one, unless the server closed them).
        self.connections = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
            self.connections += 1
        return self._conn

    def write(self, body: str) -> None:
        data = body.encode("utf-8")
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=data, headers=self._headers)
                resp = conn.getresponse()
                detail = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server had closed the kept connection: once more, fresh
                raise StorageError(self._base, f"cannot reach server: {exc!r}") from exc
            if resp.will_close:
                self.close()
            if resp.status >= 300:
                text = detail[:500].decode("utf-8", "replace").strip()
                raise StorageError(self._base, f"HTTP {resp.status}: {text}", status=resp.status)
            return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:
        # a transport dropped without close() (tools, tests) closes its kept socket quietly
        self.close()


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
        import urllib3  # noqa: PLC0415 (comes with influxdb-client)
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
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise StorageError(self._base, f"cannot reach server: {exc!r}") from exc

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


def make_transport(settings: InfluxSettings) -> Transport:
    return V1Transport(settings) if settings.dialect == "v1" else V2Transport(settings)


class Action(enum.Enum):
    """What the writer does with a batch the server did not take (see :func:`classify`)."""

    RETRY = "retry"  # keep it queued (and spooled), try again after a backoff
    SPLIT = "split"  # too large for the server: write it in halves
    BISECT = "bisect"  # some line(s) refused: halve until the refused lines stand alone


#: Words of a 400/422 answer that mean "these lines" (not "this request") are refused:
#: 1.x ``partial write: unable to parse '...': ...`` / ``field type conflict``; 2.x/3.x
#: ``{"code":"invalid","message":"unable to parse ..."}``.
LINE_LEVEL_REASONS = ("unable to parse", "partial write", "invalid field", "type conflict")


def classify(exc: StorageError) -> Action:
    """The writer's status policy: nothing is dropped because the server *was not ready*.

    * no answer (refused, reset, timeout), 401/403 (credentials or token not provisioned yet or
      revoked), 404 (database or bucket not created yet), 408, 429, 5xx, and any other answer
      about the *request* rather than its lines (e.g. 400 ``database is required``): RETRY;
    * 413 (body larger than the server's ``max-body-size``): SPLIT;
    * 400/422 naming lines it cannot parse or store: BISECT, and dead-letter the lines that
      are refused on their own.
    """
    if exc.status == 413:
        return Action.SPLIT
    if exc.status in (400, 422) and any(w in exc.reason.lower() for w in LINE_LEVEL_REASONS):
        return Action.BISECT
    return Action.RETRY


def _hint(exc: StorageError) -> str:
    """What an operator should do about a failure that is being retried."""
    if exc.status in (401, 403):
        return " (check the InfluxDB user/password or token and its write permission)"
    if exc.status == 404:
        return " (create the database/bucket, or fix --influx-db / --influx-bucket)"
    return ""


class BufferedWriter:
    """Batches lines, retries failures with backoff; the spool file is a write-ahead log.

    The status policy is :func:`classify`. Lines the server refuses on their own (it cannot
    parse or store them) go to ``deadletter_path`` as JSON lines ``{"time", "status", "reason",
    "line"}`` and to an error log line; nothing else is ever given up. Counters: ``written``
    (lines the server acknowledged, rewrites included), ``dead_lettered`` and ``dropped``
    (lines lost: a refused line with no dead-letter file), ``spooled`` (lines appended to the
    write-ahead log).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        batch_lines: int = 5000,
        max_queued_lines: int = 500_000,
        spool_path: Path | None = None,
        deadletter_path: Path | None = None,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.transport = transport
        self.batch_lines = batch_lines
        self.max_queued_lines = max_queued_lines
        self.spool_path = spool_path
        self.deadletter_path = deadletter_path
        self.max_backoff_s = max_backoff_s
        self._queue: deque[str] = deque()
        self._failures = 0
        self._next_try = 0.0
        self._batch_cap = batch_lines
        self._unreported_drops = 0
        self.written = 0
        self.dead_lettered = 0
        self.dropped = 0
        self._over_cap_logged = False
        self.spooled = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, lines: list[str]) -> None:
        self._queue.extend(lines)
        if len(self._queue) > self.max_queued_lines:
            self._spill(len(self._queue))
        if len(self._queue) >= self.batch_lines:
            self._attempt()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._unreported_drops += count

    def persist(self) -> bool:
        """Make every line added so far durable: written to InfluxDB (one attempt, respecting
        the backoff) or appended to the write-ahead log and fsynced.

        Returns True when everything is durable. Without a spool path that means InfluxDB has
        acknowledged every line; otherwise the lines stay queued (and False is returned).
        """
        if self.flush(block=False):
            return True
        if self.spool_path is None:
            return False
        self._spill(len(self._queue))
        return True

    def _spill(self, count: int) -> None:
        if self.spool_path is None:
            if not self._over_cap_logged:
                log.error(
                    "InfluxDB write queue holds %d lines and no --spool is configured: keeping "
                    "them in memory (messages stay unacknowledged at the broker meanwhile)",
                    len(self._queue),
                )
                self._over_cap_logged = True
            return
        if count <= 0:
            return
        created = not self.spool_path.exists()
        with self.spool_path.open("a", encoding="utf-8") as fh:
            fh.write("".join(self._queue.popleft() + "\n" for _ in range(count)))
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            _fsync_dir(self.spool_path.parent)
        self.spooled += count
        log.debug("spooled %d lines to the write-ahead log %s", count, self.spool_path)

    def _replay_spool(self) -> None:
        if self.spool_path is None or not self.spool_path.exists():
            return
        lines = self.spool_path.read_text(encoding="utf-8").splitlines()
        for start in range(0, len(lines), self._batch_cap):
            self._send(lines[start : start + self._batch_cap])
        self.spool_path.unlink()
        _fsync_dir(self.spool_path.parent)
        log.info("replayed %d lines from the write-ahead log %s", len(lines), self.spool_path)

    def _send(self, batch: list[str]) -> None:
        """Write ``batch``; return once every line is written or dead-lettered.

        Raises :class:`StorageError` when the batch must be retried later (then nothing of it
        is given up; parts already written are simply written again, which overwrites).
        """
        try:
            self.transport.write("\n".join(batch))
        except StorageError as exc:
            action = classify(exc)
            if action is Action.RETRY:
                raise
            if len(batch) == 1:
                self._reject(batch[0], exc)
                return
            if action is Action.SPLIT and len(batch) <= self._batch_cap:
                self._batch_cap = max(1, len(batch) // 2)
                log.info(
                    "InfluxDB said 413 (body too large): batches of %d lines from now on",
                    self._batch_cap,
                )
            mid = len(batch) // 2
            self._send(batch[:mid])
            self._send(batch[mid:])
            return
        self.written += len(batch)

    def _reject(self, line: str, exc: StorageError) -> None:
        """Dead-letter one line the server refuses on its own (a file record and a log line)."""
        reason = exc.reason if exc.status != 413 else f"{exc.reason} (one line above max-body-size)"
        where = "nowhere (no dead-letter file configured): line LOST"
        if self.deadletter_path is not None:
            record = {"time": time.time(), "status": exc.status, "reason": reason, "line": line}
            try:
                with self.deadletter_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            except OSError as err:
                where = f"nowhere ({err}): line LOST"
            else:
                where = str(self.deadletter_path)
        if where == str(self.deadletter_path):
            self.dead_lettered += 1
        else:
            self._drop(1)
        log.error(
            "InfluxDB refused a line (%s), dead-lettered to %s: %.300s",
            reason,
            where,
            line,
        )

    def _attempt(self) -> None:
        """One attempt at the spool and the queue, unless a backoff is pending."""
        if time.monotonic() < self._next_try:
            return
        try:
            self._replay_spool()
            while self._queue:
                n = min(self._batch_cap, len(self._queue))
                self._send([self._queue[i] for i in range(n)])
                for _ in range(n):
                    self._queue.popleft()
        except StorageError as exc:
            self._failures += 1
            delay = min(self.max_backoff_s, 0.5 * 2 ** min(self._failures, 10))
            delay *= random.uniform(0.5, 1.0)
            self._next_try = time.monotonic() + delay
            log.warning(
                "InfluxDB write failed (attempt %d, retry in %.1f s, %d lines queued): %s%s",
                self._failures,
                delay,
                len(self._queue),
                exc,
                _hint(exc),
            )
        else:
            self._failures = 0

    def _pending(self) -> bool:
        return bool(self._queue) or (self.spool_path is not None and self.spool_path.exists())

    def flush(self, *, block: bool = True, timeout_s: float = 60.0) -> bool:
        """Write everything queued (the write-ahead log first). Returns True only when the queue
        and the write-ahead log are empty and no line was dropped since the previous call
        (dead-lettered lines are accounted for in the dead-letter file, not dropped).

        ``block=False`` makes one attempt (respecting the backoff) and returns;
        ``block=True`` retries until ``timeout_s`` has passed.
        """
        deadline = time.monotonic() + timeout_s
        self._attempt()
        while block and self._pending() and time.monotonic() < deadline:
            time.sleep(min(max(self._next_try - time.monotonic(), 0.01), 1.0))
            self._attempt()
        drops, self._unreported_drops = self._unreported_drops, 0
        return not self._pending() and drops == 0

    def close(self, timeout_s: float = 60.0) -> None:
        try:
            if not self.flush(block=True, timeout_s=timeout_s) and self._queue:
                self._spill(len(self._queue))
        finally:
            self.transport.close()


def _fsync_dir(path: Path) -> None:
    """Make a file's creation, rename or removal in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
