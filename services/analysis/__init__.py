"""Rekindle analysis: streaming detectors, per-session pipeline, InfluxDB writer."""
