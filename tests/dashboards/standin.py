"""Stand-in for ``s02_in_influx`` while the analysis service is not runnable in the test suite.

It writes the real Stress-Predict S02 recording (``tests/fixtures/stress_predict_e4``) into
influxd with the storage schema of ``docs/storage.md``: every raw EDA/HR/TEMP sample, and, in
place of the analysis service's output, simple transparent derivations (a causal low-pass for
tonic EDA, phasic peaks as SCRs, a z-score arousal index against the first 5 minutes, episodes
from the dataset's labelled stress intervals, markers from the E4 button presses). The numbers
are only there so that every dashboard query has realistic data to run on; they are not the
project's analysis.
"""

from __future__ import annotations

import csv
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.servers import InfluxD

S02_DIR = (
    Path(__file__).resolve().parent.parent / "fixtures" / "stress_predict_e4" / "Raw_data" / "S02"
)
#: Stress intervals of S02 (``labels_stress_intervals.csv`` of the shared fixture, S02 rows).
S02_STRESS = [(1644228196, 1644228572), (1644228844, 1644229499), (1644229801, 1644229931)]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Dataset:
    db: str
    site: str
    session: str
    start_s: float
    end_s: float
    lines: int


def _e4(name: str) -> tuple[float, float, Array]:
    rows = (S02_DIR / name).read_text().split()
    return float(rows[0]), float(rows[1]), np.array([float(r) for r in rows[2:]])


def _line(meas: str, tags: dict[str, str], fields: dict[str, float | int | str], t: float) -> str:
    tag_text = "".join(f",{k}={v}" for k, v in sorted(tags.items()))
    parts = []
    for key, value in fields.items():
        if isinstance(value, str):
            parts.append(f'{key}="{value}"')
        elif isinstance(value, int):
            parts.append(f"{key}={value}i")
        else:
            parts.append(f"{key}={float(value)!r}")
    return f"{meas}{tag_text} {','.join(parts)} {round(t * 1e9)}"


def build_lines(site: str, session: str) -> tuple[list[str], float, float]:
    base = {"site": site, "session": session}
    dev = {**base, "device": "e4"}
    out: list[str] = []
    t0, fs, eda = _e4("EDA.csv")
    eda_t = t0 + np.arange(eda.size) / fs
    for t, v in zip(eda_t, eda, strict=True):
        out.append(_line("signal", {**dev, "stream": "eda"}, {"value": float(v)}, float(t)))
    h0, hfs, hr = _e4("HR.csv")
    hr_t = h0 + np.arange(hr.size) / hfs
    for t, v in zip(hr_t, hr, strict=True):
        out.append(_line("signal", {**dev, "stream": "hr"}, {"value": float(v)}, float(t)))
    # tonic: causal first-order low-pass (tau 10 s); phasic: the rest.
    alpha = 1.0 / (fs * 10.0)
    tonic = np.empty_like(eda)
    acc = float(eda[0])
    for i, v in enumerate(eda):
        acc += alpha * (float(v) - acc)
        tonic[i] = acc
    phasic = eda - tonic
    for i in range(0, eda.size, 1):
        out.append(_line("eda", dev, {"tonic": tonic[i], "phasic": phasic[i]}, float(eda_t[i])))
    peaks = [
        i
        for i in range(1, eda.size - 1)
        if phasic[i] > 0.02 and phasic[i] >= phasic[i - 1] and phasic[i] > phasic[i + 1]
    ]
    for i in peaks:
        out.append(
            _line(
                "scr",
                dev,
                {"amplitude": float(phasic[i]), "onset": float(eda_t[i] - 1.0)},
                float(eda_t[i]),
            )
        )
    # 1 Hz features, quality, arousal index (z-score vs the first 5 min, 10 points per SD).
    start, end = float(np.ceil(max(t0, h0))), float(np.floor(min(eda_t[-1], hr_t[-1])))
    secs = np.arange(start, end + 1.0)
    ton_1 = np.interp(secs, eda_t, tonic)
    hr_1 = np.interp(secs, hr_t, hr)
    base_n = 300
    z_eda = (ton_1 - ton_1[:base_n].mean()) / max(ton_1[:base_n].std(), 1e-3)
    z_hr = (hr_1 - hr_1[:base_n].mean()) / max(hr_1[:base_n].std(), 1e-3)
    c_eda = np.clip(25 + 10 * z_eda, 0, 50)
    c_hr = np.clip(25 + 10 * z_hr, 0, 50)
    peak_times = eda_t[peaks] if peaks else np.array([])
    for k, t in enumerate(secs):
        rate = float(np.count_nonzero((peak_times > t - 60) & (peak_times <= t)))
        fields: dict[str, float | int | str] = {
            "hr": float(hr_1[k]),
            "eda_tonic": float(ton_1[k]),
            "scr_rate": rate,
            "arousal_index": float(c_eda[k] + c_hr[k]),
            "contrib_eda": float(c_eda[k]),
            "contrib_hr": float(c_hr[k]),
        }
        if k % 10 < 7:  # poor PPG in S02: RMSSD only part of the time
            fields["rmssd"] = 20.0 + 10.0 * float(np.sin(k / 60))
        out.append(_line("features", base, fields, float(t)))
        hr_state = ("good", 2) if k % 300 < 250 else ("lost", 0)  # 50 s lost every 5 min
        out.append(
            _line("quality", {**base, "stream": "eda"}, {"state": "good", "code": 2}, float(t))
        )
        out.append(
            _line(
                "quality",
                {**base, "stream": "hr"},
                {"state": hr_state[0], "code": hr_state[1]},
                float(t),
            )
        )
    index = c_eda + c_hr
    for onset, offset in S02_STRESS:
        sel = (secs >= onset) & (secs < offset)
        peak_i = int(np.argmax(np.where(sel, index, -1)))
        out.append(
            _line(
                "episode",
                {**base, "kind": "arousal"},
                {
                    "onset": float(onset),
                    "peak": float(secs[peak_i]),
                    "offset": float(offset),
                    "duration_s": float(offset - onset),
                    "peak_index": float(index[peak_i]),
                    "signals": "eda,hr",
                },
                float(onset),
            )
        )
        rel_on, rel_off = float(offset), float(offset + 240)
        out.append(
            _line(
                "episode",
                {**base, "kind": "release"},
                {
                    "onset": rel_on,
                    "peak": rel_on,
                    "offset": rel_off,
                    "duration_s": 240.0,
                    "peak_index": float(index[peak_i]),
                    "signals": "eda,hr",
                    "recovery_depth": 0.5,
                    "recovery_latency_s": 90.0,
                },
                rel_on,
            )
        )
    with (S02_DIR / "tags_S02.csv").open(newline="") as fh:
        for n, row in enumerate(csv.reader(fh)):
            if row and row[0].strip():
                out.append(_line("marker", dev, {"text": f"button {n + 1}"}, float(row[0])))
    for k, t in enumerate(secs[::60]):
        out.append(
            _line("status", dev, {"state": "online", "battery": 100 - k, "rssi": -60}, float(t))
        )
    out.append(_line("status", dev, {"state": "end", "battery": 40, "rssi": -60}, float(secs[-1])))
    return out, start, end


def write_standin(influx: InfluxD, db: str, site: str, session: str) -> Dataset:
    influx.create_database(db)
    lines, start, end = build_lines(site, session)
    for i in range(0, len(lines), 20000):
        body = "\n".join(lines[i : i + 20000]).encode()
        req = urllib.request.Request(
            f"{influx.url}/write?db={db}&precision=ns", data=body, method="POST"
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 204
    return Dataset(db, site, session, start, end, len(lines))
