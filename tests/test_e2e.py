"""End to end on real servers: S02 replayed through mosquitto and the analysis service into
influxd; live episodes equal offline ``rekindle analyze``; replaying again duplicates nothing,
also in the 30-s messages of ``rekindle replay --speed max``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from rekindle.analysis.core import Episode, Event
from rekindle.analysis.offline import run_pipeline
from rekindle.ingest.coalesce import coalesce
from rekindle.ingest.sources.base import open_source
from rekindle.ingest.sources.e4 import read_e4_folder
from tests.conftest import S02, ReplayedSession, fixture_path, replay_into_influx
from tests.servers import InfluxD, Mosquitto

#: every test here replays a whole recording through mosquitto, the service and influxd
pytestmark = pytest.mark.slow


def file_rows(name: str) -> list[str]:
    lines = (fixture_path(S02) / name).read_text().splitlines()
    return [ln for ln in lines[2:] if ln.strip()]


def count(
    influxd: InfluxD, db: str, where: str, measurement: str = "signal", field: str = "value"
) -> int:
    return influxd.count(f'SELECT count("{field}") FROM "{measurement}" WHERE {where}', db)


def stream_counts(influxd: InfluxD, db: str) -> dict[str, int]:
    return {
        stream: count(influxd, db, f"session = 'S02' AND stream = '{stream}'")
        for stream in ("eda", "hr", "rr", "ppg", "acc", "temp")
    }


def test_every_sample_is_stored_exactly_once(
    s02_in_influx: ReplayedSession, influxd: InfluxD
) -> None:
    db = s02_in_influx.db
    counts = stream_counts(influxd, db)
    ibi_rows = (fixture_path(S02) / "IBI.csv").read_text().splitlines()[1:]
    assert counts == {
        "eda": len(file_rows("EDA.csv")),
        "hr": len(file_rows("HR.csv")),
        "rr": len(ibi_rows),
        "ppg": len(file_rows("BVP.csv")),
        "acc": len(file_rows("ACC.csv")),
        "temp": len(file_rows("TEMP.csv")),
    }
    # spot checks: the 101st EDA sample, the 11th HR value, the 3rd RR interval, the last ACC row
    t0 = 1644227574
    eda = influxd.series(
        f"SELECT value FROM signal WHERE stream = 'eda' AND time = {(t0 + 25) * 10**9}", db
    )
    assert eda[0]["values"][0][1] == float(file_rows("EDA.csv")[100])
    hr = influxd.series(
        f"SELECT value FROM signal WHERE stream = 'hr' AND time = {(t0 + 10 + 10) * 10**9}", db
    )
    assert hr[0]["values"][0][1] == float(file_rows("HR.csv")[10])
    offset, interval = ibi_rows[2].split(",")
    rr_ns = round((t0 + float(offset)) * 1e9)
    rr = influxd.series(f"SELECT value FROM signal WHERE stream = 'rr' AND time = {rr_ns}", db)
    assert rr[0]["values"][0][1] == float(interval) * 1000
    last_acc = [float(x) / 64 for x in file_rows("ACC.csv")[-1].split(",")]
    acc = influxd.series(
        "SELECT x, y, z FROM signal WHERE stream = 'acc' ORDER BY time DESC LIMIT 1", db
    )
    assert acc[0]["values"][0][1:] == last_acc
    # every tag is a marker, at its time
    tags = [float(x) for x in (fixture_path(S02) / "tags_S02.csv").read_text().split()]
    markers = influxd.series("SELECT text FROM marker WHERE session = 'S02'", db)
    assert [row[0] for row in markers[0]["values"]] == [round(t * 1e9) for t in tags]
    # analysis output is there too
    assert count(influxd, db, "session = 'S02'", "features", "arousal_index") > 3000
    assert count(influxd, db, "session = 'S02'", "eda", "tonic") > 10000
    assert s02_in_influx.service.rejected == 0


def test_live_episodes_equal_offline_analyze(
    s02_in_influx: ReplayedSession, influxd: InfluxD, tmp_path: Path
) -> None:
    stored = influxd.series(
        'SELECT "onset", "peak", "offset", "peak_index" FROM "episode" '
        "WHERE session = 'S02' GROUP BY \"kind\"",
        s02_in_influx.db,
    )
    live = sorted((s["tags"]["kind"], *row[1:]) for s in stored for row in s["values"])
    offline = run_pipeline(read_e4_folder(fixture_path(S02)), "S02").episodes
    assert offline, "S02 has Stroop and interview stress tasks: expected episodes"
    assert live == sorted((e.kind, e.onset, e.peak, e.offset, e.peak_index) for e in offline)
    # and the command-line tool gives the same episodes
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analyze",
            str(fixture_path(S02)),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with (out / "S02" / "episodes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert (
        sorted(
            (
                r["kind"],
                float(r["onset"]),
                float(r["peak"]),
                float(r["offset"]),
                float(r["peak_index"]),
            )
            for r in rows
        )
        == live
    )
    header = (out / "S02" / "features.csv").read_text().splitlines()[0]
    assert header.startswith("time,hr,rmssd,eda_tonic,eda_phasic,scr_rate,arousal_index,quality,")
    assert {"quality_eda", "quality_hr", "quality_rr", "contrib_eda"} <= set(header.split(","))
    assert (out / "S02" / "summary.json").exists()
    assert (out / "S02" / "session.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "S02" / "report.html").exists()
    assert (out / "index.html").exists()
    report = (out / "S02" / "report.md").read_text()
    assert sum(
        line.startswith(("| arousal |", "| release |")) for line in report.splitlines()
    ) == len(rows)


def test_live_rr_from_ppg_equals_offline(s02_in_influx: ReplayedSession, influxd: InfluxD) -> None:
    """The live service derives S02's beats from its BVP as ``rekindle analyze`` does: the same
    ``rr_ppg`` quality every second and the same RMSSD, most of it from derived beats (S02's
    wrist RR is lost for most of the session)."""
    db = s02_in_influx.db
    where = "WHERE session = 'S02'"
    q_rows = influxd.series(f'SELECT "code" FROM "quality" {where} AND stream = \'rr_ppg\'', db)
    live_q = {t: c for t, c in q_rows[0]["values"]}
    r_rows = influxd.series(f'SELECT "rmssd" FROM "features" {where} AND "rmssd" >= 0', db)
    live_rmssd = {t: v for t, v in r_rows[0]["values"]}
    offline = run_pipeline(read_e4_folder(fixture_path(S02)), "S02").features
    codes = {"good": 2, "degraded": 1, "lost": 0}
    ns = 1_000_000_000
    off_q = {int(r.time) * ns: codes[r.quality["rr_ppg"]] for r in offline if "rr_ppg" in r.quality}
    off_rmssd = {int(r.time) * ns: r.rmssd for r in offline if r.rmssd is not None}
    assert len(off_q) > 3000
    assert live_q == off_q
    assert live_rmssd == off_rmssd
    from_ppg = [r for r in offline if r.rmssd is not None and r.quality.get("rr") == "lost"]
    assert len(from_ppg) > 100


def test_replaying_again_duplicates_nothing(
    s02_in_influx: ReplayedSession, influxd: InfluxD, mqtt_broker: Mosquitto
) -> None:
    """Again, in the messages of ``rekindle replay --speed max`` (30 s of data each, see
    rekindle.ingest.coalesce): every point lands on the one stored before, and the episodes
    are those of the offline pipeline in 1-s messages."""
    db = s02_in_influx.db
    episodes: list[Episode] = []

    def on_events(_site: str, _session: str, events: list[Event]) -> None:
        episodes.extend(e for e in events if isinstance(e, Episode))

    before = stream_counts(influxd, db)
    episodes_before = count(influxd, db, "session = 'S02'", "episode", "onset")
    markers_before = count(influxd, db, "session = 'S02'", "marker", "text")
    features_before = count(influxd, db, "session = 'S02'", "features", "arousal_index")
    again = replay_into_influx(
        mqtt_broker,
        influxd,
        coalesce(open_source(fixture_path(S02)), 30.0),
        db=db,
        site="galway",
        session="S02",
        on_events=on_events,
    )
    assert again.service.rejected == 0
    assert again.replay.chunks < 1000  # (18k messages of 1 s)
    offline = run_pipeline(read_e4_folder(fixture_path(S02)), "S02", message_s=1.0).episodes
    assert episodes == offline
    assert stream_counts(influxd, db) == before
    assert count(influxd, db, "session = 'S02'", "episode", "onset") == episodes_before
    assert count(influxd, db, "session = 'S02'", "marker", "text") == markers_before
    assert count(influxd, db, "session = 'S02'", "features", "arousal_index") == features_before
