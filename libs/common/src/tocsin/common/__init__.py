"""Shared parts of Tocsin: configuration, models, broker, Redis, auth, telemetry.

Services import from here and from nowhere else in the `tocsin` namespace.
"""

from tocsin.common._version import __version__

__all__ = ["__version__"]
