"""NeuroKit2's interval metrics in the live service: each closed episode and, at the session's
end, each segment between markers, computed in a separate process, stored in InfluxDB as
``episode_metrics``/``segment_metrics`` and equal to NeuroKit2 called directly on the same
stretch of the session's samples; kept across a checkpoint/restart and a dead worker process."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.evaluate import read_phases
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.intervals import marker_segments
from rekindle.analysis.live_metrics import MetricsRunner, Stretch, StretchRecorder
from rekindle.analysis.offline import run_pipeline
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.base import Chunk, open_source
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.conftest import (
    S02,
    S02_PHASES,
    ReplayedSession,
    fixture_path,
    replay_into_influx,
)
from tests.servers import InfluxD, Mosquitto
from tests.test_intervals import direct, raw, same
from tests.waiting import wait_until

SITE = "nklive"


@pytest.fixture(scope="module")
def sim_chunks() -> list[Chunk]:
    """The simulator's 30-minute session: two episodes (one a release), a 'tears' marker."""
    return list(simulate(SimulationScript(), seed=3))


def stored(influxd: InfluxD, db: str, measurement: str, session: str) -> list[dict[str, Any]]:
    """Every point of ``measurement`` of the session, as {column: value} (None -> "")."""
    series = influxd.series(f'SELECT * FROM "{measurement}" WHERE "session" = \'{session}\'', db)
    if not series:
        return []
    cols = series[0]["columns"]
    return [
        {c: ("" if v is None else v) for c, v in zip(cols, row, strict=True)}
        for row in series[0]["values"]
    ]


