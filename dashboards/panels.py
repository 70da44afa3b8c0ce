"""Panels shared by the Rekindle dashboards (grafana-foundation-sdk builders)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import gauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from rekindle.analysis.points import ENDED_CODE
from rekindle.analysis.schema import extension_fields
from rekindle.dashboards.influxql import DATASOURCE, SESSION_FILTER, InfluxAnnotation, InfluxQL

#: Arousal index levels (the index measures the EDA rise against the preceding minutes; 50 = the
#: rise an episode needs): below WATCH (the episode exit threshold) is calm, at or above ALERT (the
#: enter threshold) is an arousal surge (the alert rule too).
AROUSAL_WATCH = 30.0
AROUSAL_ALERT = 50.0

#: Quality codes stored by the analysis service (``quality.code``).
QUALITY_MAPPINGS: list[dm.ValueMapping] = [
    dm.ValueMap(
        options={
            "0": dm.ValueMappingResult(text="lost", color="red", index=0),
            "1": dm.ValueMappingResult(text="degraded", color="orange", index=1),
            "2": dm.ValueMappingResult(text="good", color="green", index=2),
        }
    )
]

#: What the "now" panels of a running session show when their query returns nothing (or null):
#: the wearable or its link is gone, so a red "lost" rather than Grafana's neutral "No data".
#: Grafana applies a ``null`` special mapping to the no-data display too; ``noValue`` is the
#: same text for panels whose colour does not come from mappings.
LOST_TEXT = "lost"


def lost_when_empty(mappings: list[dm.ValueMapping] | None = None) -> list[dm.ValueMapping]:
    """``mappings`` plus: no data or null shows a red "lost" (its ``index``, Grafana's display
    order of mapping results, follows those of ``mappings``)."""
    before = mappings or []
    index = _mapping_count(before)
    return [
        *before,
        dm.SpecialValueMap(
            options=dm.DashboardSpecialValueMapOptions(
                match=dm.SpecialValueMatch.NULL_AND_NAN,
                result=dm.ValueMappingResult(text=LOST_TEXT, color="red", index=index),
            )
        ),
    ]


#: What a "now" panel shows once every device of the session sent ``status: end``: a normal
#: end (blue, as a device's "ended"), not a lost wearable (red "lost").
ENDED_TEXT = "ended"


def _mapping_count(mappings: list[dm.ValueMapping]) -> int:
    return sum(len(m.options) if isinstance(m, dm.ValueMap) else 1 for m in mappings)


def ended_or_lost(mappings: list[dm.ValueMapping] | None = None) -> list[dm.ValueMapping]:
    """``mappings``, then the session's end mark (``features.ended_code``) as a blue "ended",
    then no data or null as a red "lost" (see :func:`lost_when_empty`)."""
    before = mappings or []
    ended = dm.ValueMap(
        options={
            str(ENDED_CODE): dm.ValueMappingResult(
                text=ENDED_TEXT, color="blue", index=_mapping_count(before)
            )
        }
    )
    return lost_when_empty([*before, ended])


def ended_target(column: str, ref_id: str = "B") -> InfluxQL:
    """The session's end mark in ``column``: ``ENDED_CODE`` at the time every device had sent
    ``status: end`` (written by the analysis service, ``points.session_end_line``), or no row."""
    return InfluxQL(
        f'SELECT last("ended_code") AS "{column}" FROM "features" {where()}', ref_id
    ).table()


#: Grafana transformations of a "now" panel with an :func:`ended_target`: the two tables (the
#: panel's own query and the end mark, both with columns ``Time`` and the panel's column) become
#: one, sorted by time, so the panel's "last" value is the end mark once the session ended
#: normally and its own query's otherwise. tests/dashboards/test_queries.py replays both steps.
ENDED_TRANSFORMATIONS: tuple[dm.DataTransformerConfig, ...] = (
    dm.DataTransformerConfig(id_val="merge", options={}),
    dm.DataTransformerConfig(
        id_val="sortBy", options={"fields": {}, "sort": [{"field": "Time", "desc": False}]}
    ),
)


STATE_MAPPINGS: list[dm.ValueMapping] = [
    dm.ValueMap(
        options={
            "online": dm.ValueMappingResult(text="online", color="green", index=0),
            "offline": dm.ValueMappingResult(text="offline", color="orange", index=1),
            "lost": dm.ValueMappingResult(text="lost", color="red", index=2),
            "end": dm.ValueMappingResult(text="ended", color="blue", index=3),
        }
    )
]


def where(*conditions: str) -> str:
    """``WHERE`` clause: the session filter, extra conditions, then ``$timeFilter``."""
    return "WHERE " + " AND ".join([SESSION_FILTER, *conditions, "$timeFilter"])


def _arousal_thresholds() -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                dm.Threshold(color="green", value=None),
                dm.Threshold(color="yellow", value=AROUSAL_WATCH),
                dm.Threshold(color="red", value=AROUSAL_ALERT),
            ]
        )
    )


def _legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .display_mode(cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _series(title: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .line_width(1)
        .fill_opacity(0)
        .span_nulls(False)
        .legend(_legend())
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.NONE))
    )


def _right_axis(name: str, unit: str) -> list[dm.DynamicConfigValue]:
    return [
        dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        dm.DynamicConfigValue(id_val="unit", value=unit),
        dm.DynamicConfigValue(id_val="displayName", value=name),
    ]


def _points_only() -> list[dm.DynamicConfigValue]:
    return [
        dm.DynamicConfigValue(id_val="custom.drawStyle", value="points"),
        dm.DynamicConfigValue(id_val="custom.pointSize", value=8),
        dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        dm.DynamicConfigValue(id_val="unit", value="µS"),
        dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "purple"}),
    ]


def hr_rmssd() -> timeseries.Panel:
    """Heart rate (left axis, bpm) and RMSSD (right axis, ms) from the 1 Hz feature rows."""
    return (
        _series("Heart rate and RMSSD", "bpm")
        .description("Heart rate (bpm, left) and RMSSD over the analysis window (ms, right).")
        .with_target(
            InfluxQL(
                f'SELECT mean("hr") AS "HR" FROM "features" {where()} '
                "GROUP BY time($__interval) fill(none)",
                "A",
            )
        )
        .with_target(
            InfluxQL(
                f'SELECT mean("rmssd") AS "RMSSD" FROM "features" {where()} '
                "GROUP BY time($__interval) fill(none)",
                "B",
            )
        )
        .override_by_query("B", _right_axis("RMSSD", "ms"))
    )


def registered_features() -> timeseries.Panel | None:
    """One series per field of the registered detectors (docs/extending.md), from the 1 Hz
    feature rows; None when no detector is registered (the committed dashboards)."""
    fields = extension_fields()
    if not fields:
        return None
    units = {f.unit for f in fields}
    panel = _series("Registered detectors", units.pop() if len(units) == 1 else "").description(
        "Per-second features of the registered detectors: "
        + "; ".join(f"{f.name} ({f.unit or 'no unit'}): {f.description}" for f in fields)
    )
    for i, f in enumerate(fields):
        label = f"{f.name} ({f.unit})" if f.unit else f.name
        panel = panel.with_target(
            InfluxQL(
                f'SELECT mean("{f.name}") AS "{label}" FROM "features" {where()} '
                "GROUP BY time($__interval) fill(none)",
                _ref_id(i),
            )
        )
    return panel


def _ref_id(i: int) -> str:
    """Grafana's query ids: A, B, ..., Z, AA, AB, ..."""
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(ord("A") + r) + letters
    return letters


