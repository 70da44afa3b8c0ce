"""Shared fixtures: a real mosquitto and a real influxd per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import InfluxD, Mosquitto

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "external"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto.start(tmp_path_factory.mktemp("mosquitto"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxD]:
    server = InfluxD.start(tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


def fixture_path(relative: str) -> Path:
    """A copied fixture under tests/fixtures (with its PROVENANCE.md)."""
    path = FIXTURES / relative
    if not path.exists():
        msg = f"fixture {relative} missing under {FIXTURES}"
        raise FileNotFoundError(msg)
    return path


S02 = "stress_predict_e4/Raw_data/S02"
