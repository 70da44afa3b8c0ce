"""Liveness of the analysis service, for container health checks and monitoring.

The service's worker thread writes a small JSON **heartbeat** file (``--heartbeat PATH``) every
few seconds from its loop, whether or not data arrives: its age proves the worker is alive (not
only the process), and it says whether the broker connection is up and how much storage work is
waiting. ``rekindle health --heartbeat PATH`` reads it and exits 0 (healthy) or 1 (unhealthy,
with the reason on stderr), which is what the analysis image's ``HEALTHCHECK`` runs.

InfluxDB being away does not make the service unhealthy: the writer keeps the points (in memory,
then in the spool file) and a restart would not help. Its backlog is in the heartbeat.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rekindle.analysis.errors import AnalysisError

#: Default largest heartbeat age (s) still healthy; the worker writes every ``EVERY_S``.
MAX_AGE_S = 60.0
EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    time: float  # unix s, when written
    connected: bool  # MQTT connection up
    sessions_open: int
    inbox: int  # messages received, not yet processed
    write_queue: int  # InfluxDB lines waiting
    received: int
    rejected: int


class HealthError(AnalysisError):
    """The heartbeat file is missing or unreadable; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def write(path: Path, beat: Heartbeat) -> None:
    """Replace ``path`` atomically with ``beat`` (readers never see a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(beat)), encoding="utf-8")
    os.replace(tmp, path)


def read(path: Path) -> Heartbeat:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Heartbeat(**doc)
    except FileNotFoundError:
        reason = "no heartbeat yet (is the service running with --heartbeat?)"
        raise HealthError(path, reason) from None
    except (OSError, ValueError, TypeError) as exc:
        raise HealthError(path, f"unreadable heartbeat: {exc}") from exc


def verdict(beat: Heartbeat, now: float, max_age_s: float = MAX_AGE_S) -> str | None:
    """``None`` when healthy, else why not (pure)."""
    age = now - beat.time
    if not math.isfinite(age) or age > max_age_s:
        return f"heartbeat is {age:.0f} s old (limit {max_age_s:g} s): the worker is stuck or gone"
    if not beat.connected:
        return "not connected to the MQTT broker"
    return None


def _run(args: argparse.Namespace) -> int:
    try:
        beat = read(args.heartbeat)
    except HealthError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    problem = verdict(beat, time.time(), args.max_age)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(
        f"healthy: {beat.sessions_open} sessions open, inbox {beat.inbox}, "
        f"{beat.write_queue} lines waiting for InfluxDB, {beat.received} received, "
        f"{beat.rejected} rejected"
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``health`` to the ``rekindle`` command line."""
    p = subparsers.add_parser(
        "health",
        help="exit 0 if the analysis service's heartbeat is fresh and it is connected",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--heartbeat", type=Path, required=True, help="the service's --heartbeat file")
    p.add_argument(
        "--max-age", type=float, default=MAX_AGE_S, help=f"seconds (default {MAX_AGE_S:g})"
    )
    p.set_defaults(func=_run)
