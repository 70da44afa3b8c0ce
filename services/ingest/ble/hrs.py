"""Heart Rate Service (0x180D) and Battery Service (0x180F) characteristics, per the Bluetooth
GATT specification supplement.

Heart Rate Measurement (0x2A37) layout, little-endian::

    flags  uint8    bit0 HR is uint16 (else uint8)
                    bit1 sensor contact detected    (meaningful only if bit2 is set)
                    bit2 sensor contact supported
                    bit3 energy expended present     (uint16, kJ)
                    bit4 RR intervals present        (uint16 each, 1/1024 s)
                    bit5-7 reserved for future use
    hr     uint8 | uint16  bpm
    ee     uint16          kJ, if bit3
    rr     uint16 * n      1/1024 s, if bit4 (any number; as many as fit in the ATT MTU)

The decoder is strict: reserved flag bits, truncated fields, a dangling odd byte in the RR
list or bytes after the last field raise :class:`DecodeError`. Real captures that violate the
format (see ``tests/fixtures/ble_hrm_0x2a37_payloads``) are rejected, never half-decoded.
Quirks that are still well-formed are kept as reported: some straps set "contact detected"
without "contact supported"; :attr:`HeartRateMeasurement.contact` then reads ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from rekindle.ingest.ble.errors import DecodeError

HEART_RATE_SERVICE: Final = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT: Final = "00002a37-0000-1000-8000-00805f9b34fb"
BODY_SENSOR_LOCATION: Final = "00002a38-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE: Final = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL: Final = "00002a19-0000-1000-8000-00805f9b34fb"

FLAG_HR_UINT16: Final = 0x01
FLAG_CONTACT_DETECTED: Final = 0x02
FLAG_CONTACT_SUPPORTED: Final = 0x04
FLAG_ENERGY_EXPENDED: Final = 0x08
FLAG_RR: Final = 0x10
FLAGS_RESERVED: Final = 0xE0

#: RR intervals are transmitted in units of 1/1024 s.
RR_UNITS_PER_S: Final = 1024

BODY_SENSOR_LOCATIONS: Final = {
    0: "other",
    1: "chest",
    2: "wrist",
    3: "finger",
    4: "hand",
    5: "ear lobe",
    6: "foot",
}


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One decoded 0x2A37 notification.

    ``rr_raw`` are the RR intervals as sent (1/1024 s); :attr:`rr_ms` converts them to ms.
    """

    hr_bpm: int
    hr_uint16: bool = False
    contact_supported: bool = False
    contact_detected: bool = False
    energy_expended_kj: int | None = None
    rr_raw: tuple[int, ...] = ()
    rr_present: bool = False

    @property
    def rr_ms(self) -> tuple[float, ...]:
        return tuple(raw * 1000.0 / RR_UNITS_PER_S for raw in self.rr_raw)

    @property
    def contact(self) -> bool | None:
        """Skin contact: True/False when the sensor supports detecting it, else ``None``."""
        return self.contact_detected if self.contact_supported else None

    @property
    def flags(self) -> int:
        return (
            (FLAG_HR_UINT16 if self.hr_uint16 else 0)
            | (FLAG_CONTACT_DETECTED if self.contact_detected else 0)
            | (FLAG_CONTACT_SUPPORTED if self.contact_supported else 0)
            | (FLAG_ENERGY_EXPENDED if self.energy_expended_kj is not None else 0)
            | (FLAG_RR if self.rr_present or self.rr_raw else 0)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "characteristic": "2a37",
            "flags": f"0x{self.flags:02x}",
            "hr_bpm": self.hr_bpm,
            "hr_uint16": self.hr_uint16,
            "contact_supported": self.contact_supported,
            "contact_detected": self.contact_detected,
            "contact": self.contact,
            "energy_expended_kj": self.energy_expended_kj,
            "rr_raw_1024ths": list(self.rr_raw),
            "rr_ms": [round(x, 3) for x in self.rr_ms],
        }


def _u16(data: bytes, offset: int) -> int:
    return data[offset] | (data[offset + 1] << 8)


