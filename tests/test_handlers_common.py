"""The FITS checks every handler reads through, and the library log lines that count as fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrodriz_sm.errors import ExitCode, InputError
from astrodriz_sm.handlers.common import check_fits, library_fallbacks, payload_logs, primary_header


def _exposure(path, sci=True):
    hdus = [fits.PrimaryHDU(header=fits.Header([("ROOTNAME", "j8cw03f6q"), ("INSTRUME", "ACS")]))]
    if sci:
        hdus.append(fits.ImageHDU(np.zeros((100, 100), np.float32), name="SCI", ver=1))
    fits.HDUList(hdus).writeto(path)
    return path


def _error(path, **kw) -> InputError:
    with pytest.raises(InputError) as info:
        check_fits(path, **kw)
    assert info.value.path == str(path)
    assert info.value.exit_code == ExitCode.INPUT
    return info.value


def test_a_complete_exposure_passes(tmp_path):
    path = _exposure(tmp_path / "j8cw03f6q_flc.fits")
    assert check_fits(path, need_sci=True) is None
    assert primary_header(path)["ROOTNAME"] == "j8cw03f6q"


def test_missing_file(tmp_path):
    path = tmp_path / "j8cw03f6q_flc.fits"
    assert str(_error(path)) == f"{path}: file not found"


def test_truncated_file_names_the_hdu_and_the_sizes(tmp_path):
    # Primary header 2880 bytes, SCI header 2880, SCI data 100*100*4 = 40000 padded to 40320: 46080 in all.
    path = _exposure(tmp_path / "j8cw03f6q_flc.fits")
    assert path.stat().st_size == 46080
    with open(path, "r+b") as f:
        f.truncate(43200)
    assert str(_error(path)) == f"{path}: truncated FITS file (HDU 1 needs 46080 bytes, file has 43200)"


def test_not_fits(tmp_path):
    path = tmp_path / "j8cw03f6q_flc.fits"
    path.write_text("SIMPLE? no, an e-mail saved with the wrong name\n")
    assert str(_error(path)) == (
        f"{path}: not a readable FITS file (No SIMPLE card found, this file does not appear to be a valid "
        "FITS file. If this is really a FITS file, try with ignore_missing_simple=True)")
    empty = tmp_path / "empty_flc.fits"
    empty.write_bytes(b"")
    assert str(_error(empty)) == f"{empty}: not a readable FITS file (Empty or corrupt FITS file)"


def test_sci_required(tmp_path):
    path = _exposure(tmp_path / "j8cw03010_asn.fits", sci=False)
    check_fits(path)
    assert str(_error(path, need_sci=True)) == f"{path}: no SCI extension"


def test_fallbacks_from_drizzlepac_source_finding_and_mapreg():
    """Lines drizzlepac 3.11 writes (catalog_utils, deconvolve_utils, mapreg), each kept once, in order."""
    dao = "INFO Reverting to DAOStarFinder(fwhm=2.5, threshold=5.0*1.2)"
    fwhm = "DEBUG FWHM computed as nan.  Reverting to using default FWHM of 2.5"
    mapreg = 'WARNING Reverting to filter = "fast" instead.'
    text = "\n".join(["INFO Found 120 sources", f"   {dao}   ", fwhm, dao, mapreg,
                      "INFO Could not align j8cw03f6q_flc.fits to GAIAeDR3", ""])
    assert library_fallbacks(text) == [dao, fwhm, mapreg]
    assert library_fallbacks("") == []


def test_payload_logs_reach_every_depth():
    payload = {"log": "stage log", "count": 2,
               "products": [{"product": "a_drz.fits", "log": "product a"}, {"product": "b_drz.fits"},
                            {"nested": {"log": "deep"}}],
               "other": {"log": 5}}
    assert payload_logs(payload) == ["stage log", "product a", "deep"]
    assert payload_logs("log") == []
