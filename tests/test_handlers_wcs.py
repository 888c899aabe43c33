"""SKYCELL as drizzlepac 3.11 writes it, and the WCSNAMEs a stage reads, on a real WFC3/UVIS FLC."""

from __future__ import annotations

import shutil

from astropy.io import fits

from astrodriz_sm.handlers.wcs import _wcsnames, add_skycells
from astrodriz_sm.plumbing import working_directory

from .conftest import REFDATA

SAMPLE = REFDATA / "sample_ipppssoot_flc.fits"
SKYCELL = "p0121x12y16"


def _copy(tmp_path, name):
    shutil.copyfile(SAMPLE, tmp_path / name)
    return tmp_path / name


def _sci_cards(path):
    with fits.open(path) as hdul:
        return [[(c.keyword, c.value, c.comment) for c in h.header.cards] for h in hdul if h.name == "SCI"]


def test_skycell_is_drizzlepacs_written_once_per_footprint(tmp_path):
    from drizzlepac.haputils import processing_utils

    for name in ("ib4606c5q_flc.fits", "ib4606c5q_flt.fits", "theirs_flc.fits"):
        _copy(tmp_path, name)
    with working_directory(tmp_path):
        assert add_skycells(["ib4606c5q_flc.fits", "ib4606c5q_flt.fits"]) == {
            "ib4606c5q_flc.fits": SKYCELL, "ib4606c5q_flt.fits": SKYCELL}
        processing_utils.add_skycell_to_header("theirs_flc.fits")
    ours = _sci_cards(tmp_path / "ib4606c5q_flc.fits")
    assert ours == _sci_cards(tmp_path / "theirs_flc.fits") == _sci_cards(tmp_path / "ib4606c5q_flt.fits")
    for cards in ours:
        keys = [k for k, _, _ in cards]
        at = keys.index("SKYCELL")
        assert keys[at - 1] == "S_REGION"
        assert cards[at][1:] == (SKYCELL, "Skycell(s) that this image occupies")


def test_a_value_already_there_is_replaced_in_place_as_drizzlepac_does(tmp_path):
    from drizzlepac.haputils import processing_utils

    for name in ("ib4606c5q_flc.fits", "theirs_flc.fits"):
        path = _copy(tmp_path, name)
        with fits.open(path, mode="update") as hdul:
            older = ("SKYCELL", "p9999x01y01", "an older value")
            hdul[("SCI", 1)].header.insert("S_REGION", older, after=True)
            hdul[("SCI", 2)].header["SKYCELL"] = older[1:]
    with working_directory(tmp_path):
        assert add_skycells(["ib4606c5q_flc.fits"], workers=2) == {"ib4606c5q_flc.fits": SKYCELL}
        processing_utils.add_skycell_to_header("theirs_flc.fits")
    assert _sci_cards(tmp_path / "ib4606c5q_flc.fits") == _sci_cards(tmp_path / "theirs_flc.fits")
    assert [fits.getval(tmp_path / "ib4606c5q_flc.fits", "SKYCELL", ext=("SCI", v)) for v in (1, 2)] == [
        SKYCELL, SKYCELL]


def test_wcsnames_of_every_chip():
    assert _wcsnames(SAMPLE) == ["IDC_2731450pi-FIT_REL_GAIAeDR3", "IDC_2731450pi-FIT_REL_GAIAeDR3"]
