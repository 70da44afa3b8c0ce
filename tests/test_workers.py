"""Session-affine workers (issue 13): `rekindle analysis` as real worker processes on real
mosquitto and influxd. Each session is handled by exactly one worker at a time; a worker that
is SIGKILLed mid-session frees its partition, a survivor takes it with its checkpoint and the
broker's persistent session, and a worker that joins takes a partition back the same way:
every sample is stored once and the episodes are those of the offline analysis
(`rekindle analyze` runs the same pipeline)."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rekindle.analysis.partition import session_partition
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.base import Chunk
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.test_durable import (
    SITE,
    AnalysisProcess,
    counts,
    expected,
    session_chunks,
    stored_episodes,
    wait_for,
)

DEADLINE_S = 240.0
MINUTES = 12  # one arousal episode per simulated session (two streams of surges need 20)
REPO = Path(__file__).resolve().parent.parent


def Analysis(  # noqa: N802 (reads as the class it returns)
    broker: Mosquitto, influxd: InfluxD, db: str, workdir: Path, name: str, extra: Sequence[str]
) -> AnalysisProcess:
    """``rekindle analysis`` with the durable options and ``extra`` (``--workers``,
    ``--partitions``...) in its own process, log in a file."""
    return AnalysisProcess(broker, influxd.url, db, workdir, name, extra, wait_subscribed=False)


def sessions_by_partition(prefix: str, per_partition: int, partitions: int = 2) -> list[str]:
    """Session names, ``per_partition`` of them hashed to each partition. Each test has its own
    ``prefix``: the broker keeps the retained statuses (``end``) of an earlier test's sessions."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while any(len(v) < per_partition for v in chosen.values()):
        name = f"{prefix}{i}"
        part = chosen[session_partition(SITE, name, partitions)]
        if len(part) < per_partition:
            part.append(name)
        i += 1
    return [name for p in range(partitions) for name in chosen[p]]


