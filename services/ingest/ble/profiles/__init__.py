"""Declarative GATT device profiles (one TOML file per device), decoded without device code.

A profile says where a sensor's samples live (service and characteristic UUIDs), how a
notification is laid out (optional packet counter, header bytes, sample format), how raw
numbers become contract units (scale/offset, or resistance to conductance for EDA), the
nominal sample rate used to time-stamp multi-sample packets, and an optional start/stop
command written to the device. ``docs/ble.md`` documents every key.

Shipped profiles live next to this module; :func:`load_profile` accepts a shipped name or a
path to the user's own file.
"""

from __future__ import annotations

import struct
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final, Literal, cast, get_args

from rekindle.contract import PHYSICAL_RANGE, SAMPLE_STREAMS, SampleStream
from rekindle.ingest.ble.errors import DecodeError, ProfileError
from rekindle.ingest.ble.uuids import normalize_uuid

SampleFormat = Literal[
    "u8", "i8", "u16le", "i16le", "u16be", "i16be", "u24le", "u32le", "i32le", "f32le"
]
Unit = Literal["uS", "nS", "ohm", "kohm", "native"]
TimestampRule = Literal["host"]

SAMPLE_FORMATS: Final[tuple[SampleFormat, ...]] = get_args(SampleFormat)
UNITS: Final[tuple[Unit, ...]] = get_args(Unit)
TIMESTAMP_RULES: Final[tuple[TimestampRule, ...]] = get_args(TimestampRule)

_SIZES: Final[dict[str, int]] = {
    "u8": 1,
    "i8": 1,
    "u16le": 2,
    "i16le": 2,
    "u16be": 2,
    "i16be": 2,
    "u24le": 3,
    "u32le": 4,
    "i32le": 4,
    "f32le": 4,
}


def format_size(fmt: SampleFormat) -> int:
    return _SIZES[fmt]


def read_number(fmt: SampleFormat, data: bytes, offset: int) -> float:
    """Read one number of format ``fmt`` at ``offset`` (caller checks the length)."""
    size = _SIZES[fmt]
    chunk = data[offset : offset + size]
    if fmt == "f32le":
        return float(struct.unpack("<f", chunk)[0])
    order: Literal["little", "big"] = "big" if fmt.endswith("be") else "little"
    return float(int.from_bytes(chunk, order, signed=fmt.startswith("i")))


def write_number(fmt: SampleFormat, value: float) -> bytes:
    """Inverse of :func:`read_number` (used by the emulated wearable and the tests)."""
    if fmt == "f32le":
        return struct.pack("<f", value)
    order: Literal["little", "big"] = "big" if fmt.endswith("be") else "little"
    return int(value).to_bytes(_SIZES[fmt], order, signed=fmt.startswith("i"))


