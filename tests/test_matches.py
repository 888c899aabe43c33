"""The matched pairs of a fit: rows from tweakwcs's fit_info, offsets and drizzlepac's TOTAL_RMS from them."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS
from tweakwcs.correctors import FITSWCSCorrector

from astrodriz_sm.numerics.matches import COLUMNS, matched_pairs

SCALE_DEG = 0.05 / 3600  # ACS/WFC pixels


def _corrector(name: str, chip: int, xy, group_id: int, fit_info: dict) -> FITSWCSCorrector:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [100.0, 100.0]
    wcs.wcs.cd = [[-SCALE_DEG, 0.0], [0.0, SCALE_DEG]]
    wcs.pixel_shape = (200, 200)
    catalog = Table({"x": np.array([p[0] for p in xy], float), "y": np.array([p[1] for p in xy], float)})
    return FITSWCSCorrector(wcs, meta={"name": name, "chip": chip, "catalog": catalog, "group_id": group_id,
                                       "fit_info": fit_info})


def test_pairs_follow_the_stacked_group_catalog():
    """Rows of the group catalog map to their member, an empty member is skipped, offsets are in mas."""
    # Group 0: two exposures fitted together (relative fit); the first has an empty chip catalog.
    info0 = {"status": "SUCCESS", "matched_input_idx": [0, 1, 2], "matched_ref_idx": [2, 0, 1],
             "fitmask": [True, True, False]}
    empty = _corrector("j1_flc.fits", 2, [], 0, info0)
    first = _corrector("j1_flc.fits", 1, [(99.0, 99.0), (120.0, 80.0)], 0, info0)
    second = _corrector("j2_flc.fits", 1, [(60.0, 140.0)], 0, info0)
    # Group 1: a fit that failed contributes no row.
    failed = _corrector("j3_flc.fits", 1, [(10.0, 10.0)], 1, {"status": "FAILED"})
    positions = [first.det_to_world(99.0, 99.0), first.det_to_world(120.0, 80.0), second.det_to_world(60.0, 140.0)]
    # Reference positions 2 mas north of each source (ref rows in matched_ref_idx order: 2, 0, 1).
    north = 2.0 / 3.6e6
    ref = Table({"RA": [0.0] * 3, "DEC": [0.0] * 3})
    for (ra, dec), j in zip(positions, (2, 0, 1)):
        ref["RA"][j], ref["DEC"][j] = float(ra), float(dec) + north

    table = matched_pairs([empty, first, second, failed], ref, "GAIAeDR3", "relative")

    assert table.colnames == [name for name, _, _ in COLUMNS]
    assert list(table["exposure"]) == ["j1_flc.fits", "j1_flc.fits", "j2_flc.fits"]
    assert list(table["chip"]) == [1, 1, 1]
    assert list(table["x"]) == [99.0, 120.0, 60.0]
    assert list(table["ref_index"]) == [2, 0, 1]
    assert list(table["fitted"]) == [True, True, False]
    assert list(table["group"]) == [0, 0, 0]
    # Source minus reference: 2 mas south, nothing along RA.
    np.testing.assert_allclose(table["ddec_mas"], -2.0, atol=1e-6)
    np.testing.assert_allclose(table["dra_mas"], 0.0, atol=1e-6)
    assert table["dra_mas"].unit == "mas"
    assert table.meta["catalog"] == "GAIAeDR3" and table.meta["method"] == "relative"
    assert table.meta["pairs"] == 3 and table.meta["fitted_pairs"] == 2
    # Equal separations of the kept pairs: their standard deviation, drizzlepac's TOTAL_RMS, is 0.
    assert table.meta["total_rms_mas"] == pytest.approx(0.0, abs=1e-6)


def test_no_successful_fit_gives_an_empty_table():
    failed = _corrector("j3_flc.fits", 1, [(10.0, 10.0)], 1, {"status": "FAILED"})
    table = matched_pairs([failed], Table({"RA": [150.0], "DEC": [2.0]}), "GSC242", "2dhist")
    assert len(table) == 0 and table.colnames == [name for name, _, _ in COLUMNS]
    assert table.meta["pairs"] == 0 and table.meta["total_rms_mas"] is None
