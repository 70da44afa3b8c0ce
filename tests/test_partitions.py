"""Partitions and leases of the session-affine workers (no servers): the hash keeps every
message of a session on one partition and is the same in every process; flock leases are
exclusive, freed when their holder closes them or dies, and a worker holds its fair share."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rekindle.analysis.partition import Partition, partition_of, session_partition
from rekindle.analysis.workers import LeaseDir, WorkerError, preferred, share


def test_every_topic_of_a_session_is_on_its_partition() -> None:
    for i in range(200):
        session = f"S{i:03d}"
        want = session_partition("room-2", session, 4)
        topics = [
            f"rekindle/v1/room-2/{session}/{stream}" for stream in ("eda", "hr", "rr", "marker")
        ] + [f"rekindle/v1/room-2/{session}/status/polar", f"rekindle/v1/room-2/{session}/bad"]
        assert {partition_of(t, 4) for t in topics} == {want}


def test_partitions_spread_sessions_and_malformed_topics_have_one_owner() -> None:
    spread = Counter(session_partition("clinic", f"s{i}", 4) for i in range(4000))
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 900, spread  # ~1000 each
    for topic in ("garbage", "rekindle/v1", "other/v1/a/b/eda", ""):
        owners = [p for p in range(3) if Partition(p, 3).owns(topic)]
        assert len(owners) == 1, topic


def test_the_hash_is_the_same_in_another_process() -> None:
    code = (
        "from rekindle.analysis.partition import session_partition as p;"
        "print([p('site', f's{i}', 7) for i in range(50)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str([session_partition("site", f"s{i}", 7) for i in range(50)])


def test_partition_checks_its_numbers() -> None:
    with pytest.raises(ValueError, match="0 <= index < count"):
        Partition(2, 2)
    assert str(Partition(1, 2)) == "1/2"
    assert Partition(0, 1).owns("anything")


def test_leases_are_exclusive_and_freed_on_close(tmp_path: Path) -> None:
    a, b = LeaseDir(tmp_path, 2, "a"), LeaseDir(tmp_path, 2, "b")
    a.join()
    b.join()
    assert a.live_members() == b.live_members() == ["a", "b"]
    assert a.try_acquire(0)
    assert not b.try_acquire(0)
    assert b.try_acquire(1)
    a.close()
    assert b.live_members() == ["b"]
    assert b.try_acquire(0)
    assert b.held() == {0, 1}
    b.close()


def test_a_dead_process_frees_its_leases(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from rekindle.analysis.workers import LeaseDir\n"
        f"d = LeaseDir(Path({str(tmp_path)!r}), 2, 'other'); d.join(); d.try_acquire(1)\n"
        "print('held', flush=True); time.sleep(600)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout is not None
            assert other.stdout.readline().strip() == "held"
            mine = LeaseDir(tmp_path, 2, "mine")
            mine.join()
            assert mine.live_members() == ["mine", "other"]
            assert not mine.try_acquire(1)
            other.kill()
            other.wait(30)
            assert mine.live_members() == ["mine"]
            assert mine.try_acquire(1)
            mine.close()
        finally:
            if other.poll() is None:
                other.kill()


def test_same_name_twice_and_another_partition_count_are_refused(tmp_path: Path) -> None:
    first = LeaseDir(tmp_path, 2, "w")
    first.join()
    with pytest.raises(WorkerError, match="already running"):
        LeaseDir(tmp_path, 2, "w").join(timeout_s=0.2)
    with pytest.raises(
        WorkerError, match="split into 2 partitions, not 3: run with --partitions 2"
    ):
        LeaseDir(tmp_path, 3, "x").join()
    with pytest.raises(WorkerError, match="worker name"):
        LeaseDir(tmp_path, 2, "../x")
    first.close()


def test_fair_share_and_preferred_order() -> None:
    assert [share(4, n) for n in (1, 2, 3, 4, 5)] == [4, 2, 2, 1, 1]
    assert preferred(4, ["a", "b"], "a") == [0, 2, 1, 3]
    assert preferred(4, ["a", "b"], "b") == [1, 3, 0, 2]
    assert preferred(3, ["a"], "a") == [0, 1, 2]


ANALYSIS = [sys.executable, "-m", "rekindle.cli", "analysis", "--mqtt", "mqtt://127.0.0.1:1"]
ANALYSIS += ["--influx", "http://127.0.0.1:1", "--influx-db", "x"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "2"], "need --client-id and --state"),
        (["--workers", "0"], "--workers must be 1 or more"),
        (["--partitions", "0", "--client-id", "c", "--state", "s"], "--partitions must be 1"),
        (["--worker-name", "a"], "--worker-name is for a partition worker"),
    ],
)
def test_analysis_refuses_worker_options_it_cannot_honour(options: list[str], message: str) -> None:
    done = subprocess.run(
        [*ANALYSIS, *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def _checkpoint_with_open_session(path: Path) -> None:
    """A real checkpoint of the service holding one open session (nothing connected)."""
    from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport  # noqa: PLC0415
    from rekindle.analysis.pipeline import SessionPipeline  # noqa: PLC0415
    from rekindle.analysis.service import AnalysisService  # noqa: PLC0415
    from rekindle.mqtturl import MqttSettings  # noqa: PLC0415

    writer = BufferedWriter(V1Transport(InfluxSettings("http://127.0.0.1:1", database="x")))
    service = AnalysisService(MqttSettings.from_url("mqtt://127.0.0.1:1"), writer)
    service.pipelines[("room-1", "S7")] = SessionPipeline("room-1", "S7", None)
    service.checkpoint(path)


def _analysis(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ANALYSIS, *options], capture_output=True, text=True, timeout=60, check=False
    )


def test_open_sessions_of_the_other_layout_are_not_left_behind(tmp_path: Path) -> None:
    state = tmp_path / "analysis.state"
    _checkpoint_with_open_session(state)
    durable = ["--client-id", "c", "--state", str(state)]
    to_workers = _analysis(*durable, "--workers", "2")
    assert to_workers.returncode == 2, to_workers.stderr
    assert "holds 1 open session(s) (room-1/S7) of the single-process service" in (
        to_workers.stderr
    )
    state.unlink()
    leases = LeaseDir(tmp_path / "analysis.state.leases", 2, "w0")
    leases.join()
    leases.close()
    _checkpoint_with_open_session(tmp_path / "analysis.state.p1")
    to_one = _analysis(*durable)
    assert to_one.returncode == 2, to_one.stderr
    assert "analysis.state.p1 holds 1 open session(s) (room-1/S7) of workers (--partitions 2)" in (
        to_one.stderr
    )
