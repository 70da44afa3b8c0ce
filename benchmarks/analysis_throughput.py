"""Throughput of the streaming analysis core against the naive live approach.

One hour of synthetic EDA (4 Hz), HR (1 Hz) and RR (one interval per beat) goes through
:class:`SessionAnalyzer`:

* **live**: 1-s batches of every stream merged in time order (what the live service and
  ``rekindle analyze`` do);
* **replay**: 60-s batches (with a lateness allowance of 120 s so that no stream is late).

The naive live approach recomputes NeuroKit2 every second on the trailing 60 s:
``nk.eda_process`` on the EDA window and ``nk.hrv_time`` on the beats in the window. It is
measured on ``--naive-seconds`` recomputations (default 300) and extrapolated to 3600; pass
``--naive-seconds 3600`` to run the whole hour.

It also measures the live mode with one registered detector (a per-second feature from the row,
docs/extending.md) against the core alone.

Prints CPU seconds per session-hour for each, the state held per session (the analyzer's own
estimate, and the tracemalloc peak of a whole run), and, as its last line,
``speedup_vs_naive: <N>x`` (live mode against naive, for the core as imported).

``--mypyc`` also compiles the core (``services/analysis/core``, plain type-checked Python) with
mypyc into a temporary directory (needs a C compiler and the Python headers; ~20-30 s) and
measures the compiled core in a subprocess on the same data. This is the core the analysis image
ships (``setup.py`` with ``REKINDLE_COMPILE=1``); ``tests/test_compiled_core.py`` builds that
wheel and shows it gives the same events bit for bit and that checkpoints move between builds.

Run: ``.venv/bin/python benchmarks/analysis_throughput.py``
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import AnalysisConfig, FeatureRow, SampleBatch, SessionAnalyzer
from rekindle.analysis.core.extensions import DetectorSpec, FeatureField, register, unregister

HOUR = 3600.0
T0 = 1_700_000_000.0
Array = npt.NDArray[np.float64]


def make_hour(seed: int = 0) -> dict[str, tuple[Array, Array]]:
    """Seeded synthetic hour: drifting tonic EDA with SCRs, AR(1) heart rate, beats from it."""
    rng = np.random.default_rng(seed)
    te = T0 + np.arange(0.0, HOUR, 0.25)
    eda = 2.0 + 0.3 * np.sin(2 * np.pi * (te - T0) / 1800.0) + rng.normal(0, 0.003, len(te))
    for onset in np.cumsum(rng.exponential(30.0, 200)):
        if onset >= HOUR:
            break
        x = te - T0 - onset
        m = x > 0
        eda[m] += rng.uniform(0.05, 0.4) * (1 - np.exp(-x[m] / 0.75)) ** 2 * np.exp(-x[m] / 4) * 2
    th = T0 + np.arange(0.0, HOUR, 1.0)
    ar = np.zeros(len(th))
    for i in range(1, len(ar)):
        ar[i] = 0.95 * ar[i - 1] + rng.normal(0, 0.8)
    hr = 70.0 + ar
    beats, rrs = [], []
    bt = 0.5
    while bt < HOUR - 1:
        rr = 60000.0 / hr[int(bt)] + rng.normal(0, 25.0)
        bt += rr / 1000.0
        beats.append(T0 + bt)
        rrs.append(rr)
    return {"eda": (te, eda), "hr": (th, hr), "rr": (np.array(beats), np.array(rrs))}


def batches(data: dict[str, tuple[Array, Array]], seconds: float) -> Iterator[SampleBatch]:
    items = []
    for order, (stream, (t, v)) in enumerate(data.items()):
        key = np.floor((t - T0) / seconds)
        cuts = np.flatnonzero(np.diff(key)) + 1
        for pt, pv in zip(np.split(t, cuts), np.split(v, cuts), strict=True):
            items.append((float(pt[0]), order, SampleBatch(stream, "bench", pt, pv)))  # type: ignore[arg-type]
    items.sort(key=lambda x: (x[0], x[1]))
    return (b for _, _, b in items)


def run_streaming(
    data: dict[str, tuple[Array, Array]], seconds: float, config: AnalysisConfig
) -> tuple[float, int, int]:
    """CPU seconds for the hour, the largest state estimate seen, number of events."""
    todo = list(batches(data, seconds))
    gc.collect()
    analyzer = SessionAnalyzer(config)
    n_events = 0
    max_state = 0
    start = time.process_time()
    for i, b in enumerate(todo):
        n_events += len(analyzer.update(b))
        if i % 500 == 0:
            max_state = max(max_state, analyzer.state_nbytes())
    n_events += len(analyzer.finish())
    cpu = time.process_time() - start
    return cpu, max(max_state, analyzer.state_nbytes()), n_events


def traced_peak(data: dict[str, tuple[Array, Array]]) -> int:
    """tracemalloc peak (bytes) of a whole live run, events dropped as they come."""
    todo = list(batches(data, 1.0))
    gc.collect()
    tracemalloc.start()
    analyzer = SessionAnalyzer()
    for b in todo:
        analyzer.update(b)
    analyzer.finish()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run_naive(data: dict[str, tuple[Array, Array]], seconds: int) -> float:
    """CPU seconds for ``seconds`` recomputations of NeuroKit2 on the trailing 60 s."""
    import neurokit2 as nk  # noqa: PLC0415

    te, eda = data["eda"]
    beats, _ = data["rr"]
    start_s = 120
    cpu = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(start_s, start_s + seconds):
            now = T0 + s
            c0 = time.process_time()
            win = eda[(te >= now - 60) & (te < now)]
            nk.eda_process(win, sampling_rate=4)
            b = beats[(beats >= now - 60) & (beats < now)]
            peaks = np.round((b - b[0]) * 1000).astype(int)
            nk.hrv_time(peaks, sampling_rate=1000)
            cpu += time.process_time() - c0
    return cpu


def build_mypyc(root: Path, out: Path) -> None:
    """Copy the ``services`` package to ``out`` and compile the analysis core there (the modules
    ``setup.py`` compiles for the analysis image: all but ``__init__``)."""
    skip = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(root / "services", out / "services", ignore=skip)
    core = out / "services" / "analysis" / "core"
    files = sorted(str(p.relative_to(out)) for p in core.glob("*.py") if p.name != "__init__.py")
    cmd = [sys.executable, "-m", "mypyc", *files]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mypyc failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def run_compiled(repeat: int) -> float:
    """Build the mypyc core in a temporary directory and measure it in a subprocess; return its
    live CPU seconds per session-hour."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="rekindle-mypyc-") as tmp:
        build_mypyc(root, Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--streaming-only", "--compiled"]
        proc = subprocess.run(
            [*cmd, "--repeat", str(repeat)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"compiled run failed:\n{proc.stderr[-3000:]}")
        live = math.nan
        for line in proc.stdout.splitlines():
            print(f"mypyc-compiled core: {line}")
            if line.startswith("streaming live"):
                live = float(line.split(":", 1)[1].split()[0])
        return live


@dataclass(frozen=True, slots=True)
class _HrAboveConfig:
    threshold_bpm: float = 75.0


class _HrAbove:
    """A minimal registered detector (docs/extending.md): HR above a threshold, from the row."""

    def __init__(self, config: _HrAboveConfig) -> None:
        self.threshold = config.threshold_bpm

    def feed(self, stream: str, device: str, times: list[float], values: list[float]) -> None:
        """(reads no raw stream)"""

    def tick(self, k: int, row: FeatureRow) -> Mapping[str, float | None]:  # noqa: ARG002
        return {"hr_above": None if row.hr is None else float(row.hr > self.threshold)}


def run_with_detector(data: dict[str, tuple[Array, Array]], repeat: int) -> float:
    """Live CPU seconds per session-hour with one registered detector (the extension path)."""
    spec = DetectorSpec(
        "bench_hr_above", (FeatureField("hr_above", "", "HR above"),), _HrAboveConfig(), _HrAbove
    )
    register(spec)
    try:
        return min(run_streaming(data, 1.0, AnalysisConfig())[0] for _ in range(repeat))
    finally:
        unregister(spec.name)


def measure(args: argparse.Namespace) -> tuple[float, float, int]:
    """Print the streaming figures; return live and replay CPU seconds per session-hour and the
    largest state estimate (bytes) of the live run."""
    data = make_hour()
    if args.compiled:
        import rekindle.analysis.core.eda as eda_mod  # noqa: PLC0415

        if not str(eda_mod.__file__).endswith(".so"):
            raise SystemExit(f"--compiled, but the core was imported from {eda_mod.__file__}")
    live = min(run_streaming(data, 1.0, AnalysisConfig()) for _ in range(args.repeat))
    replay_cfg = AnalysisConfig(lateness_s=120.0)
    replay = min(run_streaming(data, 60.0, replay_cfg) for _ in range(args.repeat))
    print(
        f"streaming live (1-s batches):    {live[0]:.3f} CPU-s per session-hour ({live[2]} events)"
    )
    print(f"streaming replay (60-s batches): {replay[0]:.3f} CPU-s per session-hour")
    if not args.compiled:
        ext = run_with_detector(data, args.repeat)
        print(
            f"streaming live with one registered detector: {ext:.3f} CPU-s per session-hour "
            f"({ext / live[0]:.2f}x the core alone)"
        )
    return live[0], replay[0], live[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--naive-seconds", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="streaming runs (best is kept)")
    parser.add_argument(
        "--mypyc", action="store_true", help="also measure the core compiled with mypyc"
    )
    parser.add_argument("--streaming-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.streaming_only:
        measure(args)
        return
    data = make_hour()
    n = {k: len(v[0]) for k, v in data.items()}
    print(f"one hour: {n['eda']} EDA samples (4 Hz), {n['hr']} HR (1 Hz), {n['rr']} RR intervals")

    live_s, replay_s, state = measure(args)
    compiled_live = run_compiled(args.repeat) if args.mypyc else None

    naive = run_naive(data, args.naive_seconds)
    naive_hour = naive * HOUR / args.naive_seconds
    how = (
        "measured"
        if args.naive_seconds >= HOUR
        else (f"measured on {args.naive_seconds} recomputations, extrapolated")
    )
    print(
        "naive NeuroKit2 (eda_process + hrv_time on trailing 60 s, every second): "
        f"{naive_hour:.1f} CPU-s per session-hour ({how})"
    )
    peak = traced_peak(data)
    print(
        f"state per session: analyzer estimate max {state / 1e6:.2f} MB; "
        f"tracemalloc peak of a live run {peak / 1e6:.2f} MB"
    )
    print(f"speedup_vs_naive (replay): {naive_hour / replay_s:.0f}x")
    if compiled_live is not None:
        print(f"speedup_vs_naive (mypyc-compiled core, live): {naive_hour / compiled_live:.0f}x")
    print(f"speedup_vs_naive: {naive_hour / live_s:.0f}x")


if __name__ == "__main__":
    main()
