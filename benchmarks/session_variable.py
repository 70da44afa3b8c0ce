"""The dashboards' session picker on a real influxd: rows, bytes and time per refresh.

Writes ``--sessions`` sessions of ``--hours`` hours of 1-Hz feature rows (as the analysis
service writes them) over one day and several sites into a private influxd 1.x, then runs the
session variable's query as Grafana renders it for the overview (last 15 min), the live
dashboard (last hour) and wider ranges:

* ``naive``: the former query, one row per feature second in the range
  (``SELECT "session", "arousal_index" ...``);
* ``grouped``: the current one, ``last()`` grouped by session (one row per session);
* ``tags``: ``SHOW TAG VALUES`` (index only: cheapest, but influxd 1.x ignores the time range,
  so it lists every session ever; the review dashboard uses it for "all sessions").

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/session_variable.py [--sessions 24 --hours 2]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from rekindle.analysis import points
from rekindle.analysis.influx import InfluxSettings, V1Transport
from rekindle.dashboards import variables
from tests.dashboards.grafana import render, variable_values
from tests.servers import InfluxD

DB = "bench_sessions"
DAY_S = 86_400
T0 = 1_700_000_000
SITES = ("room-1", "room-2", "room-3")
NAIVE_QUERY = (
    'SELECT "session", "arousal_index" FROM "features" WHERE "site" =~ /^$site$/ AND $timeFilter'
)


def write_sessions(influx: InfluxD, sessions: int, hours: float) -> tuple[int, float]:
    """``sessions`` sessions spread over one day; returns (feature rows, end of the last one)."""
    transport = V1Transport(InfluxSettings(influx.url, database=DB))
    length = int(hours * 3600)
    step = (DAY_S - length) // max(sessions - 1, 1)
    rows, last_end = 0, 0.0
    for i in range(sessions):
        site, session = SITES[i % len(SITES)], f"S{i:03d}"
        start = T0 + i * step
        lines = [
            points.line(
                "features",
                {"site": site, "session": session},
                {"arousal_index": 40.0 + (t % 30), "hr": 70.0, "eda_tonic": 2.0},
                points.to_ns(start + t),
            )
            for t in range(length)
        ]
        lines.append(points.session_end_line(site, session, start + length - 1))
        body = [x for x in lines if x is not None]
        for k in range(0, len(body), 50_000):
            transport.write("\n".join(body[k : k + 50_000]) + "\n")
        rows += length
        last_end = max(last_end, start + length)
    return rows, last_end


def run_query(influx: InfluxD, text: str) -> tuple[float, int, int, list[str]]:
    """(seconds, result rows, response bytes, variable values) of one query."""
    url = f"{influx.url}/query?" + urllib.parse.urlencode({"db": DB, "q": text, "epoch": "ms"})
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
    elapsed = time.perf_counter() - started
    results = json.loads(body)["results"]
    rows = sum(len(s["values"]) for s in results[0].get("series", []))
    return elapsed, rows, len(body), variable_values(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=24, help="sessions in the day")
    parser.add_argument("--hours", type=float, default=2.0, help="length of each session")
    parser.add_argument("--repeat", type=int, default=7, help="runs per query (median shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        influx = InfluxD.start(Path(tmp) / "influx")
        try:
            influx.create_database(DB)
            t = time.perf_counter()
            rows, end = write_sessions(influx, args.sessions, args.hours)
            print(
                f"{args.sessions} sessions x {args.hours:g} h over one day, {rows} feature rows "
                f"written in {time.perf_counter() - t:.1f} s"
            )
            site = "|".join(SITES)
            queries = {
                "naive": NAIVE_QUERY,
                "grouped": variables.ACTIVE_SESSION_QUERY,
                "tags": variables.SESSION_QUERY,
            }
            print(f"{'range':>6} {'query':>8} {'rows':>7} {'bytes':>9} {'ms':>8} {'sessions':>9}")
            for label, span in (("15m", 900), ("1h", 3600), ("6h", 21_600), ("24h", DAY_S)):
                stats: dict[str, tuple[float, int, int, int]] = {}
                for name, query in queries.items():
                    text = query.replace("$site", f"({site})")
                    text = render(text, start_ms=int((end - span) * 1000), end_ms=int(end * 1000))
                    runs = [run_query(influx, text) for _ in range(args.repeat)]
                    seconds = statistics.median(r[0] for r in runs)
                    _, n_rows, n_bytes, values = runs[0]
                    stats[name] = (seconds, n_rows, n_bytes, len(values))
                    print(
                        f"{label:>6} {name:>8} {n_rows:>7} {n_bytes:>9} "
                        f"{seconds * 1000:>8.1f} {len(values):>9}"
                    )
                naive, grouped = stats["naive"], stats["grouped"]
                assert naive[3] == grouped[3], "both list the same sessions"
                fewer_rows = naive[1] / max(grouped[1], 1)
                print(
                    f"{label:>6} grouped vs naive: {fewer_rows:.0f}x fewer rows, "
                    f"{naive[2] / grouped[2]:.0f}x fewer bytes, "
                    f"{naive[0] / grouped[0]:.1f}x faster"
                )
        finally:
            influx.stop()


if __name__ == "__main__":
    main()
