"""Recorded and simulated sources. Each yields :class:`Chunk` objects in time order."""

from services.ingest.sources.base import Chunk, open_source

__all__ = ["Chunk", "open_source"]
