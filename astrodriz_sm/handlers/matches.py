"""The chosen fit's matched pairs (:func:`astrodriz_sm.numerics.matches.matched_pairs`) as an ECSV file."""

from __future__ import annotations

from pathlib import Path


def write_matched_pairs(table, path: Path) -> None:
    """Write the table as ECSV (a new file; any earlier attempt's is replaced)."""
    table.write(path, format="ascii.ecsv", overwrite=True)
