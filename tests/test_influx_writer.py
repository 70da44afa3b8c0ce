"""The InfluxDB writer against a real influxd: batching, outage, spool, both dialects."""

from __future__ import annotations

import http.server
import json
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from rekindle.analysis.errors import StorageError
from rekindle.analysis.influx import (
    Action,
    BufferedWriter,
    InfluxSettings,
    V1Transport,
    V2Transport,
    classify,
)
from tests.servers import InfluxD, free_port


def lines(start: int, n: int) -> list[str]:
    return [f"m,site=a value={i}.0 {(1_600_000_000 + i) * 10**9}" for i in range(start, start + n)]


def test_v1_batches_land_once(influxd: InfluxD) -> None:
    influxd.create_database("w1")
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="w1")), batch_lines=7)
    writer.add(lines(0, 20))
    writer.add(lines(10, 20))  # overlapping points overwrite, never duplicate
    writer.close()
    assert influxd.count('SELECT count("value") FROM m', "w1") == 30
    assert writer.written == 40


def test_outage_queues_then_spools_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    spool = tmp_path / "spool.lp"
    settings = InfluxSettings(f"http://127.0.0.1:{port}", database="w2", timeout_s=2)
    writer = BufferedWriter(
        V1Transport(settings),
        batch_lines=10,
        max_queued_lines=25,
        spool_path=spool,
        max_backoff_s=0.2,
    )
    writer.add(lines(0, 40))  # server is down: 15 oldest lines spill to the spool
    assert not writer.flush(block=False)
    assert spool.exists()
    assert len(spool.read_text().splitlines()) + writer.queued == 40
    server = InfluxD.start(tmp_path / "late-influxd", port=port)
    try:
        server.create_database("w2")
        assert writer.flush(block=True, timeout_s=30)
        assert not spool.exists()
        assert server.count('SELECT count("value") FROM m', "w2") == 40
    finally:
        writer.close()
        server.stop()


def test_rejected_batch_is_reported_with_status(influxd: InfluxD) -> None:
    transport = V1Transport(InfluxSettings(influxd.url, database="never_created"))
    with pytest.raises(StorageError) as info:
        transport.write(lines(0, 1)[0])
    assert info.value.status == 404
    assert "database not found" in info.value.reason


