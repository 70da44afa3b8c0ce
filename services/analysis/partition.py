"""Which partition of the live analysis a message belongs to: a stable hash of its session.

Every message of a session (all its streams, statuses and markers, whoever publishes them) has
the same ``(site, session)`` topic levels, so hashing those two levels (not the whole topic, not
the publisher's client id) keeps a session on one partition. CRC-32 is stable across processes,
machines and Python versions (``hash()`` is salted per process). Pure: no I/O.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from rekindle import contract


def partition_of(topic: str, partitions: int) -> int:
    """The partition (``0 .. partitions - 1``) of the session a topic belongs to.

    A topic that is not ``rekindle/v1/<site>/<session>/...`` (a publisher's mistake, which the
    owning partition dead-letters) is hashed whole, so it is still handled exactly once.
    """
    parts = topic.split("/", 4)
    if len(parts) >= 4 and f"{parts[0]}/{parts[1]}" == contract.TOPIC_ROOT:
        key = f"{parts[2]}/{parts[3]}"
    else:
        key = topic
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def session_partition(site: str, session: str, partitions: int) -> int:
    """:func:`partition_of` for a session given by its ids."""
    return zlib.crc32(f"{site}/{session}".encode("utf-8", "surrogatepass")) % partitions


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition ``index`` of ``count``: the sessions one analysis service instance owns."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            msg = f"partition {self.index} of {self.count}: need 0 <= index < count, count >= 1"
            raise ValueError(msg)

    def owns(self, topic: str) -> bool:
        return self.count == 1 or partition_of(topic, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
