"""The version of astrodriz-sm, as installed: recorded with every run and in every step's fingerprint."""

from importlib import metadata

__version__ = metadata.version("astrodriz-sm")
