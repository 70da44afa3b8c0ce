"""Every query of every committed dashboard, run against a real influxd holding S02.

Grafana cannot run here, so each panel, variable and annotation query is rendered the way
Grafana's InfluxDB datasource renders it (macros and variables substituted) and must return the
series the panel is meant to show: non-empty, with the expected columns holding values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rekindle.analysis import points
from rekindle.analysis.influx import InfluxSettings, V1Transport
from rekindle.analysis.offline import AnalysisResult, write_outputs
from tests.dashboards.conftest import GapSession
from tests.dashboards.grafana import (
    Dataset,
    Query,
    load_dashboards,
    queries,
    render,
    variable_values,
)
from tests.servers import InfluxD


@dataclass(frozen=True)
class Expect:
    columns: tuple[str, ...]
    tags: tuple[str, ...] = ()
    #: the fixture of the session the query is run on: S02 (``dashboard_data``), the session
    #: with real unrepaired gaps (``gap_data``) for the gap queries, or the simulated session
    #: with an emotional release (``release_data``) for the queries of release fields
    dataset: str = "dashboard_data"


LIVE, REVIEW, OVERVIEW = "rekindle-live", "rekindle-review", "rekindle-overview"

_SIGNAL_PANELS: dict[tuple[str, str], Expect] = {
    ("Arousal index", "A"): Expect(("arousal index",)),
    ("Heart rate and RMSSD", "A"): Expect(("HR",)),
    ("Heart rate and RMSSD", "B"): Expect(("RMSSD",)),
    ("Skin conductance (EDA)", "A"): Expect(("EDA raw",)),
    ("Skin conductance (EDA)", "B"): Expect(("tonic", "phasic")),
    ("Skin conductance (EDA)", "C"): Expect(("SCR",)),
    ("Signal quality per stream", "A"): Expect(("min",), ("stream",)),
    ("Arousal index: contribution of each signal", "A"): Expect(("EDA", "HR")),
    ("Clinician markers", "A"): Expect(("text", "device")),
    ("Devices", "A"): Expect(("state",), ("device",)),
}
_ANNOTATIONS: dict[str, Expect] = {
    "Arousal episodes": Expect(("signals", "peak_index", "end", "kind")),
    "Emotional release": Expect(
        ("signals", "recovery_depth", "end", "kind"), dataset="release_data"
    ),
    "Clinician markers": Expect(("text", "device")),
    "Data gaps": Expect(("stream", "device", "duration_s", "end"), dataset="gap_data"),
}

EXPECTED: dict[tuple[str, str, str], Expect] = {
    **{(LIVE, name, ref): exp for (name, ref), exp in _SIGNAL_PANELS.items()},
    **{(REVIEW, name, ref): exp for (name, ref), exp in _SIGNAL_PANELS.items()},
    **{(uid, name, ""): exp for uid in (LIVE, REVIEW) for name, exp in _ANNOTATIONS.items()},
    (LIVE, "Arousal now", "A"): Expect(("arousal",)),
    (LIVE, "Arousal now", "B"): Expect(("arousal",)),
    (LIVE, "Heart rate", "A"): Expect(("Heart rate",)),
    (LIVE, "EDA tonic", "A"): Expect(("EDA tonic",)),
    (LIVE, "Signal quality now", "A"): Expect(("last",), ("stream",)),
    (LIVE, "Episodes", "A"): Expect(("kind", "duration_s", "peak_index", "signals")),
    (REVIEW, "Episodes", "A"): Expect(
        ("kind", "duration_s", "peak_index", "signals", "recovery_depth", "offset"),
        dataset="release_data",
    ),
    (REVIEW, "Session summary", "A"): Expect(
        ("analysed s", "mean HR bpm", "mean EDA tonic µS", "mean arousal", "max arousal")
    ),
    (REVIEW, "Skin-conductance responses", "A"): Expect(
        ("SCRs", "mean amplitude µS", "max amplitude µS")
    ),
    (REVIEW, "Arousal at end of range", "A"): Expect(("arousal",)),
    (REVIEW, "Episodes by kind", "A"): Expect(
        ("episodes", "mean duration s", "max peak"), ("kind",)
    ),
    (REVIEW, "Signal quality summary", "A"): Expect(
        ("seconds", "quality score", "worst"), ("stream",)
    ),
    (REVIEW, "Data gaps", "A"): Expect(
        ("gaps", "seconds missing", "longest s"), ("stream",), dataset="gap_data"
    ),
    # S02's wrist RR is lost for most of its episodes and segments: its HRV columns may be
    # empty there; the EDA metrics and the beat count are always there
    (REVIEW, "Episode metrics (NeuroKit2)", "A"): Expect(
        (
            *("kind", "duration_s", "SCRs", "mean SCR amplitude µS", "tonic SD µS"),
            *("clean beats", "mean NN ms", "RMSSD ms"),
        )
    ),
    (REVIEW, "Segment metrics (NeuroKit2)", "A"): Expect(
        ("kind", "label", "duration_s", "SCRs", "tonic SD µS", "clean beats", "mean NN ms")
    ),
    (OVERVIEW, "Active sessions", "A"): Expect(("arousal now",), ("site", "session")),
    (OVERVIEW, "Arousal now", "A"): Expect(("arousal",)),
    (OVERVIEW, "Arousal now", "B"): Expect(("arousal",)),
    (OVERVIEW, "Latest episode", "A"): Expect(("peak", "kind")),
    (OVERVIEW, "Signal now", "A"): Expect(("signal",)),
    (OVERVIEW, "Signal now", "B"): Expect(("signal",)),
    (OVERVIEW, "Last data", "A"): Expect(("last",)),
}

DASHBOARDS = load_dashboards()
ALL = [q for dash in DASHBOARDS.values() for q in queries(dash)]
DATA_QUERIES = [q for q in ALL if q.kind != "variable"]
VARIABLE_QUERIES = [q for q in ALL if q.kind == "variable"]


def _id(q: Query) -> str:
    return f"{q.dashboard}:{q.kind}:{q.name}:{q.ref_id}"


def _variables(data: Dataset) -> dict[str, str]:
    return {"site": data.site, "session": data.session}


def _run(influxd: InfluxD, data: Dataset, text: str) -> list[dict[str, Any]]:
    start_ms, end_ms = round(data.start_s * 1000), round(data.end_s * 1000)
    rendered = render(text, start_ms=start_ms, end_ms=end_ms, variables=_variables(data))
    return influxd.series(rendered, data.db)


def test_three_dashboards_generated() -> None:
    assert sorted(d["uid"] for d in DASHBOARDS.values()) == sorted([LIVE, REVIEW, OVERVIEW])


def test_every_query_has_an_expectation_and_every_expectation_a_query() -> None:
    found = {q.key for q in DATA_QUERIES}
    assert found == set(EXPECTED), (
        f"no expectation for {sorted(found - set(EXPECTED))}; "
        f"stale expectations {sorted(set(EXPECTED) - found)}"
    )


@pytest.mark.parametrize("query", ALL, ids=_id)
def test_query_is_bounded_by_the_time_range(query: Query) -> None:
    """Every SELECT is limited by $timeFilter; SHOW queries carry no GROUP BY time()."""
    if query.text.startswith("SHOW "):
        assert "GROUP BY" not in query.text
        return
    assert "$timeFilter" in query.text
    assert query.text.count("SELECT") == 1, "no subqueries: InfluxDB 3 may not answer them"


@pytest.mark.parametrize("query", DATA_QUERIES, ids=_id)
def test_query_returns_the_expected_series(
    query: Query, influxd: InfluxD, request: pytest.FixtureRequest
) -> None:
    expect = EXPECTED[query.key]
    data: Dataset = request.getfixturevalue(expect.dataset)
    series = _run(influxd, data, query.text)
    assert series, f"no series for {query.text}"
    for tag in expect.tags:
        assert all(tag in s.get("tags", {}) for s in series), f"series not grouped by {tag}"
    for column in expect.columns:
        values = [
            row[s["columns"].index(column)]
            for s in series
            if column in s["columns"]
            for row in s["values"]
        ]
        assert any(v is not None for v in values), f"column {column!r} empty in {series[:1]}"


@pytest.mark.parametrize("query", [q for q in DATA_QUERIES if q.kind == "annotation"], ids=_id)
def test_annotation_columns_and_regions(
    query: Query, influxd: InfluxD, request: pytest.FixtureRequest
) -> None:
    data: Dataset = request.getfixturevalue(EXPECTED[query.key].dataset)
    series = _run(influxd, data, query.text)
    columns = series[0]["columns"]
    for key in ("textColumn", "tagsColumn", "timeEndColumn"):
        if key in query.spec:
            assert query.spec[key] in columns, f"{key} {query.spec[key]!r} not in {columns}"
            assert query.spec["target"][key] == query.spec[key]
    assert query.spec["target"]["query"] == query.text
    if "timeEndColumn" in query.spec:
        end = columns.index(query.spec["timeEndColumn"])
        for row in series[0]["values"]:
            start_ms = row[0] / 1e6  # InfluxD.query asks for epoch ns
            assert row[end] > start_ms, "region annotation ends before it starts"


@pytest.mark.parametrize("query", VARIABLE_QUERIES, ids=_id)
def test_variable_query_offers_the_session(
    query: Query, influxd: InfluxD, dashboard_data: Dataset
) -> None:
    start_ms, end_ms = round(dashboard_data.start_s * 1000), round(dashboard_data.end_s * 1000)
    variables = {"site": dashboard_data.site}
    rendered = render(query.text, start_ms=start_ms, end_ms=end_ms, variables=variables)
    values = variable_values(influxd.query(rendered, dashboard_data.db))
    wanted = dashboard_data.site if query.name == "site" else dashboard_data.session
    assert wanted in values


def test_active_session_variable_drops_sessions_outside_the_range(
    influxd: InfluxD, dashboard_data: Dataset
) -> None:
    """The live/overview session list only offers sessions with data in the time range."""
    query = next(q for q in VARIABLE_QUERIES if q.name == "session" and "$timeFilter" in q.text)
    end_ms = round(dashboard_data.start_s * 1000) - 3_600_000
    rendered = render(
        query.text,
        start_ms=end_ms - 900_000,
        end_ms=end_ms,
        variables={"site": dashboard_data.site},
    )
    assert variable_values(influxd.query(rendered, dashboard_data.db)) == []


def test_session_filter_is_anchored(influxd: InfluxD, dashboard_data: Dataset) -> None:
    """A session id that is a prefix of the real one must select nothing."""
    query = next(q for q in DATA_QUERIES if q.key == (LIVE, "Heart rate", "A"))
    start_ms, end_ms = round(dashboard_data.start_s * 1000), round(dashboard_data.end_s * 1000)
    prefix = dashboard_data.session[:-1]
    rendered = render(
        query.text,
        start_ms=start_ms,
        end_ms=end_ms,
        variables={"site": dashboard_data.site, "session": prefix},
    )
    assert re.search(rf"/\^{prefix}\$/", rendered)
    assert influxd.series(rendered, dashboard_data.db) == []


# --- the session picker's cost and time range, on sessions written for it -------------------

_T0 = 1_700_000_000  # s
#: (site, session, first second, last second + 1) relative to _T0: one session-hour each.
_SESSIONS = (
    ("room-1", "early", 0, 3600),
    ("room-1", "mid", 1800, 5400),
    ("room-1", "late", 7200, 10800),
    ("room-2", "elsewhere", 0, 3600),
)


@pytest.fixture(scope="module")
def sessions_db(influxd: InfluxD) -> str:
    """Four one-hour sessions of 1-Hz feature rows (an end mark on each), written by the real
    InfluxDB writer."""
    db = "sessions_variable"
    influxd.create_database(db)
    transport = V1Transport(InfluxSettings(influxd.url, database=db))
    for site, session, first, end in _SESSIONS:
        lines = [
            points.line(
                "features",
                {"site": site, "session": session},
                {"arousal_index": 40.0, "hr": 70.0},
                points.to_ns(_T0 + t),
            )
            for t in range(first, end)
        ]
        lines.append(points.session_end_line(site, session, _T0 + end - 1))
        transport.write("\n".join(x for x in lines if x is not None) + "\n")
    return db


def _session_variable(dashboard: str) -> Query:
    return next(q for q in VARIABLE_QUERIES if q.dashboard == dashboard and q.name == "session")


@pytest.mark.parametrize("dashboard", [LIVE, OVERVIEW])
@pytest.mark.parametrize(
    ("from_s", "to_s", "expected"),
    [
        (3000, 4000, ["early", "mid"]),  # both running in the range
        (3700, 4600, ["mid"]),  # "early" ended before the range
        (5500, 7100, []),  # between sessions
        (10000, 12000, ["late"]),  # the range runs past the end of the data
        (-3600, 20000, ["early", "late", "mid"]),
    ],
)
def test_session_variable_lists_the_sessions_in_the_range_one_row_each(
    influxd: InfluxD,
    sessions_db: str,
    dashboard: str,
    from_s: int,
    to_s: int,
    expected: list[str],
) -> None:
    rendered = render(
        _session_variable(dashboard).text,
        start_ms=(_T0 + from_s) * 1000,
        end_ms=(_T0 + to_s) * 1000,
        variables={"site": "room-1"},
    )
    results = influxd.query(rendered, sessions_db)
    assert sorted(variable_values(results)) == expected
    rows = sum(len(s["values"]) for s in results[0].get("series", []))
    assert rows == len(expected), "one row per session, not one per feature second"


def test_session_variable_of_all_sites(influxd: InfluxD, sessions_db: str) -> None:
    # the overview's "All" sites: Grafana puts the escaped values in a group, (a|b)
    text = _session_variable(OVERVIEW).text.replace("$site", "(room\\-1|room\\-2)")
    rendered = render(text, start_ms=_T0 * 1000, end_ms=(_T0 + 600) * 1000)
    assert sorted(variable_values(influxd.query(rendered, sessions_db))) == ["early", "elsewhere"]


# --- "now" panels when the wearable is gone -----------------------------------------------------


def _panel(dashboard: str, title: str) -> dict[str, Any]:
    dash = next(d for d in DASHBOARDS.values() if d["uid"] == dashboard)
    return next(p for p in dash["panels"] if p.get("title") == title)


def _shows_red_lost_without_data(panel: dict[str, Any]) -> bool:
    defaults = panel["fieldConfig"]["defaults"]
    special = [m for m in defaults.get("mappings", []) if m["type"] == "special"]
    return defaults.get("noValue") == "lost" and any(
        m["options"]["match"] == "null+nan"
        and m["options"]["result"]["text"] == "lost"
        and m["options"]["result"]["color"] == "red"
        for m in special
    )


#: Stat and gauge panels of a running session, and whether no data there means "lost".
_NOW_PANELS = {
    (OVERVIEW, "Arousal now"): True,
    (OVERVIEW, "Signal now"): True,
    (OVERVIEW, "Last data"): True,
    (OVERVIEW, "Latest episode"): False,  # no episode yet is normal
    (LIVE, "Arousal now"): True,
    (LIVE, "Signal quality now"): True,
    (LIVE, "Heart rate"): False,  # a session may have no heart-rate device
    (LIVE, "EDA tonic"): False,  # nor an EDA one
    (REVIEW, "Arousal at end of range"): False,  # a finished session
}


def test_every_stat_panel_says_what_no_data_means() -> None:
    found = {
        (dash["uid"], p["title"])
        for dash in DASHBOARDS.values()
        for p in dash["panels"]
        if p["type"] in ("stat", "gauge")
    }
    assert found == set(_NOW_PANELS)
    for (uid, title), lost in _NOW_PANELS.items():
        assert _shows_red_lost_without_data(_panel(uid, title)) == lost, (uid, title)
    assert _panel(OVERVIEW, "Latest episode")["fieldConfig"]["defaults"]["noValue"] == "none yet"


# --- what the "now" panels show after a normal end and on a lost wearable ----------------------

#: The overview's time range ("now-15m" to "now").
OVERVIEW_RANGE_S = 900
#: Panels that show "ended" after a normal end (the end mark merged into their own query).
_ENDED_PANELS = [(OVERVIEW, "Arousal now"), (OVERVIEW, "Signal now"), (LIVE, "Arousal now")]


def _frames_at(
    influxd: InfluxD, data: Dataset, panel: dict[str, Any], now_s: float
) -> list[tuple[list[str], list[list[Any]]]]:
    """The tables of every target of ``panel`` as Grafana gets them at ``now_s`` (the range
    ending then), after the panel's transformations."""
    end_ms = round(now_s * 1000)
    frames: list[tuple[list[str], list[list[Any]]]] = []
    for target in panel["targets"]:
        text = render(
            target["query"],
            start_ms=end_ms - OVERVIEW_RANGE_S * 1000,
            end_ms=end_ms,
            variables=_variables(data),
        )
        frames += [(s["columns"], s["values"]) for s in influxd.series(text, data.db)]
    for step in panel.get("transformations", []):
        if step["id"] == "merge":
            # Grafana's merge: tables with the same fields become one table of all their rows
            assert len({tuple(c) for c, _ in frames}) <= 1, "merge of different columns"
            frames = [(frames[0][0], [r for _, rows in frames for r in rows])] if frames else []
        elif step["id"] == "sortBy":
            (order,) = step["options"]["sort"]
            assert order == {"field": "Time", "desc": False}
            frames = [(c, sorted(rows, key=lambda r: r[0])) for c, rows in frames]
        else:
            pytest.fail(f"transformation {step['id']!r} is not replayed by this test")
    return frames


