"""A seeded simulated wearable: HR (1 Hz), RR intervals and wrist-like EDA (4 Hz) with scripted
arousal and emotional-release episodes.

The model is deliberately simple and documented so that tests know the answer:

* an arousal level ``a(t)`` in [0, 1] rises over ``RISE_S`` at each scripted onset, holds for
  the episode's duration and falls over ``FALL_S``, or, for an episode scripted without release,
  only slowly over ``SLOW_FALL_S`` (sustained arousal that does not resolve within the 5-minute
  window in which a release is looked for);
* after an episode scripted as a release, a parasympathetic rebound ``r(t)`` rises and decays
  over ``REBOUND_S``: HR drops below baseline and respiratory sinus arrhythmia (RMSSD) grows;
* heart: ``HR = hr_rest + HR_GAIN * a - REBOUND_HR * r``; beats are generated from the
  instantaneous HR with respiratory sinus arrhythmia (0.25 Hz) whose amplitude shrinks with
  arousal and grows with rebound, plus Gaussian beat-to-beat noise;
* skin: tonic EDA rises with arousal (first-order, 40 s) and falls back slowly (200 s); skin
  conductance responses arrive as a Poisson process (2/min at rest, up to 10/min aroused) with
  the Bateman shape (tau 0.75 s / 2 s) and log-normal amplitudes (median 0.15 µS).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rekindle.ingest.sources.base import Chunk, irregular_chunks, merge_in_time, regular_chunks

RISE_S = 30.0
FALL_S = 60.0
SLOW_FALL_S = 900.0
REBOUND_S = 240.0
HR_GAIN = 30.0
REBOUND_HR = 7.0
DEVICE_HR = "sim-strap"
DEVICE_EDA = "sim-wrist"
EDA_FS = 4.0
HR_FS = 1.0


@dataclass(frozen=True, slots=True)
class ScriptedEpisode:
    """An arousal surge starting ``onset`` s into the session, lasting ``duration`` s."""

    onset: float
    duration: float
    intensity: float = 1.0
    release: bool = True
    marker: str | None = None


@dataclass(frozen=True, slots=True)
class SimulationScript:
    duration: float = 1800.0
    episodes: tuple[ScriptedEpisode, ...] = field(
        default_factory=lambda: (
            ScriptedEpisode(480.0, 180.0, 1.0, release=True, marker="tears"),
            ScriptedEpisode(1200.0, 150.0, 0.8, release=False),
        )
    )
    hr_rest: float = 68.0
    eda_rest: float = 2.0


def _envelope(
    t: npt.NDArray[np.float64], episodes: Sequence[ScriptedEpisode]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    a = np.zeros_like(t)
    r = np.zeros_like(t)
    for ep in episodes:
        end = ep.onset + ep.duration
        rise = np.clip((t - ep.onset) / RISE_S, 0.0, 1.0)
        fall = np.clip(1.0 - (t - end) / (FALL_S if ep.release else SLOW_FALL_S), 0.0, 1.0)
        level = np.where(t < end, rise, fall) * ep.intensity
        a = np.maximum(a, level)
        if ep.release:
            since = t - end
            bump = np.where(since > 0, (since / 40.0) * np.exp(1.0 - since / 40.0), 0.0) * np.exp(
                -np.clip(since, 0, None) / REBOUND_S
            )
            r = np.maximum(r, np.clip(bump, 0.0, 1.0))
    return np.clip(a, 0.0, 1.0), r


def simulate_arrays(
    script: SimulationScript, seed: int
) -> dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Session-relative sample times and values: ``hr``, ``rr`` (beat times, ms), ``eda``."""
    rng = np.random.default_rng(seed)
    # heart beats
    beats: list[float] = []
    rr: list[float] = []
    t = 0.0
    while t < script.duration:
        a, r = _envelope(np.array([t]), script.episodes)
        hr = script.hr_rest + HR_GAIN * a[0] - REBOUND_HR * r[0]
        rsa = 35.0 * (1.0 - 0.75 * a[0]) * (1.0 + 1.2 * r[0])
        interval = 60000.0 / hr + rsa * math.sin(2 * math.pi * 0.25 * t) + rng.normal(0, 12.0)
        interval = float(np.clip(interval, 300.0, 2000.0))
        t += interval / 1000.0
        if t < script.duration:
            beats.append(t)
            rr.append(round(interval, 1))
    beat_t = np.array(beats)
    rr_ms = np.array(rr)
    # device HR at 1 Hz: mean of the beats in the last 5 s, like a strap's averaged HR
    hr_t = np.arange(1.0, script.duration, 1.0 / HR_FS)
    hr_v = np.empty_like(hr_t)
    for i, ht in enumerate(hr_t):
        sel = rr_ms[(beat_t <= ht) & (beat_t > ht - 5.0)]
        hr_v[i] = 60000.0 / sel.mean() if sel.size else script.hr_rest
    hr_v = np.round(hr_v, 1)
    # EDA
    eda_t = np.arange(0.0, script.duration, 1.0 / EDA_FS)
    a_eda, _ = _envelope(eda_t, script.episodes)
    tonic = np.empty_like(eda_t)
    level = 0.0
    dt = 1.0 / EDA_FS
    for i, av in enumerate(a_eda):
        target = 1.2 * av
        tau = 40.0 if target > level else 200.0
        level += (target - level) * dt / tau
        tonic[i] = script.eda_rest + level + 0.05 * math.sin(2 * math.pi * eda_t[i] / 900.0)
    phasic = np.zeros_like(eda_t)
    kernel_t = np.arange(0.0, 20.0, dt)
    kernel = np.exp(-kernel_t / 2.0) - np.exp(-kernel_t / 0.75)
    kernel /= kernel.max()
    s = 0.0
    while True:
        idx = min(int(s * EDA_FS), eda_t.size - 1)
        rate = (2.0 + 8.0 * a_eda[idx]) / 60.0
        s += rng.exponential(1.0 / rate)
        if s >= script.duration:
            break
        amp = float(rng.lognormal(math.log(0.15), 0.5)) * (1.0 + a_eda[idx])
        start = int(s * EDA_FS)
        stop = min(start + kernel.size, phasic.size)
        phasic[start:stop] += amp * kernel[: stop - start]
    eda_v = np.round(np.clip(tonic + phasic + rng.normal(0, 0.003, eda_t.size), 0.0, None), 4)
    return {"hr": (hr_t, hr_v), "rr": (beat_t, rr_ms), "eda": (eda_t, eda_v)}


def simulate(
    script: SimulationScript | None = None, *, seed: int = 1, start_time: float = 1.7e9
) -> Iterator[Chunk]:
    """Chunks of a simulated session beginning at unix time ``start_time``."""
    script = script or SimulationScript()
    arrays = simulate_arrays(script, seed)
    hr_t, hr_v = arrays["hr"]
    beat_t, rr_ms = arrays["rr"]
    _, eda_v = arrays["eda"]
    streams: list[Iterator[Chunk]] = [
        regular_chunks("hr", DEVICE_HR, start_time + float(hr_t[0]), HR_FS, hr_v.tolist()),
        irregular_chunks("rr", DEVICE_HR, (start_time + beat_t).tolist(), rr_ms.tolist()),
        regular_chunks("eda", DEVICE_EDA, start_time, EDA_FS, eda_v.tolist()),
    ]
    marks = [
        (start_time + ep.onset + ep.duration, ep.marker) for ep in script.episodes if ep.marker
    ]
    if marks:
        streams.append(
            irregular_chunks(
                "marker",
                "clinician",
                [m[0] for m in marks],
                [str(m[1]) for m in marks],
                seconds=1e-9,
            )
        )
    return merge_in_time(streams)
