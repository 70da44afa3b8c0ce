"""Beats from PPG vs the Empatica E4's own IBI, per subject, on the development set and fixtures.

For each recording (the 16 development subjects in
``shared/fixtures/external/stress_predict_e4_dev`` and the 3 fixtures S02, S05, S06 from
``shared/fixtures/external/stress_predict_e4``, or those of them under ``tests/fixtures`` that
hold BVP), the 64-Hz BVP goes through :class:`~rekindle.analysis.ppg.PpgBeatDetector` in 1-s
chunks, exactly as the pipeline feeds it, and the derived intervals are compared with the E4's
``IBI.csv`` where the E4 has intervals:

* **beat F1** (precision, recall): both ends of every interval are beats; a derived beat matches a
  reference beat at most ``--tolerance`` (50 ms) away, one to one, counted only inside the
  stretches the E4 covers (:func:`~rekindle.analysis.ppg.beat_agreement`);
* **RMSSD error**: the core's per-second 60-s RMSSD (its RR artefact correction included) from
  the E4 intervals vs from ours, median absolute difference over the seconds where both exist;
* **coverage**: share of seconds with RR (not ``lost`` in the core) from the E4 alone, from the
  derived beats, and as the analysis uses them (the E4's unless lost, else the derived), and the
  same for RMSSD;
* **cost**: CPU seconds of the beat derivation per session-hour, beside NeuroKit2's own
  ``ppg_quality(method="templatematch")`` per window (the naive gate) vs ours.

Every quality threshold in ``--quality`` is evaluated from one detection run (the gate is
:func:`~rekindle.analysis.ppg.intervals` applied to the committed beats), and as a reference the
non-causal batch arm: NeuroKit2 on the whole recording at once, same foot timing, no gate.

Run: ``.venv/bin/python -m benchmarks.ppg_agreement`` (``--subjects S02,S05``, ``--quality``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.params import add_arguments as add_param_arguments
from rekindle.analysis.params import from_args
from rekindle.analysis.ppg import (
    Agreement,
    Beats,
    PpgBeatDetector,
    beat_agreement,
    intervals,
    pulse_feet,
    pulse_quality,
    rr_per_second,
)
from rekindle.ingest.sources.e4 import load_e4

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("shared") / "fixtures" / "external"
FIXTURE_SUBJECTS = ("S02", "S05", "S06")
LOCAL = {
    "S02": ROOT / "tests" / "fixtures" / "stress_predict_e4" / "Raw_data" / "S02",
    "S05": ROOT / "tests" / "fixtures" / "stress_predict_e4_ppg" / "S05",
}
F64 = npt.NDArray[np.float64]


def _shared(name: str) -> Path | None:
    for base in (ROOT, *ROOT.parents):
        cand = base / SHARED / name
        if cand.is_dir():
            return cand
    return None


def recordings() -> dict[str, Path]:
    """Subject -> E4 folder with BVP and IBI: the dev set, then the 3 fixtures."""
    out: dict[str, Path] = {}
    dev = _shared("stress_predict_e4_dev")
    if dev is not None:
        for folder in sorted((dev / "Raw_data").iterdir()):
            if folder.is_dir():
                out[folder.name] = folder
    fixtures = _shared("stress_predict_e4")
    for name in FIXTURE_SUBJECTS:
        if fixtures is not None and (fixtures / "Raw_data" / name).is_dir():
            out[name] = fixtures / "Raw_data" / name
        elif name in LOCAL:
            out[name] = LOCAL[name]
    return out


@dataclass(slots=True)
class Subject:
    name: str
    hours: float
    cpu_s: float
    beats: Beats
    ref_t: F64
    ref_rr: F64
    seconds: npt.NDArray[np.int64]
    ref_rmssd: F64
    ref_rr_ok: npt.NDArray[np.bool_]
    batch: Agreement
    per_quality: dict[float, Figures] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Figures:
    agreement: Agreement
    rmssd_abs_err: F64  # per second where both exist
    ref_rmssd_median: float
    rr_cov_derived: float
    rr_cov_used: float
    rmssd_cov_used: float


def _bvp(folder: Path) -> tuple[F64, F64, float, F64, F64]:
    export = load_e4(folder)
    (ppg,) = [s for s in export.regular if s.stream == "ppg"]
    times = ppg.t0 + np.arange(len(ppg.values)) / ppg.fs
    return times, ppg.values.astype(np.float64), ppg.fs, export.beat_times, export.rr_ms


def _batch_arm(times: F64, values: F64, fs: float) -> tuple[F64, F64]:
    """NeuroKit2 on the whole recording (non-causal), feet as ours, every interval kept."""
    import neurokit2 as nk  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = np.asarray(nk.ppg_clean(values, sampling_rate=fs), dtype=np.float64)
        peaks = np.asarray(nk.ppg_findpeaks(clean, sampling_rate=fs)["PPG_Peaks"], dtype=np.intp)
    feet = times[np.asarray(pulse_feet(clean, peaks, fs), dtype=np.intp)]
    rr = np.diff(feet) * 1000.0
    return feet[1:], rr


def figures(cfg: AnalysisConfig, s: Subject, q: float) -> Figures:
    rt, rr = intervals(s.beats.times, s.beats.quality, s.beats.linked, q)
    t, v = np.asarray(rt, dtype=np.float64), np.asarray(rr, dtype=np.float64)
    agr = beat_agreement(t, v, s.ref_t, s.ref_rr)
    rmssd, ok = rr_per_second(t, v, s.seconds, cfg)
    both = np.isfinite(rmssd) & np.isfinite(s.ref_rmssd)
    used_rmssd = np.where(s.ref_rr_ok, s.ref_rmssd, rmssd)
    return Figures(
        agr,
        np.abs(rmssd - s.ref_rmssd)[both],
        float(np.median(s.ref_rmssd[both])) if both.any() else math.nan,
        float(ok.mean()),
        float((ok | s.ref_rr_ok).mean()),
        float(np.isfinite(used_rmssd).mean()),
    )


def run_subject(
    cfg: AnalysisConfig, name: str, folder: Path, qualities: Sequence[float]
) -> Subject:
    times, values, fs, ref_t, ref_rr = _bvp(folder)
    det = PpgBeatDetector(replace(cfg, ppg_min_quality=min(qualities)), "e4")
    beats = Beats([], [], [], [], [])
    n = round(fs)
    c = time.process_time()
    for i in range(0, len(times), n):
        beats.extend(det.feed(times[i : i + n], values[i : i + n]))
    beats.extend(det.finish())
    cpu = time.process_time() - c
    seconds = np.arange(math.ceil(times[0]) + 1, math.floor(times[-1]) + 1, dtype=np.int64)
    ref_rmssd, ref_ok = rr_per_second(ref_t, ref_rr, seconds, cfg)
    bt, brr = _batch_arm(times, values, fs)
    s = Subject(
        name,
        (times[-1] - times[0]) / 3600.0,
        cpu,
        beats,
        ref_t,
        ref_rr,
        seconds,
        ref_rmssd,
        ref_ok,
        beat_agreement(bt, brr, ref_t, ref_rr),
    )
    for q in qualities:
        s.per_quality[q] = figures(cfg, s, q)
    return s


def _gate_cost(folder: Path, windows: int = 20) -> tuple[float, float]:
    """CPU ms per window of NeuroKit2's templatematch quality vs ours, on the same windows."""
    import neurokit2 as nk  # noqa: PLC0415

    _, values, fs, _, _ = _bvp(folder)
    n = round(8 * fs)
    segs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(windows):
            x = values[(k + 60) * n : (k + 61) * n]
            clean = np.asarray(nk.ppg_clean(x, sampling_rate=fs), dtype=np.float64)
            peaks = np.asarray(nk.ppg_findpeaks(clean, sampling_rate=fs)["PPG_Peaks"], np.intp)
            segs.append((clean, peaks))
        c = time.process_time()
        for clean, peaks in segs:
            nk.ppg_quality(clean, peaks=peaks, sampling_rate=fs, method="templatematch")
        naive = (time.process_time() - c) / windows * 1e3
    c = time.process_time()
    for _ in range(10):
        for clean, peaks in segs:
            pulse_quality(clean, peaks, fs)
    ours = (time.process_time() - c) / (10 * windows) * 1e3
    return naive, ours


