"""Grafana dashboards, alert rules and provisioning for Rekindle, generated from code.

The JSON under ``dashboards/generated/`` and the alert rules under
``dashboards/provisioning/alerting/`` are produced by
:func:`rekindle.dashboards.generate.render_all`
(``rekindle dashboards build``); a test fails when the committed files drift from the code.
"""

#: Grafana release the dashboards target (docker-compose runs this image).
GRAFANA_VERSION = "11.6"
#: Dashboard JSON schema version written by Grafana 11.6 (grafana-foundation-sdk 11.6 default).
GRAFANA_SCHEMA_VERSION = 41
