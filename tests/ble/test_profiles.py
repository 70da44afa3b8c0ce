"""Declarative device profiles: parsing, validation and decoding."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle.ingest.ble.errors import DecodeError, ProfileError
from rekindle.ingest.ble.profiles import load_profile, parse_profile, shipped_profiles

MINIMAL = """
name = "my-gsr"
stream = "eda"
[gatt]
service = "180d"
characteristic = "0x2A99"
[packet]
sample_format = "u16be"
[conversion]
unit = "kohm"
[timing]
rate_hz = 8
"""


def test_shipped_reference_profile() -> None:
    assert "rekindle-eda-ref" in shipped_profiles()
    p = load_profile("rekindle-eda-ref")
    assert p.stream == "eda"
    assert p.rate_hz == 4.0
    assert p.counter == "u8"
    assert p.start is not None
    assert p.start.value == b"\x01"
    packet = p.decode(bytes([7, 0xE8, 0x03, 0x34, 0x12]))
    assert packet.counter == 7
    assert packet.values == pytest.approx((1.0, 4.66))


def test_user_profile_from_file_and_resistance_conversion(tmp_path: Path) -> None:
    path = tmp_path / "gsr.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    p = load_profile(path)
    assert p.service == "0000180d-0000-1000-8000-00805f9b34fb"
    assert p.characteristic == "00002a99-0000-1000-8000-00805f9b34fb"
    # 500 kOhm (big-endian 0x01F4) = 2 µS; 250 kOhm = 4 µS
    assert p.decode(bytes([0x01, 0xF4, 0x00, 0xFA])).values == pytest.approx((2.0, 4.0))


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=9), st.integers(0, 255))
def test_reference_profile_round_trip(raws: list[int], counter: int) -> None:
    p = load_profile("rekindle-eda-ref")
    values = [r / 1000 for r in raws]
    packet = p.decode(p.encode(values, counter))
    assert packet.counter == counter
    assert packet.values == pytest.approx(values)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "shorter than the 1-byte packet header"),
        (b"\x01", "no samples"),
        (b"\x01\x00", "not a multiple"),
    ],
)
def test_malformed_packets(payload: bytes, reason: str) -> None:
    p = load_profile("rekindle-eda-ref")
    with pytest.raises(DecodeError, match=reason):
        p.decode(payload)


def test_out_of_range_sample_is_a_decode_error() -> None:
    doc = tomllib.loads(MINIMAL)
    doc["conversion"] = {"unit": "uS", "scale": 1.0}
    p = parse_profile(doc)
    with pytest.raises(DecodeError, match="outside the physical range"):
        p.decode(bytes([0x01, 0x00]))  # 256 µS


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"stream": "blood"}, "stream"),
        ({"colour": "red"}, "colour"),
        ({"timing": {"rate_hz": 0}}, "timing.rate_hz"),
        ({"packet": {"sample_format": "u12"}}, "packet.sample_format"),
        ({"gatt": {"service": "nope", "characteristic": "2a37"}}, "gatt.service"),
        ({"gatt": {"characteristic": "2a37"}}, "gatt.service"),
        ({"conversion": {"scale": 0}}, "conversion.scale"),
        (
            {
                "gatt": {
                    "service": "180d",
                    "characteristic": "2a37",
                    "start": {"characteristic": "2a38", "value": "zz"},
                }
            },
            "gatt.start.value",
        ),
    ],
)
def test_invalid_profiles_name_the_key(edit: dict[str, object], key: str) -> None:
    doc = tomllib.loads(MINIMAL)
    doc.update(edit)
    with pytest.raises(ProfileError) as info:
        parse_profile(doc, "test.toml")
    assert info.value.key == key


def test_unknown_shipped_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match="rekindle-eda-ref"):
        load_profile("no-such-device")
