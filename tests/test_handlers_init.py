"""The init stage's association reader on tables the simulator writes as the archive does; its refusals."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrodriz_sm.errors import InputError
from astrodriz_sm.handlers.init import read_association
from astrodriz_sm.sim.headers import asn_hdulist

MEMBERS = ["jsim01a1q", "jsim01a2q", "jsim01a3q"]


def _write(path, hdul):
    hdul.writeto(path)
    return path


def _simulated(tmp_path, rows=None, name="jsim01010_asn.fits"):
    return _write(tmp_path / name, asn_hdulist("JSIM01010", MEMBERS, ra_targ=150.1, dec_targ=2.2,
                                               date_obs="2026-01-02", rows=rows))


def _refused(path) -> str:
    with pytest.raises(InputError) as info:
        read_association(path)
    assert info.value.path == str(path)
    return str(info.value)


def test_a_simulated_association(tmp_path):
    assert read_association(_simulated(tmp_path)) == (MEMBERS, "jsim01010")


def test_members_not_present_are_left_out(tmp_path):
    path = _simulated(tmp_path)
    with fits.open(path, mode="update") as hdul:
        hdul[1].data["MEMPRSNT"][1] = False
    assert read_association(path) == (["jsim01a1q", "jsim01a3q"], "jsim01010")


def test_refusals_name_the_table_and_the_problem(tmp_path):
    escape = _simulated(tmp_path, rows=[("../JSIM01A1Q", "EXP-DTH"), ("JSIM01010", "PROD-DTH")],
                        name="escape_asn.fits")
    assert _refused(escape) == f"{escape}: member name '../JSIM01A1Q' is not an HST rootname"
    twice = _simulated(tmp_path, rows=[("JSIM01A1Q", "EXP-DTH"), ("jsim01a1q", "EXP-CRJ")],
                       name="twice_asn.fits")
    assert _refused(twice) == f"{twice}: member jsim01a1q is listed more than once"
    products = _simulated(tmp_path, rows=[("JSIM01010", "PROD-DTH")], name="products_asn.fits")
    assert _refused(products) == f"{products}: the association lists no exposure present (MEMPRSNT)"
    image = _write(tmp_path / "image_asn.fits",
                   fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)))]))
    assert _refused(image) == f"{image}: no association table in extension 1"
    names_only = fits.BinTableHDU.from_columns([fits.Column(name="MEMNAME", format="14A",
                                                            array=np.array(["JSIM01A1Q"]))])
    columns = _write(tmp_path / "columns_asn.fits", fits.HDUList([fits.PrimaryHDU(), names_only]))
    assert _refused(columns) == f"{columns}: association table lacks MEMNAME/MEMTYPE/MEMPRSNT"
    truncated = _simulated(tmp_path, name="truncated_asn.fits")
    size = truncated.stat().st_size
    with open(truncated, "r+b") as f:
        f.truncate(size - 2880)
    assert _refused(truncated) == (f"{truncated}: truncated FITS file (HDU 1 needs {size} bytes, "
                                   f"file has {size - 2880})")
