"""Durable processing: `rekindle analysis` as a real process, SIGKILLed mid-session and restarted
with its state (same client id, so the broker resends what it had not acknowledged), loses and
duplicates nothing and gives the episodes of an uninterrupted run; also while InfluxDB is away
(the write-ahead log then holds what InfluxDB has not taken)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from rekindle.analysis.offline import run_pipeline
from rekindle.analysis.reorder import ReorderBuffer
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto

SITE = "durable"
DEADLINE_S = 240.0


class AnalysisProcess:
    """``rekindle analysis`` in its own process, with its log in a file."""

    def __init__(
        self,
        broker: Mosquitto,
        influx_url: str,
        db: str,
        workdir: Path,
        name: str,
        extra: Sequence[str] = (),
        *,
        wait_subscribed: bool = True,
    ) -> None:
        """Started with the durable options (client id, ``--state``, ``--spool`` in ``workdir``)
        and ``extra``; waits until it subscribed unless ``wait_subscribed`` is false (workers
        log their partitions' subscriptions instead)."""
        self.name = name
        self.log = workdir / f"{name}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rekindle.cli",
                "analysis",
                "--mqtt",
                broker.url,
                "--influx",
                influx_url,
                "--influx-db",
                db,
                "--site",
                SITE,
                "--client-id",
                f"rekindle-analysis-{db}",
                "--state",
                str(workdir / "analysis.state"),
                "--spool",
                str(workdir / "analysis.wal"),
                *extra,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        if wait_subscribed:
            wait_for(lambda: "subscribed" in self.text(), "the service never subscribed", self)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def wait_for(
    condition: Callable[[], bool],
    what: str,
    *procs: AnalysisProcess,
    timeout: float = DEADLINE_S,
) -> None:
    """Wait for ``condition``; fail at once if one of ``procs`` exits, and with their logs at
    the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            if proc.proc.poll() is not None:
                pytest.fail(
                    f"{proc.name} exited with {proc.proc.returncode}: {proc.text()[-3000:]}"
                )
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{p.text()[-2000:]}" for p in procs)
            pytest.fail(f"{what} within {timeout:.0f} s\n{logs}")
        time.sleep(0.1)


def session_chunks(seed: int, minutes: float) -> list[Chunk]:
    """A simulated session cut to its first ``minutes`` (two scripted surges fit in 20 min)."""
    chunks = list(simulate(SimulationScript(), seed=seed))
    start = min(c.start for c in chunks)
    return [c for c in chunks if c.end < start + minutes * 60]


def publish_session(
    broker: Mosquitto,
    session: str,
    chunks: list[Chunk],
    published: threading.Event,
    ack_window: int | None = None,
    resent: list[int] | None = None,
    hold: tuple[int, threading.Event] | None = None,
) -> threading.Thread:
    """Publish the session at broker speed in a thread, then ``end``; set ``published`` after
    (with ``ack_window``, once the analysis acknowledged everything end to end, appending to
    ``resent`` how many messages the publisher resent). ``hold=(k, resume)`` stops after the
    first k chunks until ``resume`` is set, so that a kill meant for mid-session comes before
    the end however fast the analysis is."""

    def run() -> None:
        settings = MqttSettings.from_url(broker.url)
        with Publisher(settings, SITE, session, device="sim", ack_window=ack_window) as pub:
            pub.send_status("sim", "online", chunks[0].start)
            for i, chunk in enumerate(chunks):
                if hold is not None and i == hold[0] and not hold[1].wait(DEADLINE_S):
                    return
                pub.publish(
                    chunk.to_message(
                        SITE, session, pub.next_seq(chunk.device, chunk.stream), pub.run
                    )
                )
            pub.send_status("sim", "end", chunks[-1].end)
            pub.flush(timeout=DEADLINE_S)
        if resent is not None:
            resent.append(pub.resent)
        published.set()

    thread = threading.Thread(target=run, name=f"publish-{session}", daemon=True)
    thread.start()
    return thread


def counts(influx: InfluxD, db: str, session: str) -> tuple[int, int, int]:
    """(samples, feature rows, end statuses) stored for ``session``."""
    where = f"session = '{session}'"
    return (
        influx.count(f"SELECT count(value) FROM signal WHERE {where}", db),
        influx.count(f"SELECT count(arousal_index) FROM features WHERE {where}", db),
        influx.count(f"SELECT count(state) FROM status WHERE {where} AND state = 'end'", db),
    )


def stored_episodes(influx: InfluxD, db: str, session: str) -> list[tuple[str, float, float]]:
    series = influx.series(
        'SELECT "onset", "offset", "open" FROM episode '
        f"WHERE session = '{session}' GROUP BY kind",
        db,
    )
    out = []
    for s in series:
        for _t, onset, offset, is_open in s["values"]:
            assert is_open is False, "an episode was left open"
            out.append((s["tags"]["kind"], onset, offset))
    return sorted(out)


def expected(chunks: list[Chunk]) -> tuple[int, int, list[tuple[str, float, float]]]:
    offline = run_pipeline(iter(chunks), "sim", site=SITE, session="x")
    episodes = sorted((str(e.kind), e.onset, e.offset) for e in offline.episodes)
    arousal = [f for f in offline.features if f.arousal_index is not None]
    return offline.samples, len(arousal), episodes


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[InfluxD]:
    """An influxd of this test alone (it is stopped and restarted on the same port)."""
    server = InfluxD.start(tmp_path / "influxd")
    yield server
    server.stop()


def test_analysis_sigkilled_mid_session_loses_and_duplicates_nothing(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    db, session = "durable_kill", "k1"
    influxd.create_database(db)
    chunks = session_chunks(seed=4, minutes=20)
    samples, features, episodes = expected(chunks)
    assert episodes, "the scripted session must contain episodes"
    first = AnalysisProcess(mqtt_broker, influxd.url, db, tmp_path, "first")
    published = threading.Event()
    resume = threading.Event()
    hold = (len(chunks) // 2, resume)
    publisher = publish_session(mqtt_broker, session, chunks, published, hold=hold)
    # kill it once it has stored a third of the session, while messages are in flight (the
    # publisher waits at half the session until then)
    wait_for(lambda: counts(influxd, db, session)[0] >= samples // 3, "a third stored", first)
    first.kill()
    resume.set()
    killed_at = counts(influxd, db, session)[0]
    assert killed_at < samples, "the session was complete before the kill: nothing tested"
    restarted = time.monotonic()
    second = AnalysisProcess(mqtt_broker, influxd.url, db, tmp_path, "second")
    try:
        wait_for(lambda: counts(influxd, db, session)[0] > killed_at, "storing again", second)
        recovered = time.monotonic() - restarted
        wait_for(published.is_set, "the publisher finished", second)
        publisher.join(30)
        wait_for(lambda: counts(influxd, db, session)[2] == 1, "the session's end stored", second)
    finally:
        assert second.terminate() == 0, second.text()[-3000:]
    print(f"analysis SIGKILL: storing again {recovered:.1f} s after the restart")
    assert counts(influxd, db, session) == (samples, features, 1)
    assert stored_episodes(influxd, db, session) == episodes
    assert "restored 1 open session" in second.text()


def test_analysis_sigkilled_between_checkpoints_loses_nothing_of_e2e_publishers(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    """With ``--checkpoint-every`` the broker's copies are acknowledged before a checkpoint
    covers them; a publisher that keeps what out/ack does not cover resends them after the
    crash, and the session is complete and analysed as offline."""
    db, session = "durable_cadence", "c1"
    influxd.create_database(db)
    # After the kill the broker delivers its whole backlog (the rest of the session: the
    # publisher does not wait for out/ack) at once, and all of it waits behind the gap that the
    # resend fills. More than the hold bound would give the gap up before the resend can come
    # (reorder.py: then analysed without it, by design). The backlog is what the first process
    # had not acknowledged, which is more than it had not stored: its PUBACKs go out after each
    # commit's lines are stored, and one commit can carry hundreds of messages (seen: a third
    # stored, PUBACKs only up to 15 %; the backlog, 2,003 messages, then exceeded the bound, and
    # once the resend was only 137 messages). So it is killed at half stored: the backlog is
    # then under three quarters of the session's 2,355 messages (15 min, both scripted
    # episodes), within the bound, and the resend a quarter of them.
    chunks = session_chunks(seed=4, minutes=15)
    assert len(chunks) * 3 // 4 < ReorderBuffer().max_held
    samples, features, episodes = expected(chunks)
    assert {kind for kind, _, _ in episodes} == {"arousal", "release"}
    # one checkpoint at the first commit, the next one long after the kill
    cadence = ["--checkpoint-every", "3600"]
    first = AnalysisProcess(mqtt_broker, influxd.url, db, tmp_path, "first", cadence)
    published = threading.Event()
    resent: list[int] = []
    resume = threading.Event()
    # (the publisher waits at two thirds of the session until the kill: the backlog is then
    # still under three quarters)
    hold = (len(chunks) * 2 // 3, resume)
    publisher = publish_session(
        mqtt_broker, session, chunks, published, ack_window=len(chunks), resent=resent, hold=hold
    )
    wait_for(lambda: counts(influxd, db, session)[0] >= samples // 2, "half stored", first)
    first.kill()
    resume.set()
    assert counts(influxd, db, session)[0] < samples, "complete before the kill: nothing tested"
    second = AnalysisProcess(mqtt_broker, influxd.url, db, tmp_path, "second", cadence)
    try:
        wait_for(published.is_set, "the publisher's session acknowledged end to end", second)
        publisher.join(30)
        wait_for(lambda: counts(influxd, db, session)[2] == 1, "the session's end stored", second)
    finally:
        assert second.terminate() == 0, second.text()[-3000:]
    assert "gave up" not in second.text(), second.text()[-3000:]
    assert counts(influxd, db, session) == (samples, features, 1)
    assert stored_episodes(influxd, db, session) == episodes
    assert len(resent) == 1
    assert resent[0] > len(chunks) // 10  # about the half the broker no longer had


def test_analysis_sigkilled_while_influxdb_is_away_loses_nothing(
    mqtt_broker: Mosquitto, own_influxd: InfluxD, tmp_path: Path
) -> None:
    db, session = "durable_away", "a1"
    influx_dir, port = tmp_path / "influxd", own_influxd.port
    own_influxd.create_database(db)
    chunks = session_chunks(seed=5, minutes=20)
    samples, features, episodes = expected(chunks)
    assert episodes
    own_influxd.stop()  # InfluxDB away for the whole first run
    first = AnalysisProcess(mqtt_broker, own_influxd.url, db, tmp_path, "first")
    published = threading.Event()
    publisher = publish_session(mqtt_broker, session, chunks, published)
    wal = tmp_path / "analysis.wal"

    def wal_lines() -> int:
        return wal.read_bytes().count(b"\n") if wal.exists() else 0

    wait_for(lambda: wal_lines() >= samples // 3, "a third in the write-ahead log", first)
    first.kill()
    restarted = InfluxD.start(influx_dir, port=port)
    try:
        started = time.monotonic()
        second = AnalysisProcess(mqtt_broker, restarted.url, db, tmp_path, "second")
        try:
            wait_for(published.is_set, "the publisher finished", second)
            publisher.join(30)
            wait_for(
                lambda: counts(restarted, db, session)[2] == 1, "the session's end stored", second
            )
            wait_for(lambda: not wal.exists(), "the write-ahead log replayed", second)
            print(
                "analysis SIGKILL with InfluxDB away: session complete in InfluxDB "
                f"{time.monotonic() - started:.1f} s after the restart"
            )
        finally:
            assert second.terminate() == 0, second.text()[-3000:]
        assert counts(restarted, db, session) == (samples, features, 1)
        assert stored_episodes(restarted, db, session) == episodes
    finally:
        restarted.stop()