def displayed(
    influxd: InfluxD, data: Dataset, panel: dict[str, Any], now_s: float
) -> tuple[str, str | None]:
    """(text, colour) a stat/gauge panel shows at ``now_s``: its last non-null value (reducer
    ``lastNotNull``) through its value mappings; no value through its null mapping/noValue."""
    defaults = panel["fieldConfig"]["defaults"]
    assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"]
    frames = _frames_at(influxd, data, panel, now_s)
    assert len(frames) <= 1, "one value per panel"
    values = [v for columns, rows in frames for r in rows for v in r[1:] if v is not None]
    for mapping in defaults.get("mappings", []):
        if values and mapping["type"] == "value":
            result = mapping["options"].get(str(values[-1]))
            if result is not None:
                return result["text"], result.get("color")
        if not values and mapping["type"] == "special":
            assert mapping["options"]["match"] == "null+nan"
            result = mapping["options"]["result"]
            return result["text"], result.get("color")
    if not values:
        return defaults.get("noValue", "No data"), None
    return str(values[-1]), None


def _end_mark_s(influxd: InfluxD, data: Dataset) -> float:
    """Time of the session's end mark (``features.ended_code``)."""
    (series,) = influxd.series(
        f'SELECT "ended_code" FROM "features" WHERE "session" = \'{data.session}\' '
        'AND "ended_code" = -1',
        data.db,
    )
    ((t_ns, _code),) = series["values"]
    return float(t_ns) / 1e9


