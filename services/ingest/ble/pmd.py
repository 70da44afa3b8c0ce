"""Polar Measurement Data (PMD) frames: ECG and ACC from a Polar H10 (pure decoding only).

Service ``FB005C80-02E7-F387-1CAD-8ACD2D8DF0C8``; data notifications come on
``FB005C82-...`` after a start command on the control point ``FB005C81-...``. A data frame is::

    byte 0      measurement type (0 = ECG, 2 = ACC; others not decoded here)
    bytes 1-8   uint64 LE timestamp of the last sample, ns (Polar device clock)
    byte 9      frame type; bit 7 set = delta-compressed, bits 0-6 = frame type number
    bytes 10..  samples

Uncompressed frames: ECG type 0 = int24 LE µV per sample; ACC type 0/1/2 = int8/int16/int24
LE (x, y, z) in mG.

Compressed (delta) frames, as Polar's SDK decodes them: a reference sample (one signed value
per channel, ``ceil(resolution / 8)`` bytes LE each), then blocks of ``[delta_bits: u8]
[count: u8]`` followed by ``count * channels * delta_bits`` bits padded to whole bytes. The bit
stream is read **least-significant bit first** within each byte, and each delta's first bit is
its least significant; deltas are two's-complement and accumulate from the previous sample.
``resolution`` comes from the device's PMD settings (16 for the H10's ACC).

Output units follow the wire contract: ECG in mV, ACC in g. :class:`PmdFeed` builds the
control-point start/stop commands the device manager writes (``pmd:`` devices); the
device's settings are not queried first (Polar H10 values are assumed). See ``docs/ble.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from rekindle.ingest.ble.errors import DecodeError

PMD_SERVICE: Final = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL_POINT: Final = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA: Final = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

MEASUREMENT_ECG: Final = 0
MEASUREMENT_ACC: Final = 2
_HEADER: Final = 10
_ACC_SIZES: Final = {0: 1, 1: 2, 2: 3}


@dataclass(frozen=True, slots=True)
class PmdFrame:
    """A decoded PMD frame; ``samples`` are ``(mV,)`` for ECG or ``(x, y, z)`` g for ACC."""

    measurement: Literal["ecg", "acc"]
    timestamp_ns: int
    frame_type: int
    compressed: bool
    samples: tuple[tuple[float, ...], ...]


def _signed(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little", signed=True)


def decode_delta_frames(
    data: bytes, channels: int, resolution: int, *, char: str = "pmd"
) -> list[list[int]]:
    """Decode a delta-compressed sample block into raw integer samples per channel."""
    if channels <= 0 or not 1 <= resolution <= 32:
        raise ValueError(f"channels {channels} / resolution {resolution} out of range")
    ref_size = (resolution + 7) // 8
    if len(data) < ref_size * channels:
        raise DecodeError(char, data, f"shorter than the {ref_size * channels}-byte reference")
    current = [_signed(data, i * ref_size, ref_size) for i in range(channels)]
    samples = [list(current)]
    pos = ref_size * channels
    while pos < len(data):
        if pos + 2 > len(data):
            raise DecodeError(char, data, "truncated delta block header", pos)
        bits, count = data[pos], data[pos + 1]
        pos += 2
        if not 1 <= bits <= 32:
            raise DecodeError(char, data, f"delta width {bits} bits is not in 1-32", pos - 2)
        length = (count * channels * bits + 7) // 8
        if pos + length > len(data):
            raise DecodeError(
                char, data, f"delta block needs {length} bytes, {len(data) - pos} left", pos
            )
        stream = int.from_bytes(data[pos : pos + length], "little")  # bit i = LSB-first order
        mask, sign = (1 << bits) - 1, 1 << (bits - 1)
        offset = 0
        for _ in range(count):
            for ch in range(channels):
                raw = (stream >> offset) & mask
                offset += bits
                current[ch] += raw - (1 << bits) if raw & sign else raw
            samples.append(list(current))
        pos += length
    return samples


def decode_pmd_frame(
    data: bytes, *, acc_resolution: int = 16, ecg_resolution: int = 14
) -> PmdFrame:
    """Decode one PMD data notification (ECG or ACC).

    Raises:
        DecodeError: unknown measurement or frame type, or a malformed sample block.
    """
    char = "pmd"
    data = bytes(data)
    if len(data) < _HEADER + 1:
        raise DecodeError(char, data, f"shorter than the {_HEADER}-byte header plus data")
    kind = data[0]
    timestamp = int.from_bytes(data[1:9], "little")
    compressed = bool(data[9] & 0x80)
    frame_type = data[9] & 0x7F
    body = data[_HEADER:]
    if kind == MEASUREMENT_ECG:
        if compressed:
            raw = [s[0] for s in decode_delta_frames(body, 1, ecg_resolution, char=char)]
        elif frame_type == 0:
            if len(body) % 3:
                raise DecodeError(char, data, f"ECG body of {len(body)} bytes is not int24s")
            raw = [_signed(body, i, 3) for i in range(0, len(body), 3)]
        else:
            raise DecodeError(char, data, f"unknown ECG frame type {frame_type}", 9)
        return PmdFrame("ecg", timestamp, frame_type, compressed, tuple((v / 1000.0,) for v in raw))
    if kind == MEASUREMENT_ACC:
        if compressed:
            triples = decode_delta_frames(body, 3, acc_resolution, char=char)
        elif frame_type in _ACC_SIZES:
            size = _ACC_SIZES[frame_type]
            if len(body) % (3 * size):
                raise DecodeError(
                    char, data, f"ACC body of {len(body)} bytes is not (x, y, z) int{8 * size}s"
                )
            triples = [
                [_signed(body, i + k * size, size) for k in range(3)]
                for i in range(0, len(body), 3 * size)
            ]
        else:
            raise DecodeError(char, data, f"unknown ACC frame type {frame_type}", 9)
        return PmdFrame(
            "acc",
            timestamp,
            frame_type,
            compressed,
            tuple(tuple(v / 1000.0 for v in t) for t in triples),
        )
    raise DecodeError(char, data, f"measurement type {kind} is not decoded (0 ECG, 2 ACC)", 0)


# ----------------------------------------------------------------------- control point

PMD_OP_GET_SETTINGS: Final = 0x01
PMD_OP_START: Final = 0x02
PMD_OP_STOP: Final = 0x03
PMD_RESPONSE: Final = 0xF0
_SETTING_RATE: Final = 0x00
_SETTING_RESOLUTION: Final = 0x01
_SETTING_RANGE: Final = 0x02

PMD_ERRORS: Final = {
    0: "success",
    1: "invalid op code",
    2: "invalid measurement type",
    3: "not supported",
    4: "invalid length",
    5: "invalid parameter",
    6: "already in state",
    7: "invalid resolution",
    8: "invalid sample rate",
    9: "invalid range",
    10: "invalid MTU",
    11: "invalid number of channels",
    12: "invalid state",
    13: "device in charger",
}


@dataclass(frozen=True, slots=True)
class PmdFeed:
    """What to stream from a Polar PMD service (defaults: Polar H10, ECG 130 Hz, ACC 25 Hz
    +-8 g). ``acc_hz = 0`` or ``ecg_hz = 0`` leaves that measurement off."""

    ecg_hz: int = 130
    ecg_resolution: int = 14
    acc_hz: int = 25
    acc_resolution: int = 16
    acc_range_g: int = 8

    def start_commands(self) -> list[bytes]:
        """Control-point writes that start the measurements."""
        out = []
        if self.ecg_hz:
            out.append(
                bytes([PMD_OP_START, MEASUREMENT_ECG])
                + _setting(_SETTING_RATE, self.ecg_hz)
                + _setting(_SETTING_RESOLUTION, self.ecg_resolution)
            )
        if self.acc_hz:
            out.append(
                bytes([PMD_OP_START, MEASUREMENT_ACC])
                + _setting(_SETTING_RATE, self.acc_hz)
                + _setting(_SETTING_RESOLUTION, self.acc_resolution)
                + _setting(_SETTING_RANGE, self.acc_range_g)
            )
        return out

    def stop_commands(self) -> list[bytes]:
        kinds = [
            k for k, on in ((MEASUREMENT_ECG, self.ecg_hz), (MEASUREMENT_ACC, self.acc_hz)) if on
        ]
        return [bytes([PMD_OP_STOP, k]) for k in kinds]


def _setting(kind: int, value: int) -> bytes:
    return bytes([kind, 1]) + value.to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class PmdResponse:
    op: int
    measurement: int
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def reason(self) -> str:
        return PMD_ERRORS.get(self.status, f"error {self.status}")


def decode_control_response(data: bytes) -> PmdResponse:
    """Decode a control-point indication ``[0xF0, op, measurement, status, ...]``."""
    data = bytes(data)
    if len(data) < 4 or data[0] != PMD_RESPONSE:
        raise DecodeError("pmd-cp", data, "not a PMD control point response")
    return PmdResponse(data[1], data[2], data[3])