def eda() -> timeseries.Panel:
    """Raw EDA with its tonic and phasic parts; SCR peaks as points (amplitude, right axis)."""
    return (
        _series("Skin conductance (EDA)", "µS")
        .description(
            "Raw EDA, its tonic (slow) and phasic (fast) parts in µS; "
            "purple points are detected skin-conductance responses (amplitude, right axis)."
        )
        .with_target(
            InfluxQL(
                'SELECT mean("value") AS "EDA raw" FROM "signal" '
                + where("\"stream\" = 'eda'")
                + " GROUP BY time($__interval) fill(none)",
                "A",
            )
        )
        .with_target(
            InfluxQL(
                f'SELECT mean("tonic") AS "tonic", mean("phasic") AS "phasic" FROM "eda" {where()} '
                "GROUP BY time($__interval) fill(none)",
                "B",
            )
        )
        .with_target(InfluxQL(f'SELECT "amplitude" AS "SCR" FROM "scr" {where()}', "C"))
        .override_by_query("C", _points_only())
    )


def arousal_series() -> timeseries.Panel:
    return (
        _series("Arousal index", "none")
        .description(
            "Arousal index (0-100) from the signals present; the dashed lines are the watch "
            f"({AROUSAL_WATCH:g}) and alert ({AROUSAL_ALERT:g}) levels."
        )
        .min(0)
        .max(100)
        .thresholds(_arousal_thresholds())
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        .with_target(
            InfluxQL(
                f'SELECT mean("arousal_index") AS "arousal index" FROM "features" {where()} '
                "GROUP BY time($__interval) fill(none)",
                "A",
            )
        )
    )


