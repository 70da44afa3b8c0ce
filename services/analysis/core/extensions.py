"""Registered detectors: a new per-second feature is one module plus one registration line.

A detector module defines its parameters as a frozen dataclass (its config section, defaults
documented there), a class with ``feed``/``tick`` (:class:`Detector`) and calls :func:`register`
with a :class:`DetectorSpec`. From then on every new :class:`SessionAnalyzer` runs it once per
feature second, its fields appear in every output (``features.csv``, the DataFrames, the InfluxDB
``features`` point, the MQTT ``out/features`` payload, the reports; see
``rekindle.analysis.schema``) and its parameters can be set as ``--param <section>.<name>=...``.
``docs/extending.md`` walks through an example.

Determinism: a detector sees the samples of the streams it asked for one feature second at a time
(second ``k`` gets the samples with ``k - 1 <= t < k``), then the second's built-in feature row,
exactly as the built-in processors do, so its output does not depend on how the data was split
into batches as long as the detector itself is deterministic. Its state is pickled with the
analyzer (the service's checkpoints), so it must be picklable. Registered detectors add features;
they do not change the arousal index or the episodes.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rekindle.analysis.core.errors import ConfigError
from rekindle.analysis.core.types import FeatureRow


@dataclass(frozen=True, slots=True)
class FeatureField:
    """One per-second output of a detector: a float (or None) named ``name`` in every output."""

    name: str
    unit: str
    description: str


class Detector(Protocol):
    """What a registered detector does each second (no I/O, no clock)."""

    def feed(self, stream: str, device: str, times: list[float], values: list[float]) -> None:
        """Samples of one of the spec's ``streams`` from one device for the coming second
        (time-ordered; for ``acc`` the magnitude in g)."""

    def tick(self, k: int, row: FeatureRow) -> Mapping[str, float | None]:
        """Close second ``k``: ``row`` holds the built-in features of that second (and the
        values of detectors registered earlier in ``row.extra``). Returns a value for each of the
        spec's fields (a missing name counts as None)."""


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector's registration: its section name (``--param <name>.<field>=...``), its output
    fields, its parameters' defaults (a frozen dataclass instance of numbers), the factory that
    builds one detector per session from the section's values, and the raw streams it reads."""

    name: str
    fields: tuple[FeatureField, ...]
    config: Any  # (a dataclass instance; ``object`` would do, but mypyc cannot compile it here)
    factory: Callable[[Any], Detector]
    streams: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The module that defines the detector (imported again by worker processes)."""
        return type(self.config).__module__


#: Names a detector's fields may not take: the feature row's own fields and what the sinks add.
RESERVED = frozenset(
    {f.name for f in dataclasses.fields(FeatureRow)}
    | {"t", "v", "streams", "ended", "ended_code", "open"}
)
_REGISTRY: dict[str, DetectorSpec] = {}


def _check(spec: DetectorSpec) -> None:
    if not spec.name.isidentifier() or keyword.iskeyword(spec.name):
        raise ConfigError(spec.name, "a detector's name must be a Python identifier")
    if not dataclasses.is_dataclass(spec.config) or isinstance(spec.config, type):
        raise ConfigError(spec.name, "config must be a dataclass instance (the section defaults)")
    taken = {f.name: s.name for s in _REGISTRY.values() if s.name != spec.name for f in s.fields}
    for f in spec.fields:
        if not f.name.isidentifier():
            raise ConfigError(f"{spec.name}.{f.name}", "a field name must be an identifier")
        if f.name in RESERVED or f.name.startswith(("quality_", "contrib_")):
            raise ConfigError(f"{spec.name}.{f.name}", "a built-in output already uses this name")
        if f.name in taken:
            raise ConfigError(
                f"{spec.name}.{f.name}", f"the {taken[f.name]!r} detector already has this field"
            )


def register(spec: DetectorSpec) -> DetectorSpec:
    """Add (or replace, by name) a detector for every analyzer created from now on."""
    _check(spec)
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a registered detector (analyzers created before keep running it)."""
    _REGISTRY.pop(name, None)


def registered() -> tuple[DetectorSpec, ...]:
    """Every registered detector, in registration order."""
    return tuple(_REGISTRY.values())


def spec(name: str) -> DetectorSpec | None:
    """The registered detector called ``name``, if any."""
    return _REGISTRY.get(name)
