"""Local stand-ins for the STScI web services: astrometry database, guide-star offsets, catalogs.

Load data with :class:`ServiceStore` (or ``astrodriz-sm serve-load``), serve it with
:func:`start_server` (or ``astrodriz-sm serve``), and point stwcs and drizzlepac at it with the
handle's ``environment``. The clients' side (service URLs, the probe) is :mod:`astrodriz_sm.handlers.network`.
"""

from .data import CATALOG_COLUMNS, GSC_OFFSET_COLUMNS, ServiceDataError, ServiceStore, answer_columns
from .server import ServiceApp, ServiceHandle, serve_forever, service_environment, start_server

__all__ = [
    "CATALOG_COLUMNS",
    "GSC_OFFSET_COLUMNS",
    "ServiceApp",
    "ServiceDataError",
    "ServiceHandle",
    "ServiceStore",
    "answer_columns",
    "serve_forever",
    "service_environment",
    "start_server",
]
