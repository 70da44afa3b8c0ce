"""Session review dashboard: one session over a chosen time range, with episodes and summary."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from rekindle.dashboards import panels, variables
from rekindle.dashboards.influxql import DATASOURCE, InfluxQL
from rekindle.dashboards.live import links
from rekindle.dashboards.panels import where

UID = "rekindle-review"


def _summary_table(title: str, query: str, decimals: int) -> table.Panel:
    """A one-query table over the selected range, without the time column."""
    return (
        table.Panel()
        .align(cm.FieldTextAlignment.AUTO)
        .title(title)
        .datasource(DATASOURCE)
        .with_target(InfluxQL(query, "A").table())
        .decimals(decimals)
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": {}}
            )
        )
    )


def summary() -> table.Panel:
    """Session summary: analysed time and mean/max of the features over the time range."""
    return _summary_table(
        "Session summary",
        'SELECT count("arousal_index") AS "analysed s", mean("hr") AS "mean HR bpm", '
        'mean("rmssd") AS "mean RMSSD ms", mean("eda_tonic") AS "mean EDA tonic µS", '
        'mean("arousal_index") AS "mean arousal", max("arousal_index") AS "max arousal" '
        f'FROM "features" {where()}',
        1,
    ).description(
        "Seconds analysed, mean HR, RMSSD and tonic EDA, mean and maximum arousal index "
        "over the selected time range."
    )


def episode_summary() -> table.Panel:
    return _summary_table(
        "Episodes by kind",
        'SELECT count("peak_index") AS "episodes", '
        'mean("duration_s") AS "mean duration s", '
        'max("peak_index") AS "max peak", mean("recovery_depth") AS "mean recovery depth" '
        f'FROM "episode" {where()} GROUP BY "kind"',
        1,
    )


def quality_summary() -> table.Panel:
    return (
        _summary_table(
            "Signal quality summary",
            'SELECT count("code") AS "seconds", mean("code") * 50 AS "quality score", '
            f'min("code") AS "worst" FROM "quality" {where()} GROUP BY "stream"',
            0,
        )
        .description(
            "Per stream: seconds with a quality verdict, quality score (100 = good throughout, "
            "50 = degraded throughout, 0 = lost throughout) and the worst state seen."
        )
        .override_by_name(
            "worst",
            [
                dm.DynamicConfigValue(
                    id_val="mappings", value=[m.to_json() for m in panels.QUALITY_MAPPINGS]
                )
            ],
        )
    )


def gap_summary() -> table.Panel:
    return _summary_table(
        "Data gaps",
        'SELECT count("duration_s") AS "gaps", sum("duration_s") AS "seconds missing", '
        'max("duration_s") AS "longest s" '
        f'FROM "gap" {where()} GROUP BY "stream"',
        1,
    ).description(
        "Per stream: unrepaired gaps in the range (messages that never arrived, or a wearable's "
        "link that dropped), the seconds of data they miss and the longest. No rows: no gap."
    )


def scr_summary() -> table.Panel:
    return _summary_table(
        "Skin-conductance responses",
        'SELECT count("amplitude") AS "SCRs", mean("amplitude") AS "mean amplitude µS", '
        f'max("amplitude") AS "max amplitude µS" FROM "scr" {where()}',
        2,
    )


#: NeuroKit2 metrics shown in the metrics tables (``nk_<NeuroKit2 name>`` AS the column).
NK_COLUMNS = (
    ("nk_SCR_Peaks_N", "SCRs"),
    ("nk_SCR_Peaks_Amplitude_Mean", "mean SCR amplitude µS"),
    ("nk_EDA_Tonic_SD", "tonic SD µS"),
    ("nk_EDA_Sympathetic", "EDA sympathetic"),
    ("nk_clean_beats", "clean beats"),
    ("nk_HRV_MeanNN", "mean NN ms"),
    ("nk_HRV_SDNN", "SDNN ms"),
    ("nk_HRV_RMSSD", "RMSSD ms"),
    ("nk_HRV_LFHF", "LF/HF"),
    ("nk_notes", "notes"),
)


def _metrics_table(title: str, measurement: str, first: str, description: str) -> table.Panel:
    nk = ", ".join(f'"{name}" AS "{label}"' for name, label in NK_COLUMNS)
    return (
        table.Panel()
        .align(cm.FieldTextAlignment.AUTO)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .sort_by([cb.TableSortByFieldState().display_name("Time").desc(False)])
        .with_target(
            InfluxQL(
                f'SELECT {first}, "duration_s", {nk} FROM "{measurement}" {where()}', "A"
            ).table()
        )
        .decimals(2)
        .override_by_name("duration_s", [dm.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("SCRs", [dm.DynamicConfigValue(id_val="decimals", value=0)])
        .override_by_name("clean beats", [dm.DynamicConfigValue(id_val="decimals", value=0)])
    )


def episode_metrics() -> table.Panel:
    """NeuroKit2's interval metrics of each episode (measurement ``episode_metrics``)."""
    return _metrics_table(
        "Episode metrics (NeuroKit2)",
        "episode_metrics",
        '"kind"',
        "Per episode (Time = onset), NeuroKit2 on its raw EDA and clean RR intervals: SCR count "
        "and mean amplitude, tonic SD, sympathetic index (eda_intervalrelated); mean NN, SDNN, "
        "RMSSD (hrv_time, >= 20 clean beats); LF/HF (hrv_frequency, >= 2 min of clean beats). "
        "Notes say what could not be computed. Written shortly after the episode closes.",
    )