def test_settings_validation() -> None:
    with pytest.raises(StorageError, match="either a database"):
        InfluxSettings("http://h:8086")
    with pytest.raises(StorageError, match="needs org, bucket and token"):
        InfluxSettings("http://h:8086", bucket="b")
    with pytest.raises(StorageError, match="http"):
        InfluxSettings("h:8086", database="x")


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, str], bytes]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).requests.append((self.path, dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture
def v2_endpoint() -> Iterator[str]:
    """An HTTP endpoint that records requests. InfluxDB 2.x cannot be installed here (Debian
    ships 1.6, which has no /api/v2/write), so this checks what our 2.x dialect sends."""
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, name="v2-endpoint", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_v2_dialect_sends_token_org_bucket_ns(v2_endpoint: str) -> None:
    settings = InfluxSettings(v2_endpoint, org="clinic", bucket="rekindle", token="s3cret")
    transport = V2Transport(settings)
    transport.write("\n".join(lines(0, 3)))
    transport.close()
    assert len(_Recorder.requests) == 1
    path, headers, body = _Recorder.requests[0]
    assert path.startswith("/api/v2/write?")
    assert "org=clinic" in path
    assert "bucket=rekindle" in path
    assert "precision=ns" in path
    assert headers["Authorization"] == "Token s3cret"
    assert body.decode().splitlines() == lines(0, 3)


# ------------------------------------------------------------------ status policy (issue 10)


def _writer(url: str, db: str, tmp_path: Path, **kw: object) -> BufferedWriter:
    settings = InfluxSettings(
        url,
        database=db,
        timeout_s=10,
        username=cast("str | None", kw.pop("username", None)),
        password=cast("str | None", kw.pop("password", None)),
    )
    return BufferedWriter(
        V1Transport(settings),
        deadletter_path=tmp_path / "rejected.jsonl",
        max_backoff_s=0.2,
        **cast("dict[str, Any]", kw),
    )


def test_classify_is_the_documented_policy() -> None:
    def err(status: int | None, reason: str = "x") -> StorageError:
        return StorageError("http://h", reason, status=status)

    for status in (None, 401, 403, 404, 408, 429, 500, 502, 503, 504):
        assert classify(err(status)) is Action.RETRY, status
    assert classify(err(400, '{"error":"database is required"}')) is Action.RETRY
    assert classify(err(413)) is Action.SPLIT
    assert classify(err(400, "partial write: unable to parse 'x': bad")) is Action.BISECT
    assert classify(err(400, "partial write: field type conflict: ...")) is Action.BISECT
    assert classify(err(400, '{"code":"invalid","message":"unable to parse"}')) is Action.BISECT


def test_database_created_late_loses_nothing(
    influxd: InfluxD, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _writer(influxd.url, "created_late", tmp_path)
    writer.add(lines(0, 30))
    assert not writer.flush(block=False)
    assert writer.queued == 30
    assert any("HTTP 404" in r.getMessage() for r in caplog.records)
    influxd.create_database("created_late")
    assert writer.flush(block=True, timeout_s=60)
    assert influxd.count('SELECT count("value") FROM m', "created_late") == 30
    assert (writer.dropped, writer.dead_lettered) == (0, 0)
    assert not (tmp_path / "rejected.jsonl").exists()


def test_user_created_late_401_then_200_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = InfluxD.start(tmp_path / "auth-influxd", auth=True)
    try:
        server.create_admin("admin", "admin-pw")
        server.create_database("authdb")
        writer = _writer(server.url, "authdb", tmp_path, username="writer", password="w-pw")
        writer.add(lines(0, 25))
        assert not writer.flush(block=False)
        assert writer.queued == 25
        assert any("HTTP 401" in r.getMessage() for r in caplog.records)
        server.query("CREATE USER \"writer\" WITH PASSWORD 'w-pw'", "authdb")
        server.query('GRANT WRITE ON "authdb" TO "writer"', "authdb")
        assert writer.flush(block=True, timeout_s=60)
        assert server.count('SELECT count("value") FROM m', "authdb") == 25
        assert (writer.dropped, writer.dead_lettered) == (0, 0)
    finally:
        server.stop()


def test_413_splits_batches_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rekindle.analysis.influx")
    server = InfluxD.start(tmp_path / "small-influxd", max_body_size=4000)
    try:
        server.create_database("small")
        writer = _writer(server.url, "small", tmp_path, batch_lines=1000)
        batch = lines(0, 1000)  # ~45 kB in one body: 413 until halved to < 4 kB
        assert len("\n".join(batch)) > 10 * 4000
        writer.add(batch)
        assert writer.flush(block=True, timeout_s=60)
        assert any("413" in r.getMessage() for r in caplog.records)
        assert server.count('SELECT count("value") FROM m', "small") == 1000
        assert (writer.dropped, writer.dead_lettered) == (0, 0)
        writer.add(lines(1000, 1000))  # later batches start at the size that worked
        assert writer.flush(block=True, timeout_s=60)
        assert server.count('SELECT count("value") FROM m', "small") == 2000
    finally:
        server.stop()


def test_one_unparsable_line_is_dead_lettered_and_the_rest_written(
    influxd: InfluxD, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    influxd.create_database("parse")
    good = lines(0, 100)
    # an unbalanced quote: the server's parser also swallows the line after it
    bad = 'm,site=a value="oops 1600000037000000000'
    batch = [*good[:37], bad, *good[37:]]
    writer = _writer(influxd.url, "parse", tmp_path, batch_lines=200)
    writer.add(batch)
    assert writer.flush(block=True, timeout_s=60)
    assert influxd.count('SELECT count("value") FROM m', "parse") == 100
    records = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [bad]
    assert records[0]["status"] == 400
    assert "unable to parse" in records[0]["reason"]
    assert (writer.dropped, writer.dead_lettered) == (0, 1)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("unable to parse" in m and bad in m for m in logged)


def test_type_conflict_lines_are_dead_lettered_with_the_reason(
    influxd: InfluxD, tmp_path: Path
) -> None:
    influxd.create_database("conflict")
    writer = _writer(influxd.url, "conflict", tmp_path)
    writer.add(lines(0, 10))
    assert writer.flush(block=True, timeout_s=60)
    wrong = 'm,site=a value="text" 1600000050000000000'
    writer.add([*lines(10, 5), wrong, *lines(15, 5)])
    assert writer.flush(block=True, timeout_s=60)
    assert influxd.count('SELECT count("value") FROM m', "conflict") == 20
    (record,) = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert record["line"] == wrong
    assert "field type conflict" in record["reason"]


def test_request_level_400_is_retried_not_dead_lettered(influxd: InfluxD, tmp_path: Path) -> None:
    writer = _writer(influxd.url, "", tmp_path)  # the server answers 400 "database is required"
    writer.add(lines(0, 5))
    assert not writer.flush(block=True, timeout_s=1)
    assert writer.queued == 5
    assert (writer.dropped, writer.dead_lettered) == (0, 0)


def test_over_the_cap_without_a_spool_nothing_is_dropped(influxd: InfluxD, tmp_path: Path) -> None:
    # The analysis service acknowledges a message only once its lines are durable, so without
    # a write-ahead log the lines stay in memory (and their messages at the broker) instead.
    influxd.create_database("drops")
    writer = _writer(influxd.url, "drops", tmp_path, batch_lines=100, max_queued_lines=10)
    writer.add(lines(0, 15))
    assert (writer.dropped, writer.queued) == (0, 15)
    assert writer.flush(block=True, timeout_s=60)
    assert influxd.count('SELECT count("value") FROM m', "drops") == 15


def test_flush_reports_dropped_lines(influxd: InfluxD) -> None:
    influxd.create_database("drops2")
    settings = InfluxSettings(influxd.url, database="drops2", timeout_s=10)
    writer = BufferedWriter(V1Transport(settings), batch_lines=100)  # no dead-letter file
    writer.add([*lines(0, 10), 'm,site=a value="oops 1600000037000000000'])
    assert not writer.flush(block=True, timeout_s=60)  # the unparsable line is lost: False
    assert writer.dropped == 1
    assert influxd.count('SELECT count("value") FROM m', "drops2") == 10
    assert writer.flush(block=True, timeout_s=60)  # nothing dropped since: True again


def test_v2_unreachable_is_a_retryable_storage_error() -> None:
    settings = InfluxSettings(
        f"http://127.0.0.1:{free_port()}", org="o", bucket="b", token="t", timeout_s=2
    )
    transport = V2Transport(settings)
    try:
        with pytest.raises(StorageError) as info:
            transport.write(lines(0, 1)[0])
    finally:
        transport.close()
    assert classify(info.value) is Action.RETRY


def test_a_server_that_stops_answering_times_out_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real influxd frozen with SIGSTOP: the kernel still accepts connections, nothing answers,
    so each write times out; the lines stay queued and land once it runs again."""
    server = InfluxD.start(tmp_path / "frozen-influxd")
    try:
        server.create_database("frozen")
        settings = InfluxSettings(server.url, database="frozen", timeout_s=1.0)
        writer = BufferedWriter(V1Transport(settings), max_backoff_s=0.2)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            writer.add(lines(0, 40))
            assert not writer.flush(block=False)
            assert writer.queued == 40
            assert any("timed out" in r.getMessage() for r in caplog.records)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert writer.flush(block=True, timeout_s=120)
        assert server.count('SELECT count("value") FROM m', "frozen") == 40
        assert (writer.dropped, writer.dead_lettered) == (0, 0)
    finally:
        server.stop()
