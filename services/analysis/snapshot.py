"""Checkpoint snapshots pickled by a forked child, off the worker thread.

The checkpoint is the pickle of every open session of a partition at a commit point. Pickled
on the worker thread it stops the analysis for as long as it takes: ~0.8 ms per open session
(pipeline and NeuroKit2 recorder after 5 minutes; ~250 ms for 300 sessions, measured by
``benchmarks/checkpoint_cost.py``), during which every message waits. A forked child has the
same memory at the moment of the fork (copy-on-write: the parent's later changes do not reach
it), so it can pickle that state and write it while the worker goes on; the worker pays only
the fork (~4 ms at 100 MB). This is how Redis writes its snapshots (``BGSAVE``).

A :class:`ForkedSnapshot` is one such child. It writes the pickle to a file of its own beside
the checkpoint and fsyncs it; the committer moves that file into place (:meth:`SnapshotFile.
install`) only after the lines of the commit it belongs to are durable, exactly where it wrote
the pickled bytes before. The child keeps nothing of the parent's: it closes every inherited
file descriptor but its error pipe first (so no lease lock of the parent, ``flock(2)`` on an
inherited descriptor, outlives the parent in it), restores the default SIGTERM/SIGINT handlers
and leaves with ``os._exit`` (no finalizers, no flushed buffers of the parent). Nothing but the
pickling runs in it, and the state holds no locks (it would not pickle).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from rekindle.analysis.errors import AnalysisError

#: The suffix of a child's file beside the checkpoint: ``<checkpoint>.snap-<n>.tmp``.
SNAP_SUFFIX = ".tmp"


def available() -> bool:
    """Whether snapshots can be forked here (POSIX ``fork``)."""
    return hasattr(os, "fork")


def snapshot_path(checkpoint: Path, n: int) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.snap-{n}{SNAP_SUFFIX}")


def remove_leftovers(checkpoint: Path) -> int:
    """Delete the snapshot files a crash left beside ``checkpoint`` (never moved into place, so
    never the checkpoint); the number deleted."""
    removed = 0
    for leftover in checkpoint.parent.glob(f"{checkpoint.name}.snap-*{SNAP_SUFFIX}"):
        with contextlib.suppress(OSError):  # (gone meanwhile, or not a file: left alone)
            leftover.unlink()
            removed += 1
    return removed


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class SnapshotFile:
    """A checkpoint snapshot written and fsynced to ``path`` by a child."""

    path: Path

    def install(self, checkpoint: Path) -> None:
        """Make this snapshot the checkpoint (atomically: a crash leaves the old one or this)."""
        os.replace(self.path, checkpoint)
        fsync_dir(checkpoint.parent)

    def discard(self) -> None:
        """Delete the file (a newer snapshot covers it), if it is there."""
        with contextlib.suppress(OSError):  # (never written, or not a file: left alone)
            self.path.unlink()


class SnapshotError(AnalysisError):
    """The child could not pickle or write the snapshot (the reason is the message)."""


def _child(state: object, path: Path, err_fd: int) -> None:  # pragma: no cover (the child)
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        # nothing inherited stays open here: no lease lock of the parent outlives it in us
        os.closerange(3, err_fd)
        os.closerange(err_fd + 1, os.sysconf("SC_OPEN_MAX"))
        data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        code = 0
    except BaseException as exc:  # noqa: BLE001 (reported to the parent, whatever it is)
        with contextlib.suppress(BaseException):
            os.write(err_fd, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:2000])
    finally:
        os._exit(code)


@dataclass(eq=False)
class ForkedSnapshot:
    """A child pickling ``state`` (as it is now) into ``path``; see the module docstring.

    ``acks`` and ``publishes`` are what the parent may acknowledge once this snapshot is the
    checkpoint (the PUBACKs and ``out/ack`` messages it covers); ``keys`` the sessions whose
    ``out/ack`` it carries."""

    path: Path
    acks: list[tuple[int, int, int]] = field(default_factory=list)
    publishes: list[tuple[str, bytes]] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)
    pid: int = 0
    started: float = 0.0
    #: The child's wall time and CPU time (user + system, s), once it ended.
    wall_s: float = 0.0
    cpu_s: float = 0.0
    #: Why the child failed (None: it has not ended, or it succeeded).
    error: str | None = None
    ended: bool = False
    _err_fd: int = -1

    @classmethod
    def start(cls, state: object, path: Path) -> ForkedSnapshot:
        """Fork the child; raises OSError when the system cannot fork (then pickle here)."""
        read_fd, write_fd = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns that a child of a multi-threaded process may deadlock
                # on a lock another thread held: ours takes none (it pickles lock-free state
                # and writes one file), see the module docstring
                warnings.filterwarnings("ignore", ".*multi-threaded.*fork", DeprecationWarning)
                pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # pragma: no cover (the child)
            os.close(read_fd)
            _child(state, path, write_fd)
        os.close(write_fd)
        return cls(path, pid=pid, started=time.monotonic(), _err_fd=read_fd)

    def poll(self) -> bool:
        """True once the child has ended (without waiting for it)."""
        if not self.ended:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid != 0:
                self._ended(status, usage)
        return self.ended

    def wait(self) -> None:
        """Wait for the child to end."""
        if not self.ended:
            _pid, status, usage = os.wait4(self.pid, 0)
            self._ended(status, usage)

    def _ended(self, status: int, usage: resource.struct_rusage) -> None:
        self.ended = True
        self.wall_s = time.monotonic() - self.started
        self.cpu_s = usage.ru_utime + usage.ru_stime
        reason = b""
        with contextlib.suppress(OSError):
            reason = os.read(self._err_fd, 4000)
        os.close(self._err_fd)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            why = reason.decode(errors="replace") or (
                f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            )
            self.error = f"the checkpoint snapshot's child failed: {why}"
            SnapshotFile(self.path).discard()

    def result(self) -> SnapshotFile:
        """The written snapshot (waits for the child); raises :class:`SnapshotError` when the
        child failed."""
        self.wait()
        if self.error is not None:
            raise SnapshotError(self.error)
        return SnapshotFile(self.path)

    def abandon(self) -> None:
        """Stop the child if it still runs and delete what it wrote."""
        if not self.ended:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait()
        SnapshotFile(self.path).discard()