def check_against_neurokit2(
    influxd: InfluxD,
    db: str,
    session: str,
    chunks: list[Chunk],
    phases: Sequence[tuple[str, float, float]] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored metrics equal NeuroKit2 on the stretches ``rekindle analyze`` finds."""
    cfg = AnalysisConfig()
    offline = run_pipeline(iter(chunks), "sim")
    eda, rr = raw(chunks, "eda"), raw(chunks, "rr")
    episodes = stored(influxd, db, "episode_metrics", session)
    assert sorted((p["kind"], p["onset"], p["offset"]) for p in episodes) == sorted(
        (e.kind, e.onset, e.offset) for e in offline.episodes
    )
    for point in episodes:
        same(point, direct(eda, rr, point["onset"], point["offset"], cfg))
        assert point["duration_s"] == point["offset"] - point["onset"]
        assert point["time"] == round(point["onset"] * 1e9)  # the episode point's time
    segments = stored(influxd, db, "segment_metrics", session)
    wanted = marker_segments(offline.markers, offline.start, offline.end)
    assert sorted((p["kind"], p["label"], p["start"], p["end"]) for p in segments) == sorted(
        [("segment", s.label, s.start, s.end) for s in wanted]
        + [("phase", label, a, b) for label, a, b in phases]
    )
    for point in segments:
        same(point, direct(eda, rr, point["start"], point["end"], cfg))
    return episodes, segments


@pytest.mark.slow
def test_replayed_session_stores_the_metrics_neurokit2_gives(
    mqtt_broker: Mosquitto, influxd: InfluxD, sim_chunks: list[Chunk]
) -> None:
    replay_into_influx(
        mqtt_broker,
        influxd,
        iter(sim_chunks),
        db="nklive",
        site=SITE,
        session="sim",
        metrics=MetricsRunner(),
    )
    episodes, segments = check_against_neurokit2(influxd, "nklive", "sim", sim_chunks)
    assert len(episodes) >= 2  # the two scripted surges (and a release if one is confirmed)
    assert all(p["nk_HRV_HF"] != "" for p in episodes)  # > 2 min of clean beats each
    assert all(p["nk_SCR_Peaks_N"] != "" for p in episodes)
    assert [p["label"] for p in segments] == ["start", "tears"]
    # 4-Hz EDA: NeuroKit2's warning that it skips its filter is kept, not raised or printed
    assert "sampled at very low frequency" in segments[0]["nk_notes"]


def test_s02_replayed_into_influx_has_the_metrics_neurokit2_gives(
    influxd: InfluxD, s02_in_influx: ReplayedSession
) -> None:
    """Stress-Predict S02 through mosquitto, the service and influxd (the fixture the dashboard
    tests query): its episodes, its segments between E4 tags and its labelled phases."""
    chunks = list(open_source(fixture_path(S02)))
    phases = [
        (p.phase, p.start, p.end)
        for p in read_phases(fixture_path(S02_PHASES))
        if p.subject == "S02"
    ]
    episodes, segments = check_against_neurokit2(
        influxd, s02_in_influx.db, s02_in_influx.session, chunks, phases
    )
    assert episodes  # (as many as rekindle analyze finds: checked above)
    assert all(p["nk_HRV_RMSSD"] != "" for p in episodes)
    assert sum(p["kind"] == "phase" for p in segments) == 10


@pytest.mark.slow
def test_metrics_cover_the_data_from_before_a_restart(
    mqtt_broker: Mosquitto, influxd: InfluxD, sim_chunks: list[Chunk], tmp_path: Path
) -> None:
    """The service is stopped before the 'tears' marker and restarted from its checkpoint: the
    segment from the start to the marker (and the episodes) still get the metrics of all their
    samples, those of before the restart coming from the checkpoint."""
    db, session, device = "nklive_restart", "sim-restart", "sim"
    influxd.create_database(db)
    settings = MqttSettings.from_url(mqtt_broker.url)
    state = tmp_path / "analysis.state"
    tears = next(c.start for c in sim_chunks if c.stream == "marker")
    first = [c for c in sim_chunks if c.start < tears - 120]
    rest = [c for c in sim_chunks if c.start >= tears - 120]

    def service() -> tuple[AnalysisService, BufferedWriter]:
        writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=db)))
        svc = AnalysisService(
            settings,
            writer,
            site=SITE,
            client_id="nklive-restart",
            persistent_session=True,
            state_path=state,
            metrics=MetricsRunner(),
        )
        return svc.start(), writer

    start = min(c.start for c in sim_chunks if c.stream != "marker")
    end = max(c.end for c in sim_chunks if c.stream != "marker")
    with Publisher(settings, SITE, session, device=device) as pub:
        svc, _ = service()
        try:
            pub.send_status(device, "online", start)
            for c in first:
                pub.publish(c.to_message(SITE, session, pub.next_seq(c.device, c.stream), pub.run))
            pub.flush()
            expected = len(first) + 1
            wait_until(lambda: svc.stats.accepted >= expected, "the first part analysed")
        finally:
            svc.stop()
        assert state.exists()
        svc, _ = service()
        try:
            for c in rest:
                pub.publish(c.to_message(SITE, session, pub.next_seq(c.device, c.stream), pub.run))
            pub.send_status(device, "end", end)
            pub.flush()
            assert svc.wait_sessions_finished(1, timeout=120)
            assert svc.wait_metrics(timeout=120)
        finally:
            svc.stop()
    episodes, segments = check_against_neurokit2(influxd, db, session, sim_chunks)
    assert len(episodes) >= 2
    assert segments[0]["label"] == "start"
    assert segments[0]["start"] == start  # reaches back before the restart


# --- the runner on its own: restart from a pickled state, a worker process that dies ----------


@dataclass
class Fed:
    runner: MetricsRunner
    snapshot: bytes  # pickled state right after the session ended, jobs not yet done
    #: Segments submitted before the session's end (once the data passed their closing marker).
    early: list[Stretch]


def feed(chunks: list[Chunk]) -> Fed:
    """The simulated session through a pipeline, its messages and events into a runner."""
    runner = MetricsRunner()
    pipeline = SessionPipeline("s", "x", store_lines=False)
    for i, c in enumerate(chunks):
        msg = c.to_message("s", "x", i, None)
        events = pipeline.handle(msg).events
        runner.message(msg)
        runner.events("s", "x", events)
    early = [j.stretch for j in runner.state.jobs if j.stretch.what == "segment"]
    runner.session_end("s", "x", pipeline.finish().events)
    return Fed(runner, pickle.dumps(runner.checkpoint_state()), early)


def drain(runner: MetricsRunner, timeout: float = 120.0) -> list[str]:
    lines: list[str] = []

    def done() -> bool:
        lines.extend(runner.collect())
        return runner.pending() == 0

    wait_until(done, "every metrics job done", timeout_s=timeout)
    runner.close()
    return lines


@pytest.fixture(scope="module")
def fed_lines(sim_chunks: list[Chunk]) -> tuple[Fed, list[str]]:
    fed = feed(sim_chunks)
    return fed, drain(fed.runner)


def test_runner_restored_from_its_state_computes_the_unwritten_jobs_despite_a_killed_process(
    fed_lines: tuple[Fed, list[str]],
) -> None:
    """A runner restored from a checkpointed state computes the jobs that were not written,
    and a worker process that dies (killed here) is replaced and its jobs done again."""
    fed, lines = fed_lines
    jobs = fed.runner.stats.submitted
    assert jobs >= 4  # >= 2 episodes, 2 segments
    assert len(lines) == jobs
    # the segment before 'tears' was computed when the data passed the marker, and only then
    assert [s.label for s in fed.early] == ["start"]
    segments = [line for line in lines if line.startswith("segment_metrics,")]
    assert len(segments) == 2
    assert fed.runner.stats.failed == 0
    restored = MetricsRunner()
    restored.restore(pickle.loads(fed.snapshot))
    assert restored.pending() == jobs
    pool = restored._pool
    assert pool is not None
    wait_until(lambda: bool(pool._processes), "the metrics process started")
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)  # the child this test's runner started
    assert sorted(drain(restored)) == sorted(lines)
    assert restored.stats.restarts >= 1
    assert restored.stats.failed == 0
    assert restored.stats.written == jobs


def test_recorder_keeps_only_the_last_keep_s_and_says_so() -> None:
    rec = StretchRecorder("s", "x", keep_s=600.0)
    for k in range(3600):  # one hour of 4-Hz EDA, one message per second
        t = 1_700_000_000.0 + k + np.arange(4) / 4
        rec.add("eda", "e4", t, np.full(4, 2.0))
    kept = len(rec.stores[("eda", "e4")])
    assert kept == rec.counts[("eda", "e4")]
    assert 600 * 4 <= kept <= 660 * 4  # pruned every keep_s / 10 of data
    assert len(rec.stores[("eda", "e4")].chunks) <= 12  # a few packed chunks
    whole = Stretch("s", "x", "segment", "segment", 1_700_000_000.0, 1_700_003_600.0)
    job = rec.job(whole, AnalysisConfig())
    assert job.notes
    assert "no longer kept" in job.notes[0]
    assert job.eda is not None
    assert len(job.eda.times) == kept


def test_runners_of_one_process_share_one_metrics_process() -> None:
    """The services of several partitions in one worker process (--workers) share one
    NeuroKit2 process (about 250 MB each); it ends with the last of them."""
    first, second = MetricsRunner().start(), MetricsRunner().start()
    pool = first._pool
    assert pool is not None
    assert second._pool is pool
    assert first.warmed is not None
    first.warmed.result(timeout=120)
    (child,) = pool._processes.values()
    first.close()
    assert child.is_alive()  # still the second runner's
    second.close()
    child.join(timeout=60)
    assert not child.is_alive()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
    except FileNotFoundError:
        return True


def test_the_metrics_process_ends_when_the_service_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed service (the supervisor restarts it) leaves no NeuroKit2 process behind."""
    script = (
        "import time\n"
        "from rekindle.analysis.live_metrics import MetricsRunner\n"
        "r = MetricsRunner().start()\n"
        "r.warmed.result()\n"
        "print(*r._pool._processes, flush=True)\n"
        "time.sleep(600)\n"
    )
    # (stderr to a file: the killed process' resource tracker reports its semaphores there)
    err = tmp_path / "stderr"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), err.read_text()
        child = int(line)
        assert not _gone(child)
    finally:
        proc.kill()  # the service process this test started
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
    wait_until(lambda: _gone(child), "the metrics process to end after its service")