def _f(x: float, spec: str = ".2f") -> str:
    return "-" if not math.isfinite(x) else format(x, spec)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", help="comma-separated subset, e.g. S02,S05")
    ap.add_argument(
        "--quality", default="0.6,0.7,0.8,0.9", help="gate thresholds to evaluate (comma list)"
    )
    add_param_arguments(ap)
    args = ap.parse_args(argv)
    cfg = from_args(args)
    qualities = sorted({float(q) for q in args.quality.split(",")} | {cfg.ppg_min_quality})
    recs = recordings()
    if args.subjects:
        wanted = args.subjects.split(",")
        recs = {k: v for k, v in recs.items() if k in wanted}
    if not recs:
        print("no recordings found (shared/fixtures/external/stress_predict_e4_dev missing?)")
        return 1
    t0 = time.perf_counter()
    subjects = []
    for name, folder in recs.items():
        subjects.append(run_subject(cfg, name, folder, qualities))
        print(f"  {name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    q0 = cfg.ppg_min_quality
    print(
        f"\nBeats from PPG vs E4 IBI (gate ppg_min_quality = {q0}, window {cfg.ppg_window_s} s, "
        f"hop {cfg.ppg_hop_s} s, margin {cfg.ppg_margin_s} s: lag <= "
        f"{cfg.ppg_margin_s + cfg.ppg_hop_s} s; beat match +-50 ms)"
    )
    head = (
        f"{'subj':5} {'hours':>5} {'cpu/h':>6} {'ref':>5} {'F1':>5} {'prec':>5} {'rec':>5} "
        f"{'batchF1':>7} {'rmssd':>6} {'|err|':>6} {'rel':>5} {'rr_e4':>6} {'rr_ppg':>6} "
        f"{'rr_use':>6} {'rm_e4':>6} {'rm_use':>6}"
    )
    print(head)
    for s in subjects:
        f = s.per_quality[q0]
        err = float(np.median(f.rmssd_abs_err)) if len(f.rmssd_abs_err) else math.nan
        print(
            f"{s.name:5} {s.hours:5.2f} {s.cpu_s / s.hours:6.2f} {f.agreement.reference:5d} "
            f"{_f(f.agreement.f1)} {_f(f.agreement.precision)} {_f(f.agreement.recall)} "
            f"{_f(s.batch.f1):>7} {_f(f.ref_rmssd_median, '.1f'):>6} {_f(err, '.1f'):>6} "
            f"{_f(err / f.ref_rmssd_median):>5} {s.ref_rr_ok.mean():6.2f} "
            f"{f.rr_cov_derived:6.2f} {f.rr_cov_used:6.2f} "
            f"{np.isfinite(s.ref_rmssd).mean():6.2f} {f.rmssd_cov_used:6.2f}"
        )
    print(
        "columns: ref = E4 beats compared; F1/prec/rec = beat agreement (causal, gated); batchF1 ="
        " NeuroKit2 on the whole recording, ungated (non-causal reference); rmssd = E4's median"
        " per-second RMSSD (ms) where both exist, |err| = median absolute difference (ms), rel ="
        " |err|/rmssd; rr_* = share of seconds with RR from the E4, from PPG, as the analysis uses"
        " them (E4 unless lost, else PPG); rm_* = the same for RMSSD"
    )
    hours = sum(s.hours for s in subjects)
    print("\nPooled over subjects, per gate threshold (the default is marked *):")
    print(
        f"{'gate':>5} {'F1':>5} {'prec':>5} {'rec':>5} {'|err|':>6} {'subj_med':>8} "
        f"{'rr_use':>6} {'rm_use':>6}"
    )
    for q in qualities:
        figs = [s.per_quality[q] for s in subjects]
        m = sum(f.agreement.matched for f in figs)
        d = sum(f.agreement.derived for f in figs)
        r = sum(f.agreement.reference for f in figs)
        pooled = Agreement(m, d, r, 0.05)
        errs = np.concatenate([f.rmssd_abs_err for f in figs])
        per_subj = [float(np.median(f.rmssd_abs_err)) for f in figs if len(f.rmssd_abs_err)]
        w = [s.hours for s in subjects]
        rr_use = sum(f.rr_cov_used * h for f, h in zip(figs, w, strict=True)) / hours
        rm_use = sum(f.rmssd_cov_used * h for f, h in zip(figs, w, strict=True)) / hours
        mark = "*" if q == q0 else " "
        print(
            f"{q:4.2f}{mark} {_f(pooled.f1)} {_f(pooled.precision)} {_f(pooled.recall)} "
            f"{_f(float(np.median(errs)) if len(errs) else math.nan, '.1f'):>6} "
            f"{_f(statistics.median(per_subj) if per_subj else math.nan, '.1f'):>8} "
            f"{rr_use:6.2f} {rm_use:6.2f}"
        )
    rr_e4 = sum(s.ref_rr_ok.mean() * s.hours for s in subjects) / hours
    rm_e4 = sum(np.isfinite(s.ref_rmssd).mean() * s.hours for s in subjects) / hours
    print(f"E4 alone: rr {rr_e4:.2f}, rmssd {rm_e4:.2f} of the seconds")
    cpu = sum(s.cpu_s for s in subjects)
    naive, ours = _gate_cost(next(iter(recs.values())))
    print(
        f"\nCost: {cpu / hours:.2f} CPU-s per session-hour for the beat derivation "
        f"({cpu:.1f} CPU-s over {hours:.1f} h; NeuroKit2 clean + findpeaks per window, our gate);"
        f" the gate alone: NeuroKit2 ppg_quality(templatematch) {naive:.2f} ms per window vs "
        f"ours {ours:.3f} ms ({naive / ours:.0f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
