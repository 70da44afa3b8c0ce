"""Per-second detector inputs of labelled recordings, cached on disk for cross-validation.

The signal processors (EDA, cardiac, motion) run once per recording through the real
:class:`SessionAnalyzer`; what reaches the detector every second (tonic EDA, SCR rate, HR,
ln RMSSD; ``None`` = lost) is stored as an ``.npz`` per subject. The detector is then replayed
from these rows, which is exactly what :meth:`SessionAnalyzer._tick` feeds it live, so a
parameter sweep needs no signal processing. The cache key is a hash of the processor sources
and of the processing parameters, so a change to either rebuilds it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import AnalysisConfig, Event, FeatureRow
from rekindle.analysis.core.config import DETECTOR_FIELDS

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "services" / "analysis" / "core"
#: Sources whose change invalidates the cache (the processors and the per-second plumbing, and
#: the PPG beats beside the core).
PROCESSOR_SOURCES = ("analyzer.py", "eda.py", "cardiac.py", "types.py", "../ppg.py")
DEFAULT_CACHE = ROOT / ".cache" / "detection_features"


@dataclass(frozen=True, slots=True)
class Features:
    """One subject's per-second detector inputs (NaN = missing) and its data range."""

    subject: str
    time: npt.NDArray[np.float64]
    tonic: npt.NDArray[np.float64]
    scr_rate: npt.NDArray[np.float64]
    hr: npt.NDArray[np.float64]
    ln_rmssd: npt.NDArray[np.float64]
    eda_degraded: npt.NDArray[np.bool_]
    start: float
    end: float
    #: the second at which the analyzer closed open episodes at the end of data
    final: float

    def rows(self) -> list[tuple[int, list[float | None], bool]]:
        """``(second, [tonic, scr_rate, hr, ln_rmssd], eda_degraded)`` with ``None`` for
        missing, as the analyzer passes them to the detector."""
        cols = np.column_stack([self.tonic, self.scr_rate, self.hr, self.ln_rmssd]).tolist()
        out = []
        for k, vals, dg in zip(self.time.tolist(), cols, self.eda_degraded.tolist(), strict=True):
            out.append((int(k), [None if math.isnan(v) else v for v in vals], bool(dg)))
        return out


def cache_key(config: AnalysisConfig) -> str:
    h = hashlib.sha256()
    for name in PROCESSOR_SOURCES:
        h.update((CORE / name).read_bytes())
    for f in fields(config):
        if f.name not in DETECTOR_FIELDS:
            h.update(f"{f.name}={getattr(config, f.name)!r};".encode())
    return h.hexdigest()[:16]


def extract(subject: str, recording: Path, config: AnalysisConfig | None = None) -> Features:
    """Replay one recording through the analyzer and collect the per-second detector inputs."""
    from rekindle.analysis.evaluate import replay_recording  # noqa: PLC0415

    rows: list[FeatureRow] = []

    def take(e: Event) -> None:
        if isinstance(e, FeatureRow):
            rows.append(e)

    (t_min, t_max), final = replay_recording(recording, config, take)

    def col(name: str) -> npt.NDArray[np.float64]:
        return np.array([math.nan if getattr(r, name) is None else getattr(r, name) for r in rows])

    rmssd = col("rmssd")
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_rmssd = np.where(rmssd > 0, np.log(rmssd), math.nan)
    degraded = np.array([r.quality.get("eda") == "degraded" for r in rows], dtype=np.bool_)
    return Features(
        subject,
        col("time"),
        col("eda_tonic"),
        col("scr_rate"),
        col("hr"),
        ln_rmssd,
        degraded,
        t_min,
        t_max,
        math.nan if final is None else final,
    )


def load(
    subject: str,
    recording: Path,
    config: AnalysisConfig | None = None,
    cache: Path | None = DEFAULT_CACHE,
) -> Features:
    """:func:`extract`, through the on-disk cache (``cache=None`` disables it)."""
    cfg = config or AnalysisConfig()
    if cache is None:
        return extract(subject, recording, cfg)
    path = cache / cache_key(cfg) / f"{subject}.npz"
    if path.is_file():
        z = np.load(path)
        return Features(
            subject,
            z["time"],
            z["tonic"],
            z["scr_rate"],
            z["hr"],
            z["ln_rmssd"],
            z["eda_degraded"],
            float(z["range"][0]),
            float(z["range"][1]),
            float(z["range"][2]),
        )
    feats = extract(subject, recording, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        time=feats.time,
        tonic=feats.tonic,
        scr_rate=feats.scr_rate,
        hr=feats.hr,
        ln_rmssd=feats.ln_rmssd,
        eda_degraded=feats.eda_degraded,
        range=np.array([feats.start, feats.end, feats.final]),
    )
    tmp.replace(path)
    return feats