def arousal_contributions() -> timeseries.Panel:
    return (
        _series("Arousal index: contribution of each signal", "none")
        .description(
            "Index points contributed by each input (EDA, HR, RMSSD); they add up to the index."
        )
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
        .fill_opacity(40)
        .with_target(
            InfluxQL(
                'SELECT mean("contrib_eda") AS "EDA", mean("contrib_hr") AS "HR", '
                f'mean("contrib_rmssd") AS "RMSSD" FROM "features" {where()} '
                "GROUP BY time($__interval) fill(none)",
                "A",
            )
        )
    )


def arousal_gauge(*, live: bool = True) -> gauge.Panel:
    """Latest arousal index; ``live``: "ended" after a normal end, and no data shows a red
    "lost" (see :data:`ENDED_TEXT`, :data:`LOST_TEXT`)."""
    panel = (
        gauge.Panel()
        .title("Arousal now")
        .description(
            "Latest arousal index (0-100)"
            + (
                "; 'ended' once every device ended the session, 'lost' without data."
                if live
                else "."
            )
        )
        .datasource(DATASOURCE)
        .unit("none")
        .min(0)
        .max(100)
        .decimals(0)
        .thresholds(_arousal_thresholds())
        .show_threshold_markers(True)
        .show_threshold_labels(False)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    query = InfluxQL(f'SELECT last("arousal_index") AS "arousal" FROM "features" {where()}', "A")
    if not live:
        return panel.with_target(query)
    panel = panel.with_target(query.table()).with_target(ended_target("arousal"))
    for step in ENDED_TRANSFORMATIONS:
        panel = panel.with_transformation(step)
    return panel.mappings(ended_or_lost()).no_value(LOST_TEXT)


def latest_stat(title: str, field: str, unit: str, decimals: int) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .decimals(decimals)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .color_mode(cm.BigValueColorMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(
            InfluxQL(
                f'SELECT mean("{field}") AS "{title}" FROM "features" {where()} '
                "GROUP BY time($__interval) fill(none)",
                "A",
            )
        )
    )


def quality_now() -> stat.Panel:
    return (
        stat.Panel()
        .title("Signal quality now")
        .description("Latest quality of each stream: good, degraded or lost.")
        .datasource(DATASOURCE)
        .mappings(lost_when_empty(QUALITY_MAPPINGS))
        .no_value(LOST_TEXT)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(
            InfluxQL(f'SELECT last("code") FROM "quality" {where()} GROUP BY "stream"', "A").alias(
                "$tag_stream"
            )
        )
    )


def quality_timeline() -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .title("Signal quality per stream")
        .description("Worst quality of each stream in each interval (good, degraded, lost).")
        .datasource(DATASOURCE)
        .mappings(QUALITY_MAPPINGS)
        .show_value(cm.VisibilityMode.NEVER)
        .merge_values(True)
        .line_width(0)
        .fill_opacity(80)
        .legend(_legend())
        .with_target(
            InfluxQL(
                f'SELECT min("code") FROM "quality" {where()} '
                'GROUP BY time($__interval), "stream" fill(none)',
                "A",
            ).alias("$tag_stream")
        )
    )


