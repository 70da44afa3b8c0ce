"""From BLE link events to contract messages, for one device (pure: no I/O, no clock).

:class:`StreamAssembler` is the device manager's consumer logic: it takes the events of one
connection in arrival order (notifications with their host receive time, connects, drops,
shutdown) and returns what to publish: samples, status and gap records. Decoding uses
:mod:`.hrs` and the device profiles, time-stamping :mod:`.timestamps`.

Gap rule: when the link drops (or a profile's packet counter jumps), every stream that had
data gets a gap ``(start, end)`` = (time of its last sample before, time of its first sample
after), emitted just before that first sample; at shutdown a still-open gap ends at the
shutdown time. Bounds use the same nanosecond arithmetic as
:meth:`rekindle.contract.SampleMessage.times_ns`, so they are exactly sample times.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from rekindle.contract import PHYSICAL_RANGE, DeviceState, SampleStream
from rekindle.ingest.ble import hrs
from rekindle.ingest.ble.errors import DecodeError
from rekindle.ingest.ble.pmd import PmdFeed, decode_control_response, decode_pmd_frame
from rekindle.ingest.ble.profiles import DeviceProfile, format_size
from rekindle.ingest.ble.timestamps import BeatClock, ClockSettings, MonotonicStamp, RegularClock

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ events in


@dataclass(frozen=True, slots=True)
class Notification:
    """``data`` notified on feed number ``feed``, received at host time ``t_rx``;
    ``control`` marks a control-point response (Polar PMD) rather than data."""

    feed: int
    t_rx: float
    data: bytes
    control: bool = False


@dataclass(frozen=True, slots=True)
class Connected:
    t: float
    address: str
    battery: int | None = None
    rssi: int | None = None


@dataclass(frozen=True, slots=True)
class BatteryChanged:
    t: float
    battery: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    t: float
    reason: str = "link lost"


@dataclass(frozen=True, slots=True)
class Shutdown:
    t: float


LinkEvent = Notification | Connected | BatteryChanged | Disconnected | Shutdown


# ---------------------------------------------------------------------------- messages out


@dataclass(frozen=True, slots=True)
class OutSamples:
    stream: SampleStream
    values: tuple[float, ...] | tuple[tuple[float, float, float], ...]
    t0: float | None = None
    fs: float | None = None
    t: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class OutStatus:
    state: DeviceState
    t: float
    battery: int | None = None
    rssi: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class OutGap:
    stream: SampleStream
    start: float
    end: float


Outgoing = OutSamples | OutStatus | OutGap


@dataclass(slots=True)
class ReconnectRecord:
    """One drop: when it was noticed, when the link was back, when data flowed again
    (receive time of the first published sample)."""

    lost_at: float
    connected_at: float | None = None
    first_data_at: float | None = None


@dataclass(slots=True)
class AssemblerStats:
    notifications: int = 0
    decode_errors: int = 0
    dropped_values: int = 0
    lost_packets: int = 0


def _ns_time(t: float) -> float:
    return round(t * 1e9) / 1e9


Feed = DeviceProfile | PmdFeed | None


@dataclass
class StreamAssembler:
    """Consumer logic of one device. ``feeds[i]`` describes feed ``i`` (the ``feed`` number
    of :class:`Notification`): ``None`` for the Heart Rate Service, a device profile, or a
    Polar PMD feed."""

    device_id: str
    feeds: Sequence[Feed]
    clock_settings: ClockSettings = field(default_factory=ClockSettings)
    stats: AssemblerStats = field(default_factory=AssemblerStats)
    gaps: list[OutGap] = field(default_factory=list)
    reconnects: list[ReconnectRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._hr_stamp = MonotonicStamp()
        self._beats = BeatClock(ClockSettings(self.clock_settings.alpha, 2.0))
        self._regular = {
            i: RegularClock(p.rate_hz, self.clock_settings)
            for i, p in enumerate(self.feeds)
            if isinstance(p, DeviceProfile)
        }
        self._pmd_clocks: dict[tuple[int, str], RegularClock] = {}
        self._counters: dict[int, int] = {}
        self._last_time: dict[SampleStream, float] = {}
        self._gap_pending: set[SampleStream] = set()
        self._battery: int | None = None
        self._out: list[Outgoing] = []

    @property
    def streams(self) -> list[SampleStream]:
        out: list[SampleStream] = []
        for p in self.feeds:
            if p is None:
                out += ["hr", "rr"]
            elif isinstance(p, PmdFeed):
                if p.ecg_hz:
                    out.append("ecg")
                if p.acc_hz:
                    out.append("acc")
            else:
                out.append(p.stream)
        return out

    def handle(self, event: LinkEvent) -> list[Outgoing]:
        """Process one event; return the messages to publish, in order."""
        self._out = []
        if isinstance(event, Notification):
            self._notification(event)
        elif isinstance(event, Connected):
            self._connected(event)
        elif isinstance(event, BatteryChanged):
            self._battery = event.battery
            self._out.append(OutStatus("online", event.t, event.battery, None, "battery level"))
        elif isinstance(event, Disconnected):
            self._disconnected(event)
        else:
            self._shutdown(event)
        return self._out

    # -- link state ------------------------------------------------------------------------

    def _connected(self, ev: Connected) -> None:
        if self.reconnects and self.reconnects[-1].connected_at is None:
            self.reconnects[-1].connected_at = ev.t
        self._battery = ev.battery
        # the status goes to MQTT and InfluxDB: never the (personal) address in it
        self._out.append(OutStatus("online", ev.t, ev.battery, ev.rssi, "connected"))

    def _disconnected(self, ev: Disconnected) -> None:
        log.warning("device %s: disconnected (%s)", self.device_id, ev.reason)
        self.reconnects.append(ReconnectRecord(ev.t))
        self._gap_pending |= {s for s in self.streams if s in self._last_time}
        self._beats.reset()
        for clock in [*self._regular.values(), *self._pmd_clocks.values()]:
            clock.reset()
        self._counters.clear()
        self._out.append(OutStatus("lost", ev.t, self._battery, None, ev.reason))

    def _shutdown(self, ev: Shutdown) -> None:
        for stream in sorted(self._gap_pending):
            self._gap(stream, self._last_time[stream], max(ev.t, self._last_time[stream]))
        self._gap_pending.clear()
        self._out.append(OutStatus("end", ev.t, self._battery, None, "ingest stopped"))

    def _gap(self, stream: SampleStream, start: float, end: float) -> None:
        log.info(
            "device %s: %s gap %.3f..%.3f (%.2f s)", self.device_id, stream, start, end, end - start
        )
        gap = OutGap(stream, start, max(start, end))
        self.gaps.append(gap)
        self._out.append(gap)

    # -- samples ---------------------------------------------------------------------------

    def _emit(
        self,
        stream: SampleStream,
        values: Sequence[float] | Sequence[tuple[float, float, float]],
        t_rx: float,
        *,
        t0: float | None = None,
        fs: float | None = None,
        t: Sequence[float] | None = None,
    ) -> None:
        if t is not None:
            first, last = _ns_time(t[0]), _ns_time(t[-1])
        else:
            assert t0 is not None
            assert fs is not None
            first = _ns_time(t0)
            last = (round(t0 * 1e9) + round((len(values) - 1) * (1e9 / fs))) / 1e9
        if stream in self._gap_pending:
            self._gap_pending.discard(stream)
            self._gap(stream, self._last_time[stream], first)
        if self.reconnects and self.reconnects[-1].first_data_at is None:
            self.reconnects[-1].first_data_at = t_rx
        self._out.append(
            OutSamples(
                stream,
                tuple(values),  # type: ignore[arg-type]
                t0,
                fs,
                None if t is None else tuple(t),
            )
        )
        self._last_time[stream] = last

    def _notification(self, n: Notification) -> None:
        self.stats.notifications += 1
        feed = self.feeds[n.feed]
        try:
            if n.control:
                self._control(n)
            elif feed is None:
                self._hrm(n)
            elif isinstance(feed, PmdFeed):
                self._pmd(n, feed)
            else:
                self._profile(n, feed)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            log.warning("device %s: dropped a notification: %s", self.device_id, exc)

    def _hrm(self, n: Notification) -> None:
        m = hrs.decode_heart_rate_measurement(n.data)
        low, high = PHYSICAL_RANGE["hr"]
        if low <= m.hr_bpm <= high and m.contact is not False:
            self._emit("hr", [float(m.hr_bpm)], n.t_rx, t=[self._hr_stamp.stamp(n.t_rx)])
        else:
            self.stats.dropped_values += 1
        rr = list(m.rr_ms)
        if not rr:
            return
        times = self._beats.stamp(n.t_rx, rr)
        low, high = PHYSICAL_RANGE["rr"]
        keep = [(t, v) for t, v in zip(times, rr, strict=True) if low <= v <= high]
        if len(keep) < len(rr):
            self.stats.dropped_values += len(rr) - len(keep)
            log.warning(
                "device %s: dropped %d implausible RR value(s) %s",
                self.device_id,
                len(rr) - len(keep),
                rr,
            )
        # after a reconnect the beat chain restarts from the receive time; a beat that would
        # land at or before the last published one cannot be placed: drop it, don't reorder
        last = self._last_time.get("rr")
        if last is not None:
            placed = [(t, v) for t, v in keep if _ns_time(t) > last]
            if len(placed) < len(keep):
                self.stats.dropped_values += len(keep) - len(placed)
                log.warning(
                    "device %s: dropped %d RR value(s) that overlap earlier beats",
                    self.device_id,
                    len(keep) - len(placed),
                )
            keep = placed
        if keep:
            self._emit("rr", [v for _, v in keep], n.t_rx, t=[t for t, _ in keep])

    def _profile(self, n: Notification, profile: DeviceProfile) -> None:
        packet = profile.decode(n.data)
        clock = self._regular[n.feed]
        if packet.counter is not None and profile.counter is not None:
            modulus = 1 << (8 * format_size(profile.counter))
            expected = self._counters.get(n.feed)
            if expected is not None and packet.counter != expected:
                lost = (packet.counter - expected) % modulus
                self.stats.lost_packets += lost
                log.warning(
                    "device %s: %d %s packet(s) lost (counter %d, expected %d)",
                    self.device_id,
                    lost,
                    profile.name,
                    packet.counter,
                    expected,
                )
                if profile.stream in self._last_time:
                    self._gap_pending.add(profile.stream)
                clock.reset()
            self._counters[n.feed] = (packet.counter + 1) % modulus
        t0 = clock.stamp(n.t_rx, len(packet.values))
        self._emit(profile.stream, packet.values, n.t_rx, t0=t0, fs=profile.rate_hz)

    def _control(self, n: Notification) -> None:
        r = decode_control_response(n.data)
        if r.ok:
            log.info(
                "device %s: PMD op %d on measurement %d: success",
                self.device_id,
                r.op,
                r.measurement,
            )
        else:
            log.warning(
                "device %s: PMD op %d on measurement %d refused: %s",
                self.device_id,
                r.op,
                r.measurement,
                r.reason,
            )

    def _pmd(self, n: Notification, feed: PmdFeed) -> None:
        frame = decode_pmd_frame(
            n.data, acc_resolution=feed.acc_resolution, ecg_resolution=feed.ecg_resolution
        )
        stream: SampleStream = frame.measurement
        rate = feed.ecg_hz if stream == "ecg" else feed.acc_hz
        if not rate or not frame.samples:
            return
        low, high = PHYSICAL_RANGE[stream]
        if any(not low <= v <= high for sample in frame.samples for v in sample):
            self.stats.dropped_values += len(frame.samples)
            log.warning(
                "device %s: dropped a PMD %s frame with values outside [%g, %g]",
                self.device_id,
                stream,
                low,
                high,
            )
            return
        clock = self._pmd_clocks.get((n.feed, stream))
        if clock is None:
            clock = self._pmd_clocks[(n.feed, stream)] = RegularClock(rate, self.clock_settings)
        t0 = clock.stamp(n.t_rx, len(frame.samples))
        if stream == "ecg":
            self._emit("ecg", [s[0] for s in frame.samples], n.t_rx, t0=t0, fs=float(rate))
        else:
            triples = [(s[0], s[1], s[2]) for s in frame.samples]
            self._emit("acc", triples, n.t_rx, t0=t0, fs=float(rate))
