"""End to end: stock bleak (BlueZ D-Bus backend) -> bluezoo -> bless wearables, published by
the real Publisher into a real mosquitto, read back with paho and the wire contract.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from rekindle import contract
from rekindle.ingest.ble.manager import (
    Backoff,
    DeviceManager,
    DeviceSpec,
    ManagerSettings,
    discover,
)
from rekindle.ingest.publisher import Publisher
from rekindle.mqtturl import MqttSettings
from tests.ble.collect import SITE, Collector
from tests.ble.emulation import CENTRAL, BleEmulation, WearableProcess
from tests.servers import Mosquitto
from tests.waiting import wait_until

STREAM_S = 32.0  # seconds of streaming on each device, at least
AWAY_S = 6.0
#: how far before its receipt the first packet after a reconnect can be stamped
REACH_BACK_S = {"hr": 0.0, "rr": 1.1, "eda": (2 - 1) / 4.0}


@dataclass
class DeviceMessages:
    samples: dict[str, list[contract.SampleMessage]]
    status: list[contract.StatusMessage]
    gaps: list[contract.GapMessage]


def _device(msgs: list[contract.Message], device: str) -> DeviceMessages:
    out = DeviceMessages(defaultdict(list), [], [])
    for m in msgs:
        if m.device != device:
            continue
        if isinstance(m, contract.SampleMessage):
            out.samples[m.stream].append(m)
        elif isinstance(m, contract.StatusMessage):
            out.status.append(m)
        elif isinstance(m, contract.GapMessage):
            out.gaps.append(m)
    return out


def _samples(msgs: list[contract.SampleMessage]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for m in msgs:
        out += zip(m.times(), [float(v) for v in m.values], strict=True)  # type: ignore[arg-type]
    return out


def _check_seq(msgs: list[contract.SampleMessage] | list[contract.GapMessage]) -> None:
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(len(seqs))), f"seq not 0..n-1 in arrival order: {seqs[:20]}..."


async def _wait_ended(collector: Collector, session: str, *devices: str) -> None:
    """Until the ``end`` status of every device has reached the collector (the publisher has
    closed; its last messages may still be on their way)."""

    def ended() -> bool:
        states = {
            (m.device, m.state)
            for m in collector.session(session)
            if isinstance(m, contract.StatusMessage)
        }
        return all((device, "end") in states for device in devices)

    await asyncio.to_thread(wait_until, ended, f"the end status of {', '.join(devices)}")


async def _wait(event: asyncio.Event, timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {timeout} s")


async def test_discover_finds_the_emulated_wearable(ble_emulation: BleEmulation) -> None:
    ble_emulation.add_wearable("RK-STRAP-A", "hci1")
    found = await discover(3.0, adapter=CENTRAL)
    names = {adv.local_name: (d.address, adv.service_uuids) for d, adv in found}
    assert names["RK-STRAP-A"][0] == "D0:00:00:00:00:01"
    assert "0000180d-0000-1000-8000-00805f9b34fb" in names["RK-STRAP-A"][1]


def _check_eda_against_truth(
    samples: list[tuple[float, float]],
    wearable: WearableProcess,
    gap: tuple[float, float] | None,
) -> list[int]:
    """Samples map 1:1 to generated ones; every missing one lies inside the gap."""
    truth = {row["k"]: row["t"] for row in wearable.samples("eda")}
    ks = [round((v - 1.0) * 1000) for _, v in samples]
    assert len(ks) == len(set(ks)), "duplicated EDA samples"
    assert ks == sorted(ks), "EDA samples out of order"
    for (t, _), k in zip(samples, ks, strict=True):
        assert abs(t - truth[k]) < 0.3, f"EDA sample {k} stamped {t - truth[k]:+.3f} s off"
    missing = sorted(set(range(ks[0], ks[-1] + 1)) - set(ks))
    if gap is None:
        assert missing == [], f"EDA samples lost without a gap: {missing}"
    else:
        start, end = gap
        for k in missing:
            assert start - 0.3 < truth[k] < end + 0.3, f"EDA sample {k} lost outside the gap"
    return missing


@pytest.mark.slow  # streams for STREAM_S (32 s) with a drop-out
async def test_two_devices_stream_drop_and_reconnect(
    ble_emulation: BleEmulation,
    mqtt_broker: Mosquitto,
    collector: Collector,
    tmp_path: Path,
) -> None:
    strap = ble_emulation.add_wearable("RK-STRAP-A", "hci1")
    wrist = ble_emulation.add_wearable("RK-WRIST-B", "hci2", "--no-hrs", "--eda-first")
    session = "drop-reconnect"
    specs = [
        DeviceSpec.parse("hrs:RK-STRAP-A@strapA"),
        DeviceSpec.parse("eda:rekindle-eda-ref:RK-STRAP-A@strapA"),
        DeviceSpec.parse(f"eda:rekindle-eda-ref:{wrist.address}@wristB"),
    ]
    settings = ManagerSettings(
        adapter=CENTRAL,
        scan_timeout=3.0,
        connect_timeout=10.0,
        backoff=Backoff(initial=0.25, factor=2.0, max_delay=2.0, jitter=0.5),
    )
    publisher = Publisher(MqttSettings.from_url(mqtt_broker.url), SITE, session).start()
    manager = DeviceManager(publisher, specs, settings)
    a, b = manager.link("strapA"), manager.link("wristB")
    stop = asyncio.Event()
    runner = asyncio.create_task(manager.run(stop), name="manager")
    try:
        await _wait(a.connected, 90, "strap connect")
        await _wait(b.connected, 90, "wristband connect")
        t_start = time.time()
        await asyncio.sleep(12)
        n_events = len(strap.events)
        strap.command(f"away {AWAY_S}")
        await asyncio.to_thread(strap.wait_event, "gone", 10, n_events)
        back = await asyncio.to_thread(strap.wait_event, "back", AWAY_S + 10, n_events)
        await _wait(a.connected, 90, "strap reconnect")
        while not a.reconnects or a.reconnects[-1].first_data_at is None:
            await asyncio.sleep(0.05)
        remaining = STREAM_S + 3 - (time.time() - t_start)
        await asyncio.sleep(max(remaining, 8.0))
    finally:
        stop.set()
        await asyncio.wait_for(runner, 90)
        await asyncio.to_thread(publisher.close)
    await _wait_ended(collector, session, "strapA", "wristB")

    with collector.lock:
        msgs = [m for m in collector.messages if m.session == session]
    a_all, b_all = _device(msgs, "strapA"), _device(msgs, "wristB")
    a_msgs, b_msgs = a_all.samples, b_all.samples
    assert sorted(a_msgs) == ["eda", "hr", "rr"]
    assert sorted(b_msgs) == ["eda"]

    # --- seq: 0..n-1 per (device, stream), in arrival order, for data and gap streams
    for dev in (a_all, b_all):
        for stream_msgs in dev.samples.values():
            _check_seq(stream_msgs)
        _check_seq(dev.gaps)

    # --- at least STREAM_S seconds of HR, RR and EDA
    for name, stream_msgs in [
        ("hr", a_msgs["hr"]),
        ("rr", a_msgs["rr"]),
        ("eda", a_msgs["eda"]),
        ("eda", b_msgs["eda"]),
    ]:
        s = _samples(stream_msgs)
        assert s[-1][0] - s[0][0] >= STREAM_S, f"{name}: only {s[-1][0] - s[0][0]:.1f} s"
        times = [t for t, _ in s]
        assert times == sorted(times), f"{name}: sample times go backwards"

    # --- status: online, lost, online, offline for the strap; battery reported
    states = [(m.state, m.battery) for m in a_all.status]
    assert [s for s, _ in states] == ["online", "lost", "online", "end"]
    assert states[0][1] == 87
    assert [m.state for m in b_all.status] == ["online", "end"]

    # --- "online" arrives before the device's first sample, "lost" before its gap
    for device in ("strapA", "wristB"):
        first = next(m for m in msgs if m.device == device)
        assert isinstance(first, contract.StatusMessage)
        assert first.state == "online"
    kinds = [(type(m).__name__, getattr(m, "state", None)) for m in msgs if m.device == "strapA"]
    assert kinds.index(("StatusMessage", "lost")) < kinds.index(("GapMessage", None))

    # --- one gap per strap stream, bounded by the last sample before and first after
    gaps: dict[str, contract.GapMessage] = {m.gap_stream: m for m in a_all.gaps}
    assert sorted(gaps) == ["eda", "hr", "rr"]
    assert len(a_all.gaps) == 3
    assert b_all.gaps == []
    gone_t = strap.wait_event("gone", 0, n_events)["t"]
    for name in ("hr", "rr", "eda"):
        s = _samples(a_msgs[name])
        gap = gaps[name]
        before = [t for t, _ in s if t <= gap.start]
        after = [t for t, _ in s if t >= gap.end]
        assert before[-1] == gap.start, f"{name} gap start is not the last sample before"
        assert after[0] == gap.end, f"{name} gap end is not the first sample after"
        assert len(before) + len(after) == len(s), f"{name} samples inside the gap"
        assert gap.start <= gone_t + 0.5
        # the first packet after the return may hold samples measured before it was sent:
        # its stamps reach back by one packet's span (EDA 2 samples at 4 Hz; RR the beats of
        # one 1-s notification); HR is stamped on receipt
        assert gap.end >= back["t"] - REACH_BACK_S[name], (
            f"{name} gap ends {back['t'] - gap.end:.3f} s before the strap came back"
        )

    # --- no EDA sample outside the gap lost or duplicated; the wristband lost nothing
    eda_gap = (gaps["eda"].start, gaps["eda"].end)
    missing = _check_eda_against_truth(_samples(a_msgs["eda"]), strap, eda_gap)
    assert len(missing) >= AWAY_S * 4 * 0.8
    _check_eda_against_truth(_samples(b_msgs["eda"]), wrist, None)
    b_times = [t for t, _ in _samples(b_msgs["eda"])]
    assert sum(eda_gap[0] < t < eda_gap[1] for t in b_times) >= AWAY_S * 4 * 0.8, (
        "the wristband did not keep streaming while the strap was away"
    )

    # --- RR: every beat received once, in order; beats lost only inside the gap
    truth_rr = {row["raw"]: (row["b"], row["t"]) for row in strap.samples("rr")}
    rr = _samples(a_msgs["rr"])
    beats = [truth_rr[round(v * 1024 / 1000)][0] for _, v in rr]
    assert beats == sorted(set(beats)), "RR beats duplicated or out of order"
    for t, v in rr:
        beat, truth_t = truth_rr[round(v * 1024 / 1000)]
        assert -0.05 < t - truth_t < 1.1, f"beat {beat} stamped {t - truth_t:+.3f} s off"
    by_beat = {b: t for b, t in truth_rr.values()}
    for beat in sorted(set(range(beats[0], beats[-1] + 1)) - set(beats)):
        assert gaps["rr"].start - 1.1 < by_beat[beat] < gaps["rr"].end + 0.1, (
            f"beat {beat} lost outside the gap"
        )

    # --- reconnect figures (reported by the test, asserted loosely)
    rec = a.reconnects[-1]
    assert rec.connected_at is not None
    assert rec.first_data_at is not None
    figures = {
        "drop_noticed_after_gone_s": rec.lost_at - gone_t,
        "back_to_connected_s": rec.connected_at - back["t"],
        "back_to_first_data_s": rec.first_data_at - back["t"],
        "drop_to_first_data_s": rec.first_data_at - gone_t,
        "gap_eda_s": gaps["eda"].end - gaps["eda"].start,
        "gap_rr_s": gaps["rr"].end - gaps["rr"].start,
        "attempts": a.stats.attempts,
    }
    # time-stamping accuracy against the wearables' own sample times
    eda_truth = {row["k"]: row["t"] for row in wrist.samples("eda")}
    eda_err = [t - eda_truth[round((v - 1.0) * 1000)] for t, v in _samples(b_msgs["eda"])]
    rr_err = [t - truth_rr[round(v * 1024 / 1000)][1] for t, v in rr]
    figures |= {
        "eda_stamp_err_mean_s": sum(eda_err) / len(eda_err),
        "eda_stamp_err_max_abs_s": max(abs(e) for e in eda_err),
        "rr_stamp_err_mean_s": sum(rr_err) / len(rr_err),
        "rr_stamp_err_max_abs_s": max(abs(e) for e in rr_err),
    }
    print("RECONNECT", json.dumps({k: round(v, 3) for k, v in figures.items()}))
    (tmp_path / "reconnect.json").write_text(json.dumps(figures), encoding="utf-8")
    assert 0 <= figures["back_to_first_data_s"] < 10


async def test_device_that_starts_advertising_late_is_found_by_service(
    ble_emulation: BleEmulation,
    mqtt_broker: Mosquitto,
    collector: Collector,
) -> None:
    """Scanning is already running when the wristband starts advertising (bluezoo announces
    a device once); the target is the profile's service UUID, not a name or address."""
    session = "late-advertiser"
    spec = DeviceSpec.parse(
        "eda:rekindle-eda-ref:service=6e400001-7e1d-4b4b-9a1e-5245d0eda000@late"
    )
    publisher = Publisher(MqttSettings.from_url(mqtt_broker.url), SITE, session).start()
    manager = DeviceManager(publisher, [spec], ManagerSettings(adapter=CENTRAL, scan_timeout=2.0))
    stop = asyncio.Event()
    runner = asyncio.create_task(manager.run(stop), name="manager")
    try:
        await asyncio.sleep(3.0)  # scanning, nothing there yet
        assert not manager.link("late").connected.is_set()
        wrist = ble_emulation.add_wearable(
            "RK-WRIST-L", "hci2", "--no-hrs", "--eda-first", "--delay", "1", wait=False
        )
        await _wait(manager.link("late").connected, 90, "connect to the late advertiser")
        await asyncio.sleep(3.0)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 90)
        await asyncio.to_thread(publisher.close)
    await _wait_ended(collector, session, "late")
    late = _device(collector.session(session), "late")
    assert [m.state for m in late.status] == ["online", "end"]
    assert len(_samples(late.samples["eda"])) >= 8
    _check_eda_against_truth(_samples(late.samples["eda"]), wrist, None)


