"""Rekindle: streaming emotional-arousal tracking from consumer wearables.

The package's folders are those of the design: ``services/ingest`` (:mod:`rekindle.ingest`),
``services/analysis`` (:mod:`rekindle.analysis`) and ``dashboards`` (:mod:`rekindle.dashboards`);
the import name ``rekindle`` is a link to them (see docs/api.md).

The researchers' API (:mod:`rekindle.api`, docs/api.md) is here too: :func:`read`,
:func:`analyze`, :func:`write` and :class:`Recording`. They are imported on first use, so
``import rekindle`` stays fast (pandas and the analysis load only when needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rekindle.errors import RekindleError

if TYPE_CHECKING:
    from rekindle.api import Recording, analyze, read, write

__version__ = "0.1.0"

__all__ = ["Recording", "RekindleError", "__version__", "analyze", "read", "write"]

_API = frozenset({"Recording", "analyze", "read", "write"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from rekindle import api  # noqa: PLC0415 (lazy: pandas and the analysis are heavy)

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rekindle' has no attribute {name!r}")
