"""InfluxQL targets and annotations for grafana-foundation-sdk, which ships no InfluxDB builder.

Every query is raw InfluxQL (``rawQuery: true``): InfluxDB 1.x answers it natively, 2.x through
its DBRP mapping and 3.x through its InfluxQL endpoint. Queries only use Grafana's InfluxDB
macros ``$timeFilter`` and ``$__interval`` and the dashboard variables; every
``GROUP BY time(...)`` stays bounded by ``$timeFilter``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

#: Datasource plugin id of Grafana's InfluxDB datasource.
PLUGIN_ID = "influxdb"
#: Provisioned datasource uid (``dashboards/provisioning/datasources/influxdb.yaml``).
DATASOURCE_UID = "rekindle-influxdb"
DATASOURCE = dm.DataSourceRef(type_val=PLUGIN_ID, uid=DATASOURCE_UID)

ResultFormat = Literal["time_series", "table"]

#: WHERE clause selecting the dashboard's site and session variables.
SESSION_FILTER = '"site" =~ /^$site$/ AND "session" =~ /^$session$/'


class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL target of a panel (or of an alert rule)."""

    def __init__(
        self,
        ref_id: str = "A",
        query: str = "",
        result_format: ResultFormat = "time_series",
        alias: str | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format: ResultFormat = result_format
        self.alias = alias
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "datasource": DATASOURCE,
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        fmt = data.get("resultFormat", "time_series")
        if fmt not in ("time_series", "table"):
            msg = f"unsupported resultFormat {fmt!r}"
            raise ValueError(msg)
        return cls(
            ref_id=str(data.get("refId", "A")),
            query=str(data.get("query", "")),
            result_format=fmt,
            alias=data.get("alias"),
            hide=data.get("hide"),
        )


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder for :class:`InfluxQLQuery`, usable wherever the SDK takes a dataquery builder."""

    def __init__(self, query: str, ref_id: str = "A") -> None:
        self._internal = InfluxQLQuery(ref_id=ref_id, query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        self._internal.alias = alias
        return self


class InfluxAnnotationQuery(dm.AnnotationQuery):
    """An annotation query on the InfluxDB datasource.

    The SDK's ``AnnotationQuery`` models only Grafana's built-in annotations, so the InfluxDB
    fields (``query``, ``textColumn``, ``tagsColumn``, ``timeEndColumn``) are added here. They are
    written both at the top level (the InfluxDB datasource's annotation format) and under
    ``target``, where Grafana's annotation migration moves them.
    """

    def __init__(
        self,
        name: str,
        query: str,
        icon_color: str,
        text_column: str,
        tags_column: str | None = None,
        time_end_column: str | None = None,
    ) -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, icon_color=icon_color)
        self.hide = False
        self.built_in = 0
        self.query = query
        self.text_column = text_column
        self.tags_column = tags_column
        self.time_end_column = time_end_column

    def _influx_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"query": self.query, "textColumn": self.text_column}
        if self.tags_column is not None:
            fields["tagsColumn"] = self.tags_column
        if self.time_end_column is not None:
            fields["timeEndColumn"] = self.time_end_column
        return fields

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.pop("target", None)
        payload.update(self._influx_fields())
        payload["target"] = {
            "rawQuery": True,
            "refId": "Anno",
            "resultFormat": "table",
            **self._influx_fields(),
        }
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        anno = cls(
            name=str(data["name"]),
            query=str(data["query"]),
            icon_color=str(data["iconColor"]),
            text_column=str(data["textColumn"]),
            tags_column=data.get("tagsColumn"),
            time_end_column=data.get("timeEndColumn"),
        )
        anno.enable = bool(data.get("enable", True))
        anno.hide = data.get("hide")
        return anno


def load_dashboard(data: dict[str, Any]) -> dm.Dashboard:
    """A dashboard model from its JSON, through the SDK's own ``Dashboard.from_json``.

    InfluxDB targets decode to :class:`InfluxQLQuery` (see :func:`register_variant`) and InfluxDB
    annotations, which the SDK's ``AnnotationQuery`` cannot hold, to
    :class:`InfluxAnnotationQuery`.
    """
    cogplugins.register_default_plugins()
    register_variant()
    dash = dm.Dashboard.from_json(data)
    raw = data.get("annotations", {}).get("list", [])
    if dash.annotations is not None and dash.annotations.list_val is not None:
        dash.annotations.list_val = [
            InfluxAnnotationQuery.from_json(item)
            if item.get("datasource", {}).get("type") == PLUGIN_ID
            else parsed
            for item, parsed in zip(raw, dash.annotations.list_val, strict=True)
        ]
    return dash


class InfluxAnnotation(cogbuilder.Builder[dm.AnnotationQuery]):
    """Builder for :class:`InfluxAnnotationQuery`."""

    def __init__(self, name: str, query: str, *, color: str, text: str) -> None:
        self._internal = InfluxAnnotationQuery(name, query, color, text)

    def build(self) -> InfluxAnnotationQuery:
        return self._internal

    def tags(self, column: str) -> Self:
        self._internal.tags_column = column
        return self

    def time_end(self, column: str) -> Self:
        self._internal.time_end_column = column
        return self


def register_variant() -> None:
    """Let the SDK decode InfluxDB targets into :class:`InfluxQLQuery` when loading JSON."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=InfluxQLQuery.from_json)
    )