async def test_polar_pmd_ecg_and_acc_with_heart_rate_on_one_connection(
    ble_emulation: BleEmulation,
    mqtt_broker: Mosquitto,
    collector: Collector,
) -> None:
    """An H10-like strap: HRS plus PMD (ECG uncompressed, ACC delta-compressed)."""
    h10 = ble_emulation.add_wearable("RK-H10", "hci1", "--no-eda", "--pmd")
    session = "pmd"
    specs = [DeviceSpec.parse("hrs:RK-H10@h10"), DeviceSpec.parse("pmd:RK-H10@h10")]
    publisher = Publisher(MqttSettings.from_url(mqtt_broker.url), SITE, session).start()
    # battery re-read every second: exercises the re-read path (the level does not change)
    manager = DeviceManager(
        publisher, specs, ManagerSettings(adapter=CENTRAL, battery_interval=1.0)
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(manager.run(stop), name="manager")
    try:
        await _wait(manager.link("h10").connected, 90, "connect")
        await asyncio.sleep(6.0)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 90)
        await asyncio.to_thread(publisher.close)
    await _wait_ended(collector, session, "h10")
    dev = _device(collector.session(session), "h10")
    assert sorted(dev.samples) == ["acc", "ecg", "hr", "rr"]
    assert [m.state for m in dev.status] == ["online", "end"]
    for msgs in dev.samples.values():
        _check_seq(msgs)
    assert [e["measurement"] for e in h10.events if e["event"] == "pmd"][:2] == [0, 2]

    ecg_truth = {r["k"]: r for r in h10.samples("ecg")}
    ecg = _samples(dev.samples["ecg"])
    assert len(ecg) >= 130 * 4
    ks = [round(v * 1000) for _, v in ecg]
    assert ks == list(range(ks[0], ks[0] + len(ks))), "ECG samples lost or duplicated"
    assert all(abs(t - ecg_truth[k]["t"]) < 0.1 for (t, _), k in zip(ecg, ks, strict=True))

    acc_truth = {r["k"]: r for r in h10.samples("acc")}
    acc_msgs = dev.samples["acc"]
    triples = [tuple(v) for m in acc_msgs for v in m.values]  # type: ignore[arg-type]
    times = [t for m in acc_msgs for t in m.times()]
    assert len(triples) >= 25 * 4
    first = next(k for k, r in acc_truth.items() if r["sent"])
    for i, (xyz, t) in enumerate(zip(triples, times, strict=True)):
        truth = acc_truth[first + i]
        assert xyz == tuple(v / 1000 for v in truth["mg"]), f"ACC sample {first + i}"
        assert abs(t - truth["t"]) < 0.1