@pytest.mark.parametrize(("dashboard", "title"), _ENDED_PANELS)
def test_now_panels_show_ended_after_a_normal_end(
    influxd: InfluxD, dashboard_data: Dataset, dashboard: str, title: str
) -> None:
    """S02 ends normally (its publisher's ``status: end``): from the end mark until the session
    leaves the overview's 15-min range the panel shows a blue "ended", never a red "lost"; while
    the session runs it shows its value."""
    panel = _panel(dashboard, title)
    end = _end_mark_s(influxd, dashboard_data)
    assert end >= dashboard_data.end_s - 1, "the end mark is at the end of the data"
    running, colour = displayed(influxd, dashboard_data, panel, dashboard_data.end_s - 120)
    if title == "Signal now":  # (its worst stream, RR, is lost at times in S02)
        assert (running, colour) in {("good", "green"), ("degraded", "orange"), ("lost", "red")}
    else:
        assert 0 <= float(running) <= 100
    for after_s in (0, 1, 31, 300, OVERVIEW_RANGE_S - 1):
        assert displayed(influxd, dashboard_data, panel, end + after_s) == ("ended", "blue"), (
            f"{after_s} s after the end"
        )


@pytest.mark.parametrize(("dashboard", "title"), _ENDED_PANELS)
def test_now_panels_show_lost_when_the_wearable_is_lost(
    influxd: InfluxD, lost_wearable_data: Dataset, dashboard: str, title: str
) -> None:
    """The wristband's link drops (``status: lost``, no end): no end mark, so "Signal now" is a
    red "lost" once its 30 s pass, and every panel once the data left the range."""
    panel = _panel(dashboard, title)
    data = lost_wearable_data
    where = f"WHERE \"session\" = '{data.session}'"
    assert influxd.series(f'SELECT "ended_code" FROM "features" {where}', data.db) == []
    last = data.end_s
    running = displayed(influxd, data, panel, last - 60)[0]
    if title == "Signal now":
        assert running in ("good", "degraded", "lost")
    else:
        assert 0 <= float(running) <= 100
    if title == "Signal now":
        for after_s in (31, 300):
            assert displayed(influxd, data, panel, last + after_s) == ("lost", "red")
    for after_s in (OVERVIEW_RANGE_S + 1, 3600):
        assert displayed(influxd, data, panel, last + after_s) == ("lost", "red")


