"""Data for the dashboard query tests.

``dashboard_data`` is the session the dashboards are proven against. Until the analysis service
runs in the test suite it is the stand-in of ``tests/dashboards/standin.py`` (real S02 samples,
simple derived features); switch it to ``s02_in_influx`` (the real pipeline) when that works.
"""

from __future__ import annotations

import pytest

from tests.dashboards.standin import Dataset, write_standin
from tests.servers import InfluxD


@pytest.fixture(scope="session")
def dashboard_data(influxd: InfluxD) -> Dataset:
    return write_standin(influxd, db="dashboards_standin", site="galway", session="S02")
