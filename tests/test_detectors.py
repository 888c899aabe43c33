"""Every imager: a 3-exposure subarray association with a 0.6" pointing error, aligned against the local service.

Each ends ``done`` with its product within 0.1 native pixel RMS of the truth. For WFC3/UVIS and
WFC3/IR, drizzlepac's runastrodriz runs on the same data (``benchmarks/parity.py``) and both hand
back the same final WCSNAME on every exposure and product. WFPC2 is run as runastrodriz takes it,
one exposure's ``_c0m`` file, against runastrodriz on the same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from astrodriz_sm.sim import measure_product_astrometry, observation_epoch
from astrodriz_sm.sim.instruments import detector
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import parity  # after the path: the harness lives with the benchmarks, not in the package

# At most a tenth of a native pixel RMS between the product's WCS and the true star positions.
MAX_RMS_NATIVE_PIXELS = 0.1


def _native_rms(product: Path, truth: Path, instrument: str) -> tuple[float, int]:
    """RMS error of the truth stars in ``product`` in native detector pixels, and the stars measured."""
    acc = measure_product_astrometry(product, next(truth.glob("*_truth.ecsv")),
                                     observation_epoch(next(truth.glob("*_truth.json"))))
    scale = proj_plane_pixel_scales(WCS(fits.getheader(product, ("SCI", 1))))[0] * 3600.0
    return acc.rms * scale / detector(instrument).pixel_scale, acc.n_stars


@pytest.mark.parametrize("instrument", ["acs-wfc", "acs-hrc", "acs-sbc"])
def test_detector_is_aligned_to_a_tenth_of_a_pixel(instrument, simulated, service):
    src, d = simulated(instrument, instrument=instrument, pointing_error=0.6)
    handle = service(src)
    proc = run_cli("-q", "start", d / src.asn.name, env={src.refvar: f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / "astrodriz_sm.db")
    run = fold(store.events(store.latest_run()["run_id"]))
    assert run.ended["status"] == "done"
    wcs = run.decision("wcs")
    assert wcs["chosen_stage"] == "aposteriori", wcs
    idcroot = Path(src.reference_files["IDCTAB"]).name.split("_")[0]
    assert wcs["chosen_wcsname"] == f"IDC_{idcroot}-FIT_REL_GAIAeDR3"
    product = d / f"{src.root}_{'drc' if src.flc else 'drz'}.fits"
    assert fits.getval(product, "WCSNAME", ext=("SCI", 1)) == wcs["chosen_wcsname"]
    rms, n = _native_rms(product, d / "truth", instrument)
    print(instrument, wcs["chosen_wcsname"], f"{rms:.4f} native px over {n} stars")
    assert n >= 20 and rms < MAX_RMS_NATIVE_PIXELS


@pytest.mark.parametrize("instrument", ["wfc3-uvis", "wfc3-ir"])
def test_detector_ends_with_runastrodriz_wcsname(instrument, tmp_path):
    result = parity.run_case(parity.CASES[instrument], tmp_path, timeout=1800)
    theirs, ours = result.runs["runastrodriz"], result.runs["astrodriz-sm"]
    print(parity.case_report(result))
    assert ours.status == "ok" and theirs.status == "ok", (ours.status, theirs.status)
    assert ours.exposures == theirs.exposures
    assert ours.products == theirs.products
    assert all("-FIT_REL_GAIAeDR3" in name for name in ours.products.values()), ours.products
    det = detector(instrument)
    product = Path(ours.directory) / f"{det.default_root}_{'drc' if 'flc' in det.kinds else 'drz'}.fits"
    rms, n = _native_rms(product, tmp_path / "sim" / "truth", instrument)
    print(instrument, f"{rms:.4f} native px over {n} stars")
    assert n >= 20 and rms < MAX_RMS_NATIVE_PIXELS


def test_psf_centroids_refine_the_fit_sources_on_wfc3_ir(simulated, service):
    """``--centroids psf``: the a posteriori fit uses PSF-fitted positions, recorded per chip."""
    src, d = simulated("wfc3-ir", instrument="wfc3-ir", pointing_error=0.6)
    handle = service(src)
    proc = run_cli("-q", "start", "--centroids", "psf", d / src.asn.name,
                   env={src.refvar: f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / "astrodriz_sm.db")
    run = fold(store.events(store.latest_run()["run_id"]))
    assert run.ended["status"] == "done" and run.config["centroids"] == "psf"
    align = run.output("aposteriori", "align")
    assert align["centroids"]["method"] == "psf"
    chips = [c for per_file in align["centroids"]["refined"].values() for c in per_file.values()]
    assert len(chips) == 3
    for chip in chips:
        # Almost every source drizzlepac found is refined; the measured PSF is the simulator's 1 px.
        assert chip["refined"] >= 0.9 * chip["sources"] > 20
        assert abs(chip["sigma"] - detector("wfc3-ir").psf_sigma) < 0.1
    assert run.decision("wcs")["chosen_wcsname"] == "IDC_sm00009ai-FIT_REL_GAIAeDR3"
    rms, n = _native_rms(d / f"{src.root}_drz.fits", d / "truth", "wfc3-ir")
    print(f"wfc3-ir --centroids psf: {rms:.4f} native px over {n} stars")
    assert n >= 20 and rms < MAX_RMS_NATIVE_PIXELS


def test_wfpc2_exposure_ends_with_runastrodriz_wcsname(tmp_path):
    """WFPC2: the _c0m/_c1m pair converted, best references from a CRDS cache, photeq, the real IDCTAB."""
    result = parity.run_case(parity.CASES["wfpc2"], tmp_path, timeout=1800)
    theirs, ours = result.runs["runastrodriz"], result.runs["astrodriz-sm"]
    print(parity.case_report(result))
    assert ours.status == "ok" and theirs.status == "ok", (ours.status, theirs.status)
    member = result.input.removesuffix("_c0m.fits")
    assert ours.products == theirs.products == {f"{member}_drw.fits": "IDC_sad1946fu-FIT_IMG_GAIAeDR3"}
    assert ours.exposures == theirs.exposures == {f"{member}_flt.fits": "IDC_sad1946fu-FIT_IMG_GAIAeDR3"}
    store = EventStore(Path(ours.directory) / "astrodriz_sm.db")
    run = fold(store.events(store.latest_run()["run_id"]))
    converted = run.output("init", "resolve_inputs")["wfpc2_converted"]
    assert converted[f"{member}_flt.fits"]["c1m"] == f"{member}_c1m.fits"
    notes = [e.payload["message"] for e in store.events(run.run_id) if e.kind == "note"]
    assert f"{member}_flt.fits: CRDS best references: as in the header" in notes
    # photeq put every chip on WF3's PHOTFLAM.
    with fits.open(Path(ours.directory) / f"{member}_flt.fits") as hdul:
        photflam = {h.header["DETECTOR"]: h.header["PHOTFLAM"] for h in hdul if h.name == "SCI"}
    assert photflam == {chip: photflam[3] for chip in (1, 2, 3, 4)}
    rms, n = _native_rms(Path(ours.directory) / f"{member}_drw.fits", tmp_path / "sim" / "truth", "wfpc2")
    print(f"wfpc2: {rms:.4f} native (WF) px over {n} stars")
    assert n >= 20 and rms < MAX_RMS_NATIVE_PIXELS
