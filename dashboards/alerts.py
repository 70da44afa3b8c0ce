"""Grafana alert rules (file provisioning format), built with grafana-foundation-sdk.

Three rules, each evaluated per site and session (multi-dimensional, from the InfluxQL
``GROUP BY`` tags):

* **Arousal high**: the lowest arousal index of the last ``AROUSAL_HOLD_S`` seconds is above
  ``AROUSAL_ALERT``, i.e. the index stayed above the threshold for that long.
* **Signal lost**: the best quality verdict of an EDA or HR stream (``ALERT_STREAMS``) over the
  last ``SIGNAL_LOST_S`` seconds is "lost" (code 0), i.e. the stream was lost for that long. RR
  intervals are left out: wrist PPG loses beats for minutes at a time (Stress-Predict S02: RR
  lost for 2,188 of 2,962 s) while HR, which carries the cardiac part of the index, continues;
  an alert that fires for most of a session is an alert staff learn to ignore. RR quality stays
  on the dashboards.
* **No data**: a session that wrote feature rows in the last ``NO_DATA_LOOKBACK_S`` seconds wrote
  none in the last ``NO_DATA_S`` seconds (10 s buckets, so it fires between ``NO_DATA_S - 10``
  and ``NO_DATA_S`` seconds of silence) and did not end normally. A normal end is the
  ``features`` field ``ended``, which the analysis service writes at the time of the last
  ``status: end`` once every device that announced itself ``online`` has sent one
  (``services/analysis/points.session_end_line``). Status messages themselves reach InfluxDB
  as ``status`` rows (tags site, session, device; the state a string), one series per device:
  no single InfluxQL query (no subqueries, see dashboards/influxql.py) can tell from them that
  *every* device ended, and a device lost without a word leaves no row at all; the service,
  which follows every device of a session, can. The query adds the running count of ``ended``
  marks to the moving count of rows, so an ended session stays at or above 1 until it leaves
  the look-back window, while a lost wearable (``status: lost``, a last-will, or plain silence)
  drops to 0 and fires. A session that sends data again after its end is not watched again
  until that end mark leaves the look-back window.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from grafana_foundation_sdk.builders import alerting as ab
from grafana_foundation_sdk.builders import expr as eb
from grafana_foundation_sdk.models import alerting as am
from grafana_foundation_sdk.models import dashboard as dm

from rekindle.dashboards.influxql import DATASOURCE_UID, InfluxQL
from rekindle.dashboards.panels import AROUSAL_ALERT

#: The provisioned contact point: a webhook to ``rekindle alerts relay`` (the compose service
#: ``alerts``, services/analysis/alert_relay.py), which publishes each alert on MQTT at
#: ``rekindle/v1/<site>/<session>/out/alert``.
CONTACT_POINT: Final = "Rekindle MQTT relay"
CONTACT_POINT_UID: Final = "rekindle-relay"
RELAY_URL: Final = "http://alerts:9095/grafana"
#: Notification policy: one notification per alert and session, sent 10 s after the first
#: firing, changes at most every minute, repeated every 15 min while it fires.
GROUP_BY: Final = ("grafana_folder", "alertname", "site", "session")
GROUP_WAIT: Final = "10s"
GROUP_INTERVAL: Final = "1m"
REPEAT_INTERVAL: Final = "15m"

#: Alert-rule folder; not the dashboards' "Rekindle" folder, which the dashboard provider owns.
FOLDER: Final = "Rekindle alerts"
GROUP: Final = "rekindle-sessions"
EVALUATION_INTERVAL: Final = "10s"
#: As long as an arousal episode needs to be confirmed (``min_episode_s``).
AROUSAL_HOLD_S: Final = 30
SIGNAL_LOST_S: Final = 30
NO_DATA_S: Final = 60
NO_DATA_BUCKET_S: Final = 10
NO_DATA_LOOKBACK_S: Final = 900

AROUSAL_QUERY: Final = (
    'SELECT min("arousal_index") AS "arousal" FROM "features" WHERE $timeFilter '
    'GROUP BY "site", "session"'
)
#: Streams whose loss is alerted (they carry the arousal index; see the module docstring).
ALERT_STREAMS: Final = ("eda", "hr")
SIGNAL_LOST_QUERY: Final = (
    'SELECT max("code") AS "quality" FROM "quality" WHERE $timeFilter AND '
    f'"stream" =~ /^({"|".join(ALERT_STREAMS)})$/ '
    'GROUP BY "site", "session", "stream"'
)
NO_DATA_QUERY: Final = (
    f'SELECT moving_average(count("streams"), {NO_DATA_S // NO_DATA_BUCKET_S}) '
    '+ cumulative_sum(count("ended")) AS "rows" '
    f'FROM "features" WHERE $timeFilter GROUP BY time({NO_DATA_BUCKET_S}s), "site", "session" '
    "fill(0)"
)

Comparison = Literal["gt", "lt"]
_EXPR = dm.DataSourceRef(type_val="__expr__", uid="__expr__")


def _rule(
    uid: str,
    title: str,
    query: str,
    lookback_s: int,
    comparison: Comparison,
    threshold: float,
    summary: str,
    severity: str,
) -> ab.Rule:
    source = (
        ab.Query("A")
        .datasource_uid(DATASOURCE_UID)
        .relative_time_range(am.RelativeTimeRange(from_val=lookback_s, to=0))
        .model(InfluxQL(query, "A"))
    )
    reduce = (
        ab.Query("B")
        .datasource_uid("__expr__")
        .relative_time_range(am.RelativeTimeRange(from_val=0, to=0))
        .model(
            eb.TypeReduce()
            .datasource(_EXPR)
            .ref_id("B")
            .expression("A")
            .reducer("last")
            .settings(eb.ExprTypeReduceSettings().mode("dropNN"))
        )
    )
    condition = (
        ab.Query("C")
        .datasource_uid("__expr__")
        .relative_time_range(am.RelativeTimeRange(from_val=0, to=0))
        .model(
            eb.TypeThreshold()
            .datasource(_EXPR)
            .ref_id("C")
            .expression("B")
            .conditions(
                [
                    eb.ExprTypeThresholdConditions().evaluator(
                        eb.ExprTypeThresholdConditionsEvaluator()
                        .type(comparison)
                        .params([threshold])
                    )
                ]
            )
        )
    )
    return (
        ab.Rule(title)
        .uid(uid)
        .condition("C")
        .queries([source, reduce, condition])
        .for_val("0s")
        .no_data_state("OK")
        .exec_err_state("Error")
        .is_paused(False)
        .annotations({"summary": summary})
        .labels({"severity": severity, "app": "rekindle"})
    )


def rules() -> list[am.Rule]:
    return [
        _rule(
            "rekindle-arousal-high",
            "Arousal high",
            AROUSAL_QUERY,
            AROUSAL_HOLD_S,
            "gt",
            AROUSAL_ALERT,
            f"Session {{{{ $labels.session }}}} (site {{{{ $labels.site }}}}): arousal index "
            f"above {AROUSAL_ALERT:g} for {AROUSAL_HOLD_S} s",
            "warning",
        ).build(),
        _rule(
            "rekindle-signal-lost",
            "Signal lost",
            SIGNAL_LOST_QUERY,
            SIGNAL_LOST_S,
            "lt",
            0.5,
            "Session {{ $labels.session }} (site {{ $labels.site }}): "
            f"{{{{ $labels.stream }}}} signal lost for {SIGNAL_LOST_S} s",
            "warning",
        ).build(),
        _rule(
            "rekindle-no-data",
            "No data from session",
            NO_DATA_QUERY,
            NO_DATA_LOOKBACK_S,
            "lt",
            0.5,
            "Session {{ $labels.session }} (site {{ $labels.site }}): "
            f"no data for {NO_DATA_S} s and no normal end: is a wearable or its link lost?",
            "critical",
        ).build(),
    ]


def _json(obj: Any) -> Any:
    """Plain JSON values from SDK objects (recursively through ``to_json``)."""
    if hasattr(obj, "to_json"):
        return _json(obj.to_json())
    if isinstance(obj, dict):
        return {k: _json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json(v) for v in obj]
    return obj


#: Keys of the SDK's API-shaped rule that the file-provisioning format takes from the group.
_GROUP_LEVEL_KEYS = ("folderUID", "orgID", "ruleGroup")


def contact_points() -> list[dict[str, Any]]:
    """The webhook contact point (file-provisioning format)."""
    return [
        {
            "orgId": 1,
            "name": CONTACT_POINT,
            "receivers": [
                {
                    "uid": CONTACT_POINT_UID,
                    "type": "webhook",
                    "disableResolveMessage": False,
                    "settings": {"url": RELAY_URL, "httpMethod": "POST"},
                }
            ],
        }
    ]


def policies() -> list[dict[str, Any]]:
    """The notification policy tree: everything to :data:`CONTACT_POINT`."""
    return [
        {
            "orgId": 1,
            "receiver": CONTACT_POINT,
            "group_by": list(GROUP_BY),
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        }
    ]


def provisioning() -> dict[str, Any]:
    """Alert rules, contact point and notification policy as one Grafana file-provisioning
    document (``provisioning/alerting``)."""
    rule_docs = []
    for rule in rules():
        doc = _json(rule)
        for key in _GROUP_LEVEL_KEYS:
            doc.pop(key, None)
        rule_docs.append(doc)
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": GROUP,
                "folder": FOLDER,
                "interval": EVALUATION_INTERVAL,
                "rules": rule_docs,
            }
        ],
        "contactPoints": contact_points(),
        "policies": policies(),
    }
