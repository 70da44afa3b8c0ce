"""The 1.x transport keeps one HTTP connection across writes, and reconnects when the server
closed it (restart), without losing the batch."""

from __future__ import annotations

from pathlib import Path

from rekindle.analysis.influx import InfluxSettings, V1Transport
from tests.servers import InfluxD


def _line(k: int) -> str:
    return f"t,session=S1 value={k}i {1_700_000_000_000_000_000 + k}"


def test_one_connection_for_many_writes_and_a_fresh_one_after_a_restart(tmp_path: Path) -> None:
    server = InfluxD.start(tmp_path / "influx")
    try:
        server.create_database("conn")
        transport = V1Transport(InfluxSettings(server.url, database="conn"))
        for k in range(30):
            transport.write(_line(k))
        assert transport.connections == 1
        assert server.count('SELECT count("value") FROM "t"', "conn") == 30
        port = server.port
        server.stop()
        server = InfluxD.start(tmp_path / "influx", port=port)  # same data, same port
        transport.write(_line(30))  # the kept connection is dead: sent again on a new one
        assert transport.connections == 2
        assert server.count('SELECT count("value") FROM "t"', "conn") == 31
        transport.close()
    finally:
        server.stop()
