"""Template variables (``site``, ``session``) shared by the dashboards."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from rekindle.dashboards.influxql import DATASOURCE

#: Every site that ever wrote feature rows.
SITE_QUERY = 'SHOW TAG VALUES FROM "features" WITH KEY = "site"'
#: Every session of the chosen site(s) (InfluxDB 1.x ignores time in SHOW TAG VALUES).
SESSION_QUERY = 'SHOW TAG VALUES FROM "features" WITH KEY = "session" WHERE "site" =~ /^$site$/'
#: Sessions with feature rows inside the dashboard's time range: one row per session (the
#: selector ``last()`` grouped by session), not one per feature second (3,600 per session-hour).
#: Grafana takes the second column of a SELECT (after time) as the value, so "session" comes
#: first. ``SHOW TAG VALUES`` would be cheaper still, but InfluxDB 1.x answers it from the index
#: and ignores the time range (every session the site ever had), so it only serves the review
#: dashboard's list of all sessions.
ACTIVE_SESSION_QUERY = (
    'SELECT "session", last("arousal_index") FROM "features" '
    'WHERE "site" =~ /^$site$/ AND $timeFilter GROUP BY "session"'
)


def site(*, multi: bool = False) -> db.QueryVariable:
    var = (
        db.QueryVariable("site")
        .label("Site")
        .description("Clinic site or room (pseudonymous id).")
        .datasource(DATASOURCE)
        .query(SITE_QUERY)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.NATURAL_ASC)
    )
    if multi:
        var = (
            var.multi(True)
            .include_all(True)
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    return var


def session(
    *, active_only: bool, multi: bool = False, follow_time: bool = False
) -> db.QueryVariable:
    """The session picker.

    ``active_only``: offer only sessions with feature rows in the time range (else every session
    of the site). ``follow_time``: re-run the query whenever the time range moves (every
    auto-refresh), so that new sessions appear without reloading the dashboard; otherwise it runs
    when the dashboard loads.
    """
    var = (
        db.QueryVariable("session")
        .label("Session")
        .description(
            "Pseudonymous session id"
            + (" (sessions with data in the time range)." if active_only else ".")
        )
        .datasource(DATASOURCE)
        .query(ACTIVE_SESSION_QUERY if active_only else SESSION_QUERY)
        .refresh(
            dm.VariableRefresh.ON_TIME_RANGE_CHANGED
            if follow_time
            else dm.VariableRefresh.ON_DASHBOARD_LOAD
        )
        .sort(dm.VariableSort.NATURAL_DESC)
    )
    if multi:
        var = (
            var.multi(True)
            .include_all(True)
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    return var
