"""Throughput of session-affine workers: N sessions at broker speed through 1 analysis process
vs ``rekindle analysis --workers K``, on real mosquitto and influxd (docs/scaling.md).

Both arms run the analysis durably as compose does (``--client-id --state --spool``; the
workers need them to move sessions). The load generator publishes every session at once, in
its own ``--procs`` processes (the project's :class:`Publisher`, end-to-end window 500 per
session, as ``rekindle replay``), each session the project's simulator cut to ``--minutes``.
A run ends when every session's ``end`` status is stored in InfluxDB; then every session's
sample count is checked against what was published (a figure of a run that lost data would be
meaningless). Prints per arm: wall, messages/s, session-hours per wall-second, CPU of the
analysis process tree (CPU-s per session-hour) and the ratios K vs 1 in the same run.

The workers' cost of partitioning by subscription is in the CPU figure: every partition's
MQTT client receives every message and acknowledges the other partitions' ones unprocessed.

Run: ``.venv/bin/python -m benchmarks.workers --sessions 8 --minutes 20 --workers 2``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.live_load import _proc_tree, cpu_rss
from tests.servers import InfluxD, Mosquitto

SITE = "bench"


def session_chunks(i: int, minutes: float) -> list[Any]:
    from rekindle.ingest.sources.simulator import SimulationScript, simulate  # noqa: PLC0415

    chunks = list(simulate(SimulationScript(), seed=100 + i))
    start = min(c.start for c in chunks)
    return [c for c in chunks if c.end < start + minutes * 60]


def expected_samples(i: int, minutes: float) -> int:
    """What the offline pipeline counts as stored samples of session ``i``."""
    from rekindle.analysis.offline import run_pipeline  # noqa: PLC0415

    return int(
        run_pipeline(iter(session_chunks(i, minutes)), "sim", site=SITE, session="x").samples
    )


def generate(url: str, sessions: list[int], minutes: float, go: Any, done: Any) -> None:
    """One generator process: its sessions interleaved, at broker speed, then ``end``."""
    import logging  # noqa: PLC0415

    from rekindle.ingest.publisher import Publisher  # noqa: PLC0415
    from rekindle.mqtturl import MqttSettings  # noqa: PLC0415

    logging.basicConfig(level=logging.ERROR)
    chunks = {i: session_chunks(i, minutes) for i in sessions}
    settings = MqttSettings.from_url(url)
    pubs = {
        i: Publisher(settings, SITE, f"s{i}", device="sim", ack_window=500).start()
        for i in sessions
    }
    go.get()
    published = 0
    for i in sessions:
        pubs[i].send_status("sim", "online", chunks[i][0].start)
    for k in range(max(len(c) for c in chunks.values())):
        for i in sessions:
            if k < len(chunks[i]):
                pub, chunk = pubs[i], chunks[i][k]
                pub.publish(
                    chunk.to_message(
                        SITE, pub.session, pub.next_seq(chunk.device, chunk.stream), pub.run
                    )
                )
                published += 1
    for i in sessions:
        pubs[i].send_status("sim", "end", chunks[i][-1].end)
    for pub in pubs.values():
        pub.close(timeout=600)
    done.put(published)


def arm(workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    broker = Mosquitto.start(tmp / f"mosquitto-{workers}")
    influx = InfluxD.start(tmp / f"influxd-{workers}")
    db = f"bench_{workers}"
    influx.create_database(db)
    state = tmp / f"state-{workers}"
    state.mkdir()
    cmd = [sys.executable, "-m", "rekindle.cli", "analysis", "--mqtt", broker.url]
    cmd += ["--influx", influx.url, "--influx-db", db, "--site", SITE, "--stall-limit", "0"]
    cmd += ["--client-id", "bench", "--state", str(state / "a.state")]
    cmd += ["--spool", str(state / "spool.lp")]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log = tmp / f"analysis-{workers}.log"
    with log.open("wb") as out:
        analysis = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        want = workers if workers > 1 else 1
        what = "took partition" if workers > 1 else "subscribed"
        deadline = time.monotonic() + 120
        while log.read_text(errors="replace").count(what) < want:
            if analysis.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"analysis did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        if workers > 1:  # settled: each worker holds its share (the first may take all first)
            time.sleep(3.0)
        ctx = mp.get_context("spawn")
        go, done = ctx.Queue(), ctx.Queue()
        shares = [list(range(k, args.sessions, args.procs)) for k in range(args.procs)]
        gens = [
            ctx.Process(target=generate, args=(broker.url, share, args.minutes, go, done))
            for share in shares
            if share
        ]
        for gen in gens:
            gen.start()
        time.sleep(2.0)  # generators read their sessions and connect
        tree = _proc_tree(analysis.pid)
        cpu0, _ = cpu_rss(tree)
        start = time.monotonic()
        for _ in gens:
            go.put(1)
        where = "state = 'end'"
        deadline = time.monotonic() + args.timeout
        while influx.count(f"SELECT count(state) FROM status WHERE {where}", db) < args.sessions:
            failed = [g for g in gens if g.exitcode not in (None, 0)]
            if time.monotonic() > deadline or analysis.poll() is not None or failed:
                raise RuntimeError(f"not every session ended: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        wall = time.monotonic() - start
        cpu1, rss = cpu_rss(_proc_tree(analysis.pid))
        published = sum(done.get(timeout=600) for _ in gens)
        for gen in gens:
            gen.join(60)
        for i in range(args.sessions):
            samples = expected_samples(i, args.minutes)
            stored = influx.count(f"SELECT count(value) FROM signal WHERE session = 's{i}'", db)
            if stored != samples:
                raise RuntimeError(f"session s{i}: {stored} of {samples} samples stored")
    finally:
        analysis.terminate()
        analysis.wait(120)
        broker.stop()
        influx.stop()
    hours = args.sessions * args.minutes / 60
    return {
        "wall": wall,
        "messages": published,
        "rate": published / wall,
        "sh_per_s": hours / wall,
        "cpu": cpu1 - cpu0,
        "cpu_per_sh": (cpu1 - cpu0) / hours,
        "rss": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="N sessions (default 8)")
    parser.add_argument("--minutes", type=float, default=20.0, help="per session (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="K of the second arm (2)")
    parser.add_argument("--procs", type=int, default=2, help="generator processes (default 2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="s per arm (900)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rekindle-workers-") as tmp:
        one = arm(1, args, Path(tmp))
        many = arm(args.workers, args, Path(tmp))
    print(
        f"workers: {args.sessions} sessions x {args.minutes:g} min at broker speed, "
        f"{one['messages']:.0f} messages; machine: {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    for name, r in (("1 process", one), (f"--workers {args.workers}", many)):
        print(
            f"{name:>12}: wall {r['wall']:6.1f} s  {r['rate']:7.0f} msg/s  "
            f"{r['sh_per_s']:.3f} session-h per s  analysis CPU {r['cpu']:.1f} s "
            f"({r['cpu_per_sh']:.1f} CPU-s per session-hour)  RSS {r['rss']:.0f} MB"
        )
    print(
        f"ratio --workers {args.workers} / 1 process: throughput "
        f"{many['rate'] / one['rate']:.2f}x, CPU per session-hour "
        f"{many['cpu_per_sh'] / one['cpu_per_sh']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