@dataclass(frozen=True, slots=True)
class GattCommand:
    """A value written to ``characteristic`` (e.g. "start streaming")."""

    characteristic: str
    value: bytes
    response: bool = True


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A validated device profile. See ``docs/ble.md`` for the TOML keys."""

    name: str
    description: str
    stream: SampleStream
    service: str
    characteristic: str
    sample_format: SampleFormat
    rate_hz: float
    scale: float = 1.0
    offset: float = 0.0
    unit: Unit = "native"
    counter: SampleFormat | None = None
    header_bytes: int = 0
    samples_per_packet: int = 0
    timestamps: TimestampRule = "host"
    start: GattCommand | None = None
    stop: GattCommand | None = None
    devices: tuple[str, ...] = ()
    source: str = "<memory>"

    @property
    def sample_size(self) -> int:
        return _SIZES[self.sample_format]

    @property
    def prefix_size(self) -> int:
        return (0 if self.counter is None else _SIZES[self.counter]) + self.header_bytes

    def convert(self, raw: float) -> float:
        """Raw number -> contract unit (µS for EDA)."""
        value = raw * self.scale + self.offset
        if self.unit == "ohm":
            return 1e6 / value if value > 0 else float("inf")
        if self.unit == "kohm":
            return 1e3 / value if value > 0 else float("inf")
        if self.unit == "nS":
            return value / 1000.0
        return value

    def decode(self, data: bytes) -> ProfilePacket:
        """Decode one notification into samples in the stream's contract unit.

        Raises:
            DecodeError: wrong length, or a sample outside the stream's physical range.
        """
        data = bytes(data)
        char = f"profile {self.name}"
        body = len(data) - self.prefix_size
        if body < 0:
            raise DecodeError(char, data, f"shorter than the {self.prefix_size}-byte packet header")
        size = self.sample_size
        if body % size:
            raise DecodeError(
                char,
                data,
                f"{body} sample bytes is not a multiple of the {size}-byte {self.sample_format}",
            )
        count = body // size
        if count == 0:
            raise DecodeError(char, data, "no samples in the value")
        if self.samples_per_packet and count != self.samples_per_packet:
            raise DecodeError(
                char, data, f"{count} samples, the profile expects {self.samples_per_packet}"
            )
        counter = None if self.counter is None else int(read_number(self.counter, data, 0))
        low, high = PHYSICAL_RANGE[self.stream]
        values: list[float] = []
        for i in range(count):
            pos = self.prefix_size + i * size
            value = self.convert(read_number(self.sample_format, data, pos))
            if not low <= value <= high:
                raise DecodeError(
                    char,
                    data,
                    f"sample {i} = {value:g} is outside the physical range [{low:g}, {high:g}] "
                    f"of {self.stream}",
                    pos,
                )
            values.append(value)
        return ProfilePacket(counter, tuple(values))

    def encode(self, values: list[float] | tuple[float, ...], counter: int = 0) -> bytes:
        """Build a notification carrying ``values`` (contract units); linear units only."""
        if self.unit not in ("uS", "native"):
            raise ValueError(f"encode supports linear units only, not {self.unit}")
        out = bytearray()
        if self.counter is not None:
            out += write_number(self.counter, counter % (1 << (8 * _SIZES[self.counter])))
        out += bytes(self.header_bytes)
        for v in values:
            raw = (v - self.offset) / self.scale
            out += write_number(
                self.sample_format, raw if self.sample_format == "f32le" else round(raw)
            )
        return bytes(out)


@dataclass(frozen=True, slots=True)
class ProfilePacket:
    counter: int | None
    values: tuple[float, ...]


def _get(table: dict[str, object], key: str, kind: type, source: str, path: str) -> object:
    if key not in table:
        raise ProfileError(source, f"{path}{key}", "required key is missing")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProfileError(
            source, f"{path}{key}", f"expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _table(doc: dict[str, object], key: str, source: str, *, required: bool) -> dict[str, object]:
    if key not in doc:
        if required:
            raise ProfileError(source, key, "required table is missing")
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise ProfileError(source, key, "must be a table")
    return cast(dict[str, object], value)


def _check_keys(table: dict[str, object], allowed: set[str], source: str, path: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ProfileError(
            source, f"{path}{extra[0]}", f"unknown key; valid: {', '.join(sorted(allowed))}"
        )


def _choice(value: object, valid: tuple[str, ...], source: str, key: str) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ProfileError(source, key, f"{value!r} is not one of {', '.join(valid)}")
    return value


def _uuid(value: object, source: str, key: str) -> str:
    if not isinstance(value, str):
        raise ProfileError(source, key, "expected a UUID string")
    try:
        return normalize_uuid(value)
    except ValueError as exc:
        raise ProfileError(source, key, str(exc)) from exc


def _command(table: dict[str, object], source: str, key: str) -> GattCommand | None:
    if not table:
        return None
    _check_keys(table, {"characteristic", "value", "response"}, source, f"{key}.")
    value = _get(table, "value", str, source, f"{key}.")
    try:
        payload = bytes.fromhex(cast(str, value).replace(" ", ""))
    except ValueError as exc:
        raise ProfileError(source, f"{key}.value", "must be hex bytes, e.g. '01 00'") from exc
    response = table.get("response", True)
    if not isinstance(response, bool):
        raise ProfileError(source, f"{key}.response", "expected true or false")
    return GattCommand(
        _uuid(
            _get(table, "characteristic", str, source, f"{key}."), source, f"{key}.characteristic"
        ),
        payload,
        response,
    )


def parse_profile(doc: dict[str, object], source: str = "<memory>") -> DeviceProfile:
    """Validate a parsed TOML document into a :class:`DeviceProfile`."""
    _check_keys(
        doc,
        {"name", "description", "stream", "devices", "gatt", "packet", "conversion", "timing"},
        source,
        "",
    )
    name = cast(str, _get(doc, "name", str, source, ""))
    description = cast(str, doc.get("description", ""))
    stream = _choice(_get(doc, "stream", str, source, ""), SAMPLE_STREAMS, source, "stream")
    if stream in ("acc", "rr"):
        raise ProfileError(source, "stream", f"{stream} is not supported by profiles")
    devices = doc.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise ProfileError(source, "devices", "expected a list of strings")

    gatt = _table(doc, "gatt", source, required=True)
    _check_keys(gatt, {"service", "characteristic", "start", "stop"}, source, "gatt.")
    packet = _table(doc, "packet", source, required=True)
    _check_keys(
        packet,
        {"counter", "header_bytes", "sample_format", "samples_per_packet"},
        source,
        "packet.",
    )
    conversion = _table(doc, "conversion", source, required=False)
    _check_keys(conversion, {"scale", "offset", "unit"}, source, "conversion.")
    timing = _table(doc, "timing", source, required=True)
    _check_keys(timing, {"rate_hz", "timestamps"}, source, "timing.")

    sample_format = _choice(
        _get(packet, "sample_format", str, source, "packet."),
        SAMPLE_FORMATS,
        source,
        "packet.sample_format",
    )
    counter = packet.get("counter")
    if counter is not None:
        counter = _choice(counter, SAMPLE_FORMATS[:-1], source, "packet.counter")
    header_bytes = cast(int, packet.get("header_bytes", 0))
    if not isinstance(header_bytes, int) or header_bytes < 0:
        raise ProfileError(source, "packet.header_bytes", "expected an integer >= 0")
    per_packet = cast(int, packet.get("samples_per_packet", 0))
    if not isinstance(per_packet, int) or per_packet < 0:
        raise ProfileError(source, "packet.samples_per_packet", "expected an integer >= 0")
    rate = cast(float, _get(timing, "rate_hz", float, source, "timing."))
    if not 0 < rate <= 10_000:
        raise ProfileError(source, "timing.rate_hz", f"{rate} is not in (0, 10000]")
    numbers: dict[str, float] = {}
    for key, default in (("scale", 1.0), ("offset", 0.0)):
        value = conversion.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileError(source, f"conversion.{key}", "expected a number")
        numbers[key] = float(value)
    scale, offset = numbers["scale"], numbers["offset"]
    if scale == 0:
        raise ProfileError(source, "conversion.scale", "must not be 0")
    unit = _choice(conversion.get("unit", "native"), UNITS, source, "conversion.unit")
    if stream != "eda" and unit not in ("native",):
        raise ProfileError(source, "conversion.unit", "units other than native are EDA only")
    return DeviceProfile(
        name=name,
        description=description,
        stream=cast(SampleStream, stream),
        service=_uuid(_get(gatt, "service", str, source, "gatt."), source, "gatt.service"),
        characteristic=_uuid(
            _get(gatt, "characteristic", str, source, "gatt."), source, "gatt.characteristic"
        ),
        sample_format=cast(SampleFormat, sample_format),
        rate_hz=rate,
        scale=scale,
        offset=offset,
        unit=cast(Unit, unit),
        counter=cast(SampleFormat | None, counter),
        header_bytes=header_bytes,
        samples_per_packet=per_packet,
        timestamps=cast(
            TimestampRule,
            _choice(timing.get("timestamps", "host"), TIMESTAMP_RULES, source, "timing.timestamps"),
        ),
        start=_command(_table(gatt, "start", source, required=False), source, "gatt.start"),
        stop=_command(_table(gatt, "stop", source, required=False), source, "gatt.stop"),
        devices=tuple(cast(list[str], devices)),
        source=source,
    )


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped with Rekindle."""
    root = resources.files(__name__)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a shipped profile by name, or a user's profile from a ``.toml`` path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(path, "file", f"cannot read: {exc.strerror}") from exc
        source = str(path)
    else:
        resource = resources.files(__name__) / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ProfileError(
                str(name_or_path),
                "name",
                f"no such shipped profile; shipped: {', '.join(shipped_profiles())}",
            )
        text = resource.read_text(encoding="utf-8")
        source = f"shipped:{name_or_path}"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, "toml", str(exc)) from exc
    return parse_profile(doc, source)
