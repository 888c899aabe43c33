"""Source finding for the a posteriori fit, one process per exposure, equals drizzlepac's AlignmentTable."""

from __future__ import annotations

import os

import numpy as np
import pytest
from drizzlepac import align as dp_align
from drizzlepac.haputils import align_utils

from astrodriz_sm.handlers.sources import alignment_table


def _pars():
    apars = dp_align.get_default_pars("ACS", "WFC")
    pars = {"MAX_SOURCES_PER_CHIP": apars["general"]["MAX_SOURCES_PER_CHIP"], "sat_flags": 256 + 2048}
    pars.update(apars)
    return pars


@pytest.mark.parametrize("workers", [1, 2])
def test_alignment_table_finds_drizzlepacs_sources(simulated, monkeypatch, workers):
    src, d = simulated("sources", products="flc", n_exposures=3)
    monkeypatch.chdir(d)
    monkeypatch.setenv("jref", f"{d}/")
    files = [p.name for p in src.flc]
    theirs = align_utils.AlignmentTable(files, **_pars())
    theirs.find_alignment_sources(output=False)
    theirs.close()
    ours = alignment_table(files, workers=workers, **_pars())
    assert ours.process_list == theirs.process_list == files
    assert list(ours.extracted_sources) == files
    assert ours.alignment_pars == theirs.alignment_pars
    assert ours.fit_pars == theirs.fit_pars
    for name in files:
        assert list(ours.extracted_sources[name]) == [1]
        mine, ref = ours.extracted_sources[name][1], theirs.extracted_sources[name][1]
        assert mine.colnames == ref.colnames
        assert len(mine) == len(ref) >= 50
        for col in ref.colnames:
            np.testing.assert_array_equal(np.asarray(mine[col]), np.asarray(ref[col]), err_msg=f"{name} {col}")
    # The fit sees the same inputs: the same FITSWCSCorrector catalogs.
    ours.configure_fit()
    theirs.configure_fit()
    assert [im.meta["catalog"]["x"].tolist() for im in ours.imglist] == \
        [im.meta["catalog"]["x"].tolist() for im in theirs.imglist]


def test_alignment_table_of_excluded_exposures_has_no_process_list(simulated, monkeypatch):
    src, d = simulated("sources", products="flc", n_exposures=3)
    monkeypatch.chdir(d)
    from astropy.io import fits

    for p in src.flc:
        fits.setval(d / p.name, "OBSTYPE", value="SPECTROSCOPIC")
    table = alignment_table([p.name for p in src.flc], workers=2, **_pars())
    assert table.process_list is None
    assert table.extracted_sources == {}
    assert os.getcwd() == str(d)
