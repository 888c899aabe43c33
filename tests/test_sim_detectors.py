"""Tests of the simulator's detectors other than ACS/WFC (subarrays only, a few seconds each).

Each detector's delivered files must have the extensions, units and kinds the
real detector has, updatewcs must give them the pipeline-default WCS of the
detector's own IDCTAB and recover the injected pointing error exactly, and the
a priori solutions of the astrometry service must be labelled with that IDCTAB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from astrodriz_sm.sim import SimConfig, add_simulate_arguments, config_from_args
from astrodriz_sm.sim.instruments import DETECTORS, detector
from astrodriz_sm.sim.wcs import reference_environment

REFDATA = Path(__file__).resolve().parents[1].parent / "shared" / "refdata"
OTHERS = [name for name, det in DETECTORS.items() if det.template is not None]
pytestmark = pytest.mark.skipif(
    not all((REFDATA / DETECTORS[name].template).is_file() for name in OTHERS),
    reason="real HST header templates not available")

# (extensions per chip, BUNIT, kinds, cosmic rays) each detector really has.
EXPECTED = {
    "acs-hrc": (["SCI", "ERR", "DQ"], "ELECTRONS", ["flt", "flc"], True),
    "acs-sbc": (["SCI", "ERR", "DQ"], "ELECTRONS", ["flt"], False),
    "wfc3-uvis": (["SCI", "ERR", "DQ"], "ELECTRONS", ["flt", "flc"], True),
    "wfc3-ir": (["SCI", "ERR", "DQ", "SAMP", "TIME"], "ELECTRONS/S", ["flt"], False),
}
POINTING_ERROR = 0.6  # arcsec, at PA 45 deg


def _updated(path: Path, refdir: Path, workdir: Path, refvar: str):
    """updatewcs(use_db=False) on a copy of ``path`` with only ``refvar`` set; (WCSNAME, HSTWCS of [SCI,1])."""
    from stwcs import updatewcs
    from stwcs.wcsutil import HSTWCS

    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / path.name
    shutil.copyfile(path, copy)
    with reference_environment(refdir, refvar):
        updatewcs.updatewcs(str(copy), use_db=False, checkfiles=False)
    with fits.open(copy) as hdul:
        return hdul["SCI", 1].header["WCSNAME"], HSTWCS(hdul, ext=("SCI", 1))


def test_expected_table_covers_every_templated_detector():
    assert sorted(EXPECTED) == sorted(OTHERS)


@pytest.mark.parametrize("name", OTHERS)
def test_files_have_the_detector_extensions_units_and_kinds(simulated, name):
    det = detector(name)
    extensions, bunit, kinds, cosmic_rays = EXPECTED[name]
    sim, _ = simulated(name, instrument=name, pointing_error=POINTING_ERROR)
    root = sim.root
    assert root == det.default_root and root[0] == det.letter
    assert sim.refvar == det.refvar == ("iref" if det.instrume == "WFC3" else "jref")
    assert all(m[0] == det.letter and len(m) == 9 for m in sim.members)
    assert [kind for kind in ("flt", "flc") if (sim.flt if kind == "flt" else sim.flc)] == kinds
    for kind in {"flt", "flc"} - set(kinds):
        assert not list(sim.outdir.glob(f"*_{kind}.fits"))
    assert (sim.outdir / f"{root}_asn.fits").is_file()
    assert [p.name for p in sim.raw] == [f"{m}_raw.fits" for m in sim.members]

    with fits.open(sim.asn) as asn:
        assert (asn[0].header["INSTRUME"], asn[0].header["DETECTOR"]) == (det.instrume, det.detector)
        assert list(asn[1].data["MEMNAME"]) == [m.upper() for m in sim.members] + [root.upper()]
    for path in sim.flt + sim.flc:
        with fits.open(path) as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", *extensions]
            phdr, sci = hdul[0].header, hdul["SCI", 1].header
            assert (phdr["INSTRUME"], phdr["DETECTOR"]) == (det.instrume, det.detector)
            assert phdr["IDCTAB"] == f"{det.refvar}${det.idctab}"
            assert phdr["MDRIZTAB"] == f"{det.refvar}${det.mdriztab}"
            assert phdr["NPOLFILE"] == phdr["D2IMFILE"] == "N/A"
            assert phdr["ROOTNAME"] == sci["EXPNAME"] == path.name[:9]
            assert phdr["SUBARRAY"] is True and phdr["DRIZCORR"] == "PERFORM"
            for key, value in det.filters:
                assert phdr[key] == value
            assert sci["BUNIT"] == hdul["ERR", 1].header["BUNIT"] == bunit
            # Delivered as OPUS writes them: linear TAN, none of the template's WCS or fit keywords.
            for h in (sci, hdul["ERR", 1].header, hdul["DQ", 1].header):
                assert h["CTYPE1"] == "RA---TAN" and h["CRVAL1"] == sci["CRVAL1"]
                assert not [k for k in h if k.startswith(("WCSNAME", "A_", "B_", "OCX", "IDC", "HDRNAME",
                                                          "CPDIS", "DP1", "D2IM", "CRPIX1O", "RMS_"))]
            assert "MEANDARK" in sci and phdr["MTFLAG"] in ("", "F") and phdr["FGSLOCK"] == "FINE"
            if det.count_rate:
                exptime = phdr["EXPTIME"]
                assert np.all(hdul["TIME", 1].data == exptime)
                assert np.all(hdul["SAMP", 1].data == det.nsamp)
                # e-/s: the sky of one exposure divided by its time.
                assert np.median(hdul["SCI", 1].data) == pytest.approx(det.sky_level / exptime, rel=0.05)
                assert phdr["PHOTFLAM"] == det.photflam
    truth = json.loads(sim.truth_json.read_text())
    assert truth["config"]["instrument"] == name and truth["detector"]["refvar"] == det.refvar
    n_cr = [e["n_cosmic_ray_pixels"][0] for e in truth["exposures"]]
    assert all(n > 100 for n in n_cr) if cosmic_rays else n_cr == [0, 0, 0]
    with fits.open(sim.reference_files["IDCTAB"]) as idc:
        assert (idc[0].header["INSTRUME"], idc[0].header["DETECTOR"]) == (det.instrume, det.detector)
        assert set(idc[1].data["DIRECTION"]) == {"FORWARD"}


@pytest.mark.parametrize("name", OTHERS)
def test_updatewcs_gives_the_idc_wcsname_and_recovers_the_injected_offset(simulated, name, tmp_path):
    det = detector(name)
    true_sim, _ = simulated(f"{name}-true", instrument=name)
    off_sim, _ = simulated(name, instrument=name, pointing_error=POINTING_ERROR)
    delivered = (off_sim.flc or off_sim.flt)[0]
    name_true, truth = _updated((true_sim.flc or true_sim.flt)[0], true_sim.outdir, tmp_path / "t", det.refvar)
    name_off, offset = _updated(delivered, off_sim.outdir, tmp_path / "o", det.refvar)
    assert name_true == name_off == f"IDC_{det.idctab[:9]}"
    assert truth.sip is not None

    n = fits.getval(delivered, "NAXIS1", ("SCI", 1))
    center = [[(n - 1) / 2.0, (n - 1) / 2.0]]
    true_pos = SkyCoord(*truth.all_pix2world(center, 0)[0], unit="deg")
    header_pos = SkyCoord(*offset.all_pix2world(center, 0)[0], unit="deg")
    separation_mas = true_pos.separation(header_pos).arcsec * 1000.0
    assert separation_mas == pytest.approx(600.0, abs=1.0)
    assert true_pos.position_angle(header_pos).deg == pytest.approx(45.0, abs=0.1)
    # The simulator's own check recorded the same offset, east and north.
    recorded = json.loads(off_sim.truth_json.read_text())["exposures"][0]["measured_offset_arcsec"][0]
    assert np.array(recorded) * 1000.0 == pytest.approx([424.264, 424.264], abs=0.01)


@pytest.mark.parametrize("name", OTHERS)
def test_apriori_headerlets_carry_the_detector_idctab_root(simulated, name):
    det = detector(name)
    sim, _ = simulated(name, instrument=name, pointing_error=POINTING_ERROR)
    idcroot = det.idctab[:9]
    index = Table.read(sim.service_dir / "astrometrydb.ecsv")
    assert sorted(set(index["wcsname"])) == [f"IDC_{idcroot}-GSC240", f"IDC_{idcroot}-HSC30"]
    assert sorted(set(index["rootname"])) == sim.members
    for row in index:
        with fits.open(sim.service_dir / row["headerlet"]) as hlet:
            assert hlet[0].header["WCSNAME"] == row["wcsname"]
            assert hlet[0].header["IDCTAB"] == f"{det.refvar}${det.idctab}"
            assert hlet[0].header["DESTIM"] == row["rootname"]


def test_instrument_options_and_their_checks():
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    ir = config_from_args(parser.parse_args(["--instrument", "wfc3-ir", "--no-service"]))
    assert (ir.instrument, ir.products, ir.root) == ("wfc3-ir", "flt", "ism002010")
    uvis = config_from_args(parser.parse_args(["--instrument", "wfc3-uvis", "--root", "ism777010"]))
    assert (uvis.products, uvis.root) == ("flt+flc", "ism777010")
    wfc = config_from_args(parser.parse_args([]))
    assert (wfc.instrument, wfc.products, wfc.root) == ("acs-wfc", "flt+flc", "jsm001010")
    with pytest.raises(SystemExit):
        parser.parse_args(["--instrument", "nicmos"])

    with pytest.raises(ValueError, match="unknown instrument"):
        SimConfig(instrument="nicmos")
    with pytest.raises(ValueError, match="no FLC files"):
        SimConfig(instrument="acs-sbc", products="flt+flc")
    with pytest.raises(ValueError, match="start with 'i'"):
        SimConfig(instrument="wfc3-uvis", root="jsm001010")
    with pytest.raises(ValueError, match="acs-wfc only"):
        SimConfig(instrument="acs-hrc", refdir=str(REFDATA))
