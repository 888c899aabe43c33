"""Parity with drizzlepac's runastrodriz on simulated associations (``benchmarks/parity.py``).

Each parity case runs both pipelines on the 512x512 subarray (runastrodriz alone takes about 45 s)
and asserts, through `parity.parity_problems`: the same final WCSNAME on every exposure and product,
the same stages kept, SCI arrays equal within 1e-4 relative where the WCS is the same, and an error
against the truth no worse than runastrodriz's + 0.5 mas. The harness's reading of runastrodriz's
stage verdicts from its output is checked on made-up output too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import parity  # after the path: the harness lives with the benchmarks, not in the package

# The common case (a priori then a GAIAeDR3 fit kept, FLT and FLC), the catalog fallback (GAIAeDR3
# empty in the field, the fit made on GSC242), and the shapes of input that take other paths of
# runastrodriz 3.11: the product row of the ASN, an _flc singleton, DRIZCORR=OMIT, a member AstroDrizzle
# leaves out, sky matching. Each must hand back the same files, keyword for keyword and bit for bit.
PARITY_CASES = ("apriori-discarded", "pointing", "sparse", "crsplit-dither", "prod-rpt", "flc-singleton",
                "drizcorr-omit", "ngoodpix-zero", "skymatch")
# Generous: a hung child is killed rather than holding the suite; no assertion is made on time.
RUN_TIMEOUT_S = 1800


def _runastrodriz_output(apriori: list[str], aposteriori: list[str]) -> list[tuple[float, str]]:
    """Lines as runastrodriz prints them: its stage headings, each followed by a stage's lines."""
    headings = dict(parity.bench.RUNASTRODRIZ_PHASES)
    text = [headings["default"], parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE,
            headings["apriori"], *apriori, headings["aposteriori"], *aposteriori, headings["final"]]
    return [(float(i), f"[INFO    ] {t}" if t.startswith(("Alignment", "Verification", "Could")) else t)
            for i, t in enumerate(text)]


def _fit_table(catalog_sources: int, matches: int) -> list[str]:
    # perform_align prints its filtered table with pprint(max_width=-1), which pformat reproduces.
    table = Table({"imageName": ["jsm001a1q_flc.fits"], "fit_method": ["relative"], "catalog": ["GAIAeDR3"],
                   "catalogSources": [catalog_sources], "matchSources": [matches]})
    return table.pformat(max_width=-1)


@pytest.mark.parametrize("apriori, aposteriori, expected", [
    # Overlap verified in both; 102 of 213 matched is no borderline fit.
    ([parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE],
     [*_fit_table(213, 102), parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE], ("kept", "kept")),
    # Overlap not verified; no fit at all.
    ([parity.OVERLAP_NOT_VERIFIED, parity.VERIFICATION_DONE],
     ["Could not align jsm001a1q_flc.fits to absolute astrometric frame"], ("discarded", "discarded")),
    # An exception before the verification ended; 5 matches: the debug-only focus check decides.
    ([], [*_fit_table(213, 5), parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE],
     ("discarded", "undetermined")),
    # One exposure: no overlap check, verified; an exception inside align.
    ([parity.VERIFICATION_DONE], ["EXCEPTION encountered in align..."], ("kept", "discarded")),
])
def test_runastrodriz_verdicts_are_read_from_its_info_output(apriori, aposteriori, expected):
    found = parity.runastrodriz_stages(_runastrodriz_output(apriori, aposteriori))
    assert found["stages"] == {"default": "run", "apriori": expected[0], "aposteriori": expected[1],
                               "final": "run"}


@pytest.mark.long
@pytest.mark.parametrize("name", PARITY_CASES)
def test_astrodriz_sm_hands_back_what_runastrodriz_does(name, tmp_path):
    result = parity.run_case(parity.CASES[name], tmp_path, timeout=RUN_TIMEOUT_S)
    assert parity.parity_problems(result) == [], parity.case_report(result)


# --------------------------------------------------------------------------------------------
# the whole-file comparison, on small files made here
# --------------------------------------------------------------------------------------------
def _small_file(path: Path, *, exptime=400.0, pixel=1.0, hlet_crval1=150.1, history=1,
                date="2026-12-07T10:00:00") -> Path:
    """A primary header, one SCI extension (4x4 float32) and one uncompressed HDRLET extension."""
    from astropy.io import fits
    from stwcs.wcsutil.headerlet import HeaderletHDU

    primary = fits.PrimaryHDU()
    primary.header["DATE"] = date
    primary.header["ROOTNAME"] = "jsm001a1q"
    for i in range(history):
        primary.header.add_history(f"step {i + 1}")
    sci = np.arange(16, dtype=np.float32).reshape(4, 4)
    sci[2, 3] = pixel
    sci_hdu = fits.ImageHDU(sci, name="SCI", ver=1)
    sci_hdu.header["EXPTIME"] = exptime
    inner = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(name="SIPWCS", ver=1)])
    inner[0].header["DATE"] = date
    inner[0].header["HDRNAME"] = "jsm001a1q_hlet"
    inner[1].header["CRVAL1"] = hlet_crval1
    hlet = HeaderletHDU.fromhdulist(inner, compress=False)
    hlet.header["EXTNAME"], hlet.header["EXTVER"] = "HDRLET", 1
    fits.HDUList([primary, sci_hdu, hlet]).writeto(path, overwrite=True)
    return path


