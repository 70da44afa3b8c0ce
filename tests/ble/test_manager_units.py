"""Pure parts of the device manager: device specs, targets, backoff."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle.ingest.ble.errors import DeviceIdKeyError, DeviceSpecError, ProfileError
from rekindle.ingest.ble.manager import (
    Backoff,
    DeviceManager,
    DeviceSpec,
    Target,
    pseudonymous_id,
)

KEY = b"0123456789abcdef0123456789abcdef"


def test_parse_hrs_by_address_and_name() -> None:
    spec = DeviceSpec.parse("hrs:a0:9e:1a:12:34:56", KEY)
    assert spec.feed == "hrs"
    assert spec.target == Target("address", "A0:9E:1A:12:34:56")
    assert spec.device_id == pseudonymous_id("A0:9E:1A:12:34:56", KEY)
    assert re.fullmatch(r"ble-[0-9a-f]{12}", spec.device_id)
    with pytest.raises(DeviceIdKeyError, match="@ID"):
        DeviceSpec.parse("hrs:a0:9e:1a:12:34:56")  # never the address itself
    named = DeviceSpec.parse("hrs:Polar H10 *@strap")
    assert named.target == Target("name", "Polar H10 *")
    assert named.device_id == "strap"


def test_parse_eda_profile_and_service_target() -> None:
    spec = DeviceSpec.parse("eda:rekindle-eda-ref:D0:00:00:00:00:02", KEY)
    assert spec.feed == "profile"
    assert spec.profile is not None
    assert spec.profile.name == "rekindle-eda-ref"
    assert spec.target.kind == "address"
    svc = DeviceSpec.parse("eda:rekindle-eda-ref:service=6e400001-7e1d-4b4b-9a1e-5245d0eda000")
    assert svc.target == Target("service", "6e400001-7e1d-4b4b-9a1e-5245d0eda000")


@pytest.mark.parametrize(
    "text",
    [
        "hrs",
        "hrs:",
        "eda:D0:00:00:00:00:02",
        "eda:rekindle-eda-ref",
        "hrs:x@bad id",
        "hrs:service=nope",
    ],
)
def test_bad_specs(text: str) -> None:
    with pytest.raises(DeviceSpecError):
        DeviceSpec.parse(text)


def test_unknown_profile() -> None:
    with pytest.raises(ProfileError):
        DeviceSpec.parse("eda:nope:AA:BB:CC:DD:EE:FF")


@given(st.integers(0, 200), st.integers(0, 2**32))
def test_backoff_is_capped_and_randomised_within_bounds(attempt: int, seed: int) -> None:
    b = Backoff(initial=0.5, factor=2.0, max_delay=30.0, jitter=0.5)
    d = b.delay(attempt, random.Random(seed))
    base = min(30.0, 0.5 * 2.0**attempt)
    assert base * 0.5 <= d <= base


def test_backoff_grows_then_caps() -> None:
    b = Backoff(initial=1.0, factor=2.0, max_delay=8.0, jitter=0.0)
    rng = random.Random(0)
    assert [b.delay(i, rng) for i in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    jittered = {Backoff(jitter=0.5).delay(3, random.Random(s)) for s in range(5)}
    assert len(jittered) == 5


def test_one_id_per_device_and_unique_ids() -> None:
    with pytest.raises(DeviceSpecError, match="one id per device"):
        DeviceManager(_NoPublisher(), [DeviceSpec.parse("hrs:X@a"), DeviceSpec.parse("pmd:X@b")])
    with pytest.raises(DeviceSpecError, match="same id"):
        DeviceManager(_NoPublisher(), [DeviceSpec.parse("hrs:X@a"), DeviceSpec.parse("hrs:Y@a")])


class _NoPublisher:
    """Never called: the manager validates its devices before anything is published."""

    def send_samples(self, *_a: object, **_k: object) -> object:
        raise AssertionError

    def send_status(self, *_a: object, **_k: object) -> object:
        raise AssertionError

    def send_gap(self, *_a: object, **_k: object) -> object:
        raise AssertionError
