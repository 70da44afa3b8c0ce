"""Rekindle: streaming emotional-arousal tracking from consumer wearables."""

__version__ = "0.1.0"
