"""The device manager's consumer logic, driven directly with link events (no BLE, no MQTT)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle import contract
from rekindle.ingest.ble.assembler import (
    BatteryChanged,
    Connected,
    Disconnected,
    Notification,
    OutGap,
    Outgoing,
    OutSamples,
    OutStatus,
    Shutdown,
    StreamAssembler,
)
from rekindle.ingest.ble.hrs import HeartRateMeasurement, encode_heart_rate_measurement
from rekindle.ingest.ble.profiles import load_profile

T0 = 1_800_000_000.0
EDA = load_profile("rekindle-eda-ref")


def _hrm(hr: int, rr_raw: tuple[int, ...] = (), contact: bool = True) -> bytes:
    return encode_heart_rate_measurement(
        HeartRateMeasurement(
            hr_bpm=hr,
            contact_supported=True,
            contact_detected=contact,
            rr_raw=rr_raw,
            rr_present=bool(rr_raw),
        )
    )


def _times(out: OutSamples) -> list[float]:
    """Sample times exactly as a consumer of the wire contract computes them."""
    msg = contract.samples("s", "x", out.stream, "d", 0, out.values, t0=out.t0, fs=out.fs, t=out.t)
    return msg.times()


def _samples(outs: list[Outgoing], stream: str) -> list[OutSamples]:
    return [o for o in outs if isinstance(o, OutSamples) and o.stream == stream]


def test_online_then_hr_and_rr() -> None:
    a = StreamAssembler("strap", [None])
    out = a.handle(Connected(T0, "AA:BB:CC:DD:EE:FF", battery=80, rssi=-60))
    assert out == [OutStatus("online", T0, 80, -60, "connected")]  # never the address
    out = a.handle(Notification(0, T0 + 1.0, _hrm(60, (1024, 512))))
    hr, rr = _samples(out, "hr")[0], _samples(out, "rr")[0]
    assert hr.values == (60.0,)
    assert hr.t == (T0 + 1.0,)
    assert rr.values == (1000.0, 500.0)
    assert rr.t == (T0 + 0.5, T0 + 1.0)  # last beat at receipt, earlier by the later RRs


def test_no_hr_without_skin_contact_and_garbage_is_counted() -> None:
    a = StreamAssembler("strap", [None])
    assert a.handle(Notification(0, T0, _hrm(0, contact=False))) == []
    assert a.handle(Notification(0, T0 + 1, bytes.fromhex("550400380015af"))) == []
    assert a.stats.decode_errors == 1
    assert a.stats.dropped_values == 1


def test_drop_gives_lost_status_and_a_gap_bounded_by_samples() -> None:
    a = StreamAssembler("wrist", [EDA])
    a.handle(Connected(T0, "D0:00:00:00:00:02", battery=55))
    before: list[OutSamples] = []
    for i in range(4):  # 2 samples per packet at 4 Hz: one packet every 0.5 s
        before += _samples(
            a.handle(Notification(0, T0 + 0.25 + 0.5 * i, EDA.encode([1.0, 1.1], i))), "eda"
        )
    out = a.handle(Disconnected(T0 + 2.2))
    assert out == [OutStatus("lost", T0 + 2.2, 55, None, "link lost")]
    a.handle(Connected(T0 + 9.0, "D0:00:00:00:00:02"))
    out = a.handle(Notification(0, T0 + 10.25, EDA.encode([2.0, 2.1], 0)))
    gap, after = out[0], out[1]
    assert isinstance(gap, OutGap)
    assert isinstance(after, OutSamples)
    assert gap.stream == "eda"
    assert gap.start == _times(before[-1])[-1]
    assert gap.end == _times(after)[0]
    assert gap.end == T0 + 10.0  # resynced to the receive time after the drop
    assert a.reconnects[0].lost_at == T0 + 2.2
    assert a.reconnects[0].connected_at == T0 + 9.0
    assert a.reconnects[0].first_data_at == T0 + 10.25
    # one gap only
    assert not any(
        isinstance(o, OutGap)
        for o in a.handle(Notification(0, T0 + 10.75, EDA.encode([2.2, 2.3], 1)))
    )


def test_counter_jump_is_a_gap_without_a_disconnect() -> None:
    a = StreamAssembler("wrist", [EDA])
    first = _samples(a.handle(Notification(0, T0 + 0.25, EDA.encode([1.0, 1.0], 7))), "eda")
    out = a.handle(Notification(0, T0 + 2.25, EDA.encode([1.0, 1.0], 11)))  # 8, 9, 10 lost
    assert a.stats.lost_packets == 3
    gap = out[0]
    assert isinstance(gap, OutGap)
    assert gap.start == _times(first[0])[-1]
    assert gap.end == _times(_samples(out, "eda")[0])[0]


def test_counter_wraps_without_a_gap() -> None:
    a = StreamAssembler("wrist", [EDA])
    a.handle(Notification(0, T0 + 0.25, EDA.encode([1.0, 1.0], 255)))
    out = a.handle(Notification(0, T0 + 0.75, EDA.encode([1.0, 1.0], 0)))
    assert not any(isinstance(o, OutGap) for o in out)
    assert a.stats.lost_packets == 0


def test_shutdown_while_away_closes_every_open_gap() -> None:
    a = StreamAssembler("strap", [None, EDA])
    a.handle(Connected(T0, "x"))
    a.handle(Notification(0, T0 + 1, _hrm(70, (900,))))
    a.handle(Notification(1, T0 + 1.1, EDA.encode([1.0, 1.0], 0)))
    a.handle(Disconnected(T0 + 3))
    out = a.handle(Shutdown(T0 + 20))
    gaps = [o for o in out if isinstance(o, OutGap)]
    assert sorted(g.stream for g in gaps) == ["eda", "hr", "rr"]
    assert all(g.end == T0 + 20 for g in gaps)
    assert out[-1] == OutStatus("end", T0 + 20, None, None, "ingest stopped")


def test_rr_beat_chain_continues_across_notifications() -> None:
    a = StreamAssembler("strap", [None])
    t1 = _samples(a.handle(Notification(0, T0 + 1.0, _hrm(60, (1024,)))), "rr")[0].t
    # the next beat arrives 0.3 s late: the chain keeps the RR spacing, nudged by alpha
    t2 = _samples(a.handle(Notification(0, T0 + 2.3, _hrm(60, (1024,)))), "rr")[0].t
    assert t1 == (T0 + 1.0,)
    assert t2 is not None
    assert t2[0] == pytest.approx(T0 + 2.0 + 0.05 * 0.3, abs=1e-6)


@st.composite
def link_histories(draw: st.DrawFn) -> list[Connected | Disconnected | Notification]:
    """Random connect/notify/drop sequences of a strap with HRS + EDA, time increasing."""
    events: list[Connected | Disconnected | Notification] = []
    t, counter, connected = T0, 0, False
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.floats(0.01, 3.0))
        action = draw(st.sampled_from(["eda", "eda", "eda", "hrm", "drop", "skip"]))
        if not connected:
            events.append(Connected(t, "x"))
            connected = True
        elif action == "drop":
            events.append(Disconnected(t))
            connected, counter = False, 0
        elif action == "hrm":
            rr = tuple(draw(st.lists(st.integers(400, 1400), max_size=3)))
            events.append(Notification(0, t, _hrm(draw(st.integers(40, 180)), rr)))
        else:
            counter += draw(st.integers(1, 3)) if action == "skip" else 1
            values = draw(st.lists(st.floats(0.0, 60.0), min_size=1, max_size=4))
            t += len(values) / EDA.rate_hz  # a device sends no faster than its nominal rate
            events.append(Notification(1, t, EDA.encode(values, counter)))
    return events


@given(link_histories())
def test_no_sample_inside_a_gap_and_bounds_are_sample_times(
    events: list[Connected | Disconnected | Notification],
) -> None:
    a = StreamAssembler("strap", [None, EDA])
    outs: list[Outgoing] = []
    for ev in events:
        outs += a.handle(ev)
    t_end = max(e.t_rx if isinstance(e, Notification) else e.t for e in events) + 1.0
    final = a.handle(Shutdown(t_end))
    last: dict[str, float] = {}
    open_gap: dict[str, OutGap] = {}
    for out in outs:
        if isinstance(out, OutGap):
            assert out.start == last[out.stream], "gap must start at the last sample"
            assert out.end >= out.start
            open_gap[out.stream] = out
        elif isinstance(out, OutSamples):
            times = _times(out)
            assert times == sorted(times)
            if out.stream in last:
                assert times[0] > last[out.stream], f"{out.stream} time went backwards"
            gap = open_gap.pop(out.stream, None)
            if gap is not None:
                assert times[0] == gap.end, "gap must end at the first sample after it"
            last[out.stream] = times[-1]
    assert open_gap == {}, "a gap was published before its end was known"
    for out in final:  # gaps still open at shutdown end at the shutdown time
        if isinstance(out, OutGap):
            assert out.start == last[out.stream]
            assert out.end == max(t_end, out.start)
    assert final[-1] == OutStatus("end", t_end, None, None, "ingest stopped")
    # HR gaps only come from drops, at most one per drop
    drops = sum(isinstance(e, Disconnected) for e in events)
    assert len([g for g in a.gaps if g.stream == "hr"]) <= drops


def test_battery_change_is_an_online_status() -> None:
    a = StreamAssembler("strap", [None])
    a.handle(Connected(T0, "x", battery=90))
    assert a.handle(BatteryChanged(T0 + 300, 85)) == [
        OutStatus("online", T0 + 300, 85, None, "battery level")
    ]
    a.handle(Disconnected(T0 + 301))
    assert a.handle(Shutdown(T0 + 302))[-1].battery == 85  # type: ignore[union-attr]
