"""Checkpoint snapshots pickled by a forked child (rekindle.analysis.snapshot): the state as it
was at the fork, clear failures, nothing of the parent's kept open in the child."""

from __future__ import annotations

import fcntl
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rekindle.analysis import snapshot
from rekindle.analysis.errors import AnalysisError
from rekindle.analysis.snapshot import ForkedSnapshot, SnapshotError
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not snapshot.available(), reason="needs os.fork")


class _Gate:
    """Pickled (in the child), it creates ``reached`` and waits until ``marker`` exists: holds
    the child in its pickling while we look at it."""

    def __init__(self, marker: Path, reached: Path | None = None) -> None:
        self.marker = marker
        self.reached = reached

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        if self.reached is not None:
            self.reached.touch()
        deadline = time.monotonic() + 120.0
        while not self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return str, ("gate",)


def test_the_child_writes_the_state_as_it_was_at_the_fork(tmp_path: Path) -> None:
    state: dict[str, object] = {"sessions": list(range(5000)), "arrays": {"eda": np.arange(9.0)}}
    expected = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    forked = ForkedSnapshot.start(state, snapshot.snapshot_path(tmp_path / "a.state", 0))
    state["sessions"].append(-1)  # type: ignore[attr-defined]  # (after the fork: not in it)
    written = forked.result()
    assert forked.error is None
    assert forked.wall_s > 0
    assert forked.cpu_s <= forked.wall_s + 0.01  # (one thread: no more CPU than wall time)
    assert written.path.read_bytes() == expected
    written.install(tmp_path / "a.state")
    assert (tmp_path / "a.state").read_bytes() == expected
    assert not written.path.exists()


def test_a_child_that_cannot_pickle_says_why_and_leaves_no_file(tmp_path: Path) -> None:
    path = snapshot.snapshot_path(tmp_path / "a.state", 3)
    forked = ForkedSnapshot.start({"lock": threading.Lock()}, path)
    with pytest.raises(SnapshotError, match="child failed: TypeError: cannot pickle") as err:
        forked.result()
    assert isinstance(err.value, AnalysisError)
    assert not path.exists()


def test_a_child_that_cannot_write_says_why(tmp_path: Path) -> None:
    path = snapshot.snapshot_path(tmp_path / "a.state", 0)
    path.mkdir()  # (a directory where the file goes: the write fails)
    with pytest.raises(SnapshotError, match="IsADirectoryError"):
        ForkedSnapshot.start({"x": 1}, path).result()


def test_the_child_keeps_no_descriptor_and_no_lease_of_the_parent(tmp_path: Path) -> None:
    """A lease is a flock on a descriptor, which a child inherits: if the child kept it, a
    worker's partitions would stay locked after the worker died while its child pickled."""
    lease = (tmp_path / "p0.lock").open("w")
    fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
    marker, reached = tmp_path / "go", tmp_path / "pickling"
    gate = _Gate(marker, reached)
    forked = ForkedSnapshot.start({"gate": gate}, snapshot.snapshot_path(tmp_path / "s", 0))
    try:
        wait_until(reached.exists, "the child to start pickling")
        assert not forked.poll()  # (held by the gate)
        fds = {int(fd) for fd in os.listdir(f"/proc/{forked.pid}/fd")}
        assert lease.fileno() not in fds
        assert len(fds - {0, 1, 2}) == 1, fds  # (only the pipe for its error message)
        lease.close()  # the parent "dies": its lease must be free while the child still runs
        other = (tmp_path / "p0.lock").open("w")
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the child held it
        other.close()
        assert not forked.poll()
    finally:
        marker.touch()
    assert forked.result().path.exists()


def test_abandon_stops_the_child_and_deletes_its_file(tmp_path: Path) -> None:
    path = snapshot.snapshot_path(tmp_path / "s", 0)
    forked = ForkedSnapshot.start({"gate": _Gate(tmp_path / "never")}, path)
    forked.abandon()
    assert forked.ended
    assert "killed by signal" in (forked.error or "")
    assert not path.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(forked.pid, 0)


def test_leftovers_of_a_crash_are_removed_and_nothing_else(tmp_path: Path) -> None:
    state = tmp_path / "analysis.state.p0"
    keep = [state, tmp_path / "analysis.state.p1.snap-2.tmp", tmp_path / "analysis.state.p0.tmp"]
    gone = [snapshot.snapshot_path(state, n) for n in (0, 7)]
    for path in keep + gone:
        path.write_bytes(b"x")
    assert snapshot.remove_leftovers(state) == 2
    assert all(p.exists() for p in keep)
    assert not any(p.exists() for p in gone)


def test_many_snapshots_in_a_row_leave_no_child_behind(tmp_path: Path) -> None:
    pids = []
    for n in range(20):
        forked = ForkedSnapshot.start({"n": n}, snapshot.snapshot_path(tmp_path / "s", n))
        pids.append(forked.pid)
        assert pickle.loads(forked.result().path.read_bytes()) == {"n": n}
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # (reaped: no zombie left)


def test_the_child_reports_the_cpu_it_took(tmp_path: Path) -> None:
    """The next snapshot is paced by the child's CPU time (service._snapshot_too_soon)."""
    state = {"floats": [float(i) for i in range(2_000_000)]}  # (~0.1 s to pickle)
    forked = ForkedSnapshot.start(state, snapshot.snapshot_path(tmp_path / "s", 0))
    forked.result().discard()
    assert 0.005 < forked.cpu_s <= forked.wall_s + 0.01