def devices() -> table.Panel:
    return (
        table.Panel()
        .align(cm.FieldTextAlignment.AUTO)
        .title("Devices")
        .description("Last reported connection state, battery (%) and signal strength per device.")
        .datasource(DATASOURCE)
        .mappings(STATE_MAPPINGS)
        .with_target(
            InfluxQL(
                'SELECT last("state") AS "state", last("battery") AS "battery %", '
                f'last("rssi") AS "RSSI dBm" FROM "status" {where()} GROUP BY "device"',
                "A",
            ).table()
        )
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": {}}
            )
        )
    )


def episodes_table(title: str, *, detail: bool) -> table.Panel:
    fields = '"kind", "duration_s", "peak_index", "signals", "recovery_depth"'
    if detail:
        fields += ', "recovery_latency_s", "offset" * 1000 AS "offset"'
    panel = (
        table.Panel()
        .align(cm.FieldTextAlignment.AUTO)
        .title(title)
        .description(
            "Arousal and emotional-release episodes: onset (Time), duration (s), peak index, "
            "contributing signals and, for release, recovery depth"
            + (" and latency (s)." if detail else ".")
        )
        .datasource(DATASOURCE)
        .sort_by([cb.TableSortByFieldState().display_name("Time").desc(True)])
        .with_target(InfluxQL(f'SELECT {fields} FROM "episode" {where()}', "A").table())
        .override_by_name("duration_s", [dm.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("peak_index", [dm.DynamicConfigValue(id_val="decimals", value=0)])
    )
    if detail:
        panel = panel.override_by_name(
            "offset", [dm.DynamicConfigValue(id_val="unit", value="dateTimeAsIso")]
        ).override_by_name("recovery_latency_s", [dm.DynamicConfigValue(id_val="unit", value="s")])
    return panel


def markers_table() -> table.Panel:
    return (
        table.Panel()
        .align(cm.FieldTextAlignment.AUTO)
        .title("Clinician markers")
        .datasource(DATASOURCE)
        .sort_by([cb.TableSortByFieldState().display_name("Time").desc(True)])
        .with_target(InfluxQL(f'SELECT "text", "device" FROM "marker" {where()}', "A").table())
    )


def annotation_queries() -> list[InfluxAnnotation]:
    """Episodes (as regions) and clinician markers on every time-series panel."""
    return [
        InfluxAnnotation(
            "Arousal episodes",
            'SELECT "signals", "peak_index", "offset" * 1000 AS "end", "kind" FROM "episode" '
            + where("\"kind\" = 'arousal'"),
            color="orange",
            text="signals",
        )
        .tags("kind")
        .time_end("end"),
        InfluxAnnotation(
            "Emotional release",
            'SELECT "signals", "recovery_depth", "offset" * 1000 AS "end", "kind" FROM "episode" '
            + where("\"kind\" = 'release'"),
            color="blue",
            text="signals",
        )
        .tags("kind")
        .time_end("end"),
        InfluxAnnotation(
            "Clinician markers",
            f'SELECT "text", "device" FROM "marker" {where()}',
            color="purple",
            text="text",
        ).tags("device"),
        gap_annotation(),
    ]


def gap_annotation() -> InfluxAnnotation:
    """Unrepaired data gaps (the ``gap`` measurement) as red regions, one per stream and gap:
    messages that never arrived (``source=seq``) and a wearable's link that dropped (the
    publisher's gap record). The text is the stream, the tag the device."""
    return (
        InfluxAnnotation(
            "Data gaps",
            'SELECT "stream", "device", "duration_s", "end" * 1000 AS "end" FROM "gap" ' + where(),
            color="red",
            text="stream",
        )
        .tags("device")
        .time_end("end")
    )


def row(title: str) -> db.Row:
    return db.Row(title)
