"""Memory per live session at steady state, by component, without an hours-long live run.

N simulated sessions (the project's simulator: HR 1 Hz, RR, EDA 4 Hz with an episode every 20
minutes and a marker after each, plus an 8-Hz wrist accelerometer as in
``benchmarks/live_load.py``) are encoded as the wire messages a publisher sends and handed,
interleaved in data time, to one in-process :class:`AnalysisService` (``process()``, as its
worker does: decode, seq tracking, reorder buffer, acknowledgement positions, the session
pipelines with the core, the live NeuroKit2 metrics' recorders) with a writer whose transport
discards the lines and an MQTT client whose publish() drops what it is given; the metrics
process runs its jobs as in the service, and they are waited for every 5 data minutes (in real
time it keeps up; here the data runs ~1,000 times faster). No broker, no InfluxDB: faster than
real time (about 1.3 CPU-s per session-hour).

At each reported data time it prints, per session: the deep size (``sys.getsizeof`` over the
object graph, numpy buffers included) of the core pipelines, the metrics' recorders, the seq
tracker and reorder buffer, and the rest of the service's per-session tables; and the RSS of
the process over its RSS before the first session's first message (after a warm-up session of
10 minutes, finished: lazy imports, caches and the metrics process are started by then),
divided by N. The NeuroKit2 child process's RSS is printed apart (a fixed cost, not per
session).

``--before REV`` runs the same measurement on git revision ``REV``'s ``services`` (``git
archive`` to a temporary folder) in a subprocess first, so the two layouts are compared in one
run. Run: ``.venv/bin/python -m benchmarks.session_memory --sessions 10 --hours 6``.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import START, export, simulated_wire

HOUR = 3600.0
#: Data seconds of the warm-up session.
WARM_S = 600.0
#: Every this many data seconds the metrics jobs are waited for (as in real time).
DRAIN_S = 300.0
REPO = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    from rekindle.analysis.influx import BufferedWriter
    from rekindle.analysis.live_metrics import MetricsRunner
    from rekindle.analysis.service import AnalysisService


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children() -> list[int]:
    out: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(p) for p in text]
    return out


def deep_size(objs: Iterable[object]) -> int:
    """``sys.getsizeof`` summed over everything reachable from ``objs`` (each object once;
    modules, classes and functions not followed); a numpy array that owns its buffer counts it."""
    import types  # noqa: PLC0415

    seen: set[int] = set()
    stack = list(objs)
    total = 0
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, np.ndarray):
            if obj.base is not None:
                stack.append(obj.base)
            continue
        stack.extend(gc.get_referents(obj))
    return total


def session_messages(hours: float, acc_hz: float) -> list[tuple[float, str, bytes]]:
    """(end time, stream topic suffix, payload) of one simulated session, in publish order."""
    from rekindle.ingest.sources.simulator import (  # noqa: PLC0415
        ScriptedEpisode,
        SimulationScript,
    )

    duration = hours * HOUR
    episodes = tuple(
        ScriptedEpisode(t, 150.0, 1.0, release=i % 2 == 0, marker=f"m{i}")
        for i, t in enumerate(np.arange(480.0, duration - 300.0, 1200.0))
    )
    script = SimulationScript(duration=duration, episodes=episodes)
    return [
        (chunk.end, topic.split("/S/", 1)[1], payload)
        for chunk, topic, payload in simulated_wire(script, acc_hz, "mem", "S")
    ]


def discard(service: AnalysisService, writer: BufferedWriter) -> None:
    """Drop the lines produced so far (the service's own list where it has one, else those
    added to the writer)."""
    take = getattr(service, "_take_lines", None)
    if take is not None:
        take()
    writer.flush()


def drain(metrics: MetricsRunner, timeout_s: float = 300.0) -> None:
    """Wait for the metrics process to finish the jobs handed to it (in real time it keeps up:
    a job takes well under a second, a session has one every few minutes)."""
    deadline = time.monotonic() + timeout_s
    while metrics.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
        metrics.collect()
    metrics.collect()


def measure(sessions: int, hours: float, acc_hz: float, report_h: list[float]) -> None:
    """Drive the sessions through one in-process service; print a line per reported time."""
    from rekindle.analysis.influx import BufferedWriter  # noqa: PLC0415
    from rekindle.analysis.live_metrics import MetricsRunner  # noqa: PLC0415
    from rekindle.analysis.service import AnalysisService  # noqa: PLC0415
    from rekindle.mqtturl import MqttSettings  # noqa: PLC0415

    class Discard:
        def write(self, body: str) -> None:
            pass

        def close(self) -> None:
            pass

    msgs = session_messages(hours, acc_hz)
    metrics = MetricsRunner()
    writer = BufferedWriter(Discard())
    service = AnalysisService(
        MqttSettings("127.0.0.1", 1), writer, metrics=metrics, session_idle_s=1e9
    )
    # no broker: what the service publishes (features, episodes, acks) would wait in paho's
    # queue for a connection; on a connected service it leaves at once, so it is dropped here
    service._client.publish = lambda *_a, **_k: None  # type: ignore[method-assign, assignment]
    # a warm-up session first (10 min of data with its first episode, then finished), so that
    # the lazy imports, caches and the NeuroKit2 process are in the baseline, not per session
    for end, suffix, payload in msgs:
        if end > START + WARM_S:
            break
        service.process("rekindle/v1/mem/warm-up/" + suffix, payload, end)
    writer.flush()
    service._finish(("mem", "warm-up"), "warm-up done")
    drain(metrics)
    discard(service, writer)
    topics = [f"rekindle/v1/mem/s{k:04d}/" for k in range(sessions)]
    gc.collect()
    base_kb = rss_kb()
    marks = sorted(h for h in report_h if h <= hours)
    cpu0 = time.process_time()
    i = 0
    drained = START
    for mark in marks:
        until = START + mark * HOUR
        while i < len(msgs) and msgs[i][0] <= until:
            _, suffix, payload = msgs[i]
            for prefix in topics:
                service.process(prefix + suffix, payload, msgs[i][0])
            i += 1
            if i % 25 == 0:
                discard(service, writer)
                metrics.collect()
            if msgs[i - 1][0] >= drained + DRAIN_S:
                drained = msgs[i - 1][0]
                drain(metrics)
        discard(service, writer)
        drain(metrics)
        gc.collect()
        pipes = deep_size([service.pipelines])
        recs = deep_size([metrics.state.recorders])
        jobs = deep_size([metrics.state.jobs])
        seq = deep_size([service._seq, service._reorder])
        rest = deep_size(
            [
                getattr(service, name)
                for name in (
                    "_positions",
                    "_last_end",
                    "_run_n",
                    "_device_states",
                    "_gap_spans",
                    "_last_seen",
                    "_ack_unsent",
                    "_ack_sent",
                )
                if hasattr(service, name)
            ]
        )
        kids = children()
        child_mb = sum(rss_kb(p) for p in kids) / 1024
        rss = (rss_kb() - base_kb) / 1024
        print(
            f"  {mark:5.2f} h: per session core+pipeline {pipes / sessions / 1e6:.3f} MB, "
            f"metrics recorder {recs / sessions / 1e6:.3f} MB (jobs in flight "
            f"{jobs / sessions / 1e6:.3f} MB), seq+reorder "
            f"{seq / sessions / 1e6:.3f} MB, other tables {rest / sessions / 1e6:.4f} MB; "
            f"RSS over idle {rss / sessions:.3f} MB per session ({rss:.0f} MB for {sessions}); "
            f"NeuroKit2 process {child_mb:.0f} MB ({len(kids)} process(es)); "
            f"{time.process_time() - cpu0:.0f} CPU-s",
            flush=True,
        )
    metrics.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--acc-hz", type=float, default=8.0)
    parser.add_argument(
        "--report", default="0.25,0.5,1,2,3,4,5,6", help="data hours to report at (comma list)"
    )
    parser.add_argument("--before", help="git revision to measure first, in a subprocess")
    parser.add_argument("--only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    report = [float(x) for x in args.report.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}", flush=True)
    if args.before and not args.only:
        with tempfile.TemporaryDirectory(prefix="rekindle-mem-") as tmp:
            tree = export(args.before, Path(tmp))
            print(f"before ({args.before}):", flush=True)
            cmd = [sys.executable, "-m", "benchmarks.session_memory", "--only"]
            cmd += ["--sessions", str(args.sessions), "--hours", str(args.hours)]
            cmd += ["--acc-hz", str(args.acc_hz), "--report", args.report]
            env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{REPO}"}
            subprocess.run(cmd, cwd=tmp, env=env, check=True)
        print("after (this tree):", flush=True)
    measure(args.sessions, args.hours, args.acc_hz, report)
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
