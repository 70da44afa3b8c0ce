"""Rekindle ingest: wearable sources (BLE, recordings, simulator) published over MQTT."""
