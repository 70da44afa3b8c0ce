"""MQTT messages collected by the ``collector`` fixture."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rekindle import contract

SITE = "ble-it"


@dataclass
class Collector:
    messages: list[contract.Message]
    lock: threading.Lock

    def session(self, session: str) -> list[contract.Message]:
        with self.lock:
            return [m for m in self.messages if m.session == session]