def decode_heart_rate_measurement(data: bytes) -> HeartRateMeasurement:
    """Decode a Heart Rate Measurement (0x2A37) value.

    Raises:
        DecodeError: the payload is empty, truncated, has reserved flag bits set, an odd
            trailing byte in the RR list, or bytes after the last field.
    """
    char = "2a37"
    data = bytes(data)
    if not data:
        raise DecodeError(char, data, "empty value (need at least flags and heart rate)")
    flags = data[0]
    if flags & FLAGS_RESERVED:
        raise DecodeError(
            char, data, f"reserved flag bits set (flags 0x{flags:02x}); not a 0x2A37 value", 0
        )
    pos = 1
    hr_uint16 = bool(flags & FLAG_HR_UINT16)
    hr_size = 2 if hr_uint16 else 1
    if len(data) < pos + hr_size:
        raise DecodeError(
            char,
            data,
            f"truncated: heart rate needs {hr_size} byte(s), value has {len(data)}",
            pos,
        )
    hr = _u16(data, pos) if hr_uint16 else data[pos]
    pos += hr_size
    energy: int | None = None
    if flags & FLAG_ENERGY_EXPENDED:
        if len(data) < pos + 2:
            raise DecodeError(char, data, "truncated: energy expended needs 2 bytes", pos)
        energy = _u16(data, pos)
        pos += 2
    rr: list[int] = []
    rr_present = bool(flags & FLAG_RR)
    if rr_present:
        rest = len(data) - pos
        if rest % 2:
            raise DecodeError(
                char,
                data,
                f"RR list has {rest} bytes, an odd number (each RR is uint16)",
                len(data) - 1,
            )
        rr = [_u16(data, p) for p in range(pos, len(data), 2)]
        pos = len(data)
    if pos != len(data):
        raise DecodeError(
            char, data, f"{len(data) - pos} unexpected byte(s) after the last field", pos
        )
    return HeartRateMeasurement(
        hr_bpm=hr,
        hr_uint16=hr_uint16,
        contact_supported=bool(flags & FLAG_CONTACT_SUPPORTED),
        contact_detected=bool(flags & FLAG_CONTACT_DETECTED),
        energy_expended_kj=energy,
        rr_raw=tuple(rr),
        rr_present=rr_present,
    )


def encode_heart_rate_measurement(m: HeartRateMeasurement) -> bytes:
    """Inverse of :func:`decode_heart_rate_measurement` (used by the emulated wearable)."""
    if not 0 <= m.hr_bpm <= (0xFFFF if m.hr_uint16 else 0xFF):
        size = "uint16" if m.hr_uint16 else "uint8"
        raise ValueError(f"hr_bpm {m.hr_bpm} does not fit in {size}")
    out = bytearray([m.flags])
    out += m.hr_bpm.to_bytes(2 if m.hr_uint16 else 1, "little")
    if m.energy_expended_kj is not None:
        out += m.energy_expended_kj.to_bytes(2, "little")
    for raw in m.rr_raw:
        out += raw.to_bytes(2, "little")
    return bytes(out)


def rr_ms_to_raw(rr_ms: float) -> int:
    """Nearest 1/1024 s count for an RR interval in ms."""
    return round(rr_ms * RR_UNITS_PER_S / 1000.0)


@dataclass(frozen=True, slots=True)
class BodySensorLocation:
    code: int

    @property
    def name(self) -> str:
        return BODY_SENSOR_LOCATIONS.get(self.code, "reserved")

    def to_json(self) -> dict[str, object]:
        return {"characteristic": "2a38", "code": self.code, "location": self.name}


def decode_body_sensor_location(data: bytes) -> BodySensorLocation:
    """Decode Body Sensor Location (0x2A38): one uint8; 7-255 are reserved and rejected."""
    data = bytes(data)
    if len(data) != 1:
        raise DecodeError("2a38", data, f"expected exactly 1 byte, got {len(data)}")
    if data[0] not in BODY_SENSOR_LOCATIONS:
        raise DecodeError("2a38", data, f"location code {data[0]} is reserved", 0)
    return BodySensorLocation(data[0])


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    percent: int

    def to_json(self) -> dict[str, object]:
        return {"characteristic": "2a19", "percent": self.percent}


def decode_battery_level(data: bytes) -> BatteryLevel:
    """Decode Battery Level (0x2A19): one uint8 percentage, 0-100."""
    data = bytes(data)
    if len(data) != 1:
        raise DecodeError("2a19", data, f"expected exactly 1 byte, got {len(data)}")
    if data[0] > 100:
        raise DecodeError("2a19", data, f"{data[0]} is not a percentage (0-100)", 0)
    return BatteryLevel(data[0])


_HEX_RE: Final = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")


def parse_hex(text: str) -> bytes:
    """Parse ``"16 34 e4 04"``, ``"1634e404"``, ``"16:34:e4:04"`` or ``"0x16 0x34"`` to bytes."""
    parts = [p for p in re.split(r"[\s:,-]+", text.strip()) if p]
    if not parts:
        raise ValueError("no hex bytes given")
    out = bytearray()
    for part in parts:
        if not _HEX_RE.match(part):
            raise ValueError(f"{part!r} is not hexadecimal")
        digits = part[2:] if part.lower().startswith("0x") else part
        if len(digits) % 2:
            raise ValueError(f"{part!r} has an odd number of hex digits")
        out += bytes.fromhex(digits)
    return bytes(out)