def _compare(tmp_path: Path, **changes) -> list:
    theirs = _small_file(tmp_path / "theirs.fits").read_bytes()
    ours = _small_file(tmp_path / "ours.fits", **changes).read_bytes()
    return parity.fits_differences(theirs, ours, "jsm001a1q_flt.fits")


def test_identical_files_and_float_noise_below_1e10_are_no_difference(tmp_path):
    assert _compare(tmp_path) == []
    assert _compare(tmp_path, exptime=400.0 * (1 + 1e-12)) == []


def test_one_keyword_differs(tmp_path):
    assert _compare(tmp_path, exptime=401.0) == [
        parity.FileDifference("jsm001a1q_flt.fits", "SCI,1", "EXPTIME", 400.0, 401.0)]


def test_one_pixel_differs(tmp_path):
    assert _compare(tmp_path, pixel=3.5) == [
        parity.FileDifference("jsm001a1q_flt.fits", "SCI,1", "data", ">f4 [4, 4]", ">f4 [4, 4]",
                              "1 of 16 values differ, max |difference| 2.5")]


def test_table_data_differ_by_bytes(tmp_path):
    from astropy.io import fits

    def table_file(path, value):
        table = fits.BinTableHDU.from_columns([fits.Column(name="X", format="J", array=np.array([1, value]))],
                                              name="HDRTAB")
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
        return path.read_bytes()

    assert parity.fits_differences(table_file(tmp_path / "a.fits", 2), table_file(tmp_path / "b.fits", 3),
                                   "jsm001010_drc.fits") == [
        parity.FileDifference("jsm001010_drc.fits", "HDRTAB,1", "data", "2880 bytes", "2880 bytes",
                              "1 of 2880 bytes differ")]


def test_a_keyword_inside_an_embedded_headerlet_differs(tmp_path):
    assert _compare(tmp_path, hlet_crval1=150.2) == [
        parity.FileDifference("jsm001a1q_flt.fits", "HDRLET,1 > SIPWCS,1", "CRVAL1", 150.1, 150.2)]


def test_the_history_count_differs(tmp_path):
    assert _compare(tmp_path, history=3) == [
        parity.FileDifference("jsm001a1q_flt.fits", "PRIMARY,1", "HISTORY cards", 1, 3)]


def test_a_file_differing_only_in_date_has_no_remaining_difference(tmp_path):
    diffs = _compare(tmp_path, date="2026-12-07T10:00:07")
    assert diffs == [
        parity.FileDifference("jsm001a1q_flt.fits", "PRIMARY,1", "DATE", "2026-12-07T10:00:00", "2026-12-07T10:00:07"),
        parity.FileDifference("jsm001a1q_flt.fits", "HDRLET,1 > PRIMARY,1", "DATE", "2026-12-07T10:00:00",
                              "2026-12-07T10:00:07")]
    assert parity.remaining_differences(diffs) == []
    assert parity.stamp_summary(diffs) == "DATE x2 in 1 files"


def test_names_handed_back_and_exit_codes_are_compared(tmp_path):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    for d in (theirs, ours):
        d.mkdir()
        _small_file(d / "jsm001a1q_flt.fits")
        _small_file(d / "jsm001a2q_flt.fits")
        (d / "jsm001010.tra").write_text("log\n")
    before = parity.file_digests(ours)
    (ours / "jsm001a1q_flt.fits").unlink()
    _small_file(ours / "jsm001a1q_flt.fits", exptime=0.0)  # changed: handed back
    for name in ("astrodriz_sm.db", "astrodriz_sm.db-wal", "_parity_astrodriz-sm.stdout"):
        (ours / name).write_text("private\n")
    (theirs / "jsm001010_drz.fits").write_bytes((theirs / "jsm001a1q_flt.fits").read_bytes())
    # An input one run changed and the other left as it was: compared with the other's copy.
    _small_file(theirs / "jsm001a2q_flt.fits", history=2)
    ours_files = parity.handed_back(ours, before)
    assert ours_files == ["jsm001a1q_flt.fits"]
    theirs_files = ["jsm001010_drz.fits", "jsm001a1q_flt.fits", "jsm001a2q_flt.fits"]
    diffs = parity.whole_file_differences(theirs, theirs_files, ours, ours_files, (0, 4))
    assert diffs == [
        parity.FileDifference("", "", "exit code", 0, 4),
        parity.FileDifference("jsm001010_drz.fits", "", "file", "handed back", "(absent)"),
        parity.FileDifference("jsm001a2q_flt.fits", "", "file", "handed back", "(absent)"),
        parity.FileDifference("jsm001a1q_flt.fits", "SCI,1", "EXPTIME", 400.0, 0.0),
        parity.FileDifference("jsm001a2q_flt.fits", "PRIMARY,1", "HISTORY cards", 2, 1)]
    assert parity.differences_text(diffs).splitlines()[-4:] == [
        "- jsm001a2q_flt.fits (2)",
        "    file: 'handed back' / '(absent)'",
        "  - PRIMARY,1 (1)",
        "      HISTORY cards: 2 / 1"]
