"""Data for the dashboard query tests: the S02 recording replayed through the real pipeline.

``s02_in_influx`` (tests/conftest.py) replays Stress-Predict S02 through mosquitto and the real
analysis service into influxd; the dashboards are proven against what it wrote. The time range of
the tests is the span of its feature rows.
"""

from __future__ import annotations

import pytest

from tests.conftest import ReplayedSession
from tests.dashboards.grafana import Dataset
from tests.servers import InfluxD


def _dataset(influxd: InfluxD, s02: ReplayedSession) -> Dataset:
    where = f"WHERE \"site\" = '{s02.site}' AND \"session\" = '{s02.session}'"
    first = influxd.series(f'SELECT first("arousal_index") FROM "features" {where}', s02.db)
    last = influxd.series(f'SELECT last("arousal_index") FROM "features" {where}', s02.db)
    assert first, "the replay wrote no feature rows"
    start_s = first[0]["values"][0][0] / 1e9
    end_s = last[0]["values"][0][0] / 1e9
    return Dataset(s02.db, s02.site, s02.session, start_s, end_s, s02.lines_written)


@pytest.fixture(scope="session")
def dashboard_data(influxd: InfluxD, s02_in_influx: ReplayedSession) -> Dataset:
    return _dataset(influxd, s02_in_influx)


@pytest.fixture(scope="session")
def off_skin_data(influxd: InfluxD, s02_eda_off_skin_in_influx: ReplayedSession) -> Dataset:
    """S02 with the wristband off the skin for 90 s (``tests.conftest.EDA_OFF_SKIN``)."""
    return _dataset(influxd, s02_eda_off_skin_in_influx)
