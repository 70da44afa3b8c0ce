"""Liveness of the analysis service, for container health checks and monitoring.

The service's worker thread writes a small JSON **heartbeat** file (``--heartbeat PATH``) every
few seconds from its loop, whether or not data arrives: its age proves the worker is alive (not
only the process), and it says whether the broker connection is up and how much storage work is
waiting. ``rekindle health --heartbeat PATH`` reads it and exits 0 (healthy) or 1 (unhealthy:
one line on stderr saying why and what to check), which is what the analysis image's
``HEALTHCHECK`` runs; a bad option is a usage error (2), as for every command (docs/cli.md).

InfluxDB being away does not make the service unhealthy: the writer keeps the points (in memory,
then in the spool file) and a restart would not help. Its backlog is in the heartbeat.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
        self.reason = reason


class UnhealthyError(AnalysisError):
    """The service is not healthy (``rekindle health`` exits 1): ``reason`` says why and what
    to check; ``path`` is the heartbeat file it was read from."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"unhealthy: {reason} (heartbeat {path})")
        self.path = path
        self.reason = reason


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
        reason = (
            "no heartbeat yet: is the service running with --heartbeat "
            f"{path}? (it writes the first one when it has connected)"
        )
        raise HealthError(path, reason) from None
    except (OSError, ValueError, TypeError) as exc:
        raise HealthError(path, f"unreadable heartbeat: {exc}") from exc


#: :func:`verdict` of a fresh heartbeat from a worker without its broker connection.
NOT_CONNECTED = "not connected to the MQTT broker"


def verdict(beat: Heartbeat, now: float, max_age_s: float = MAX_AGE_S) -> str | None:
    """``None`` when healthy, else why not (pure)."""
    age = now - beat.time
    if not math.isfinite(age) or age > max_age_s:
        return f"heartbeat is {age:.0f} s old (limit {max_age_s:g} s): the worker is stuck or gone"
    if not beat.connected:
        return NOT_CONNECTED
    return None


def _max_age(text: str) -> float:
    """``--max-age``: a positive, finite number of seconds (else a usage error, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        msg = f"{text!r} is not a positive number of seconds (default {MAX_AGE_S:g})"
        raise argparse.ArgumentTypeError(msg)
    return value


#: What to check, by problem (``verdict`` gives the problem; the command adds this).
_STALE_HINT = (
    "restart the analysis service (docker compose restart analysis); its log says where the "
    "worker stopped"
)
_OFFLINE_HINT = "is the broker running? check the service's --mqtt or REKINDLE_MQTT_URL"


def _run(args: argparse.Namespace) -> int:
    """``rekindle health``: 0 and one line on stdout when healthy, else :class:`UnhealthyError`
    (``rekindle.cliconfig.run_command`` prints it in the one error style and exits 1)."""
    try:
        beat = read(args.heartbeat)
    except HealthError as exc:
        raise UnhealthyError(exc.path, exc.reason) from exc
    problem = verdict(beat, time.time(), args.max_age)
    if problem is not None:
        hint = _OFFLINE_HINT if problem == NOT_CONNECTED else _STALE_HINT
        raise UnhealthyError(args.heartbeat, f"{problem}: {hint}")
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
    p.add_argument(
        "--heartbeat",
        type=Path,
        required=True,
        metavar="FILE",
        help="the heartbeat file the service writes (its --heartbeat)",
    )
    p.add_argument(
        "--max-age",
        type=_max_age,
        default=MAX_AGE_S,
        metavar="SECONDS",
        help="oldest heartbeat still healthy, in seconds; the worker writes one every "
        f"{EVERY_S:g} s (default {MAX_AGE_S:g})",
    )
    p.set_defaults(func=_run)
