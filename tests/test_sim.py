"""Tests of the association simulator: files, determinism, injected errors and truth.

The end-to-end tests drizzle the simulated exposures with drizzlepac exactly as
the pipeline does and measure the products against the truth catalog; they
prove that the simulated data and their truth agree.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from astrodriz_sm.sim import (
    SimConfig,
    add_simulate_arguments,
    config_from_args,
    jref_environment,
    measure_product_astrometry,
    observation_epoch,
    simulate_association,
)

REFDATA = Path(__file__).resolve().parents[1].parent / "shared" / "refdata"
needs_refdata = pytest.mark.skipif(not (REFDATA / "qbu1641sj_idc.fits").is_file(),
                                   reason="real ACS/WFC reference files not available")


def _hashes(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _updated_copy(path: Path, jref_dir: Path, workdir: Path):
    """updatewcs(use_db=False) on a copy of ``path``; returns (WCSNAME, HSTWCS of [SCI,1])."""
    from stwcs import updatewcs
    from stwcs.wcsutil import HSTWCS

    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / path.name
    shutil.copyfile(path, copy)
    with jref_environment(jref_dir):
        updatewcs.updatewcs(str(copy), use_db=False, checkfiles=False)
    with fits.open(copy) as hdul:
        return hdul["SCI", 1].header["WCSNAME"], HSTWCS(hdul, ext=("SCI", 1))


def _drizzle(sim_dir: Path, workdir: Path) -> Path:
    """Drizzle the FLC files of a simulated association as runastrodriz does; returns the DRC."""
    from drizzlepac import astrodrizzle, processInput
    from stwcs import updatewcs

    shutil.copytree(sim_dir, workdir, symlinks=True)
    root = next(workdir.glob("*_asn.fits")).name[:-len("_asn.fits")]
    with contextlib.chdir(workdir), jref_environment(workdir):
        flcs = sorted(p.name for p in workdir.glob("*_flc.fits"))
        updatewcs.updatewcs(flcs, use_db=False, checkfiles=False)
        # With FLT and FLC present the pipeline drizzles an ASN rewritten to list the FLCs.
        flc_asn = processInput.changeSuffixinASN(f"{root}_asn.fits", "flc")
        astrodrizzle.AstroDrizzle(flc_asn, mdriztab=True, resetbits=4096, crbit=4096, build=True,
                                  in_memory=False, preserve=False, clean=False, num_cores=1,
                                  runfile=f"{root}_adriz")
    return workdir / f"{root}_drc.fits"


@pytest.fixture(scope="module")
def sim_default(tmp_path_factory) -> Path:
    """Default association: 3 exposures, 512x512 subarray, no injected errors."""
    outdir = tmp_path_factory.mktemp("sim_default")
    simulate_association(outdir, SimConfig())
    return outdir


@pytest.fixture(scope="module")
def drizzled_default(sim_default, tmp_path_factory) -> Path:
    return _drizzle(sim_default, tmp_path_factory.mktemp("driz") / "default")


@pytest.fixture(scope="module")
def drizzled_refdir(tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("sim_refdir")
    simulate_association(outdir, SimConfig(refdir=str(REFDATA)))
    return _drizzle(outdir, tmp_path_factory.mktemp("driz") / "refdir")


@pytest.fixture(scope="module")
def drizzled_guiding(tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("sim_guiding")
    simulate_association(outdir, SimConfig(guiding_failure=2.0))
    return _drizzle(outdir, tmp_path_factory.mktemp("driz") / "guiding")


def test_same_config_gives_identical_files(sim_default, tmp_path):
    again = simulate_association(tmp_path / "again", SimConfig())
    other = simulate_association(tmp_path / "other", SimConfig(seed=2))

    reference = _hashes(sim_default)
    assert len(reference) == 17  # asn, 3 x (raw, flt, flc), idctab, mdriztab, 3 masks, catalog, json
    assert _hashes(again.outdir) == reference
    other_hashes = _hashes(other.outdir)
    assert other_hashes.keys() == reference.keys()
    for name in ["jsm001a1q_flt.fits", "jsm001a2q_flc.fits", "truth/jsm001010_truth.ecsv",
                 "truth/jsm001a3q_crmask.fits"]:
        assert other_hashes[name] != reference[name], name


def test_association_structure(sim_default):
    with fits.open(sim_default / "jsm001010_asn.fits") as asn:
        table = asn[1].data
        assert list(table["MEMNAME"]) == ["JSM001A1Q", "JSM001A2Q", "JSM001A3Q", "JSM001010"]
        assert list(table["MEMTYPE"]) == ["EXP-DTH"] * 3 + ["PROD-DTH"]
        assert list(table["MEMPRSNT"]) == [True] * 4
        assert asn[1].columns["MEMNAME"].format == "14A"
        assert asn[0].header["INSTRUME"] == "ACS"
        assert asn[0].header["DETECTOR"] == "WFC"
        assert asn[0].header["ASN_ID"] == "JSM001010"

    for member in ["jsm001a1q", "jsm001a2q", "jsm001a3q"]:
        assert fits.getval(sim_default / f"{member}_raw.fits", "DRIZCORR") == "PERFORM"
        with fits.open(sim_default / f"{member}_flt.fits") as flt:
            assert [h.name for h in flt] == ["PRIMARY", "SCI", "ERR", "DQ"]
            phdr, shdr = flt[0].header, flt["SCI", 1].header
            assert phdr["IDCTAB"] == "jref$sm00001aj_idc.fits"
            assert phdr["MDRIZTAB"] == "jref$sm00002aj_mdz.fits"
            assert phdr["NPOLFILE"] == phdr["D2IMFILE"] == "N/A"
            assert (phdr["FILTER1"], phdr["FILTER2"], phdr["ASN_MTYP"]) == ("F606W", "CLEAR2L", "EXP-DTH")
            # Delivered as OPUS writes them: no distortion, no WCSNAME.
            assert shdr["CTYPE1"] == "RA---TAN" and "WCSNAME" not in shdr and "A_ORDER" not in shdr
            assert (shdr["NAXIS1"], shdr["NAXIS2"], shdr["LTV1"], shdr["LTV2"]) == (512, 512, -1792.0, -768.0)
            assert (flt["SCI", 1].header["BITPIX"], flt["DQ", 1].header["BITPIX"]) == (-32, 16)

    truth = json.loads((sim_default / "truth" / "jsm001010_truth.json").read_text())
    n_cr = [e["n_cosmic_ray_pixels"][0] for e in truth["exposures"]]
    assert all(300 < n < 2500 for n in n_cr), n_cr


def test_flt_only_and_drizcorr_omit(tmp_path):
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--flt-only", "--drizcorr", "OMIT", "--n-exposures", "2", "--seed", "5"]))
    assert (config.products, config.drizcorr, config.n_exposures, config.seed) == ("flt", "OMIT", 2, 5)

    result = simulate_association(tmp_path, config)
    assert result.flc == [] and not list(tmp_path.glob("*_flc.fits"))
    assert [p.name for p in result.flt] == ["jsm001a1q_flt.fits", "jsm001a2q_flt.fits"]
    for raw, flt in zip(result.raw, result.flt):
        assert fits.getval(raw, "DRIZCORR") == "OMIT"
        assert fits.getval(flt, "DRIZCORR") == "OMIT"


def test_injected_pointing_error_is_recovered_by_updatewcs(sim_default, tmp_path):
    result = simulate_association(tmp_path / "err", SimConfig(pointing_error=0.6))

    name_true, truth = _updated_copy(sim_default / "jsm001a1q_flt.fits", sim_default, tmp_path / "t")
    name_off, offset = _updated_copy(result.flt[0], result.outdir, tmp_path / "o")
    assert name_true == name_off == "IDC_sm00001aj"
    assert truth.sip is not None

    center = [[255.5, 255.5]]
    true_pos = SkyCoord(*truth.all_pix2world(center, 0)[0], unit="deg")
    header_pos = SkyCoord(*offset.all_pix2world(center, 0)[0], unit="deg")
    separation = true_pos.separation(header_pos).arcsec
    print(f"\ninjected 0.600 arcsec, recovered {separation:.6f} arcsec at "
          f"PA {true_pos.position_angle(header_pos).deg:.3f} deg")
    assert separation == pytest.approx(0.6, abs=1e-3)
    assert true_pos.position_angle(header_pos).deg == pytest.approx(45.0, abs=0.1)


def test_drizzled_product_matches_truth_default(sim_default, drizzled_default):
    result = measure_product_astrometry(drizzled_default, sim_default / "truth" / "jsm001010_truth.ecsv",
                                        observation_epoch(sim_default / "truth" / "jsm001010_truth.json"))
    print(f"\ndefault instrument: {result}")
    with fits.open(drizzled_default) as drc:
        assert [h.name for h in drc][:4] == ["PRIMARY", "SCI", "WHT", "CTX"]
        assert drc[0].header["NDRIZIM"] == 3
    # Cosmic-ray rejection ran and found the injected cosmic rays (AstroDrizzle marks them 0).
    for member in ["jsm001a1q", "jsm001a2q", "jsm001a3q"]:
        found = fits.getdata(drizzled_default.parent / f"{member}_sci1_crmask.fits") == 0
        injected = fits.getdata(sim_default / "truth" / f"{member}_crmask.fits", ("CRMASK", 1)) == 1
        recall = (found & injected).sum() / injected.sum()
        spurious = (found & ~injected).sum()
        print(f"{member}: {injected.sum()} CR pixels injected, {recall:.3f} flagged, {spurious} spurious")
        assert recall > 0.95 and spurious < 0.05 * injected.sum()
    assert result.n_stars > 80
    assert result.rms < 0.1
    assert abs(result.mean_dx) < 0.02 and abs(result.mean_dy) < 0.02


@needs_refdata
def test_drizzled_product_matches_truth_real_reference_files(drizzled_refdir):
    work = drizzled_refdir.parent
    assert fits.getval(work / "jsm001a1q_flc.fits", "WCSNAME", ext=("SCI", 1)) == "IDC_qbu1641sj"
    assert (work / "jsm001a1q_flc.fits").exists() and (work / "qbu16424j_npl.fits").is_symlink()
    result = measure_product_astrometry(drizzled_refdir, work / "truth" / "jsm001010_truth.ecsv",
                                        observation_epoch(work / "truth" / "jsm001010_truth.json"))
    print(f"\nreal ACS/WFC reference files: {result}")
    assert result.n_stars > 80
    assert result.rms < 0.1
    assert abs(result.mean_dx) < 0.02 and abs(result.mean_dy) < 0.02


def _focus(drc: Path) -> tuple[dict, bool]:
    from drizzlepac.haputils import astrometric_utils as amutils

    singles = [str(p) for p in sorted(drc.parent.glob("*_single_sci.fits"))]
    assert len(singles) == 3
    focus = amutils.build_focus_dict(singles, str(drc), sigma=1.5)
    return focus, bool(amutils.evaluate_focus(focus))


def test_focus_index_passes_clean_and_fails_guiding_failure(drizzled_default, drizzled_guiding):
    clean, clean_ok = _focus(drizzled_default)
    bad, bad_ok = _focus(drizzled_guiding)
    print(f"\nclean:   exp {np.round(clean['exp'], 3)} prod {np.round(clean['prod'], 3)} verified {clean_ok}"
          f"\nguiding: exp {np.round(bad['exp'], 3)} prod {np.round(bad['prod'], 3)} verified {bad_ok}")
    assert clean_ok
    assert not bad_ok
    assert bad["prod"][0] < 0.8 * clean["prod"][0]