def segment_metrics() -> table.Panel:
    """NeuroKit2's interval metrics of each segment between markers and each labelled phase."""
    return _metrics_table(
        "Segment metrics (NeuroKit2)",
        "segment_metrics",
        '"kind", "label"',
        "Per segment between clinician markers (labelled by the marker that opens it) and per "
        "labelled phase (Time = start): the NeuroKit2 metrics of the episode table. Written "
        "once the data has passed the marker that closes the segment (the last segment and the "
        "phases when the session ends).",
    )


def build() -> dm.Dashboard:
    dash = (
        db.Dashboard("Rekindle: session review")
        .uid(UID)
        .description("A recorded or finished session over a chosen time range, with episode detail")
        .tags(["rekindle", "review"])
        .editable()
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .links(links())
        .with_variable(variables.site())
        .with_variable(variables.session(active_only=False))
    )
    for anno in panels.annotation_queries():
        dash = dash.annotation(anno)
    dash = (
        dash.with_row(panels.row("Summary"))
        .with_panel(summary().span(12).height(5))
        .with_panel(scr_summary().span(6).height(5))
        .with_panel(
            panels.arousal_gauge(live=False).title("Arousal at end of range").span(6).height(5)
        )
        .with_panel(episode_summary().span(12).height(5))
        .with_panel(quality_summary().span(12).height(5))
        .with_panel(gap_summary().span(12).height(5))
        .with_row(panels.row("Signals"))
        .with_panel(panels.arousal_series().span(24).height(8))
        .with_panel(panels.hr_rmssd().span(12).height(8))
        .with_panel(panels.eda().span(12).height(8))
        .with_panel(panels.quality_timeline().span(12).height(6))
        .with_panel(panels.arousal_contributions().span(12).height(6))
        .with_row(panels.row("Episodes and markers"))
        .with_panel(panels.episodes_table("Episodes", detail=True).span(14).height(9))
        .with_panel(panels.markers_table().span(10).height(9))
        .with_panel(episode_metrics().span(24).height(8))
        .with_panel(segment_metrics().span(24).height(9))
        .with_panel(panels.devices().span(24).height(5))
    )
    extra = panels.registered_features()
    if extra is not None:
        dash = dash.with_row(panels.row("Registered detectors")).with_panel(
            extra.span(24).height(8)
        )
    return dash.build()
