"""Polar PMD frames: known answers, an independent delta encoder and round-trips.

No real PMD captures are available to this project; the known answers are worked out by hand
from the frame layout documented in ``services/ingest/ble/pmd.py``.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle.ingest.ble.errors import DecodeError
from rekindle.ingest.ble.pmd import (
    PmdFeed,
    decode_control_response,
    decode_delta_frames,
    decode_pmd_frame,
)
from tests.ble.pmd_encode import encode_deltas

TS = (123_456_789_000).to_bytes(8, "little")


def test_compressed_acc_known_answer() -> None:
    # reference (1000, -20, 5) as int16; one block of 2 samples with 4-bit deltas
    # (+1, -1, +3), (-8, +7, 0): nibbles LSB-first -> f1 83 07
    body = bytes.fromhex("e803ecff05000402f18307")
    frame = decode_pmd_frame(bytes([2]) + TS + bytes([0x80]) + body)
    assert frame.measurement == "acc"
    assert frame.compressed
    assert frame.timestamp_ns == 123_456_789_000
    assert frame.samples == ((1.0, -0.02, 0.005), (1.001, -0.021, 0.008), (0.993, -0.014, 0.008))


def test_uncompressed_ecg_and_acc() -> None:
    ecg = decode_pmd_frame(bytes([0]) + TS + bytes([0]) + bytes.fromhex("e8030018fcff"))
    assert ecg.samples == ((1.0,), (-1.0,))  # 1000 µV, -1000 µV -> mV
    acc = decode_pmd_frame(bytes([2]) + TS + bytes([1]) + bytes.fromhex("e803000018fc"))
    assert acc.samples == ((1.0, 0.0, -1.0),)


@st.composite
def delta_signals(draw: st.DrawFn) -> tuple[list[list[int]], int, int, int]:
    channels = draw(st.sampled_from([1, 3]))
    resolution = draw(st.sampled_from([14, 16, 22, 24]))
    bits = draw(st.integers(2, 16))
    lim = 1 << (bits - 1)
    ref = [
        draw(st.integers(-(1 << (resolution - 2)), (1 << (resolution - 2)) - 1))
        for _ in range(channels)
    ]
    samples = [ref]
    for _ in range(draw(st.integers(0, 300))):
        samples.append([v + draw(st.integers(-lim, lim - 1)) for v in samples[-1]])
    return samples, channels, resolution, bits


@given(delta_signals())
def test_delta_round_trip(case: tuple[list[list[int]], int, int, int]) -> None:
    samples, channels, resolution, bits = case
    assert (
        decode_delta_frames(encode_deltas(samples, resolution, bits), channels, resolution)
        == samples
    )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (bytes([2]) + TS, "shorter than"),
        (bytes([7]) + TS + bytes([0, 0]), "measurement type 7"),
        (bytes([0]) + TS + bytes([5, 0, 0, 0]), "unknown ECG frame type"),
        (bytes([0]) + TS + bytes([0, 1, 2]), "not int24"),
        (bytes([2]) + TS + bytes([0x80]) + bytes.fromhex("e803ecff050004"), "truncated"),
        (bytes([2]) + TS + bytes([0x80]) + bytes.fromhex("e803ecff05000402f1"), "needs 3 bytes"),
        (bytes([2]) + TS + bytes([0x80]) + bytes.fromhex("e803ecff05000002"), "delta width"),
    ],
)
def test_malformed_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_pmd_frame(frame)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_pmd_frame(raw)


def test_start_commands_match_polar_h10_examples() -> None:
    feed = PmdFeed()  # ECG 130 Hz / 14 bit, ACC 25 Hz / 16 bit / 8 g
    assert [c.hex(" ") for c in feed.start_commands()] == [
        "02 00 00 01 82 00 01 01 0e 00",
        "02 02 00 01 19 00 01 01 10 00 02 01 08 00",
    ]
    assert feed.stop_commands() == [b"\x03\x00", b"\x03\x02"]
    assert PmdFeed(ecg_hz=0).start_commands()[0][1] == 2


def test_control_point_responses() -> None:
    ok = decode_control_response(bytes([0xF0, 0x02, 0x00, 0x00, 0x00]))
    assert ok.ok
    refused = decode_control_response(bytes([0xF0, 0x02, 0x02, 0x08]))
    assert not refused.ok
    assert refused.reason == "invalid sample rate"
    with pytest.raises(DecodeError, match="not a PMD control point response"):
        decode_control_response(b"\x01\x02")
