"""The final stage's headerlets, header updates and manifest lines, on a real WFC3/UVIS FLC (10x10 chips)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits

from astrodriz_sm.config import RunConfig
from astrodriz_sm.handlers.common import StepContext
from astrodriz_sm.handlers.final import manifest_headerlets, update_headers, write_headerlets
from astrodriz_sm.model import Inputs, RunLayout
from astrodriz_sm.model.events import NOTE
from astrodriz_sm.model.exposures import Exposure, ExposureSet
from astrodriz_sm.statemachine.state import RunState

from .conftest import REFDATA

SAMPLE = REFDATA / "sample_ipppssoot_flc.fits"
ROOT = "ib4606010"
FLC = "ib4606c5q_flc.fits"
WCSNAME = "IDC_2731450pi-FIT_REL_GAIAeDR3"
# drizzlepac 3.11's updatehdr.interpret_wcsname_type of that WCSNAME.
WCSTYPE = "undistorted a posteriori solution relatively aligned to GAIAEDR3"


def _context(tmp_path: Path, completed=None, drizcorr="PERFORM", **config) -> StepContext:
    exposures = ExposureSet((), (Exposure("ib4606c5q", "flc", "WFC3", "UVIS", 600.0),))
    inputs = Inputs(root=ROOT, kind="asn", exposures=exposures, drizcorr=drizcorr)
    asn = tmp_path / f"{ROOT}_asn.fits"
    layout = RunLayout(ROOT, asn)
    layout.stage_dir("final").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLE, layout.stage_dir("final") / FLC)
    run = RunState(inputs=inputs, completed=completed or {})
    return StepContext(run=run, config=RunConfig(input=str(asn), run_dir=str(tmp_path), **config),
                       stage="final", step="write_headerlets", layout=layout)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_opus_headerlet_per_exposure_named_flt(tmp_path):
    ctx = _context(tmp_path)
    result = write_headerlets(ctx)
    hlet = ctx.stage_dir() / "ib4606c5q_flt_hlet.fits"
    assert result.payload == {"headerlets": {"ib4606c5q_flt_hlet.fits": WCSNAME}, "kept_existing": [],
                              "files": {"ib4606c5q_flt_hlet.fits": _sha(hlet)}}
    assert result.facts == []
    header = fits.getheader(hlet, 0)
    assert (header["HDRNAME"], header["AUTHOR"]) == ("ib4606c5q_flc_hlet.fits", "OPUS")
    assert header["WCSNAME"] == WCSNAME
    assert header["DESCRIP"] == WCSTYPE


def test_a_headerlet_beside_the_inputs_or_from_the_fit_is_not_written(tmp_path):
    ctx = _context(tmp_path)
    (tmp_path / "ib4606c5q_flt_hlet.fits").write_bytes(b"")
    assert write_headerlets(ctx).payload == {"headerlets": {}, "files": {},
                                             "kept_existing": ["ib4606c5q_flt_hlet.fits"]}
    aligned = _context(tmp_path / "aligned", {("final", "stage_inputs"): {
        "alignment_headerlets": ["ib4606c5q_flt_hlet.fits"]}})
    assert write_headerlets(aligned).payload == {"headerlets": {}, "kept_existing": [], "files": {}}
    assert not (aligned.stage_dir() / "ib4606c5q_flt_hlet.fits").exists()


def test_an_exposure_stwcs_cannot_describe_gets_no_headerlet_and_a_note(tmp_path):
    """As 3.11 passes over it (RA 840-841): here a chip with a WCSNAME and no WCS at all."""
    ctx = _context(tmp_path)
    sci = fits.ImageHDU(np.ones((2, 2), np.float32), name="SCI", ver=1)
    sci.header["WCSNAME"] = "OPUS"
    primary = fits.PrimaryHDU(header=fits.Header([("ROOTNAME", "ib4606c5q"), ("INSTRUME", "WFC3"),
                                                  ("DETECTOR", "UVIS")]))
    fits.HDUList([primary, sci]).writeto(ctx.stage_dir() / FLC, overwrite=True)
    result = write_headerlets(ctx)
    assert result.payload == {"headerlets": {}, "kept_existing": [], "files": {}}
    assert result.facts == [(NOTE, {"message": "no headerlet written for ib4606c5q_flc.fits: 'fname' must "
                                               "be a file object opened in 'update' mode."})]
    assert not (ctx.stage_dir() / "ib4606c5q_flt_hlet.fits").exists()


def test_update_headers_of_an_omitted_drizzle_writes_s_region_and_wcstype(tmp_path):
    """Each WCS key gets its WCSTYPE, a key without WCSNAME is named OPUS, an association's DRIZCORR stays."""
    ctx = _context(tmp_path, drizcorr="OMIT")
    flc = ctx.stage_dir() / FLC
    with fits.open(flc, mode="update") as hdul:
        for ext in (1, 4):
            for key in ("S_REGION", "WCSTYPE", "WCSTYPEA", "WCSTYPEB", "WCSTYPEO", "WCSNAMEB"):
                del hdul[ext].header[key]
    result = update_headers(ctx)
    assert result.payload == {"files": {FLC: _sha(flc)}}
    with fits.open(flc) as hdul:
        assert hdul[0].header["DRIZCORR"] == "PERFORM"
        for ext in (("SCI", 1), ("SCI", 2)):
            header = hdul[ext].header
            assert {k: header[k] for k in header if k.startswith(("WCSNAME", "WCSTYPE"))} == {
                "WCSNAMEO": "OPUS", "WCSNAMEA": "IDC_2731450pi", "WCSNAME": WCSNAME, "WCSNAMEB": "OPUS",
                "WCSTYPEO": "pipeline default not aligned", "WCSTYPEA": "undistorted not aligned",
                "WCSTYPE": WCSTYPE, "WCSTYPEB": "pipeline default not aligned"}
            assert header["S_REGION"].startswith("POLYGON ICRS ")


def test_manifest_lists_written_headerlets_then_those_found_beside_the_inputs(tmp_path):
    written = {"ib4606c5q_flt_hlet.fits": WCSNAME}
    ctx = _context(tmp_path, {("final", "write_headerlets"): {"headerlets": written}})
    for name in ("ib4606c5q_flc_0a1b2c_hlet.fits", "ib4606c5q_flc_hlet.fits", "ib4606c5q_flt_hlet.fits",
                 "ib4606c5q_flc_abc_hlet.fits"):
        (tmp_path / name).write_bytes(b"")
    assert manifest_headerlets(ctx) == ["ib4606c5q_flc_hlet.fits", "ib4606c5q_flc_0a1b2c_hlet.fits",
                                        "ib4606c5q_flc_hlet.fits"]
    handed_back = {("final", "replace"): {"headerlets": ["ib4606c5q_flc_9f9f9f_hlet.fits"]}}
    newpath = _context(tmp_path / "np", handed_back, newpath=str(tmp_path / "np" / "work"))
    assert manifest_headerlets(newpath) == ["ib4606c5q_flc_9f9f9f_hlet.fits"]
