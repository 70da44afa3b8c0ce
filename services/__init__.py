"""Rekindle: streaming emotional-arousal tracking from consumer wearables.

The package's folders are those of the design: ``services/ingest`` (:mod:`rekindle.ingest`),
``services/analysis`` (:mod:`rekindle.analysis`) and ``dashboards`` (:mod:`rekindle.dashboards`);
the import name ``rekindle`` is a link to them (see docs/api.md).
"""

from rekindle.errors import RekindleError

__version__ = "0.1.0"

__all__ = ["RekindleError", "__version__"]
