"""What the InfluxDB writer's status policy costs, against a real influxd 1.6.

Starts its own influxd servers (as the test suite does) and writes 100,000 lines in batches of
5,000 three ways, printing wall seconds, HTTP requests and lines/s for each:

* clean:      every line valid (the baseline);
* bisect:     one unparsable line in every batch (20 in all): the writer bisects each refused
              batch until the bad line stands alone, dead-letters it and writes the rest;
              compared with the naive way to find the bad lines, one POST per line of every
              refused batch (``naive_requests`` is counted, not run: 100,000 POSTs);
* 413 split:  a server with ``max-body-size`` 64 kB, below one 5,000-line batch (~280 kB):
              the writer halves until the server takes the body and keeps that size.

Run: ``.venv/bin/python -m benchmarks.influx_writer``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from tests.servers import InfluxD

LINES = 100_000
BATCH = 5_000


class CountingTransport:
    """The real V1 transport, counting the POSTs it makes."""

    def __init__(self, inner: V1Transport) -> None:
        self.inner = inner
        self.requests = 0

    def write(self, body: str) -> None:
        self.requests += 1
        self.inner.write(body)

    def close(self) -> None:
        self.inner.close()


def lines(bad_every: int | None = None) -> list[str]:
    out = []
    for i in range(LINES):
        if bad_every is not None and i % bad_every == bad_every // 2:
            out.append(f'signal,site=bench,session=b,stream=eda value="unbalanced {i}')
        else:
            t = (1_700_000_000 * 1000 + i) * 1_000_000
            out.append(f"signal,site=bench,session=b,stream=eda,device=e4 value={i * 0.001} {t}")
    return out


def run(server: InfluxD, db: str, data: list[str], deadletter: Path) -> dict[str, float]:
    server.create_database(db)
    transport = CountingTransport(V1Transport(InfluxSettings(server.url, database=db)))
    writer = BufferedWriter(transport, batch_lines=BATCH, deadletter_path=deadletter)
    started = time.perf_counter()
    for start in range(0, len(data), 1000):
        writer.add(data[start : start + 1000])
    assert writer.flush(block=True, timeout_s=600), "the writer did not finish"
    wall = time.perf_counter() - started
    stored = server.count('SELECT count("value") FROM signal', db)
    return {
        "wall_s": wall,
        "requests": transport.requests,
        "lines_per_s": len(data) / wall,
        "stored": stored,
        "dead_lettered": writer.dead_lettered,
    }


def show(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:<10} {r['wall_s']:7.2f} s  {int(r['requests']):6d} requests  "
        f"{r['lines_per_s']:9.0f} lines/s  stored {int(r['stored']):6d}  "
        f"dead-lettered {int(r['dead_lettered'])}"
    )


def main() -> None:
    # the 20 dead-lettered lines are expected here: keep their error lines off the figures
    logging.getLogger("rekindle.analysis.influx").disabled = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = InfluxD.start(root / "influxd")
        small = InfluxD.start(root / "small", max_body_size=64_000)
        try:
            clean = run(server, "clean", lines(), root / "dl-clean.jsonl")
            bisect = run(server, "bisect", lines(bad_every=BATCH), root / "dl-bisect.jsonl")
            split = run(small, "split", lines(), root / "dl-split.jsonl")
        finally:
            server.stop()
            small.stop()
    show("clean", clean)
    show("bisect", bisect)
    show("413 split", split)
    refused_batches = LINES // BATCH
    naive_requests = LINES // BATCH + refused_batches * BATCH
    print(
        f"bisect: {bisect['requests'] / clean['requests']:.1f}x the requests of a clean write, "
        f"{bisect['wall_s'] / clean['wall_s']:.2f}x its time; naive per-line isolation would "
        f"make {naive_requests} requests ({naive_requests / bisect['requests']:.0f}x bisect's)"
    )
    print(
        f"413 split: {split['requests'] / clean['requests']:.1f}x the requests, "
        f"{split['wall_s'] / clean['wall_s']:.2f}x the time of unlimited bodies"
    )


if __name__ == "__main__":
    main()
