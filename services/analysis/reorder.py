"""Holding messages that arrive after a ``seq`` gap until the gap is filled. Pure, no I/O.

QoS 1 gives at-least-once delivery between a client and the broker, but a broker that crashes
(or drops messages for a slow subscriber) can lose messages it had acknowledged. Publishers
keep what the analysis service has not acknowledged end to end (``out/ack``) and resend it, so
a missing ``seq`` usually arrives a little later. Until then the messages after the gap wait
here (they are part of the checkpoint, so they are durable once acknowledged to the broker).
A gap that is not filled within ``wait_s``, or while more than ``max_held`` messages wait, is
given up: the waiting messages are then handled in order and the gap is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rekindle.contract import GapMessage, MarkerMessage, SampleMessage

SeqMessage = SampleMessage | MarkerMessage | GapMessage
#: (site, session, device, stream, run) for seq order; (site, session, "", RUN_ORDER, run)
#: for the order of a publisher run across its streams (``n``)
StreamKey = tuple[str, str, str, str, str | None]
RUN_ORDER = "#n"


def run_key(msg: SeqMessage) -> StreamKey:
    return (msg.site, msg.session, "", RUN_ORDER, msg.run)


def stream_key(msg: SeqMessage) -> StreamKey:
    return (msg.site, msg.session, msg.device, msg.stream, msg.run)


@dataclass(slots=True)
class Held:
    msg: SeqMessage
    topic: str
    payload: bytes
    received: float
    since: float  # monotonic time it started waiting


@dataclass(slots=True)
class ReorderBuffer:
    wait_s: float = 10.0
    max_held: int = 2000
    _held: dict[StreamKey, dict[int, Held]] = field(default_factory=dict)

    def hold(self, key: StreamKey, order: int, item: Held) -> bool:
        """Keep ``item`` (position ``order`` of ``key``) until its predecessors arrive; False
        if that position already waits."""
        table = self._held.setdefault(key, {})
        if order in table:
            return False
        table[order] = item
        return True

    def take(self, key: StreamKey, seq: int) -> Held | None:
        """The waiting message with ``seq``, removed (None when it is not waiting)."""
        table = self._held.get(key)
        if not table or seq not in table:
            return None
        item = table.pop(seq)
        if not table:
            del self._held[key]
        return item

    def take_first(self, key: StreamKey) -> tuple[int, Held]:
        """The waiting message with the lowest position, removed (the gap before it is given
        up), with its position."""
        order = min(self._held[key])
        item = self.take(key, order)
        assert item is not None
        return order, item

    def overdue(self, now: float) -> list[StreamKey]:
        """Streams whose gap is to be given up now."""
        return [
            key
            for key, table in self._held.items()
            if len(table) > self.max_held
            or now - min(h.since for h in table.values()) > self.wait_s
        ]

    def orders(self, key: StreamKey) -> list[int]:
        """The positions waiting in ``key``, in order."""
        return sorted(self._held.get(key, {}))

    def waiting(self, site: str, session: str) -> bool:
        return any(k[0] == site and k[1] == session for k in self._held)

    def streams(self, site: str | None = None, session: str | None = None) -> list[StreamKey]:
        return [
            k for k in self._held if site is None or (k[0] == site and (session in (None, k[1])))
        ]

    def __len__(self) -> int:
        return sum(len(t) for t in self._held.values())
