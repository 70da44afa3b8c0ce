"""Live session dashboard: the patient now, the last hour, and whether the sensors work."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as dm

from rekindle.dashboards import panels, variables

UID = "rekindle-live"


def links() -> list[cogbuilder.Builder[dm.DashboardLink]]:
    return [
        db.DashboardLink("Rekindle")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(["rekindle"])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    ]


def build() -> dm.Dashboard:
    dash = (
        db.Dashboard("Rekindle: live session")
        .uid(UID)
        .description("One therapy session as it happens: arousal, HR, EDA, signal quality, devices")
        .tags(["rekindle", "live"])
        .editable()
        .time("now-1h", "now")
        .refresh("5s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .links(links())
        .with_variable(variables.site())
        .with_variable(variables.session(active_only=True))
    )
    for anno in panels.annotation_queries():
        dash = dash.annotation(anno)
    dash = (
        dash.with_row(panels.row("Now"))
        .with_panel(panels.arousal_gauge().span(6).height(7))
        .with_panel(panels.latest_stat("Heart rate", "hr", "bpm", 0).span(4).height(7))
        .with_panel(panels.latest_stat("EDA tonic", "eda_tonic", "µS", 2).span(4).height(7))
        .with_panel(panels.quality_now().span(10).height(7))
        .with_row(panels.row("Last hour"))
        .with_panel(panels.arousal_series().span(24).height(8))
        .with_panel(panels.hr_rmssd().span(12).height(8))
        .with_panel(panels.eda().span(12).height(8))
        .with_panel(panels.quality_timeline().span(12).height(6))
        .with_panel(panels.arousal_contributions().span(12).height(6))
        .with_row(panels.row("Episodes, markers and devices"))
        .with_panel(panels.episodes_table("Episodes", detail=False).span(10).height(8))
        .with_panel(panels.markers_table().span(7).height(8))
        .with_panel(panels.devices().span(7).height(8))
    )
    extra = panels.registered_features()
    if extra is not None:
        dash = dash.with_row(panels.row("Registered detectors")).with_panel(
            extra.span(24).height(8)
        )
    return dash.build()
