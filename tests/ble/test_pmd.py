"""Polar PMD frames: known answers, an independent delta encoder and round-trips.

No real PMD captures are available to this project; the known answers are worked out by hand
from the frame layout documented in ``services/ingest/ble/pmd.py``.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.ble.errors import DecodeError
from services.ingest.ble.pmd import decode_delta_frames, decode_pmd_frame

TS = (123_456_789_000).to_bytes(8, "little")


def test_compressed_acc_known_answer() -> None:
    # reference (1000, -20, 5) as int16; one block of 2 samples with 4-bit deltas
    # (+1, -1, +3), (-8, +7, 0): nibbles LSB-first -> f1 83 07
    body = bytes.fromhex("e803ecff0500" "0402" "f18307")
    frame = decode_pmd_frame(bytes([2]) + TS + bytes([0x80]) + body)
    assert frame.measurement == "acc"
    assert frame.compressed
    assert frame.timestamp_ns == 123_456_789_000
    assert frame.samples == ((1.0, -0.02, 0.005), (1.001, -0.021, 0.008), (0.993, -0.014, 0.008))


def test_uncompressed_ecg_and_acc() -> None:
    ecg = decode_pmd_frame(bytes([0]) + TS + bytes([0]) + bytes.fromhex("e80300" "18fcff"))
    assert ecg.samples == ((1.0,), (-1.0,))  # 1000 µV, -1000 µV -> mV
    acc = decode_pmd_frame(bytes([2]) + TS + bytes([1]) + bytes.fromhex("e803" "0000" "18fc"))
    assert acc.samples == ((1.0, 0.0, -1.0),)


def _encode_deltas(samples: list[list[int]], resolution: int, bits: int) -> bytes:
    """Independent encoder: an explicit list of bits, LSB of each delta first."""
    size = (resolution + 7) // 8
    out = bytearray()
    for v in samples[0]:
        out += v.to_bytes(size, "little", signed=True)
    rest = samples[1:]
    for start in range(0, len(rest), 255):
        block = rest[start : start + 255]
        prev = samples[start]
        bitlist: list[int] = []
        for sample in block:
            for ch, v in enumerate(sample):
                delta = (v - prev[ch]) & ((1 << bits) - 1)
                bitlist += [(delta >> i) & 1 for i in range(bits)]
            prev = sample
        bitlist += [0] * (-len(bitlist) % 8)
        out += bytes([bits, len(block)])
        out += bytes(sum(b << i for i, b in enumerate(bitlist[j : j + 8]))
                     for j in range(0, len(bitlist), 8))
    return bytes(out)


@st.composite
def delta_signals(draw: st.DrawFn) -> tuple[list[list[int]], int, int, int]:
    channels = draw(st.sampled_from([1, 3]))
    resolution = draw(st.sampled_from([14, 16, 22, 24]))
    bits = draw(st.integers(2, 16))
    lim = 1 << (bits - 1)
    ref = [draw(st.integers(-(1 << (resolution - 2)), (1 << (resolution - 2)) - 1))
           for _ in range(channels)]
    samples = [ref]
    for _ in range(draw(st.integers(0, 300))):
        samples.append([v + draw(st.integers(-lim, lim - 1)) for v in samples[-1]])
    return samples, channels, resolution, bits


@given(delta_signals())
def test_delta_round_trip(case: tuple[list[list[int]], int, int, int]) -> None:
    samples, channels, resolution, bits = case
    assert decode_delta_frames(_encode_deltas(samples, resolution, bits), channels,
                               resolution) == samples


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (bytes([2]) + TS, "shorter than"),
        (bytes([7]) + TS + bytes([0, 0]), "measurement type 7"),
        (bytes([0]) + TS + bytes([5, 0, 0, 0]), "unknown ECG frame type"),
        (bytes([0]) + TS + bytes([0, 1, 2]), "not int24"),
        (bytes([2]) + TS + bytes([0x80]) + bytes.fromhex("e803ecff0500" "04"), "truncated"),
        (bytes([2]) + TS + bytes([0x80]) + bytes.fromhex("e803ecff0500" "0402" "f1"),
         "needs 3 bytes"),
        (bytes([2]) + TS + bytes([0x80]) + bytes.fromhex("e803ecff0500" "0002"), "delta width"),
    ],
)
def test_malformed_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_pmd_frame(frame)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_pmd_frame(raw)