async def test_wrong_device_is_retried_with_capped_backoff_and_never_online(
    ble_emulation: BleEmulation,
    mqtt_broker: Mosquitto,
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The strap is there but has no EDA service: every attempt connects, finds the
    characteristic missing and backs off; each attempt is logged; no 'online' status."""
    ble_emulation.add_wearable("RK-STRAP-A", "hci1", "--no-eda")
    session = "backoff"
    spec = DeviceSpec.parse("eda:rekindle-eda-ref:RK-STRAP-A@strap")
    backoff = Backoff(initial=0.2, factor=2.0, max_delay=0.8, jitter=0.5)
    publisher = Publisher(MqttSettings.from_url(mqtt_broker.url), SITE, session).start()
    manager = DeviceManager(publisher, [spec], ManagerSettings(adapter=CENTRAL, backoff=backoff))
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="rekindle.ingest.ble.manager")
    runner = asyncio.create_task(manager.run(stop), name="manager")
    try:
        await asyncio.sleep(6.0)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 90)
        await asyncio.to_thread(publisher.close)
    attempts = [r for r in caplog.records if "reconnect attempt" in r.getMessage()]
    assert len(attempts) >= 4
    delays = [float(r.args[3]) for r in attempts]  # type: ignore[index, arg-type]
    for n, delay in enumerate(delays):
        base = min(0.8, 0.2 * 2**n)
        assert base * 0.5 <= delay <= base, f"attempt {n + 1}: {delay} s"
    assert any("has no characteristic" in r.getMessage() for r in caplog.records)
    await _wait_ended(collector, session, "strap")  # after any earlier status on that topic
    states = [m.state for m in collector.session(session) if isinstance(m, contract.StatusMessage)]
    assert "online" not in states