class PhasedPublisher:
    """Publishes a session in phases (at broker speed), each after the test opens its gate,
    then ``end``. ``done[i]`` is set once phase ``i`` is published."""

    def __init__(self, broker: Mosquitto, session: str, chunks: list[Chunk], cuts: Sequence[int]):
        self.session = session
        bounds = [0, *cuts, len(chunks)]
        self.phases = [chunks[a:b] for a, b in itertools.pairwise(bounds)]
        self.gates = [threading.Event() for _ in self.phases]
        self.done = [threading.Event() for _ in self.phases]
        self.error: Exception | None = None
        self._settings = MqttSettings.from_url(broker.url)
        self._chunks = chunks
        self.thread = threading.Thread(target=self._run, name=f"publish-{session}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with Publisher(self._settings, SITE, self.session, device="sim") as pub:
                for i, phase in enumerate(self.phases):
                    while not self.gates[i].wait(0.5):
                        pass
                    if i == 0:
                        pub.send_status("sim", "online", self._chunks[0].start)
                    for chunk in phase:
                        pub.publish(
                            chunk.to_message(
                                SITE,
                                self.session,
                                pub.next_seq(chunk.device, chunk.stream),
                                pub.run,
                            )
                        )
                    if i == len(self.phases) - 1:
                        pub.send_status("sim", "end", self._chunks[-1].end)
                    pub.flush(timeout=DEADLINE_S)
                    self.done[i].set()
        except Exception as exc:  # noqa: BLE001 (any failure is reported by the test)
            self.error = exc
            for event in self.done:
                event.set()

    def open(self, phase: int) -> None:
        self.gates[phase].set()


def took(log: str, worker: str, partition: int) -> int:
    """How often ``worker`` took ``partition`` (from its log)."""
    return len(re.findall(rf"worker {worker} took partition {partition}/", log))


def holdings(log: str) -> dict[str, set[int]]:
    """The partitions each worker holds, from the log's take and give-up lines in order."""
    held: dict[str, set[int]] = {}
    for worker, verb, partition in re.findall(r"worker (\S+) (took|gave up) partition (\d+)/", log):
        mine = held.setdefault(worker, set())
        (mine.add if verb == "took" else mine.discard)(int(partition))
    return held


def wal_lines(workdir: Path) -> dict[str, int]:
    """Lines left in each partition's write-ahead log (durable, not yet in InfluxDB)."""
    return {
        p.name: len(p.read_bytes().splitlines())
        for p in sorted(workdir.glob("analysis.wal*"))
        if p.is_file()
    }


def assert_complete(
    influxd: InfluxD, db: str, sessions: dict[str, list[Chunk]], workdir: Path
) -> None:
    for session, chunks in sessions.items():
        samples, features, episodes = expected(chunks)
        assert episodes, f"session {session} must contain an episode"
        stored = counts(influxd, db, session)
        # (on a mismatch, say whether lines were left durable in a write-ahead log at the stop)
        assert stored == (samples, features, 1), (
            session,
            stored,
            (samples, features, 1),
            wal_lines(workdir),
        )
        assert stored_episodes(influxd, db, session) == episodes, session


def test_two_workers_handle_each_session_once_with_offline_episodes(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    db = "workers_two"
    influxd.create_database(db)
    names = sessions_by_partition("two", 2)
    sessions = {name: session_chunks(seed=10 + i, minutes=MINUTES) for i, name in enumerate(names)}
    heartbeat = tmp_path / "heartbeat.json"
    service = Analysis(
        mqtt_broker,
        influxd,
        db,
        tmp_path,
        "service",
        ["--workers", "2", "--heartbeat", str(heartbeat)],
    )
    try:
        wait_for(
            lambda: sorted(map(len, holdings(service.text()).values())) == [1, 1],
            "each worker holding one partition",
            service,
        )
        owner = {p: w for w, held in holdings(service.text()).items() for p in held}
        # one heartbeat for the whole service, fresh while every worker's is
        wait_for(heartbeat.exists, "the service's heartbeat", service)
        health = subprocess.run(
            [sys.executable, "-m", "rekindle.cli", "health", "--heartbeat", str(heartbeat)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
        assert health.returncode == 0, health.stderr
        pubs = [PhasedPublisher(mqtt_broker, s, c, []) for s, c in sessions.items()]
        for pub in pubs:
            pub.open(0)
        wait_for(
            lambda: all(counts(influxd, db, s)[2] == 1 for s in sessions),
            "every session's end stored",
            service,
        )
        for pub in pubs:
            pub.thread.join(60)
            assert pub.error is None, pub.error
        # acknowledged end to end means durable: in InfluxDB *or* a partition's write-ahead
        # log, which a running worker drains into InfluxDB once it answers (a busy influxd
        # can leave lines there for a while): wait for that before counting InfluxDB
        wait_for(lambda: not any(wal_lines(tmp_path).values()), "the WALs drained", service)
    finally:
        assert service.terminate() == 0, service.text()[-3000:]
    assert_complete(influxd, db, sessions, tmp_path)
    log = service.text()
    for name in names:
        started = re.findall(rf"\[(w\d)\] \S+: session {SITE}/{name} started", log)
        assert started == [owner[session_partition(SITE, name, 2)]], (name, started)
    assert holdings(log) == {"w0": set(), "w1": set()}, "a partition was not given up at the stop"


def test_worker_sigkilled_mid_session_its_sessions_continue_on_the_other(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    db = "workers_kill"
    influxd.create_database(db)
    names = sessions_by_partition("kill", 2)
    sessions = {name: session_chunks(seed=20 + i, minutes=MINUTES) for i, name in enumerate(names)}
    on_b = [s for s in names if session_partition(SITE, s, 2) == 1]
    worker = ["--partitions", "2", "--worker-name"]
    a = Analysis(mqtt_broker, influxd, db, tmp_path, "a", [*worker, "a"])
    wait_for(lambda: took(a.text(), "a", 0) > 0 and took(a.text(), "a", 1) > 0, "a holding both", a)
    b = Analysis(mqtt_broker, influxd, db, tmp_path, "b", [*worker, "b"])
    procs = [a, b]
    try:
        wait_for(lambda: took(b.text(), "b", 1) == 1, "b taking partition 1 from a", a, b)
        pubs = [
            PhasedPublisher(mqtt_broker, s, c, [len(c) // 3, 2 * len(c) // 3])
            for s, c in sessions.items()
        ]
        for pub in pubs:
            pub.open(0)
        # b has stored every first third; it is killed while it streams the second thirds
        first = {s: expected(sessions[s][: len(sessions[s]) // 3])[0] for s in on_b}
        two = {s: expected(sessions[s][: 2 * len(sessions[s]) // 3])[0] for s in on_b}
        wait_for(
            lambda: all(counts(influxd, db, s)[0] == first[s] for s in on_b),
            "b storing the first thirds",
            a,
            b,
        )
        for pub in pubs:
            pub.open(1)
        wait_for(
            lambda: any(counts(influxd, db, s)[0] > first[s] for s in on_b),
            "b storing the second thirds",
            a,
            b,
        )
        b.kill()
        killed = time.monotonic()
        procs = [a]
        wait_for(lambda: took(a.text(), "a", 1) == 2, "a taking partition 1 back", a)
        taken_over = time.monotonic() - killed
        assert re.search(r"worker a took partition 1/2 \([1-9]\d* open session", a.text()), (
            "the sessions moved without their checkpoint"
        )
        wait_for(
            lambda: all(counts(influxd, db, s)[0] == two[s] for s in on_b),
            "a storing the rest of b's second thirds",
            a,
        )
        # a worker joining takes a partition with its open sessions
        b = Analysis(mqtt_broker, influxd, db, tmp_path, "b2", [*worker, "b"])
        joined = time.monotonic()
        procs = [a, b]
        wait_for(lambda: took(b.text(), "b", 1) == 1, "the new b taking partition 1", a, b)
        print(
            f"workers: partition taken over {taken_over:.1f} s after a SIGKILL, handed to a "
            f"joining worker {time.monotonic() - joined:.1f} s after its start"
        )
        assert re.search(r"worker b took partition 1/2 \([1-9]\d* open session", b.text())
        for pub in pubs:
            pub.open(2)
        wait_for(
            lambda: all(counts(influxd, db, s)[2] == 1 for s in sessions),
            "every session's end stored",
            a,
            b,
        )
        for pub in pubs:
            pub.thread.join(60)
            assert pub.error is None, pub.error
        # (as in the test above: durable in a write-ahead log until a worker drains it)
        wait_for(lambda: not any(wal_lines(tmp_path).values()), "the WALs drained", a, b)
    finally:
        for proc in procs:
            assert proc.terminate() == 0, proc.text()[-3000:]
    assert_complete(influxd, db, sessions, tmp_path)


def test_workers_stop_when_their_supervisor_is_sigkilled(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    # (its database exists: a worker that gives a partition up while InfluxDB answers 404
    # first waits out its final flush, ~1 min, which this test is not about)
    influxd.create_database("workers_orphan")
    service = Analysis(
        mqtt_broker, influxd, "workers_orphan", tmp_path, "service", ["--workers", "2"]
    )
    try:
        wait_for(
            lambda: sorted(map(len, holdings(service.text()).values())) == [1, 1],
            "each worker holding one partition",
            service,
        )
        pids = [int(p) for p in re.findall(r"worker w\d started \(pid (\d+)\)", service.text())]
        assert len(pids) == 2
    finally:
        service.kill()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a stopped worker stays a zombie until init reaps it
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    wait_for(lambda: all(gone(pid) for pid in pids), "the orphaned workers stopping")
    assert holdings(service.text()) == {"w0": set(), "w1": set()}
    assert service.text().count("the supervisor (pid") == 2
