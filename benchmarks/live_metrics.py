"""Cost of the live NeuroKit2 metrics (``rekindle analysis --metrics``) on one recording.

Stress-Predict S02 (~1 h of E4 data; 2 episodes, 10 segments between E4 tags, 10 labelled
phases) is fed message by message through the session pipeline as the service's worker does,
three ways, in one run:

* ``off``: no metrics (the worker's own per-message time);
* ``pool``: :class:`MetricsRunner` as the service runs it (raw EDA/RR recorded, each stretch
  computed in the spawned metrics process);
* ``inline`` (the naive approach): the same recorder, but each stretch computed by NeuroKit2 in
  the worker itself when it is ready (episodes) or at the session's end (segments, phases).

Prints the worker's time per message (median, p99, max) and at the session's end, its CPU, the
NeuroKit2 cost per episode, segment and phase, the metrics process' CPU per job, how long after
the session's end the last metrics are ready, the size and pickling time of what the checkpoint
carries for the metrics at the session's end, and the ratios to the no-metrics run.

Run: ``.venv/bin/python -m benchmarks.live_metrics``
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from rekindle.analysis.core import AnalysisConfig, Episode
from rekindle.analysis.evaluate import read_phases
from rekindle.analysis.intervals import stretch_metrics
from rekindle.analysis.live_metrics import MetricsRunner, Stretch
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.contract import Message
from rekindle.ingest.sources import open_spec

REPO = Path(__file__).resolve().parent.parent
S02 = REPO / "tests" / "fixtures" / "stress_predict_e4" / "Raw_data" / "S02"
PHASES = REPO / "tests" / "fixtures" / "stress_predict_e4" / "time_log_phases.csv"
SITE = "bench"


@dataclass
class Run:
    per_msg: list[float] = field(default_factory=list)
    end_s: float = 0.0  # the worker's time at the session's end
    cpu_s: float = 0.0  # this process' CPU (the worker's, for inline/off)
    ready_after_s: float = 0.0  # last metrics ready, after the session's end
    checkpoint_bytes: int = 0
    pickle_s: float = 0.0
    pipeline_bytes: int = 0
    pipeline_pickle_s: float = 0.0
    item_cpu: dict[str, list[float]] = field(default_factory=dict)
    jobs: int = 0
    child_cpu_s: float = 0.0


def pickled(obj: object) -> tuple[int, float]:
    """Size and median time (of 5) of pickling ``obj`` as the checkpoint does."""
    times = []
    for _ in range(5):
        w = time.perf_counter()
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        times.append(time.perf_counter() - w)
    return len(blob), statistics.median(times)


def run(
    mode: str, name: str, messages: list[Message], phases: dict[str, list[tuple[str, float, float]]]
) -> Run:
    cfg = AnalysisConfig()
    out = Run()
    pipeline = SessionPipeline(SITE, name, cfg, store_lines=False)
    runner = MetricsRunner(cfg, phases=phases) if mode != "off" else None
    if runner is not None and mode == "pool":
        # started and warm before the session: the service starts it at the first confirmed
        # episode, and its NeuroKit2 import (once per process) is not what is measured here
        runner.start()
        assert runner.warmed is not None
        runner.warmed.result()
    cpu0 = time.process_time()

    def inline(stretches: list[Stretch]) -> None:
        assert runner is not None
        rec = runner.recorder(SITE, name)
        for stretch in stretches:
            job = rec.job(stretch, cfg)
            c = time.process_time()
            stretch_metrics(job.eda, job.rr, stretch.start, stretch.end, cfg)
            kind = "episode" if stretch.what == "episode" else stretch.kind
            out.item_cpu.setdefault(kind, []).append(time.process_time() - c)

    for msg in messages:
        w = time.perf_counter()
        events = pipeline.handle(msg).events
        if runner is not None:
            runner.message(msg)
            if mode == "pool":
                runner.events(SITE, name, events)
                runner.collect()
            else:
                rec = runner.recorder(SITE, name)
                for ev in events:
                    if isinstance(ev, Episode):
                        rec.want(Stretch(SITE, name, "episode", ev.kind, ev.onset, ev.offset))
                inline(rec.ready(cfg.lateness_s))
        out.per_msg.append(time.perf_counter() - w)
    # what a checkpoint written just before the session's end pickles (median of 5)
    out.pipeline_bytes, out.pipeline_pickle_s = pickled(pipeline)
    if runner is not None:
        out.checkpoint_bytes, out.pickle_s = pickled(runner.checkpoint_state())
    w = time.perf_counter()
    end_events = pipeline.finish().events
    if runner is not None:
        if mode == "pool":
            runner.session_end(SITE, name, end_events)
        else:
            rec = runner.recorder(SITE, name)
            for ev in end_events:
                if isinstance(ev, Episode):
                    rec.want(Stretch(SITE, name, "episode", ev.kind, ev.onset, ev.offset))
            inline([*rec.waiting, *rec.segments(phases.get(name, ()))])
    out.end_s = time.perf_counter() - w
    if runner is not None and mode == "pool":
        while runner.pending():
            runner.collect()
            time.sleep(0.005)
        out.jobs = runner.stats.written
        out.child_cpu_s = runner.stats.compute_s
        runner.close()
    out.ready_after_s = time.perf_counter() - w
    out.cpu_s = time.process_time() - cpu0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=S02)
    parser.add_argument("--phases", type=Path, default=PHASES)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    __import__("neurokit2")  # imported once up front for the inline arm (the pool's child too)

    name, chunks = open_spec(str(args.source))
    messages: list[Message] = [c.to_message(SITE, name, i, None) for i, c in enumerate(chunks)]
    phases = {
        name: [(p.phase, p.start, p.end) for p in read_phases(args.phases) if p.subject == name]
    }
    runs = {mode: run(mode, name, messages, phases) for mode in ("off", "inline", "pool")}

    print(f"recording: {name}, {len(messages)} messages, {len(phases[name])} phases")
    for mode, r in runs.items():
        per = sorted(r.per_msg)
        print(
            f"{mode:<6} worker: per message median {statistics.median(per) * 1e6:.0f} us, "
            f"p99 {per[int(0.99 * (len(per) - 1))] * 1e6:.0f} us, max {per[-1] * 1000:.1f} ms; "
            f"at the session's end {r.end_s * 1000:.0f} ms; this process' CPU {r.cpu_s:.2f} s; "
            f"last metrics ready {r.ready_after_s:.2f} s after the end"
        )
    for kind, costs in runs["inline"].item_cpu.items():
        print(
            f"NeuroKit2 per {kind}: median {statistics.median(costs) * 1000:.0f} ms CPU, "
            f"max {max(costs) * 1000:.0f} ms (x{len(costs)})"
        )
    pool = runs["pool"]
    print(
        f"pool: {pool.jobs} jobs, {pool.child_cpu_s / max(1, pool.jobs) * 1000:.0f} ms CPU per job "
        f"in the metrics process (its NeuroKit2 import excluded)"
    )
    print(
        f"checkpoint: the metrics' raw EDA/RR at the session's end "
        f"{pool.checkpoint_bytes / 1e3:.0f} kB, pickled in {pool.pickle_s * 1000:.1f} ms; "
        f"the session's pipeline {pool.pipeline_bytes / 1e3:.0f} kB in "
        f"{pool.pipeline_pickle_s * 1000:.1f} ms (every commit writes both)"
    )
    off = runs["off"]
    for mode in ("inline", "pool"):
        r = runs[mode]
        print(
            f"{mode} vs off: longest message {max(r.per_msg) / max(off.per_msg):.1f}x, "
            f"session end {r.end_s / max(off.end_s, 1e-9):.0f}x, "
            f"worker-process CPU {r.cpu_s / off.cpu_s:.2f}x"
        )


if __name__ == "__main__":
    main()
