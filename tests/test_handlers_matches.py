"""The matched pairs file: ECSV that reads back with its columns, units and meta; a new one replaces it."""

from __future__ import annotations

import hashlib

import numpy as np
from astropy.table import Table

from astrodriz_sm.handlers.matches import write_matched_pairs
from astrodriz_sm.numerics.matches import COLUMNS


def _pairs(n: int) -> Table:
    values = {"exposure": np.array(["jsm001a1q_flc.fits", "jsm001a2q_flc.fits"][:n]),
              "chip": np.array([1, 2][:n])}
    table = Table()
    for name, unit, description in COLUMNS:
        table[name] = values.get(name, np.arange(n, dtype=float) + 0.125)
        table[name].unit = unit
        table[name].description = description
    table.meta.update(catalog="GAIAeDR3", method="relative")
    return table


def test_pairs_read_back_and_a_new_attempt_replaces_them(tmp_path):
    path = tmp_path / "jsm001010_aposteriori_matches.ecsv"
    write_matched_pairs(_pairs(2), path)
    back = Table.read(path, format="ascii.ecsv")
    assert back.colnames == [c[0] for c in COLUMNS]
    assert [str(back[c].unit) if back[c].unit else None for c, _, _ in COLUMNS] == [u for _, u, _ in COLUMNS]
    assert [back[c].description for c, _, _ in COLUMNS] == [d for _, _, d in COLUMNS]
    assert list(back["exposure"]) == ["jsm001a1q_flc.fits", "jsm001a2q_flc.fits"]
    assert list(back["x"]) == [0.125, 1.125]
    assert dict(back.meta) == {"catalog": "GAIAeDR3", "method": "relative"}
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    write_matched_pairs(_pairs(2), path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first
    write_matched_pairs(_pairs(1), path)
    assert len(Table.read(path, format="ascii.ecsv")) == 1
