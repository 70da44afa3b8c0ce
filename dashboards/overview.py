"""Clinic overview: every active session at once, one row per room."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from rekindle.dashboards import panels, variables
from rekindle.dashboards.influxql import DATASOURCE, InfluxQL
from rekindle.dashboards.live import links
from rekindle.dashboards.panels import where

UID = "rekindle-overview"
#: "Signal now" looks at the last this many seconds of quality verdicts.
SIGNAL_NOW_S = 30
_SITE_ONLY = 'WHERE "site" =~ /^$site$/ AND $timeFilter'


def active_sessions() -> table.Panel:
    """One line per session with data in the range: arousal now and when data last arrived."""
    return (
        table.Panel()
        .align(cm.FieldTextAlignment.AUTO)
        .title("Active sessions")
        .description(
            "Every session with data in the time range: latest arousal index and how long ago "
            "its last data arrived. Click a session for its live dashboard."
        )
        .datasource(DATASOURCE)
        .filterable(True)
        .with_target(
            InfluxQL(
                'SELECT last("arousal_index") AS "arousal now" FROM "features" '
                f'{_SITE_ONLY} GROUP BY "site", "session"',
                "A",
            ).table()
        )
        .sort_by([cb.TableSortByFieldState().display_name("arousal now").desc(True)])
        .override_by_name(
            "Time",
            [
                dm.DynamicConfigValue(id_val="unit", value="dateTimeFromNow"),
                dm.DynamicConfigValue(id_val="displayName", value="last data"),
            ],
        )
        .override_by_name(
            "arousal now",
            [
                dm.DynamicConfigValue(id_val="decimals", value=0),
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background"}
                ),
                dm.DynamicConfigValue(
                    id_val="thresholds",
                    value={
                        "mode": "absolute",
                        "steps": [
                            {"color": "green", "value": None},
                            {"color": "yellow", "value": panels.AROUSAL_WATCH},
                            {"color": "red", "value": panels.AROUSAL_ALERT},
                        ],
                    },
                ),
            ],
        )
        .override_by_name(
            "session",
            [
                dm.DynamicConfigValue(
                    id_val="links",
                    value=[
                        {
                            "title": "Live session",
                            "url": "/d/rekindle-live?var-site=${__data.fields.site}"
                            "&var-session=${__value.raw}&${__url_time_range}",
                        }
                    ],
                )
            ],
        )
    )


def latest_episode() -> stat.Panel:
    return (
        stat.Panel()
        .title("Latest episode")
        .description("Kind and peak arousal index of the most recent episode in the range.")
        .datasource(DATASOURCE)
        .color_mode(cm.BigValueColorMode.NONE)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .decimals(0)
        .no_value("none yet")
        .reduce_options(
            cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("/^(kind|peak)$/")
        )
        .with_target(
            InfluxQL(
                f'SELECT last("peak_index") AS "peak", "kind" FROM "episode" {where()}', "A"
            ).table()
        )
    )


def signal_now() -> stat.Panel:
    panel = (
        stat.Panel()
        .title("Signal now")
        .description(
            f"Worst quality of any stream over the last {SIGNAL_NOW_S} s of the range; "
            "ended once every device ended the session; lost when nothing arrived in that time "
            "and the session did not end."
        )
        .datasource(DATASOURCE)
        .mappings(panels.ended_or_lost(panels.QUALITY_MAPPINGS))
        .no_value(panels.LOST_TEXT)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(
            InfluxQL(
                'SELECT min("code") AS "signal" FROM "quality" '
                + where(f"time > ${{__to}}ms - {SIGNAL_NOW_S}s"),
                "A",
            ).table()
        )
        .with_target(panels.ended_target("signal"))
    )
    for step in panels.ENDED_TRANSFORMATIONS:
        panel = panel.with_transformation(step)
    return panel


def last_data() -> stat.Panel:
    return (
        stat.Panel()
        .title("Last data")
        .description(
            "Time since the analysis last wrote a feature row for this session; "
            "lost when none in the time range."
        )
        .datasource(DATASOURCE)
        .unit("dateTimeFromNow")
        .mappings(panels.lost_when_empty())
        .no_value(panels.LOST_TEXT)
        .thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(color="text", value=None)])
        )
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(
            cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("/^Time$/")
        )
        .with_target(
            InfluxQL(f'SELECT last("arousal_index") FROM "features" {where()}', "A").table()
        )
    )


def build() -> dm.Dashboard:
    return (
        db.Dashboard("Rekindle: clinic overview")
        .uid(UID)
        .description("Every active session at once, one row per room.")
        .tags(["rekindle", "overview"])
        .editable()
        .time("now-15m", "now")
        .refresh("10s")
        .timezone("browser")
        .links(links())
        .with_variable(variables.site(multi=True))
        .with_variable(variables.session(active_only=True, multi=True, follow_time=True))
        .with_panel(active_sessions().span(24).height(7))
        .with_row(panels.row("Session $session").repeat("session"))
        .with_panel(panels.arousal_gauge().span(6).height(5))
        .with_panel(latest_episode().span(6).height(5))
        .with_panel(signal_now().span(6).height(5))
        .with_panel(last_data().span(6).height(5))
        .build()
    )