# --- unrepaired gaps: on the dashboards and in the session summary -----------------------------


def test_gap_queries_show_every_gap_of_the_session(
    influxd: InfluxD, gap_session: GapSession
) -> None:
    """The review's "Data gaps" table has one row per stream with a gap, with the count and the
    seconds the pipeline left out; the "Data gaps" annotation one region per gap; and the S02
    session without gaps shows none."""
    data = gap_session.data
    table = next(q for q in DATA_QUERIES if q.key == (REVIEW, "Data gaps", "A"))
    shown = {
        s["tags"]["stream"]: (row[1], row[2])
        for s in _run(influxd, data, table.text)
        for row in s["values"]
    }
    assert set(shown) == set(gap_session.expected) == {"acc", "eda", "hr", "ppg", "temp"}
    for stream, (count, seconds) in gap_session.expected.items():
        assert shown[stream][0] == count
        assert shown[stream][1] == pytest.approx(seconds, abs=1e-6)
    assert shown["eda"][0] == 2, "the link drop and the message lost in transit"
    anno = next(q for q in DATA_QUERIES if q.key == (LIVE, "Data gaps", ""))
    (regions,) = _run(influxd, data, anno.text)
    assert len(regions["values"]) == sum(c for c, _ in gap_session.expected.values())


def test_no_gap_no_gap_rows(influxd: InfluxD, dashboard_data: Dataset) -> None:
    table = next(q for q in DATA_QUERIES if q.key == (REVIEW, "Data gaps", "A"))
    assert _run(influxd, dashboard_data, table.text) == []


def test_session_summary_counts_gaps_and_seconds_per_stream(
    gap_session: GapSession, tmp_path: Path
) -> None:
    """The service's summary of the session (``gap_summary``) holds both kinds of gap per
    stream, and ``summary.json`` (write_outputs, as the demo writes it) carries it."""
    assert set(gap_session.summary) == set(gap_session.expected)
    for stream, (count, seconds) in gap_session.expected.items():
        assert gap_session.summary[stream][0] == count
        assert gap_session.summary[stream][1] == pytest.approx(seconds, abs=1e-6)
    result = AnalysisResult("S02-gaps", gaps=gap_session.summary)
    target = write_outputs(result, tmp_path)
    doc = json.loads((target / "summary.json").read_text(encoding="utf-8"))
    assert doc["gaps"] == {
        stream: {"count": count, "seconds": pytest.approx(seconds)}
        for stream, (count, seconds) in gap_session.expected.items()
    }
    assert (
        json.loads((write_outputs(AnalysisResult("none"), tmp_path) / "summary.json").read_text())[
            "gaps"
        ]
        == {}
    )
