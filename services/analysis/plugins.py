"""Loading detector modules by name (an adapter: it imports code).

A detector module registers itself when imported (:func:`rekindle.analysis.core.extensions.register`
at its end; ``docs/extending.md``). Python code simply imports it; the command line imports the
modules named in ``REKINDLE_DETECTORS`` (comma-separated, read by the entry point), and
``rekindle analyze --jobs`` imports the registered ones again in each worker process.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from rekindle.analysis.core.errors import ConfigError
from rekindle.analysis.core.extensions import registered

#: The environment variable that names detector modules for the command line.
ENV = "REKINDLE_DETECTORS"


def names(text: str) -> list[str]:
    """The module names of a comma-separated list (blanks ignored)."""
    return [n.strip() for n in text.split(",") if n.strip()]


def load(modules: Iterable[str]) -> None:
    """Import each module (which registers its detector); a module that cannot be imported is a
    :class:`ConfigError` naming it."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                ENV, f"cannot import the detector module {name!r} ({exc}); is it on PYTHONPATH?"
            ) from exc


def registered_modules() -> tuple[str, ...]:
    """The modules of the registered detectors (for worker processes to import again)."""
    return tuple(dict.fromkeys(s.module for s in registered()))
