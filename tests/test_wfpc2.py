"""WFPC2 inputs: the simulated _c0m/_c1m/_d0m files, and their conversion with drizzlepac's own functions."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from astropy.io import fits
from stwcs.wcsutil import HSTWCS

from astrodriz_sm.errors import ExitCode, InputError, NoViableDataError
from astrodriz_sm.handlers.wfpc2 import convert_exposures
from astrodriz_sm.sim import wfpc2 as sim_wfpc2
from astrodriz_sm.sim.wcs import updated_copy

from .conftest import run_cli

ONE = {"instrument": "wfpc2", "n_exposures": 1, "pointing_error": 0.6}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_simulated_files_are_what_the_archive_delivers(simulated, tmp_path):
    src, d = simulated("wfpc2", instrument="wfpc2")
    member = src.members[0]
    assert sorted(p.name for p in d.glob(f"{member}_*.fits")) == [
        f"{member}_c0m.fits", f"{member}_c1m.fits", f"{member}_d0m.fits"]
    with fits.open(d / f"{member}_c0m.fits") as c0m, fits.open(d / f"{member}_c1m.fits") as c1m:
        assert c0m[0].header["INSTRUME"] == "WFPC2" and "DETECTOR" not in c0m[0].header
        assert [(h.name, h.header["DETECTOR"], h.data.shape, h.header["BUNIT"]) for h in c0m[1:]] == [
            ("SCI", chip, (800, 800), "COUNTS") for chip in (1, 2, 3, 4)]
        assert [h.data.dtype.kind for h in c1m[1:]] == ["i"] * 4
        assert c0m[0].header["IDCTAB"] == "uref$sad1946fu_idc.fits"
        assert c0m[0].header["OFFTAB"] == f"uref${sim_wfpc2.OFFTAB}"
    # stwcs builds the four chips' WCS from the real IDCTAB and the simulated OFFTAB: the PC's pixels are
    # 0.0455", the WFs' 0.0996", each chip turned 90 degrees from the next, and the chips share no more
    # than a few arcsec strip along their borders (as WFPC2's vignetted chip edges do).
    updated = updated_copy(d / f"{member}_c0m.fits", d, tmp_path)
    with fits.open(updated) as hdul:
        wcs = [HSTWCS(hdul, ext=("SCI", k)) for k in (1, 2, 3, 4)]
        assert {hdul["SCI", k].header["WCSNAME"] for k in (1, 2, 3, 4)} == {"IDC_sad1946fu"}
    assert [round(w.pscale, 4) for w in wcs] == [0.0455, 0.0996, 0.0996, 0.0996]
    assert [round((w.orientat - wcs[2].orientat) % 360) for w in wcs] == [0, 270, 0, 90]
    grid = np.mgrid[0:800:25, 0:800:25].reshape(2, -1).T
    for i, a in enumerate(wcs):
        ra, dec = a.all_pix2world(grid[:, 0], grid[:, 1], 0)
        for j, b in enumerate(wcs):
            if i != j:
                x, y = b.wcs_world2pix(ra, dec, 0)
                shared = ((x > 0) & (x < 799) & (y > 0) & (y < 799)).mean()
                print(f"chip {i + 1} in chip {j + 1}: {shared:.3f}")
                assert shared < 0.06, (i + 1, j + 1, shared)


def test_conversion_without_crds_keeps_the_header_references(simulated, monkeypatch):
    src, d = simulated("wfpc2-one", **ONE)
    member = src.members[0]
    c0m = d / f"{member}_c0m.fits"
    before = _sha(c0m)
    for var in ("CRDS_PATH", "CRDS_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("uref", f"{d}/")
    out = convert_exposures(d, [member], {"uref": f"{d}/"})
    flt = d / f"{member}_flt.fits"
    assert out["converted"] == {flt.name: {"c0m": c0m.name, "c1m": f"{member}_c1m.fits", "sha256": before}}
    assert out["refused"] == []
    assert f"{flt.name}: CRDS_PATH is not set: the IDCTAB, OFFTAB and DGEOFILE the header names are kept " \
           "(no best references from CRDS)" in out["notes"]
    assert _sha(c0m) == before
    # Nothing but the FLT file is left beside the input: no scratch directory, no photeq.log.
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.suffix == ".log") == []
    with fits.open(flt) as hdul:
        assert hdul[0].header["DETECTOR"] == "PC"
        # wfpc2_to_flt's order: the SCI groups as they were, then a DQ and an ERR extension per chip.
        assert [(h.name, h.ver) for h in hdul[1:]] == [("SCI", k) for k in (1, 2, 3, 4)] + [
            (n, k) for k in (1, 2, 3, 4) for n in ("DQ", "ERR")]
        photflam = [hdul["SCI", k].header["PHOTFLAM"] for k in (1, 2, 3, 4)]
        with fits.open(c0m) as raw:
            ratio = raw["SCI", 1].header["PHOTFLAM"] / raw["SCI", 3].header["PHOTFLAM"]
            # photeq: every chip on WF3's PHOTFLAM, the PC's counts scaled by the ratio of the two.
            np.testing.assert_allclose(hdul["SCI", 1].data, raw["SCI", 1].data * ratio, rtol=1e-6)
    assert photflam == [sim_wfpc2.PHOTFLAM[3]] * 4


def test_conversion_assigns_best_references_from_the_crds_cache(simulated, monkeypatch):
    src, d = simulated("wfpc2-one", **ONE)
    member = src.members[0]
    fits.setval(d / f"{member}_c0m.fits", "IDCTAB", value="uref$old00000u_idc.fits", ext=0)
    env = {**src.environment, "uref": f"{d}/"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = convert_exposures(d, [member], env)
    assert f"{member}_flt.fits: CRDS best references: IDCTAB uref$old00000u_idc.fits -> uref$sad1946fu_idc.fits" \
        in out["notes"]
    assert fits.getval(d / f"{member}_flt.fits", "IDCTAB") == "uref$sad1946fu_idc.fits"


def test_an_exposure_runastrodriz_refuses_leaves_no_flt_file(simulated, monkeypatch):
    src, d = simulated("wfpc2-one", **ONE)
    member = src.members[0]
    fits.setval(d / f"{member}_c0m.fits", "QUALITY", value="GSFAIL", ext=0)
    monkeypatch.setenv("uref", f"{d}/")
    with pytest.raises(NoViableDataError, match="no viable data: no WFPC2 exposure passes runastrodriz's checks"):
        convert_exposures(d, [member], {"uref": f"{d}/"})
    assert not (d / f"{member}_flt.fits").exists()
    with pytest.raises(InputError, match=r"usm001a2q_c0m.fits: exposure usm001a2q is missing \(no _c0m file\)"):
        convert_exposures(d, ["usm001a2q"], {})


def test_an_association_of_several_wfpc2_exposures_is_refused(simulated):
    src, d = simulated("wfpc2", instrument="wfpc2")
    before = {p.name: _sha(p) for p in d.glob("*.fits")}
    proc = run_cli("-q", "start", d / src.asn.name, env=src.environment)
    assert proc.returncode == ExitCode.INPUT
    assert (f"{d / src.asn.name}: lists 3 WFPC2 exposures; WFPC2 is processed one exposure at a time, "
            "as runastrodriz does: give each one's _c0m file") in proc.stderr
    assert {p.name: _sha(p) for p in d.glob("*.fits")} == before


def test_an_exposure_in_a_directory_named_with_parentheses_is_converted_and_processed(simulated, tmp_path):
    """``w (copy)`` holds the exposure, uref and the CRDS cache: stsci.tools would read ``(copy)`` as a
    variable in an absolute name; the conversion works on relative names, the run ends done."""
    src, copy = simulated("wfpc2-one", **ONE)
    d = tmp_path / "w (copy)"
    shutil.copytree(copy, d)
    env = {k: v.replace(str(src.outdir), str(d)) for k, v in src.environment.items()}
    env.update(ASTROMETRY_APPLY_APRIORI="off", ASTROMETRY_COMPUTE_APOSTERIORI="off")
    proc = run_cli("-q", "start", d / f"{src.members[0]}_c0m.fits", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (d / f"{src.members[0]}_flt.fits").is_file()
    assert not list(d.glob(".*_convert_*"))