def test_no_metrics_process_before_an_episode(sim_chunks: list[Chunk]) -> None:
    """A session's data alone starts no NeuroKit2 process (its import and 250 MB are paid at
    the first confirmed episode, or the first job)."""
    runner = MetricsRunner()
    pipeline = SessionPipeline("s", "calm", store_lines=False)
    start = min(c.start for c in sim_chunks)
    for i, c in enumerate(sim_chunks):
        if c.start - start > 300:  # the scripted surges start at 480 s
            break
        msg = c.to_message("s", "calm", i, None)
        runner.message(msg)
        runner.events("s", "calm", pipeline.handle(msg).events)
    assert runner.recorder("s", "calm").counts
    assert runner._pool is None
    runner.close()


def _feed_in_a_daemon(out: Any) -> None:
    """(In a daemonic process, which may not start processes of its own.)"""
    chunks = list(simulate(SimulationScript(), seed=3))
    runner = MetricsRunner()
    pipeline = SessionPipeline("s", "x", store_lines=False)
    episodes = 0
    for i, c in enumerate(chunks):
        msg = c.to_message("s", "x", i, None)
        events = pipeline.handle(msg).events
        episodes += sum(1 for e in events if type(e).__name__ == "Episode")
        runner.message(msg)
        runner.events("s", "x", events)
    runner.session_end("s", "x", pipeline.finish().events)
    lines = runner.collect() + runner.close()
    out.put((episodes, runner.stats.failed, runner.stats.errors, runner.pending(), lines))


def test_without_a_metrics_process_the_analysis_goes_on_and_says_so() -> None:
    """Where no process can be started (here: a daemonic process), every stretch is stored with
    the reason in nk_notes and nothing else changes; nothing waits forever."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_feed_in_a_daemon, args=(out,), daemon=True)
    proc.start()
    try:
        episodes, failed, errors, pending, lines = out.get(timeout=300)
    finally:
        proc.join(timeout=60)
        out.close()
    assert episodes >= 2
    assert errors == 0
    assert pending == 0
    assert failed == len(lines) == episodes + 2  # and the 2 segments
    assert all("metrics failed: the metrics process cannot run" in line for line in lines)
