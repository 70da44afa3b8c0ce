"""What Grafana does to an InfluxQL query before sending it, reproduced for the tests.

Grafana's InfluxDB datasource replaces ``$timeFilter`` with
``time >= <from>ms and time <= <to>ms``, ``$__interval`` with the panel's interval (time range
divided by max data points, rounded to a "nice" value), ``${__to}`` with the end of the range in
epoch milliseconds, and template variables used inside ``/^...$/`` with regex-escaped values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent.parent
GENERATED = REPO / "dashboards" / "generated"
ALERTS = REPO / "dashboards" / "provisioning" / "alerting" / "rekindle-alerts.yaml"

#: Grafana's "nice" intervals (``rangeutil.roundInterval``), in ms.
_NICE_MS = [
    10,
    20,
    50,
    100,
    200,
    500,
    1000,
    2000,
    5000,
    10_000,
    15_000,
    20_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_200_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
]
_LEFTOVER = re.compile(r"\$(?:\{|[A-Za-z_])")
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}/])")


@dataclass(frozen=True)
class Dataset:
    """A session in influxd that the dashboards are run against."""

    db: str
    site: str
    session: str
    start_s: float
    end_s: float
    lines: int


@dataclass(frozen=True)
class Query:
    """One InfluxQL query found in a dashboard."""

    dashboard: str
    kind: Literal["panel", "variable", "annotation"]
    name: str
    ref_id: str
    text: str
    spec: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dashboard, self.name, self.ref_id)


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(GENERATED.glob("*.json"))
    }


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def queries(dash: dict[str, Any]) -> list[Query]:
    uid = dash["uid"]
    out = []
    for panel in _panels(dash.get("panels", [])):
        for target in panel.get("targets", []):
            out.append(
                Query(uid, "panel", panel["title"], target["refId"], target["query"], target)
            )
    for var in dash.get("templating", {}).get("list", []):
        if var["type"] == "query":
            out.append(Query(uid, "variable", var["name"], "", var["query"], var))
    for anno in dash.get("annotations", {}).get("list", []):
        out.append(Query(uid, "annotation", anno["name"], "", anno["query"], anno))
    return out


def interval_ms(start_ms: int, end_ms: int, max_points: int = 1000, min_ms: int = 1000) -> int:
    raw = max((end_ms - start_ms) / max_points, min_ms)
    return next((n for n in _NICE_MS if n >= raw), _NICE_MS[-1])


def _duration(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def render(
    text: str, *, start_ms: int, end_ms: int, variables: Mapping[str, str] | None = None
) -> str:
    """The query as Grafana would send it for this time range and these variable values."""
    out = text.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    out = out.replace("$__interval", _duration(interval_ms(start_ms, end_ms)))
    out = out.replace("${__to}", str(end_ms))
    for name, value in sorted((variables or {}).items(), key=lambda kv: -len(kv[0])):
        out = out.replace(f"${name}", regex_escape(value))
    leftover = _LEFTOVER.search(out.replace("$/", ""))
    if leftover:
        msg = f"unsubstituted macro at {leftover.start()} in {out!r}"
        raise AssertionError(msg)
    return out


def variable_values(results: list[dict[str, Any]]) -> list[str]:
    """Values Grafana's InfluxDB datasource takes from a variable query's result.

    For each row: the second column if there is one (the tag value of ``SHOW TAG VALUES``, or the
    first selected column after ``time`` of a ``SELECT``), else the first.
    """
    values: list[str] = []
    for series in results[0].get("series", []):
        for row in series["values"]:
            value = row[1] if len(row) > 1 else row[0]
            if str(value) not in values:
                values.append(str(value))
    return values
