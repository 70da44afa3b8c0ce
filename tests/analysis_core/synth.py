"""Seeded synthetic sessions with scripted arousal episodes and recoveries (known answers).

Physiology, loosely after Boucsein (2012) and the Task Force (1996):

* EDA (4 Hz, µS): tonic level 2 µS with slow drift; spontaneous SCRs about once a minute
  (0.05-0.12 µS) at rest; during an episode the tonic level rises by ``eda_rise`` with a 20-s time
  constant and SCRs come every ~8 s (0.2-0.5 µS); after the episode the tonic level falls back
  slowly (120-s time constant), as wrist EDA does.
* HR (1 Hz, bpm): 70 bpm plus AR(1) noise; +``hr_rise`` bpm during an episode (15-s time
  constant), back to baseline after it (40-s time constant).
* RR (ms): beats generated from the HR curve with beat-to-beat jitter giving an RMSSD of ~40 ms at
  rest and ~15 ms during an episode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import SampleBatch

T0 = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class Scripted:
    onset: float  # seconds after T0
    duration: float


@dataclass(frozen=True, slots=True)
class Session:
    eda_t: npt.NDArray[np.float64]
    eda: npt.NDArray[np.float64]
    hr_t: npt.NDArray[np.float64]
    hr: npt.NDArray[np.float64]
    rr_t: npt.NDArray[np.float64]
    rr: npt.NDArray[np.float64]
    episodes: tuple[Scripted, ...]
    duration: float

    def streams(self) -> list[tuple[str, npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        return [
            ("eda", self.eda_t, self.eda),
            ("hr", self.hr_t, self.hr),
            ("rr", self.rr_t, self.rr),
        ]


def _drive(
    t: npt.NDArray[np.float64], episodes: Sequence[Scripted], tau_on: float, tau_off: float
) -> npt.NDArray[np.float64]:
    """0..1 activation: first-order rise during each episode, first-order decay after it."""
    out = np.zeros_like(t)
    level = 0.0
    dt = float(t[1] - t[0])
    for i, ti in enumerate(t - T0):
        active = any(e.onset <= ti < e.onset + e.duration for e in episodes)
        target = 1.0 if active else 0.0
        tau = tau_on if active else tau_off
        level += (target - level) * (1.0 - np.exp(-dt / tau))
        out[i] = level
    return out


def _scr_train(
    t: npt.NDArray[np.float64], peaks: Sequence[tuple[float, float]]
) -> npt.NDArray[np.float64]:
    """Sum of SCR shapes (rise ~1.5 s, recovery ~4 s) at (time after T0, amplitude)."""
    out = np.zeros_like(t)
    rel = t - T0
    for onset, amp in peaks:
        x = rel - onset
        m = x > 0
        shape = (1.0 - np.exp(-x[m] / 0.75)) ** 2 * np.exp(-x[m] / 4.0)
        out[m] += amp * shape / 0.5  # peak of the shape is ~0.5
    return out


def make_session(
    seed: int,
    duration: float = 2400.0,
    episodes: Sequence[Scripted] = (Scripted(900.0, 180.0), Scripted(1700.0, 240.0)),
    *,
    eda_rise: float = 1.0,
    hr_rise: float = 20.0,
) -> Session:
    rng = np.random.default_rng(seed)
    eda_t = T0 + np.arange(0.0, duration, 0.25)
    hr_t = T0 + np.arange(0.0, duration, 1.0)
    drive_eda = _drive(eda_t, episodes, 20.0, 120.0)
    drive_hr = _drive(hr_t, episodes, 15.0, 40.0)
    peaks: list[tuple[float, float]] = []
    t = 5.0
    while t < duration:
        active = any(e.onset <= t < e.onset + e.duration for e in episodes)
        if active:
            peaks.append((t, float(rng.uniform(0.2, 0.5))))
            t += float(rng.exponential(8.0)) + 2.0
        else:
            peaks.append((t, float(rng.uniform(0.05, 0.12))))
            t += float(rng.exponential(60.0)) + 5.0
    drift = 0.1 * np.sin(2 * np.pi * (eda_t - T0) / 3000.0)
    eda = 2.0 + drift + eda_rise * drive_eda + _scr_train(eda_t, peaks)
    eda += rng.normal(0.0, 0.002, len(eda))
    ar = np.zeros(len(hr_t))
    for i in range(1, len(ar)):
        ar[i] = 0.9 * ar[i - 1] + rng.normal(0.0, 0.6)
    hr = 70.0 + hr_rise * drive_hr + ar
    # beats from the HR curve
    beats: list[float] = []
    rrs: list[float] = []
    bt = 0.5
    while bt < duration - 2:
        i = min(int(bt), len(hr) - 1)
        mean_rr = 60000.0 / hr[i]
        jitter = 28.0 - 18.0 * drive_hr[i]  # -> RMSSD ~40 ms at rest, ~15 ms aroused
        rr = mean_rr + float(rng.normal(0.0, jitter))
        bt += rr / 1000.0
        beats.append(T0 + bt)
        rrs.append(rr)
    return Session(eda_t, eda, hr_t, hr, np.array(beats), np.array(rrs), tuple(episodes), duration)


def one_second_batches(session: Session, device: str = "sim") -> Iterator[SampleBatch]:
    """Every stream cut into 1-s batches, merged in time order (as the live service sees it)."""
    items: list[tuple[float, int, SampleBatch]] = []
    for order, (stream, times, values) in enumerate(session.streams()):
        sec = np.floor(times)
        cuts = np.flatnonzero(np.diff(sec)) + 1
        for part_t, part_v in zip(np.split(times, cuts), np.split(values, cuts), strict=True):
            batch = SampleBatch(stream, device, part_t, part_v)  # type: ignore[arg-type]
            items.append((float(part_t[0]), order, batch))
    items.sort(key=lambda x: (x[0], x[1]))
    for _, _, batch in items:
        yield batch
