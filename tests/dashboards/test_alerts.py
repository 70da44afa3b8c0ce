"""The provisioned alert rules, evaluated on real influxd the way Grafana evaluates them.

Grafana runs query A over ``[now - relativeTimeRange.from, now]`` with ``$timeFilter`` set to
that range, reduces each series to its last non-null value (B) and compares it with the
threshold (C); one alert instance per series (site, session[, stream]). The tests replay that
at many "now" instants across the recording and compare the verdict with one computed
independently from the raw rows.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from dashboards import alerts
from dashboards.influxql import DATASOURCE_UID
from services.ingest.sources.base import open_source
from tests.conftest import EDA_OFF_SKIN, S02, fixture_path, recording_start
from tests.dashboards.grafana import ALERTS, Dataset, render
from tests.servers import InfluxD

Labels = tuple[tuple[str, str], ...]


def _rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert doc["apiVersion"] == 1
    (group,) = doc["groups"]
    assert group["folder"] == alerts.FOLDER
    return {rule["uid"]: rule for rule in group["rules"]}


RULES = _rules()


def evaluate(influxd: InfluxD, db: str, rule: dict[str, Any], now_s: float) -> dict[Labels, bool]:
    """Firing state of every alert instance of ``rule`` at ``now_s``."""
    source, reduce, threshold = rule["data"]
    assert source["datasourceUid"] == DATASOURCE_UID
    assert reduce["model"]["type"] == "reduce"
    assert reduce["model"]["reducer"] == "last"
    assert threshold["model"]["type"] == "threshold"
    evaluator = threshold["model"]["conditions"][0]["evaluator"]
    limit = float(evaluator["params"][0])
    end_ms = round(now_s * 1000)
    start_ms = end_ms - int(source["relativeTimeRange"]["from"]) * 1000
    query = render(source["model"]["query"], start_ms=start_ms, end_ms=end_ms)
    out: dict[Labels, bool] = {}
    for series in influxd.series(query, db):
        labels = tuple(sorted(series.get("tags", {}).items()))
        values = [row[1] for row in series["values"] if row[1] is not None]
        if not values:
            continue
        last = float(values[-1])
        out[labels] = last > limit if evaluator["type"] == "gt" else last < limit
    return out


def _instants(data: Dataset, step_s: int = 20) -> list[float]:
    return [float(t) for t in range(int(data.start_s) + 120, int(data.end_s), step_s)]


def test_three_rules_with_their_thresholds() -> None:
    assert set(RULES) == {"rekindle-arousal-high", "rekindle-signal-lost", "rekindle-no-data"}
    for rule in RULES.values():
        assert rule["condition"] == "C"
        assert rule["noDataState"] == "OK"
        assert "summary" in rule["annotations"]
        query = rule["data"][0]["model"]["query"]
        assert "$timeFilter" in query, "alert queries are bounded by the rule's time range"
        assert query.count("SELECT") == 1


def test_arousal_high_fires_exactly_when_the_index_stayed_above_threshold(
    influxd: InfluxD, dashboard_data: Dataset
) -> None:
    rule = RULES["rekindle-arousal-high"]
    key = (("session", dashboard_data.session), ("site", dashboard_data.site))
    seen = set()
    for now in _instants(dashboard_data):
        rows = influxd.series(
            f'SELECT "arousal_index" FROM "features" WHERE "session" = \'{dashboard_data.session}\''
            f" AND time >= {round((now - alerts.AROUSAL_HOLD_S) * 1000)}ms"
            f" AND time <= {round(now * 1000)}ms",
            dashboard_data.db,
        )
        expected = bool(rows) and all(r[1] > 70 for r in rows[0]["values"] if r[1] is not None)
        state = evaluate(influxd, dashboard_data.db, rule, now)
        assert state.get(key, False) == expected, now
        seen.add(expected)
    assert seen == {True, False}, "the recording must both trigger and not trigger the rule"


def _signal_lost_states(influxd: InfluxD, data: Dataset) -> dict[tuple[float, str], bool]:
    """Firing state per (instant, stream), each checked against the raw quality rows."""
    rule = RULES["rekindle-signal-lost"]
    out = {}
    for now in _instants(data, step_s=10):
        state = evaluate(influxd, data.db, rule, now)
        assert {dict(labels)["stream"] for labels in state} == set(alerts.ALERT_STREAMS), (
            "every alerted stream with quality rows gets an instance, and only those"
        )
        for labels, firing in state.items():
            stream = dict(labels)["stream"]
            rows = influxd.series(
                f'SELECT "code" FROM "quality" WHERE "stream" = \'{stream}\''
                f" AND time >= {round((now - alerts.SIGNAL_LOST_S) * 1000)}ms"
                f" AND time <= {round(now * 1000)}ms",
                data.db,
            )
            codes = [r[1] for r in rows[0]["values"]]
            assert firing == (max(codes) == 0), (now, stream, codes)
            out[(now, stream)] = firing
    return out


def test_signal_lost_stays_quiet_on_a_wrist_session_that_only_loses_rr(
    influxd: InfluxD, dashboard_data: Dataset
) -> None:
    # S02's wrist PPG loses RR for most of the session: that must not page the staff.
    rows = influxd.series(
        'SELECT count("code") FROM "quality" WHERE "stream" = \'rr\' AND "code" = 0',
        dashboard_data.db,
    )
    assert rows, "S02 has RR quality rows"
    assert rows[0]["values"][0][1] > 1000, "S02's RR is lost for long stretches"
    assert not any(_signal_lost_states(influxd, dashboard_data).values())


def test_signal_lost_fires_while_the_wristband_is_off_the_skin(
    influxd: InfluxD, off_skin_data: Dataset
) -> None:
    states = _signal_lost_states(influxd, off_skin_data)
    start = recording_start(open_source(fixture_path(S02)))
    firing = sorted(now - start for (now, stream), on in states.items() if on)
    assert {stream for (_, stream), on in states.items() if on} == {"eda"}
    off_at, off_for = EDA_OFF_SKIN
    # lost 5 s after the last valid sample (eda_lost_after_s), alert after SIGNAL_LOST_S more;
    # it stops as soon as a valid sample is back (quality rows are written on change)
    assert firing, "the alert never fired"
    assert off_at + alerts.SIGNAL_LOST_S <= firing[0] <= off_at + alerts.SIGNAL_LOST_S + 20
    assert firing[-1] <= off_at + off_for + 10


@pytest.mark.parametrize("silence_s", [0, 30, alerts.NO_DATA_S + 5, 600])
def test_no_data_fires_after_silence(
    influxd: InfluxD, dashboard_data: Dataset, silence_s: int
) -> None:
    """ "now" = end of the recording + silence: fires once the session was silent for NO_DATA_S."""
    rule = RULES["rekindle-no-data"]
    state = evaluate(influxd, dashboard_data.db, rule, dashboard_data.end_s + silence_s)
    key = (("session", dashboard_data.session), ("site", dashboard_data.site))
    assert key in state, "a silent session must keep its alert instance"
    assert state[key] == (silence_s >= alerts.NO_DATA_S)


def test_no_data_stays_quiet_during_the_recording(
    influxd: InfluxD, dashboard_data: Dataset
) -> None:
    rule = RULES["rekindle-no-data"]
    for now in _instants(dashboard_data, step_s=7):
        assert not any(evaluate(influxd, dashboard_data.db, rule, now).values()), now


def test_no_data_alert_leaves_after_the_lookback(influxd: InfluxD, dashboard_data: Dataset) -> None:
    rule = RULES["rekindle-no-data"]
    later = dashboard_data.end_s + alerts.NO_DATA_LOOKBACK_S + 60
    assert evaluate(influxd, dashboard_data.db, rule, later) == {}
