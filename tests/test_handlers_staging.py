"""The stage copies: fresh copies, a changed source refused, cosmic-ray DQ bits cleared, IDCTAB reset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrodriz_sm.config import RunConfig
from astrodriz_sm.errors import ProcessingError
from astrodriz_sm.handlers.common import StepContext
from astrodriz_sm.handlers.staging import copy_into_stage, stage_inputs
from astrodriz_sm.model import Inputs, RunLayout
from astrodriz_sm.model.events import NOTE
from astrodriz_sm.model.exposures import Exposure, ExposureSet
from astrodriz_sm.statemachine.state import RunState

ROOT = "jsm001010"
ROOTS = ("jsm001a1q", "jsm001a2q")
# A hot pixel (16), a cosmic ray of a first pass (4096), one of a second (8192) on a saturated pixel (256).
DQ = np.array([[0, 16], [4096, 8192 | 256]], dtype=np.int16)


def _exposure(path: Path) -> None:
    header = fits.Header([("ROOTNAME", path.name[:9]), ("IDCTAB", "jref$new_idc.fits")])
    primary = fits.PrimaryHDU(header=header)
    fits.HDUList([primary, fits.ImageHDU(np.ones((2, 2), np.float32), name="SCI", ver=1),
                  fits.ImageHDU(DQ, name="DQ", ver=1)]).writeto(path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _context(run_dir: Path, kinds=("flt", "flc"), follows=False, idctab_reset=None):
    sets = {k: tuple(Exposure(r, k, "ACS", "WFC", 400.0) for r in ROOTS) for k in kinds}
    exposures = ExposureSet(sets.get("flt", ()), sets.get("flc", ()))
    for name in exposures.names:
        _exposure(run_dir / name)
    inputs = Inputs(root=ROOT, kind="asn", exposures=exposures,
                    input_hashes={n: _sha(run_dir / n) for n in exposures.names},
                    idctab_reset=idctab_reset or {})
    asn = run_dir / f"{ROOT}_asn.fits"
    return StepContext(run=RunState(inputs=inputs), config=RunConfig(input=str(asn), run_dir=str(run_dir)),
                       stage="default", step="stage_inputs", layout=RunLayout(ROOT, asn),
                       decisions={"alignment_follows": {"follows": follows}})


def test_fresh_copies_replace_whatever_the_stage_directory_held(tmp_path):
    ctx = _context(tmp_path, kinds=("flt",))
    stale = tmp_path / f"{ROOT}_default" / "left_over_single_sci.fits"
    stale.parent.mkdir()
    stale.write_text("from an earlier attempt")
    result = copy_into_stage(ctx, tmp_path, ctx.inputs.input_hashes)
    assert result == {"directory": f"{ROOT}_default", "source": str(tmp_path),
                      "files": ctx.inputs.input_hashes}
    assert sorted(p.name for p in stale.parent.iterdir()) == ["jsm001a1q_flt.fits", "jsm001a2q_flt.fits"]


def test_a_source_changed_since_its_stage_recorded_it_is_refused(tmp_path):
    ctx = _context(tmp_path, kinds=("flt",))
    source = tmp_path / "jsm001a2q_flt.fits"
    recorded = ctx.inputs.input_hashes[source.name]
    with fits.open(source, mode="update") as hdul:
        hdul[0].header["HISTORY"] = "touched by hand"
    with pytest.raises(ProcessingError) as info:
        copy_into_stage(ctx, tmp_path, ctx.inputs.input_hashes)
    assert str(info.value) == (f"{source}: changed since its stage recorded it "
                               f"(sha256 {_sha(source)[:12]} != {recorded[:12]}); start a new run")
    assert info.value.path == str(source)


def test_stage_inputs_clears_cosmic_ray_bits_of_the_verified_list_when_an_alignment_follows(tmp_path):
    ctx = _context(tmp_path, follows=True)
    result = stage_inputs(ctx)
    d = tmp_path / f"{ROOT}_default"
    flc, flt = [f"{r}_flc.fits" for r in ROOTS], [f"{r}_flt.fits" for r in ROOTS]
    assert result.payload["dq_bits_reset"] == {"bits": "4096,8192", "files": flc}
    for name in flc:
        assert fits.getdata(d / name, "DQ").tolist() == [[0, 16], [0, 256]]
    for name in flt:
        assert fits.getdata(d / name, "DQ").tolist() == DQ.tolist()
        assert result.payload["files"][name] == ctx.inputs.input_hashes[name]
    assert result.payload["files"] == {n: _sha(d / n) for n in flt + flc}
    assert all(fits.getdata(tmp_path / n, "DQ").tolist() == DQ.tolist() for n in flt + flc)
    assert result.facts == []


def test_stage_inputs_without_alignment_leaves_the_copies_as_delivered(tmp_path):
    ctx = _context(tmp_path)
    result = stage_inputs(ctx)
    assert "dq_bits_reset" not in result.payload
    assert result.payload["files"] == ctx.inputs.input_hashes


def test_pipeline_reset_idctab_changes_the_copies_only(tmp_path):
    change = {"from": "jref$new_idc.fits", "to": "jref$old_idc.fits", "raw": "jsm001a1q_raw.fits"}
    ctx = _context(tmp_path, kinds=("flt",), idctab_reset={"jsm001a1q_flt.fits": change,
                                                           "jsm001a1q_flc.fits": change})
    result = stage_inputs(ctx)
    d = tmp_path / f"{ROOT}_default"
    assert fits.getval(d / "jsm001a1q_flt.fits", "IDCTAB") == "jref$old_idc.fits"
    assert fits.getval(d / "jsm001a2q_flt.fits", "IDCTAB") == "jref$new_idc.fits"
    assert fits.getval(tmp_path / "jsm001a1q_flt.fits", "IDCTAB") == "jref$new_idc.fits"
    assert result.payload["idctab_reset"] == {"jsm001a1q_flt.fits": change}
    assert result.payload["files"]["jsm001a1q_flt.fits"] == _sha(d / "jsm001a1q_flt.fits")
    assert result.facts == [(NOTE, {"message": "PIPELINE_RESET_IDCTAB: IDCTAB of jsm001a1q_flt.fits reset "
                                               "from jref$new_idc.fits to jref$old_idc.fits "
                                               "(that of jsm001a1q_raw.fits)"})]
