"""Heart Rate Service decoders on real captured payloads, malformed input and round-trips."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle.ingest.ble.errors import DecodeError
from rekindle.ingest.ble.hrs import (
    HeartRateMeasurement,
    decode_battery_level,
    decode_body_sensor_location,
    decode_heart_rate_measurement,
    encode_heart_rate_measurement,
    parse_hex,
)

PAYLOADS = Path(__file__).resolve().parent.parent / "fixtures" / "ble_hrm_0x2a37_payloads"
ROWS = list(csv.DictReader((PAYLOADS / "payloads.csv").read_text(encoding="utf-8").splitlines()))
# Rows the fixture's provenance calls "NOT decodable as plausible HRS data".
GARBAGE_IDS = {"12", "13", "14", "15"}


def test_fixture_has_all_40_rows() -> None:
    assert len(ROWS) == 40
    assert {r["id"] for r in ROWS if "NOT decodable" in r["note"]} == GARBAGE_IDS


def _independent_decode(raw: bytes) -> dict[str, object]:
    """A second, deliberately different decode (struct-free, index arithmetic on a list)."""
    b = list(raw)
    flags = b.pop(0)
    hr = b.pop(0) + (b.pop(0) * 256 if flags & 1 else 0)
    ee = b.pop(0) + b.pop(0) * 256 if flags & 8 else None
    rr = [b[i] + 256 * b[i + 1] for i in range(0, len(b), 2)] if flags & 16 else []
    return {"hr": hr, "ee": ee, "rr": rr, "supported": bool(flags & 4), "detected": bool(flags & 2)}


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r["id"] not in GARBAGE_IDS], ids=lambda r: f"row{r['id']}"
)
def test_real_payloads_decode(row: dict[str, str]) -> None:
    raw = parse_hex(row["payload_hex"])
    m = decode_heart_rate_measurement(raw)
    ref = _independent_decode(raw)
    # against the independent decode
    assert m.hr_bpm == ref["hr"]
    assert list(m.rr_raw) == ref["rr"]
    assert m.energy_expended_kj == ref["ee"]
    assert m.contact_supported == ref["supported"]
    assert m.contact_detected == ref["detected"]
    # against the fixture's decoded columns
    assert m.flags == int(row["flags_hex"], 16)
    assert m.hr_bpm == int(row["hr_bpm"])
    assert m.hr_uint16 == (row["hr_uint16"] == "1")
    assert m.contact_supported == (row["contact_supported"] == "1")
    assert m.contact_detected == (row["contact_detected"] == "1")
    expected_rr = (
        [int(x) for x in row["rr_raw_1024ths"].split(";")] if row["rr_raw_1024ths"] else []
    )
    assert list(m.rr_raw) == expected_rr
    expected_ms = [float(x) for x in row["rr_ms"].split(";")] if row["rr_ms"] else []
    assert m.rr_ms == pytest.approx(expected_ms, abs=0.051)
    # plausibility: HR and RR of real straps
    assert 30 <= m.hr_bpm <= 220
    assert all(250 < x < 2000 for x in m.rr_ms)
    # and back to the same bytes
    assert encode_heart_rate_measurement(m) == raw


def test_quirk_contact_detected_without_supported_is_kept_but_contact_unknown() -> None:
    m = decode_heart_rate_measurement(parse_hex("12 36 78 04"))  # row 21
    assert m.contact_detected
    assert not m.contact_supported
    assert m.contact is None
    wahoo = decode_heart_rate_measurement(parse_hex("14 46 59 03 58 03"))  # row 11, worn
    assert wahoo.contact is False
    assert wahoo.rr_raw == (857, 856)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r["id"] in GARBAGE_IDS], ids=lambda r: f"row{r['id']}"
)
def test_garbage_payloads_raise_a_clear_error(row: dict[str, str]) -> None:
    raw = parse_hex(row["payload_hex"])
    with pytest.raises(DecodeError) as info:
        decode_heart_rate_measurement(raw)
    err = info.value
    assert err.char == "2a37"
    assert err.payload == raw
    assert row["payload_hex"] in str(err)
    if int(row["flags_hex"], 16) & 0xE0:
        assert "reserved flag bits" in err.reason
    else:
        assert "odd number" in err.reason


@pytest.mark.parametrize(
    ("hex_", "reason"),
    [
        ("", "empty"),
        ("00", "truncated: heart rate"),
        ("01 3c", "truncated: heart rate needs 2"),
        ("08 3c 01", "truncated: energy"),
        ("16 3c 11", "odd number"),
        ("06 3c 00", "unexpected byte"),
        ("80 3c", "reserved flag bits"),
    ],
)
def test_malformed_values(hex_: str, reason: str) -> None:
    raw = bytes.fromhex(hex_)
    with pytest.raises(DecodeError, match=reason):
        decode_heart_rate_measurement(raw)


@given(st.binary(max_size=40))
def test_arbitrary_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    try:
        m = decode_heart_rate_measurement(raw)
    except DecodeError:
        return
    assert encode_heart_rate_measurement(m) == raw


@st.composite
def measurements(draw: st.DrawFn) -> HeartRateMeasurement:
    hr_uint16 = draw(st.booleans())
    rr_present = draw(st.booleans())
    return HeartRateMeasurement(
        hr_bpm=draw(st.integers(0, 0xFFFF if hr_uint16 else 0xFF)),
        hr_uint16=hr_uint16,
        contact_supported=draw(st.booleans()),
        contact_detected=draw(st.booleans()),
        energy_expended_kj=draw(st.none() | st.integers(0, 0xFFFF)),
        rr_raw=tuple(draw(st.lists(st.integers(0, 0xFFFF), max_size=12))) if rr_present else (),
        rr_present=rr_present,
    )


@given(measurements())
def test_round_trip_every_flag_combination(m: HeartRateMeasurement) -> None:
    raw = encode_heart_rate_measurement(m)
    assert raw[0] & 0xE0 == 0
    assert decode_heart_rate_measurement(raw) == m


def test_all_32_flag_combinations_are_reachable() -> None:
    for flags in range(32):
        m = HeartRateMeasurement(
            hr_bpm=70,
            hr_uint16=bool(flags & 1),
            contact_detected=bool(flags & 2),
            contact_supported=bool(flags & 4),
            energy_expended_kj=12 if flags & 8 else None,
            rr_raw=(1000, 1024) if flags & 16 else (),
            rr_present=bool(flags & 16),
        )
        raw = encode_heart_rate_measurement(m)
        assert raw[0] == flags
        assert decode_heart_rate_measurement(raw) == m


def test_rr_conversion_is_1024ths_of_a_second() -> None:
    m = decode_heart_rate_measurement(bytes([0x10, 60, 0x00, 0x04]))
    assert m.rr_ms == (1000.0,)


def test_body_sensor_location_and_battery() -> None:
    assert decode_body_sensor_location(b"\x01").name == "chest"
    assert decode_body_sensor_location(b"\x02").name == "wrist"
    with pytest.raises(DecodeError, match="reserved"):
        decode_body_sensor_location(b"\x07")
    with pytest.raises(DecodeError, match="exactly 1 byte"):
        decode_body_sensor_location(b"")
    assert decode_battery_level(b"\x64").percent == 100
    with pytest.raises(DecodeError, match="percentage"):
        decode_battery_level(b"\x65")
    with pytest.raises(DecodeError, match="exactly 1 byte"):
        decode_battery_level(b"\x10\x00")


@pytest.mark.parametrize("text", ["16 34 e4 04", "1634e404", "16:34:E4:04", "0x16 0x34 0xe4 0x04"])
def test_parse_hex_forms(text: str) -> None:
    assert parse_hex(text) == bytes([0x16, 0x34, 0xE4, 0x04])


@pytest.mark.parametrize("text", ["", "zz", "163"])
def test_parse_hex_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"hex|no hex"):
        parse_hex(text)
