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

from rekindle.dashboards import alerts
from rekindle.dashboards.influxql import DATASOURCE_UID
from rekindle.dashboards.panels import AROUSAL_ALERT
from rekindle.ingest.sources.base import open_source
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
        expected = bool(rows) and all(
            r[1] > AROUSAL_ALERT for r in rows[0]["values"] if r[1] is not None
        )
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


SILENCES = [0, 30, alerts.NO_DATA_S + 5, 600, alerts.NO_DATA_LOOKBACK_S - 30]


def _key(data: Dataset) -> Labels:
    return (("session", data.session), ("site", data.site))


def _ended_marks(influxd: InfluxD, data: Dataset) -> int:
    return influxd.count(
        f'SELECT count("ended") FROM "features" WHERE "session" = \'{data.session}\'', data.db
    )


@pytest.mark.parametrize("silence_s", SILENCES)
def test_no_data_stays_quiet_after_a_normal_end(
    influxd: InfluxD, dashboard_data: Dataset, silence_s: int
) -> None:
    """S02's replay ends with ``status: end``: its silence afterwards is no alert."""
    assert _ended_marks(influxd, dashboard_data) == 1
    rule = RULES["rekindle-no-data"]
    state = evaluate(influxd, dashboard_data.db, rule, dashboard_data.end_s + silence_s)
    assert state == {_key(dashboard_data): False}, "the instance stays, and stays normal"


@pytest.mark.parametrize("silence_s", SILENCES)
def test_no_data_fires_after_silence_on_a_lost_wearable(
    influxd: InfluxD, lost_wearable_data: Dataset, silence_s: int
) -> None:
    """ "now" = the last feature row + silence: fires once silent for NO_DATA_S, and keeps
    firing while the session is inside the look-back window."""
    assert _ended_marks(influxd, lost_wearable_data) == 0
    rule = RULES["rekindle-no-data"]
    state = evaluate(influxd, lost_wearable_data.db, rule, lost_wearable_data.end_s + silence_s)
    key = _key(lost_wearable_data)
    assert key in state, "a silent session must keep its alert instance"
    assert state == {key: silence_s >= alerts.NO_DATA_S}


def test_no_data_fires_within_the_documented_delay(
    influxd: InfluxD, lost_wearable_data: Dataset
) -> None:
    """Between NO_DATA_S - NO_DATA_BUCKET_S and NO_DATA_S seconds of silence (10-s buckets),
    whatever the phase of the evaluation against the buckets."""
    rule = RULES["rekindle-no-data"]
    key = _key(lost_wearable_data)
    end = lost_wearable_data.end_s
    for phase in range(alerts.NO_DATA_BUCKET_S):
        first = next(
            s
            for s in range(0, 2 * alerts.NO_DATA_S)
            if evaluate(influxd, lost_wearable_data.db, rule, end + phase + s)[key]
        )
        assert alerts.NO_DATA_S - alerts.NO_DATA_BUCKET_S <= phase + first <= alerts.NO_DATA_S


def test_no_data_stays_quiet_while_the_lost_session_still_sent(
    influxd: InfluxD, lost_wearable_data: Dataset
) -> None:
    rule = RULES["rekindle-no-data"]
    for now in _instants(lost_wearable_data, step_s=13):
        assert not any(evaluate(influxd, lost_wearable_data.db, rule, now).values()), now


def test_the_end_mark_is_written_once_at_the_end_status(
    influxd: InfluxD, dashboard_data: Dataset
) -> None:
    rows = influxd.series(
        f'SELECT "ended" FROM "features" WHERE "session" = \'{dashboard_data.session}\' '
        'AND "ended" = true',
        dashboard_data.db,
    )
    ((_, ended),) = rows[0]["values"]
    assert ended is True
    status = influxd.series(
        'SELECT "state" FROM "status" WHERE "state" = \'end\' '
        f"AND \"session\" = '{dashboard_data.session}'",
        dashboard_data.db,
    )
    ((end_status_ns, _state),) = status[0]["values"]
    last_row = influxd.series(
        f'SELECT last("streams") FROM "features" WHERE "session" = \'{dashboard_data.session}\'',
        dashboard_data.db,
    )
    last_row_ns = last_row[0]["values"][0][0]
    # the last feature row is the whole second at or after the last sample, and so after the
    # end status: the mark follows it by 1 ms (a "now" panel's latest value is the end)
    assert last_row_ns >= end_status_ns
    mark_ns = rows[0]["values"][0][0]
    assert abs(mark_ns - max(end_status_ns, last_row_ns + 1_000_000)) < 1_000  # (float s)
    assert rows[0]["values"][0][0] / 1e9 == pytest.approx(dashboard_data.end_s, abs=1e-6)


def test_no_data_stays_quiet_during_the_recording(
    influxd: InfluxD, dashboard_data: Dataset
) -> None:
    rule = RULES["rekindle-no-data"]
    for now in _instants(dashboard_data, step_s=7):
        assert not any(evaluate(influxd, dashboard_data.db, rule, now).values()), now


@pytest.mark.parametrize("ended", [True, False], ids=["normal-end", "lost-wearable"])
def test_no_data_alert_leaves_after_the_lookback(
    influxd: InfluxD, dashboard_data: Dataset, lost_wearable_data: Dataset, ended: bool
) -> None:
    data = dashboard_data if ended else lost_wearable_data
    rule = RULES["rekindle-no-data"]
    later = data.end_s + alerts.NO_DATA_LOOKBACK_S + 60
    assert evaluate(influxd, data.db, rule, later) == {}


@pytest.mark.parametrize("ended", [True, False], ids=["normal-end", "lost-wearable"])
def test_signal_lost_stays_quiet_once_the_data_stopped(
    influxd: InfluxD, dashboard_data: Dataset, lost_wearable_data: Dataset, ended: bool
) -> None:
    """No quality rows come after the last sample, so "signal lost" has nothing to say about
    a session that stopped (the no-data rule does): no instance at all afterwards."""
    data = dashboard_data if ended else lost_wearable_data
    rule = RULES["rekindle-signal-lost"]
    for silence in (alerts.SIGNAL_LOST_S + 5, 300):
        assert evaluate(influxd, data.db, rule, data.end_s + silence) == {}
