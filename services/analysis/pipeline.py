"""Per-session pipeline: wire messages in, storage lines and analysis events out. No I/O.

The live service, ``rekindle analyze`` and the demo all drive this same class with the same
sequence of messages, which is what makes a replay give the same episodes as the live session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services import contract
from services.analysis import points
from services.analysis.core import (
    AnalysisConfig,
    Episode,
    Event,
    GapInput,
    MarkerInput,
    SampleBatch,
    SessionAnalyzer,
)


@dataclass(slots=True)
class PipelineOutput:
    """What one message produced: line-protocol lines and the analysis events behind them."""

    lines: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def extend(self, other: PipelineOutput) -> None:
        self.lines.extend(other.lines)
        self.events.extend(other.events)


def to_input(
    msg: contract.Message,
) -> SampleBatch | MarkerInput | GapInput | list[MarkerInput] | None:
    """The analyzer's view of a wire message (None for status messages)."""
    if isinstance(msg, contract.SampleMessage):
        values = np.asarray(msg.values, dtype=np.float64)
        times = np.asarray(msg.times_ns(), dtype=np.int64).astype(np.float64) / 1e9
        return SampleBatch(msg.stream, msg.device, times, values)
    if isinstance(msg, contract.MarkerMessage):
        return [MarkerInput(t, text) for t, text in zip(msg.t, msg.values, strict=True)]
    if isinstance(msg, contract.GapMessage):
        return GapInput(msg.gap_stream, msg.device, msg.start, msg.end)
    return None


class SessionPipeline:
    """One session's analyzer plus the conversion of everything it sees to storage lines."""

    def __init__(
        self,
        site: str,
        session: str,
        config: AnalysisConfig | None = None,
        *,
        store_lines: bool = True,
    ) -> None:
        self.site = site
        self.store_lines = store_lines
        self.session = session
        self.analyzer = SessionAnalyzer(config)
        self.devices_online: set[str] = set()
        self.episodes: list[Episode] = []
        self.samples = 0
        self.finished = False

    def _events(self, events: list[Event]) -> PipelineOutput:
        self.episodes.extend(e for e in events if isinstance(e, Episode))
        lines = points.event_lines(self.site, self.session, events) if self.store_lines else []
        return PipelineOutput(lines, events)

    def handle(self, msg: contract.Message) -> PipelineOutput:
        out = PipelineOutput(points.message_lines(msg) if self.store_lines else [])
        if isinstance(msg, contract.StatusMessage):
            if msg.state == "online":
                self.devices_online.add(msg.device)
            elif msg.state == "end":
                self.devices_online.discard(msg.device)
            return out
        if isinstance(msg, contract.SampleMessage):
            self.samples += len(msg)
        item = to_input(msg)
        items = item if isinstance(item, list) else [item] if item is not None else []
        for it in items:
            out.extend(self._events(self.analyzer.update(it)))
        return out

    @property
    def ended(self) -> bool:
        """True once every device that announced itself online has sent ``end``."""
        return not self.devices_online

    def finish(self) -> PipelineOutput:
        """End of data: flush the analyzer and close open episodes."""
        if self.finished:
            return PipelineOutput()
        self.finished = True
        if self.samples == 0:
            return PipelineOutput()  # nothing to flush: a session that never sent data
        return self._events(self.analyzer.finish())
