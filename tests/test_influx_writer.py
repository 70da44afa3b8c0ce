"""The InfluxDB writer against a real influxd: batching, outage, spool, both dialects."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.analysis.errors import StorageError
from services.analysis.influx import BufferedWriter, InfluxSettings, V1Transport, V2Transport
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
