"""Live load: N simulated wearables in real time through real mosquitto, ``rekindle analysis``
and influxd; how late data becomes queryable, and whether the analysis keeps up.

Starts its own mosquitto and influxd (``tests/servers.py``, as the test suite does) and the
analysis service as its own process (``python -m rekindle.cli analysis``, ``--workers K`` when
K > 1). The load generator runs in ``--procs`` processes of its own: each session is the
project's simulator (seeded HR 1 Hz, RR, EDA 4 Hz, a scripted arousal episode) plus a quiet
wrist accelerometer (``--acc-hz``, default 8 Hz), published in <= 1-s messages through the
project's :class:`Publisher` (one MQTT connection per session, end-to-end window 2000 as
``rekindle ingest``), each message when its last sample would have been measured, the data
times being the wall clock. Sessions start spread over one second.

Figures (CPU of the generator, the monitor and the servers is reported apart, never in the
analysis figures):

* **latency**: publish -> queryable in InfluxDB, for every EDA message of ``--probe`` sessions:
  a monitor thread polls ``last("value")`` of those sessions every ``--poll`` s; a message's
  latency is the end of the first poll that sees its last sample minus the time it was
  published (an upper bound, at most one poll interval above the truth);
* **feature lag**: arrival of a feature row on ``out/features`` minus its data second (so it
  includes the analysis core's lateness allowance, ``lateness_s``);
* **episode-open lag**: arrival of an episode's ``open`` event on ``out/episode`` minus the
  data second that confirmed it (``confirmed``); episodes confirm ~3.5 min into a session
  (120-s settle plus the scripted rise), so shorter runs have none;
* **analysis CPU** (% of one core and CPU-s per session-hour) and **RSS** (total, and the
  growth over the idle process per session) of the analysis process and its children, over the
  measurement window (after ``--warmup`` s);
* **queues**: the service's inbox and InfluxDB write queue from its heartbeat file (every 5 s):
  first, last, max and the trend over the second half;
* ``keeps_up: yes`` when the inbox is flat over the second half and below its bound in the
  last third (a full inbox means the backlog sits at the broker), the latency p99 of the last
  third is below 5 s and not growing (at most twice the first third's + 0.5 s), every probed
  message became queryable and the generator held real time.

Run: ``.venv/bin/python -m benchmarks.live_load --sessions 100 --duration 300``. On a shared
machine the figures move with the other load; the line ``machine:`` prints the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import http.client
import json
import math
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from rekindle.analysis.service import INBOX_LIMIT

SITE = "load"
#: Sessions' data start this many seconds apart within one second (spread, not in lock-step).
GOLDEN = 0.6180339887


def session_id(i: int) -> str:
    return f"s{i:04d}"


# ------------------------------------------------------------------------------- generator
def _session_chunks(i: int, duration: float, acc_hz: float, base: float) -> list[Any]:
    from rekindle.ingest.sources.base import merge_in_time, regular_chunks  # noqa: PLC0415
    from rekindle.ingest.sources.simulator import (  # noqa: PLC0415
        DEVICE_EDA,
        ScriptedEpisode,
        SimulationScript,
        simulate,
    )

    onset = 130.0 + (i % 20)  # settle (120 s) first; spread the sessions' episodes
    script = SimulationScript(
        duration=duration, episodes=(ScriptedEpisode(onset, 120.0, 1.0, release=True),)
    )
    streams = [simulate(script, seed=1000 + i, start_time=base)]
    if acc_hz > 0:
        rng = np.random.default_rng(i)
        n = int(duration * acc_hz)
        acc = np.array([0.0, 0.0, 1.0]) + rng.normal(0.0, 0.01, (n, 3))
        streams.append(regular_chunks("acc", DEVICE_EDA, base, acc_hz, np.round(acc, 4)))
    # published when their last sample is measured: in the order of their ends
    return sorted(merge_in_time(streams), key=lambda c: c.end)


def _shifted(chunk: Any, shift: float) -> Any:
    if chunk.t is not None:
        return dataclasses.replace(chunk, t=tuple(x + shift for x in chunk.t))
    return dataclasses.replace(chunk, t0=chunk.t0 + shift)


def generate(
    conf: dict[str, Any], ready: Any, go: Any, result_path: str
) -> None:  # pragma: no cover (runs in its own process)
    """One load-generator process: its sessions, published in real time until the end."""
    import logging  # noqa: PLC0415

    from rekindle.ingest.errors import PublishError  # noqa: PLC0415
    from rekindle.ingest.publisher import Publisher  # noqa: PLC0415
    from rekindle.mqtturl import MqttSettings  # noqa: PLC0415

    logging.basicConfig(level=logging.ERROR)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    indices: list[int] = conf["sessions"]
    duration = float(conf["duration"])
    base = 1.7e9
    chunks = {i: _session_chunks(i, duration + 2.0, conf["acc_hz"], base) for i in indices}
    settings = MqttSettings.from_url(conf["mqtt"])
    pubs = {
        i: Publisher(
            settings, SITE, session_id(i), device="load", ack_window=conf["window"]
        ).start()
        for i in indices
    }
    ready.put(os.getpid())
    t0 = float(go.get())  # wall time the run starts
    end_wall = t0 + duration
    probes = set(conf["probes"])
    heap: list[tuple[float, int, int]] = []
    shift: dict[int, float] = {}
    for i in indices:
        shift[i] = t0 + (i * GOLDEN) % 1.0 - base
        heap.append((base + shift[i], i, -1))  # -1: the 'online' status
    heapq.heapify(heap)
    delays: list[float] = []
    probe_records: list[tuple[str, int, float]] = []
    published = 0
    while heap:
        due, i, k = heapq.heappop(heap)
        if due > end_wall:
            continue
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        pub = pubs[i]
        now = time.time()
        delays.append(now - due)
        if k < 0:
            pub.send_status("load", "online", due, detail="live load")
        else:
            chunk = _shifted(chunks[i][k], shift[i])
            msg = chunk.to_message(
                SITE, pub.session, pub.next_seq(chunk.device, chunk.stream), pub.run
            )
            pub.publish(msg)
            published += 1
            if i in probes and chunk.stream == "eda":
                probe_records.append((pub.session, msg.times_ns()[-1], time.time()))
        if k + 1 < len(chunks[i]):
            nxt = chunks[i][k + 1]
            heapq.heappush(heap, (nxt.end + shift[i], i, k + 1))
    for pub in pubs.values():
        pub.send_status("load", "end", end_wall, detail="live load finished")
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and any(p.unconfirmed for p in pubs.values()):
        time.sleep(0.2)
    unconfirmed = sum(p.unconfirmed for p in pubs.values())
    for pub in pubs.values():
        with contextlib.suppress(PublishError):
            pub.close(timeout=0.5)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(result_path).write_text(
        json.dumps(
            {
                "published": published,
                "delays": sorted(delays)[-max(1, len(delays) // 100) :] if delays else [],
                "delay_count": len(delays),
                "delay_p99": float(np.percentile(delays, 99)) if delays else 0.0,
                "delay_max": max(delays, default=0.0),
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "probes": probe_records,
                "unconfirmed_at_end": unconfirmed,
            }
        )
    )


# --------------------------------------------------------------------------------- monitor
def _children() -> dict[int, list[int]]:
    """Every process's children (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _proc_tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """``root`` and its descendants (``children``: a :func:`_children` map; read if None)."""
    children = _children() if children is None else children
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def session_holders(root: int, workers: int, children: dict[int, list[int]]) -> list[int]:
    """The processes that hold the sessions' state: the service itself with one worker; with
    ``--workers K`` its worker processes (its direct children other than multiprocessing's
    resource tracker), not the supervisor and not the NeuroKit2 metrics pools below them."""
    if workers <= 1:
        return [root]
    out = []
    for pid in children.get(root, []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            out.append(pid)
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_rss(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user + system, their own and that of their children that ended and were
    waited for) and RSS (MB) summed over ``pids``. The ended children's share matters: the
    analysis forks a short-lived child for each checkpoint snapshot (snapshot.py), whose CPU
    would otherwise vanish from the figures when it ends."""
    cpu = rss = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
        except OSError:
            continue
        cpu += sum(int(f) for f in fields[11:15]) / _TICK  # utime stime cutime cstime
    return cpu, rss


class Sampler(threading.Thread):
    """Every second: CPU and RSS of the analysis tree and the servers, and the heartbeat."""

    def __init__(
        self, analysis_pid: int, workers: int, servers: dict[str, int], heartbeat: Path
    ) -> None:
        super().__init__(name="load-sampler", daemon=True)
        self.analysis_pid = analysis_pid
        self.workers = workers
        self.servers = servers
        self.heartbeat = heartbeat
        self.samples: list[dict[str, float]] = []
        self.beats: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last_beat = None
        while not self.stop.wait(1.0):
            row = {"t": time.time()}
            children = _children()  # (one walk of /proc for both)
            row["cpu"], row["rss"] = cpu_rss(_proc_tree(self.analysis_pid, children))
            holders = session_holders(self.analysis_pid, self.workers, children)
            row["rss_main"] = cpu_rss(holders)[1]
            for name, pid in self.servers.items():
                row[name] = cpu_rss([pid])[0]
            self.samples.append(row)
            try:
                beat = json.loads(self.heartbeat.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if beat.get("time") != last_beat:
                last_beat = beat.get("time")
                self.beats.append(beat)


class Prober(threading.Thread):
    """Polls InfluxDB for the newest EDA sample of each probe session."""

    def __init__(self, url: str, db: str, sessions: list[str], poll_s: float) -> None:
        super().__init__(name="load-prober", daemon=True)
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        where = " OR ".join(f"\"session\"='{s}'" for s in sessions)
        query = (
            f'SELECT last("value") FROM "signal" WHERE "stream"=\'eda\' AND ({where}) '
            'AND time > now() - 2m GROUP BY "session"'
        )
        self.path = "/query?" + urllib.parse.urlencode({"db": db, "q": query, "epoch": "ns"})
        self.poll_s = poll_s
        #: (wall time the answer arrived, session, newest sample ns)
        self.seen: list[tuple[float, str, int]] = []
        self.polls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.time()
            try:
                self.conn.request("GET", self.path)
                body = json.loads(self.conn.getresponse().read())
            except (OSError, http.client.HTTPException, ValueError):
                self.conn.close()
                self.stop.wait(self.poll_s)
                continue
            answered = time.time()
            self.polls += 1
            for series in body.get("results", [{}])[0].get("series", []):
                self.seen.append((answered, series["tags"]["session"], series["values"][0][0]))
            self.stop.wait(max(0.0, self.poll_s - (answered - started)))


class Outputs:
    """Feature rows and episode events the analysis publishes (arrival time, payload)."""

    def __init__(self, mqtt_url: str) -> None:
        from rekindle.mqtturl import MqttSettings, make_client  # noqa: PLC0415

        settings = MqttSettings.from_url(mqtt_url)
        self.items: list[tuple[float, str, bytes]] = []
        self.client = make_client(settings, None)
        self._subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.items.append(
            (time.time(), m.topic, bytes(m.payload))
        )
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        self.client.subscribe(
            [(f"rekindle/v1/{SITE}/+/out/features", 0), (f"rekindle/v1/{SITE}/+/out/episode", 0)]
        )
        if not self._subscribed.wait(10):
            raise RuntimeError("the monitor could not subscribe to the outputs")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------------- figures
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def dist(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {pct(values, 50):.2f} s  p99 {pct(values, 99):.2f} s  max {max(values):.2f} s  "
        f"(n={len(values)})"
    )


def latencies(
    records: list[tuple[str, int, float]], seen: list[tuple[float, str, int]]
) -> tuple[list[tuple[float, float]], int]:
    """(publish time, latency) per probed message, and how many were never seen."""
    polls: dict[str, list[tuple[float, int]]] = {}
    for answered, session, newest in seen:
        polls.setdefault(session, []).append((answered, newest))
    out: list[tuple[float, float]] = []
    unseen = 0
    for session, last_ns, published in records:
        found = None
        for answered, newest in polls.get(session, []):
            if answered >= published and newest >= last_ns:
                found = answered
                break
        if found is None:
            unseen += 1
        else:
            out.append((published, found - published))
    return out, unseen


def slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(np.polyfit(t - t[0], y, 1)[0])


# ------------------------------------------------------------------------------------ main
def wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    from tests.servers import InfluxD, Mosquitto  # noqa: PLC0415

    n = args.sessions
    probes = sorted({round(k * (n - 1) / max(1, args.probe - 1)) for k in range(args.probe)})
    tmp = Path(tempfile.mkdtemp(prefix="rekindle-load-"))
    broker = Mosquitto.start(tmp / "mq")
    influx = InfluxD.start(tmp / "influx")
    db = "load"
    influx.create_database(db)
    heartbeat = tmp / "heartbeat.json"
    cmd = [
        sys.executable,
        "-m",
        "rekindle.cli",
        "analysis",
        "--mqtt",
        broker.url,
        "--influx",
        influx.url,
        "--influx-db",
        db,
        "--site",
        SITE,
        "--heartbeat",
        str(heartbeat),
        "--stall-limit",
        "0",
    ]
    if args.workers != 1:
        # (workers move sessions with their checkpoint and persistent MQTT session)
        cmd += ["--workers", str(args.workers)]
        args.durable = True
    if args.durable:
        cmd += [
            "--client-id",
            "load-analysis",
            "--spool",
            str(tmp / "spool.lp"),
            "--state",
            str(tmp / "analysis.state"),
        ]
        if args.checkpoint_every is not None:
            cmd += ["--checkpoint-every", f"{args.checkpoint_every:g}"]
        if not args.fork_snapshots:
            cmd += ["--no-fork-snapshots"]
    log_path = tmp / "analysis.log"
    procs: list[mp.process.BaseProcess] = []
    outputs = None
    analysis = None
    sampler = prober = None
    try:
        with log_path.open("wb") as log_fh:
            analysis = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT)
        wait_for(
            "the analysis service to subscribe (see its log)",
            lambda: heartbeat.exists() or analysis.poll() is not None,
            60,
        )
        if analysis.poll() is not None:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            return 1
        outputs = Outputs(broker.url)
        idle_cpu = cpu_rss([analysis.pid])[0]
        idle_rss = cpu_rss(session_holders(analysis.pid, args.workers, _children()))[1]
        ctx = mp.get_context("spawn")
        ready, go = ctx.Queue(), ctx.Queue()
        shares = [list(range(k, n, args.procs)) for k in range(args.procs)]
        results = [tmp / f"gen-{k}.json" for k in range(args.procs)]
        for k, share in enumerate(shares):
            conf = {
                "sessions": share,
                "duration": args.duration,
                "acc_hz": args.acc_hz,
                "mqtt": broker.url,
                "window": args.window,
                "probes": [p for p in probes if p in share],
            }
            gen_proc = ctx.Process(
                target=generate, args=(conf, ready, go, str(results[k])), name=f"load-gen-{k}"
            )
            gen_proc.start()
            procs.append(gen_proc)
        gen_pids = [ready.get(timeout=600) for _ in procs]
        t0 = time.time() + 1.0
        for _ in procs:
            go.put(t0)
        sampler = Sampler(
            analysis.pid,
            args.workers,
            {"mosquitto": broker.proc.pid, "influxd": influx.proc.pid},
            heartbeat,
        )
        sampler.start()
        prober = Prober(influx.url, db, [session_id(p) for p in probes], args.poll)
        prober.start()
        for proc in procs:
            proc.join(args.duration + 120)
        gen = [json.loads(p.read_text()) for p in results if p.exists()]
        prober.stop.set()
        sampler.stop.set()
        prober.join()
        sampler.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        if outputs is not None:
            outputs.close()
        if analysis is not None and analysis.poll() is None:
            analysis.send_signal(signal.SIGTERM)
            try:
                analysis.wait(120)
            except subprocess.TimeoutExpired:
                analysis.kill()
        broker.stop()
        influx.stop()
    if len(gen) != len(procs):
        print("a load generator process failed", file=sys.stderr)
        return 1
    return report(args, n, probes, t0, gen, gen_pids, sampler, prober, outputs, idle_rss, idle_cpu)


def report(
    args: argparse.Namespace,
    n: int,
    probes: list[int],
    t0: float,
    gen: list[dict[str, Any]],
    gen_pids: list[int],
    sampler: Sampler,
    prober: Prober,
    outputs: Outputs,
    idle_rss: float,
    idle_cpu: float,
) -> int:
    del gen_pids, idle_cpu
    start, end = t0 + args.warmup, t0 + args.duration
    third = end - (end - start) / 3
    published = sum(g["published"] for g in gen)
    rate = published / args.duration
    print(
        f"live_load: {n} sessions x {args.duration:.0f} s in real time, workers {args.workers}, "
        f"acc {args.acc_hz:g} Hz, durable "
        + (
            "yes (--state --spool --client-id"
            + (
                ""
                if args.checkpoint_every is None
                else f" --checkpoint-every {args.checkpoint_every:g}"
            )
            + ("" if args.fork_snapshots else " --no-fork-snapshots")
            + ")"
            if args.durable
            else "no"
        )
    )
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    gen_delay = max(g["delay_p99"] for g in gen)
    print(
        f"published {published} messages ({rate:.0f}/s) by {len(gen)} generator processes; "
        f"publish delay p99 {gen_delay:.3f} s max {max(g['delay_max'] for g in gen):.3f} s; "
        f"generator CPU {sum(g['cpu_s'] for g in gen) / args.duration * 100:.0f} % of a core "
        f"(not in the analysis figures); unconfirmed end to end at the end "
        f"{sum(g['unconfirmed_at_end'] for g in gen)}"
    )
    records: list[tuple[str, int, float]] = [
        (str(r[0]), int(r[1]), float(r[2])) for g in gen for r in g["probes"]
    ]
    lat, unseen = latencies(records, prober.seen)
    in_window = [v for t, v in lat if start <= t <= end]
    last_third = [v for t, v in lat if third <= t <= end]
    late_unseen = sum(1 for r in records if r[2] < end - 5.0) - sum(
        1 for t, _ in lat if t < end - 5.0
    )
    print(
        f"latency publish -> queryable in InfluxDB ({len(probes)} probe sessions, EDA, poll "
        f"{args.poll:g} s, {prober.polls} polls): {dist(in_window)}; last third p99 "
        f"{pct(last_third, 99):.2f} s; never seen {unseen} ({late_unseen} published > 5 s "
        "before the end)"
    )
    features: list[float] = []
    opens: list[float] = []
    closed = 0
    for arrived, topic, payload in outputs.items:
        body = json.loads(payload)
        if topic.endswith("/features") and start <= body["t"] <= end:
            features.append(arrived - body["t"])
        elif topic.endswith("/episode"):
            if body.get("state") == "open" and body.get("confirmed") is not None:
                opens.append(arrived - body["confirmed"])
            else:
                closed += 1
    print(f"feature lag (data second -> out/features): {dist(features)}")
    print(
        f"episode-open lag (confirming data second -> out/episode open): {dist(opens)}"
        + ("" if opens else " (episodes confirm ~3.5 min into a session)")
    )
    window = [s for s in sampler.samples if start <= s["t"] <= end]
    if len(window) >= 2:
        span = window[-1]["t"] - window[0]["t"]
        cpu = (window[-1]["cpu"] - window[0]["cpu"]) / span
        servers = {
            name: (window[-1][name] - window[0][name]) / span for name in ("mosquitto", "influxd")
        }
        rss, rss_main = window[-1]["rss"], window[-1]["rss_main"]
        holders = "the service process" if args.workers <= 1 else f"its {args.workers} workers"
        print(
            f"analysis CPU {cpu * 100:.1f} % of a core = {cpu * 3600 / n:.2f} CPU-s per "
            f"session-hour; RSS {rss:.0f} MB with its child processes (the NeuroKit2 metrics "
            f"pool, workers), {holders} alone {rss_main:.0f} MB = "
            f"{(rss_main - idle_rss) / n:.2f} MB per session over idle {idle_rss:.0f} MB "
            "(per-session state grows for ~10 min)"
        )
        marks = [m for m in range(5, int((end - t0) // 60) + 1, 5) if t0 + 60 * m >= start]
        at = []
        for minute in marks:
            row = min(window, key=lambda r: abs(r["t"] - (t0 + 60 * minute)))
            at.append(f"{minute} min {(row['rss_main'] - idle_rss) / n:.2f}")
        last = [(r["t"], r["rss_main"]) for r in window if r["t"] >= third]
        print(
            f"RSS per session over idle ({holders}): "
            + ", ".join([*at, f"end {(rss_main - idle_rss) / n:.2f} MB"])
            + f"; trend over the last third {slope(last) * 60 / n * 1000:+.1f} kB per session "
            "per minute"
        )
        print(
            "servers CPU: "
            + ", ".join(f"{k} {v * 100:.0f} %" for k, v in servers.items())
            + " of a core"
        )
    beats = [b for b in sampler.beats if start <= b["time"] <= end]
    inbox = [(b["time"], float(b["inbox"])) for b in beats]
    queue = [(b["time"], float(b["write_queue"])) for b in beats]
    half = [p for p in inbox if p[0] >= (start + end) / 2]
    trend = slope(half)
    if inbox:
        print(
            f"inbox (messages): first {inbox[0][1]:.0f} last {inbox[-1][1]:.0f} max "
            f"{max(v for _, v in inbox):.0f}, trend over the second half {trend:+.1f}/s; "
            f"write queue (lines): last {queue[-1][1]:.0f} max {max(v for _, v in queue):.0f}"
        )
    reasons = []
    if trend > max(1.0, 0.01 * rate) or (inbox and inbox[-1][1] > 2 * rate):
        reasons.append("inbox growing")
    late_inbox = [v for t, v in inbox if t >= third]
    if late_inbox and max(late_inbox) >= 0.9 * INBOX_LIMIT:
        reasons.append("inbox at its bound in the last third (the broker queues the backlog)")
    first_third = [v for t, v in lat if start <= t < start + (end - start) / 3]
    if first_third and last_third and pct(last_third, 99) > 2 * pct(first_third, 99) + 0.5:
        reasons.append("latency p99 growing (last third vs first)")
    if not last_third or pct(last_third, 99) > 5.0:
        reasons.append("latency p99 of the last third above 5 s")
    if late_unseen > 0:
        reasons.append(f"{late_unseen} probed messages never queryable")
    if gen_delay > 0.5:
        reasons.append("the generator did not hold real time (figures invalid)")
    print(f"keeps_up: {'yes' if not reasons else 'no (' + '; '.join(reasons) + ')'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100, help="N sessions (default 100)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--workers", type=int, default=1, help="analysis workers, --workers K (default 1)"
    )
    parser.add_argument("--procs", type=int, default=2, help="generator processes (default 2)")
    parser.add_argument("--acc-hz", type=float, default=8.0, help="ACC rate, 0: none (8)")
    parser.add_argument("--probe", type=int, default=10, help="probe sessions (default 10)")
    parser.add_argument("--poll", type=float, default=0.1, help="probe poll interval s (0.1)")
    parser.add_argument("--warmup", type=float, default=10.0, help="s left out (default 10)")
    parser.add_argument("--window", type=int, default=2000, help="publisher e2e window (2000)")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="run the analysis as compose does (--client-id, --spool, --state)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=None,
        metavar="S",
        help="the analysis's --checkpoint-every when durable (compose: 2; default: its own)",
    )
    parser.add_argument(
        "--no-fork-snapshots",
        dest="fork_snapshots",
        action="store_false",
        help="the analysis's --no-fork-snapshots when durable (the checkpoint pickled on its "
        "worker thread, as before 2026-12-04)",
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.duration <= args.warmup:
        parser.error("need --sessions >= 1 and --duration > --warmup")
    args.probe = max(1, min(args.probe, args.sessions))
    args.procs = max(1, min(args.procs, args.sessions))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
