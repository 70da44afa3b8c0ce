"""Sample time-stamping from host receive times (pure; the caller passes the clock reading).

BLE sensors rarely send their own clock, so every notification is stamped with the host's
wall-clock receive time and samples are placed on that time line:

* **Regular streams** (EDA from a profile, ``n`` samples per notification at a nominal rate
  ``fs``): the last sample of a packet is taken to be sampled at the receive time, earlier ones
  ``1/fs`` apart before it (``raw_t0 = t_rx - (n-1)/fs``). Receive times jitter by the
  connection interval (7.5 ms - 4 s) and OS scheduling, and they can only be *late*, never
  early. :class:`RegularClock` therefore predicts ``t0`` from the previous packet
  (``t_prev_end + 1/fs``) and
  - snaps down to ``raw_t0`` when a packet arrives *earlier* than predicted (the prediction
    was too late: the device clock runs fast or an earlier packet was delayed),
  - moves only a fraction ``alpha`` towards ``raw_t0`` when it arrives later (most lateness is
    transport jitter; a persistent lag, e.g. a slow device clock, is followed within
    ~1/alpha packets),
  - resynchronises to ``raw_t0`` when the two differ by more than ``resync_s`` (after a
    reconnect, lost packets, or a device whose rate is far from nominal),
  - never lets a sample time go backwards: a packet that would overlap the previous one is
    placed right after it (contiguous), even if that is slightly after its receive time -
    unless that would put it more than ``resync_s`` after its receive time (samples keep
    coming faster than ``fs``: the profile's rate is wrong); then the clock steps back to the
    receive time and counts an ``overrun``.
* **RR intervals** (:class:`BeatClock`): a notification carrying RR values ``rr_1..rr_k``
  ends with the most recent beat; beat ``i`` is at ``t_rx - sum(rr_{i+1..k})``. The same
  predict/snap/follow/resync rule is applied to the beat chain ``t_beat = t_prev_beat + rr``,
  so beat times inherit the device's precise RR spacing and the host clock only anchors them.
* **Heart rate** values are irregular: the (monotonic) receive time.

Nothing here reads a clock, so live and replayed data are stamped identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockSettings:
    """``alpha``: fraction of a late packet's lateness followed per packet; ``resync_s``:
    disagreement beyond which the clock jumps to the receive time."""

    alpha: float = 0.05
    resync_s: float = 1.0


class RegularClock:
    """Time-stamps packets of a regular stream sampled at nominal ``fs`` Hz."""

    def __init__(self, fs: float, settings: ClockSettings | None = None) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        self.fs = fs
        self.settings = settings or ClockSettings()
        self._next: float | None = None
        self._last: float | None = None
        #: times the clock had to step back because samples came faster than ``fs``
        self.overruns = 0

    def reset(self) -> None:
        """Forget the prediction (call after a disconnect); the next packet resyncs."""
        self._next = None

    def stamp(self, t_rx: float, n: int) -> float:
        """Return ``t0``, the time of the first of ``n`` samples received at ``t_rx``."""
        if n <= 0:
            raise ValueError(f"a packet needs at least one sample, got {n}")
        period = 1.0 / self.fs
        raw = t_rx - (n - 1) * period
        predicted = self._next
        if predicted is None or abs(raw - predicted) > self.settings.resync_s or raw < predicted:
            t0 = raw  # first packet, resync, or earlier than predicted: snap down
        else:
            t0 = predicted + self.settings.alpha * (raw - predicted)
        if self._last is not None and t0 <= self._last:
            t0 = self._last + period  # overlap: assume the packets are contiguous
            if t0 + (n - 1) * period > t_rx + self.settings.resync_s:
                # samples keep arriving faster than fs (a wrong nominal rate): follow the
                # receive times rather than drift into the future; time steps back once
                self.overruns += 1
                t0 = raw
        self._last = t0 + (n - 1) * period
        self._next = self._last + period
        return t0


class BeatClock:
    """Time-stamps RR intervals: returns the time of the beat that ends each interval."""

    def __init__(self, settings: ClockSettings | None = None) -> None:
        self.settings = settings or ClockSettings(alpha=0.05, resync_s=2.0)
        self._last_beat: float | None = None

    def reset(self) -> None:
        """Forget the beat chain (call after a disconnect); the next notification resyncs."""
        self._last_beat = None

    def stamp(self, t_rx: float, rr_ms: Sequence[float]) -> list[float]:
        if not rr_ms:
            return []
        rr_s = [x / 1000.0 for x in rr_ms]
        # raw: last beat at the receive time, earlier beats spaced by the following RRs
        raw_first = t_rx - sum(rr_s[1:])
        if self._last_beat is None:
            first = raw_first
        else:
            predicted = self._last_beat + rr_s[0]
            if abs(raw_first - predicted) > self.settings.resync_s or raw_first < predicted:
                first = raw_first
            else:
                first = predicted + self.settings.alpha * (raw_first - predicted)
            if first <= self._last_beat:
                first = self._last_beat + 1e-3
        times = [first]
        for rr in rr_s[1:]:
            times.append(times[-1] + rr)
        self._last_beat = times[-1]
        return times


class MonotonicStamp:
    """Receive times made strictly increasing (for irregular per-notification values)."""

    def __init__(self) -> None:
        self._last: float | None = None

    def stamp(self, t_rx: float) -> float:
        t = t_rx if self._last is None or t_rx > self._last else self._last + 1e-6
        self._last = t
        return t
