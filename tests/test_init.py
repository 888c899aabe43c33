"""The init stage's reading of its input, against drizzlepac 3.11's own readers."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from stsci.tools import asnutil

from astrodriz_sm.handlers.init import read_association

# A CR-SPLIT + dither ACS/WFC association as the archive lays it out: two CR-split pairs, their
# CR-combined products, and the dither product that names the association.
CRSPLIT_DITHER = [("JSIM01A1Q", "EXP-CR1"), ("JSIM01A2Q", "EXP-CR1"), ("JSIM01A3Q", "EXP-CR2"),
                  ("JSIM01A4Q", "EXP-CR2"), ("JSIM01011", "PROD-CR1"), ("JSIM01012", "PROD-CR2"),
                  ("JSIM01010", "PROD-DTH")]


def _asn(path, rows):
    table = fits.BinTableHDU.from_columns([
        fits.Column(name="MEMNAME", format="14A", array=np.array([r[0] for r in rows])),
        fits.Column(name="MEMTYPE", format="14A", array=np.array([r[1] for r in rows])),
        fits.Column(name="MEMPRSNT", format="L", array=np.ones(len(rows), dtype=bool)),
    ], name="ASN")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return path


@pytest.mark.parametrize("rows, product", [
    (CRSPLIT_DITHER, "jsim01010"),
    ([("JSIM01A1Q", "EXP-RP"), ("JSIM01A2Q", "EXP-RP"), ("JSIM01011", "PROD-RPT")], "jsim01011"),
    ([("JSIM01A1Q", "EXP-CRJ"), ("JSIM01A2Q", "EXP-CRJ"), ("JSIM01012", "PROD-CRJ")], "jsim01012"),
    ([("JSIM01A1Q", "EXP-DTH"), ("JSIM01013", "PROD-RPT"), ("JSIM01014", "PROD-DTH")], "jsim01014"),
    ([("JSIM01A1Q", "EXP-CR1"), ("JSIM01A2Q", "EXP-CR1"), ("JSIM01011", "PROD-CR1")], "jsim01010"),
], ids=["crsplit-dither", "repeat", "crj", "dth-after-rpt", "no-named-row"])
def test_product_is_named_as_asnutil_names_it(tmp_path, monkeypatch, rows, product):
    """The product row preference of runastrodriz 3.11: PROD-DTH, then PROD-RPT, then PROD-CRJ, else the ASN root."""
    asn = _asn(tmp_path / "jsim01010_asn.fits", rows)
    members, name = read_association(asn)
    assert name == product
    # readASNTable looks for each member's file in the working directory.
    for memname, memtype in rows:
        (tmp_path / f"{memname.lower()}_flt.fits").touch()
    monkeypatch.chdir(tmp_path)
    assert name == asnutil.readASNTable(asn.name, None, prodonly=False)["output"].lower()
    assert members == [r[0].lower() for r in rows if r[1].startswith("EXP")]
