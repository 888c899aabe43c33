"""Tests of the association simulator: files, determinism, injected errors and truth.

The end-to-end tests drizzle the simulated exposures with drizzlepac exactly as
the pipeline does and measure the products against the truth catalog; they
prove that the simulated data and their truth agree.  The astrometry-service
data are proven through the stwcs calls a service would drive (headerlets
applied as primary, ``AstrometryDB.apply_new_apriori`` on the guide-star
offsets, and ``updatewcs(use_db=True)`` answered in-process by the files).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from astrodriz_sm.sim import (
    SimConfig,
    add_simulate_arguments,
    config_from_args,
    jref_environment,
    measure_product_astrometry,
    observation_epoch,
    propagate,
    simulate_association,
    updated_wcs,
)
from astrodriz_sm.sim.service import GAIA_OBJID_BASE, GSC242, TWOMASS, catalog_model
from astrodriz_sm.sim.wcs import chip_center_offset, updated_copy

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
    # asn, 3 x (raw, flt, flc), idctab, mdriztab, 3 masks, catalog, json; service: 5 catalogs,
    # 3 x 2 headerlets, astrometrydb.ecsv, gsc_offsets.ecsv
    assert len(reference) == 30
    assert _hashes(again.outdir) == reference
    other_hashes = _hashes(other.outdir)
    assert other_hashes.keys() == reference.keys()
    for name in ["jsm001a1q_flt.fits", "jsm001a2q_flc.fits", "truth/jsm001010_truth.ecsv",
                 "truth/jsm001a3q_crmask.fits", "service/catalogs/GAIAeDR3.ecsv",
                 "service/catalogs/GAIADR1.ecsv", "service/catalogs/GSC242.ecsv",
                 "service/catalogs/2MASS.ecsv"]:
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
        ["--flt-only", "--drizcorr", "OMIT", "--n-exposures", "2", "--seed", "5", "--no-service"]))
    assert (config.products, config.drizcorr, config.n_exposures, config.seed) == ("flt", "OMIT", 2, 5)
    assert (config.service, config.apriori_residual, config.apriori_idctab_mismatch) == (False, 0.25, False)
    other = config_from_args(parser.parse_args(["--apriori-residual", "0.4", "--apriori-idctab-mismatch"]))
    assert (other.service, other.apriori_residual, other.apriori_idctab_mismatch) == (True, 0.4, True)

    (tmp_path / "service").mkdir()  # left over from an earlier run
    result = simulate_association(tmp_path, config)
    assert result.service_dir is None and not (tmp_path / "service").exists()
    assert "service" not in json.loads(result.truth_json.read_text())
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


# ---------------------------------------------------------------- astrometry-service data

@pytest.fixture(scope="module")
def sim_apriori(tmp_path_factory):
    """0.6" common pointing error, plus a 2-pixel guiding failure of exposure 1."""
    outdir = tmp_path_factory.mktemp("sim_apriori")
    return simulate_association(outdir, SimConfig(pointing_error=0.6, guiding_failure=2.0))


@pytest.fixture(scope="module")
def true_wcs(sim_default) -> dict:
    """True WCS of [SCI,1] per member: the default association has no injected error."""
    return {m: updated_wcs(sim_default / f"{m}_flt.fits", sim_default)[0]
            for m in ["jsm001a1q", "jsm001a2q", "jsm001a3q"]}


def _residual(truth, path: Path) -> tuple[float, float]:
    """(east, north) arcsec of a file's primary WCS of [SCI,1] from the truth, at the chip centre."""
    from stwcs.wcsutil import HSTWCS

    with fits.open(path) as hdul:
        return chip_center_offset(truth, HSTWCS(hdul, ext=("SCI", 1)), 512, 512)


def _sky_errors(catalog: Table, truth: Table, epoch: float, objid_base: int = GAIA_OBJID_BASE):
    """Catalog minus truth positions at ``epoch`` (east, north mas) and their predicted sigmas."""
    rows = np.asarray(catalog["objID"], dtype=np.int64) - objid_base
    truth_ra, truth_dec = propagate(truth[rows], epoch)
    if "pmra" in catalog.colnames:
        ra, dec = propagate(catalog, epoch)
        dt = epoch - np.asarray(catalog["epoch"], dtype=float)
        sig_e = np.hypot(catalog["ra_error"], dt * catalog["pmra_error"])
        sig_n = np.hypot(catalog["dec_error"], dt * catalog["pmdec_error"])
    else:
        ra, dec = np.asarray(catalog["ra"], dtype=float), np.asarray(catalog["dec"], dtype=float)
        sig_e, sig_n = np.asarray(catalog["ra_error"]), np.asarray(catalog["dec_error"])
    d_east = (ra - truth_ra) * np.cos(np.deg2rad(truth_dec)) * 3.6e6
    d_north = (dec - truth_dec) * 3.6e6
    return np.concatenate([d_east, d_north]), np.concatenate([sig_e, sig_n])


def test_reference_catalogs_match_the_truth_within_their_errors(sim_default, true_wcs):
    service = sim_default / "service" / "catalogs"
    truth = Table.read(sim_default / "truth" / "jsm001010_truth.ecsv", format="ascii.ecsv")
    date_obs = Time(fits.getval(sim_default / "jsm001a1q_flt.fits", "DATE-OBS")).decimalyear
    edr3 = Table.read(service / "GAIAeDR3.ecsv", format="ascii.ecsv")
    dr2 = Table.read(service / "GAIADR2.ecsv", format="ascii.ecsv")
    dr1 = Table.read(service / "GAIADR1.ecsv", format="ascii.ecsv")

    pm_columns = {"pmra", "pmdec", "pmra_error", "pmdec_error"}
    assert edr3.colnames == ["ra", "dec", "mag", "ra_error", "dec_error", "pmra", "pmdec",
                             "pmra_error", "pmdec_error", "epoch", "objID"]
    assert dr2.colnames == edr3.colnames
    assert not pm_columns & set(dr1.colnames)
    assert (set(edr3["epoch"]), set(dr2["epoch"]), set(dr1["epoch"])) == ({2016.0}, {2015.5}, {2015.0})
    assert (str(edr3["ra_error"].unit), str(edr3["pmra"].unit)) == ("mas", "mas / yr")
    assert 0.1 * 0.85 <= edr3["ra_error"].min() and edr3["dec_error"].max() <= 0.5 * 1.15
    assert 0.05 * 0.85 <= edr3["pmra_error"].min() and edr3["pmdec_error"].max() <= 0.3 * 1.15
    assert np.median(dr2["ra_error"]) == pytest.approx(2.5 * np.median(edr3["ra_error"]), rel=0.1)
    assert 0.85 <= dr1["ra_error"].min() and dr1["dec_error"].max() <= 2.3

    # The brightest ~65 % of the truth stars, a region larger than the footprint.
    fraction = len(edr3) / len(truth)
    x, y = true_wcs["jsm001a1q"].all_world2pix(*propagate(edr3, date_obs), 0)
    on_chip = int(np.sum((x >= 0) & (x <= 511) & (y >= 0) & (y <= 511)))
    center = SkyCoord(*true_wcs["jsm001a1q"].all_pix2world([[255.5, 255.5]], 0)[0], unit="deg")
    extent = center.separation(SkyCoord(edr3["ra"], edr3["dec"], unit="deg")).arcsec.max()
    print(f"\n{len(truth)} truth stars, {len(edr3)} in the catalogs ({fraction:.2f}), {on_chip} on "
          f"the subarray, out to {extent:.1f} arcsec (chip half-diagonal 18.1 arcsec)")
    assert 0.55 < fraction < 0.75 and on_chip >= 25 and extent > 1.3 * 18.1
    assert len(dr2) == len(dr1) == len(edr3)

    # Positions propagated to DATE-OBS agree with the truth there, within the errors.
    for name, table, epoch in (("GAIAeDR3", edr3, date_obs), ("GAIADR2", dr2, date_obs),
                               ("GAIADR1", dr1, 2015.0)):
        diff, sigma = _sky_errors(table, truth, epoch)
        chi = diff / sigma
        rms = float(np.sqrt(np.mean(diff ** 2)))
        print(f"{name} at {epoch:.3f}: RMS {rms:.3f} mas per coordinate (predicted "
              f"{np.sqrt(np.mean(sigma ** 2)):.3f}), chi RMS {np.sqrt(np.mean(chi ** 2)):.3f}, "
              f"max |chi| {np.abs(chi).max():.2f}, within 3 sigma {np.mean(np.abs(chi) < 3):.4f}")
        assert 0.85 < np.sqrt(np.mean(chi ** 2)) < 1.15
        assert np.mean(np.abs(chi) < 3.0) > 0.99 and np.abs(chi).max() < 5.0
        assert rms < 3.0 * np.sqrt(np.mean(sigma ** 2))


def test_gsc242_and_2mass_catalogs_have_their_depth_epoch_and_accuracy(sim_default):
    service = sim_default / "service" / "catalogs"
    truth = Table.read(sim_default / "truth" / "jsm001010_truth.ecsv", format="ascii.ecsv")
    edr3 = Table.read(service / "GAIAeDR3.ecsv", format="ascii.ecsv")
    gsc = Table.read(service / "GSC242.ecsv", format="ascii.ecsv")
    tmass = Table.read(service / "2MASS.ecsv", format="ascii.ecsv")
    summary = json.loads((sim_default / "truth" / "jsm001010_truth.json").read_text())["service"]["catalogs"]

    assert gsc.colnames == edr3.colnames
    assert tmass.colnames == ["ra", "dec", "mag", "ra_error", "dec_error", "epoch", "objID"]
    assert (set(gsc["epoch"]), set(tmass["epoch"])) == ({2015.5}, {2000.0})
    truth_mag = np.asarray(truth["mag"], dtype=float)
    for table, model in ((gsc, GSC242), (tmass, TWOMASS)):
        rows = np.asarray(table["objID"], dtype=np.int64) - model.objid_base
        # Every truth star down to the catalog's depth, none fainter, in truth order.
        assert list(rows) == list(np.flatnonzero(truth_mag <= model.mag_limit))
        assert np.allclose(table["mag"], truth_mag[rows] - model.mag_offset, atol=1e-4)
        assert summary[model.name] == {
            "file": f"catalogs/{model.name}.ecsv", "epoch": model.epoch, "n_sources": len(table),
            "proper_motions": model.pm_error is not None, "mag_limit_st": model.mag_limit,
            "default_mag_limit_st": model.mag_limit, "mag_offset": model.mag_offset,
            "objid_base": model.objid_base, "position_error_mas": list(model.position_error),
            "pm_error_mas_per_yr": None if model.pm_error is None else list(model.pm_error)}
        lo, hi = model.position_error
        quoted = np.concatenate([table["ra_error"], table["dec_error"]])
        assert 0.85 * lo <= quoted.min() and quoted.max() <= 1.15 * hi and lo <= np.median(quoted) <= hi
        # Positions at the catalog epoch: the truth there plus errors of the quoted size.
        diff, sigma = _sky_errors(table, truth, model.epoch, model.objid_base)
        chi = diff / sigma
        sep = np.hypot(*diff.reshape(2, -1))
        print(f"\n{model.name}: {len(table)} of {len(truth)} truth stars, quoted error median "
              f"{np.median(quoted):.1f} mas, separation from the truth at {model.epoch}: median "
              f"{np.median(sep):.1f} mas, chi RMS {np.sqrt(np.mean(chi ** 2)):.3f}, max |chi| {np.abs(chi).max():.2f}")
        assert 0.8 < np.sqrt(np.mean(chi ** 2)) < 1.2
        assert np.mean(np.abs(chi) < 3.0) > 0.98 and np.abs(chi).max() < 5.0
    # GSC242's proper motions: the truth plus errors of the quoted size.
    rows = np.asarray(gsc["objID"], dtype=np.int64) - GSC242.objid_base
    pm_chi = np.concatenate([(np.asarray(gsc[c]) - np.asarray(truth[c])[rows]) / np.asarray(gsc[f"{c}_error"])
                             for c in ("pmra", "pmdec")])
    assert 0.8 < np.sqrt(np.mean(pm_chi ** 2)) < 1.2
    lo, hi = GSC242.pm_error
    assert 0.85 * lo <= min(gsc["pmra_error"].min(), gsc["pmdec_error"].min())
    assert max(gsc["pmra_error"].max(), gsc["pmdec_error"].max()) <= 1.15 * hi
    # Shallower than GAIA (65 % of the stars): GSC242 about 36 %, 2MASS about 6 %.
    assert 0.28 < len(gsc) / len(truth) < 0.48 and 0.03 < len(tmass) / len(truth) < 0.11
    assert 0 < len(tmass) < len(gsc) < len(edr3)


def _serve_catalogs(service_dir: Path, db: Path):
    from astrodriz_sm.services import ServiceStore, start_server

    ServiceStore(db).load_directory(service_dir)
    return start_server(db)


def test_drizzlepac_gets_gsc242_and_2mass_from_the_local_service(sim_default, tmp_path, monkeypatch):
    from drizzlepac import align as dp_align
    from drizzlepac.haputils import astrometric_utils as amutils

    truth = Table.read(sim_default / "truth" / "jsm001010_truth.ecsv", format="ascii.ecsv")
    files = [str(p) for p in sorted(sim_default.glob("*_flc.fits"))]
    date_obs = Time(fits.getval(files[0], "DATE-OBS")).decimalyear
    counts, medians = {}, {}
    with _serve_catalogs(sim_default / "service", tmp_path / "service.db") as handle:
        monkeypatch.setattr(amutils, "SERVICELOCATION", handle.environment["ASTROMETRIC_CATALOG_URL"])
        for name in ("GAIAeDR3", "GSC242", "2MASS"):
            model = catalog_model(name)
            # As the pipeline asks: positions at DATE-OBS, standard columns.
            counts[name] = len(dp_align.generate_astrometric_catalog(files, catalog=name, output=False))
            # At the catalog epoch, against the truth there: the catalog's own errors.
            ref = dp_align.generate_astrometric_catalog(files, catalog=name, output=False, user_epoch=None,
                                                        full_catalog=True)
            rows = np.asarray(ref["objID"], dtype=np.int64) - model.objid_base
            ra, dec = propagate(truth[rows], model.epoch)
            sep = np.hypot((np.asarray(ref["RA"]) - ra) * np.cos(np.deg2rad(dec)),
                           np.asarray(ref["DEC"]) - dec) * 3.6e6
            medians[name] = float(np.median(sep))
            # drizzlepac read each catalog's own columns: the epoch (2MASS: from jdate) and the errors.
            assert np.allclose(np.asarray(ref["epoch"], dtype=float), model.epoch, atol=1e-6), name
            errors = np.asarray(ref["RA_error"], dtype=float)
            if name == "2MASS":  # no error or proper-motion columns: drizzlepac fills them with NaN
                assert np.isnan(errors).all() and np.isnan(np.asarray(ref["pmra"], dtype=float)).all()
            else:
                assert np.all(errors >= 0.85 * model.position_error[0])
        gsc_now = dp_align.generate_astrometric_catalog(files, catalog="GSC242", output=False, full_catalog=True)
    print(f"\nsources in the field: {counts}; median separation from the truth at the catalog epoch "
          f"(mas): { {k: round(v, 2) for k, v in medians.items()} }")
    assert 0 < counts["2MASS"] < counts["GSC242"] < counts["GAIAeDR3"]
    assert medians["GAIAeDR3"] < 1.0
    assert GSC242.position_error[0] <= medians["GSC242"] <= GSC242.position_error[1]
    assert TWOMASS.position_error[0] <= medians["2MASS"] <= TWOMASS.position_error[1]
    # Asked at DATE-OBS, the service moved the GSC242 positions by their proper motions.
    assert np.allclose(np.asarray(gsc_now["epoch"], dtype=float), round(date_obs, 3), atol=1e-9)


def test_a_bright_catalog_limit_empties_gaia_and_leaves_the_other_catalogs(sim_default, tmp_path, monkeypatch):
    from drizzlepac import align as dp_align
    from drizzlepac.haputils import astrometric_utils as amutils

    sparse = simulate_association(tmp_path / "sparse", SimConfig(catalog_limits={"GAIAeDR3": 10.0}))
    deep = simulate_association(tmp_path / "deep", SimConfig(catalog_limits=(("2mass", 23.0),)))
    catalogs = json.loads(sparse.truth_json.read_text())["service"]["catalogs"]
    assert (catalogs["GAIAeDR3"]["n_sources"], catalogs["GAIAeDR3"]["mag_limit_st"]) == (0, 10.0)
    default, sparse_hashes, deep_hashes = _hashes(sim_default), _hashes(sparse.outdir), _hashes(deep.outdir)
    for name in ("GAIADR2", "GAIADR1", "GSC242", "2MASS"):
        assert sparse_hashes[f"service/catalogs/{name}.ecsv"] == default[f"service/catalogs/{name}.ecsv"], name
    for name in ("GAIAeDR3", "GAIADR2", "GAIADR1", "GSC242"):
        assert deep_hashes[f"service/catalogs/{name}.ecsv"] == default[f"service/catalogs/{name}.ecsv"], name
    # A fainter limit keeps the default 2MASS stars as they were and adds fainter ones.
    tmass = Table.read(sim_default / "service" / "catalogs" / "2MASS.ecsv", format="ascii.ecsv")
    deeper = Table.read(deep.service_dir / "catalogs" / "2MASS.ecsv", format="ascii.ecsv")
    kept = deeper[np.isin(deeper["objID"], tmass["objID"])]
    assert len(deeper) > 2 * len(tmass) and all(np.array_equal(kept[c], tmass[c]) for c in tmass.colnames)
    assert np.all(np.diff(np.asarray(deeper["objID"])) > 0)

    files = [str(p) for p in sorted(sparse.flc)]
    with _serve_catalogs(sparse.service_dir, tmp_path / "service.db") as handle:
        monkeypatch.setattr(amutils, "SERVICELOCATION", handle.environment["ASTROMETRIC_CATALOG_URL"])
        counts = {name: len(dp_align.generate_astrometric_catalog(files, catalog=name, output=False))
                  for name in ("GAIAeDR3", "GSC242", "2MASS")}
    print(f"\nGAIAeDR3 limited to ST 10: sources in the field {counts}")
    assert counts["GAIAeDR3"] == 0 and counts["GSC242"] > counts["2MASS"] > 0


def test_catalog_limit_and_zero_exptime_options(capsys):
    parser = argparse.ArgumentParser(prog="simulate")
    add_simulate_arguments(parser)
    config = config_from_args(parser.parse_args(["--catalog-limit", "gaiaedr3=10", "--catalog-limit", "2MASS=12.5",
                                                 "--zero-exptime-members", "1"]))
    assert (config.catalog_limits, config.zero_exptime_members) == ({"GAIAeDR3": 10.0, "2MASS": 12.5}, 1)
    assert config_from_args(parser.parse_args([])).catalog_limits == {}
    for bad, message in (("GSC999=1", "unknown catalog 'GSC999' (known: GAIAeDR3, GAIADR2, GAIADR1, GSC242, 2MASS)"),
                         ("GSC242", "'GSC242' is not NAME=MAG"),
                         ("GSC242=faint", "GSC242 limit 'faint' is not a magnitude")):
        with pytest.raises(SystemExit):
            parser.parse_args(["--catalog-limit", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == f"simulate: error: argument --catalog-limit: {message}"
    with pytest.raises(ValueError, match=r"^catalog_limits: unknown catalog 'PS1' \(known: GAIAeDR3, "):
        SimConfig(catalog_limits={"PS1": 20.0})
    with pytest.raises(ValueError, match=r"^catalog_limits: 2MASS limit nan is not finite$"):
        SimConfig(catalog_limits={"2MASS": float("nan")})
    with pytest.raises(ValueError, match=r"zero_exptime_members must lie in 0\.\.2"):
        SimConfig(n_exposures=2, zero_exptime_members=3)


def test_zero_exptime_members_are_empty_frames_and_leave_the_others_alone(tmp_path):
    plain = simulate_association(tmp_path / "plain", SimConfig(service=False))
    result = simulate_association(tmp_path / "zero", SimConfig(service=False, zero_exptime_members=1))
    last = result.members[-1]
    plain_hashes, hashes = _hashes(plain.outdir), _hashes(result.outdir)
    assert {k for k in hashes if hashes[k] != plain_hashes[k]} == {
        f"{last}_raw.fits", f"{last}_flt.fits", f"{last}_flc.fits", f"truth/{last}_crmask.fits",
        "truth/jsm001010_truth.json"}
    for kind in ("raw", "flt", "flc"):
        header = fits.getheader(result.outdir / f"{last}_{kind}.fits")
        start = fits.getval(plain.outdir / f"{last}_{kind}.fits", "EXPSTART")
        assert (header["EXPTIME"], header["TEXPTIME"], header["EXPSTART"], header["EXPEND"]) == (0.0, 0.0, start, start)
    with fits.open(result.outdir / f"{last}_flt.fits") as hdul:
        assert not hdul["SCI", 1].data.any() and np.all(hdul["ERR", 1].data == 4.0)
        assert not hdul["DQ", 1].data.any() and hdul["SCI", 1].header["NGOODPIX"] == 512 * 512
    assert not fits.getdata(result.outdir / "truth" / f"{last}_crmask.fits", ("CRMASK", 1)).any()
    truth = json.loads(result.truth_json.read_text())
    assert [e["n_cosmic_ray_pixels"] for e in truth["exposures"]][-1] == [0]
    assert truth["config"]["zero_exptime_members"] == 1
    assert fits.getval(result.flt[0], "EXPTIME") == 400.0


def test_gsc240_headerlet_applied_as_primary_leaves_the_recorded_residual(sim_apriori, true_wcs, tmp_path,
                                                                          monkeypatch):
    from stwcs.wcsutil import headerlet

    monkeypatch.chdir(tmp_path)  # stwcs may write log files into the working directory
    service = sim_apriori.service_dir
    index = Table.read(service / "astrometrydb.ecsv", format="ascii.ecsv")
    assert [(r["rootname"], r["wcsname"], bool(r["best"])) for r in index] == [
        (m, f"IDC_sm00001aj-{kind}", kind == "GSC240")
        for m in sim_apriori.members for kind in ("GSC240", "HSC30")]
    hdrnames = [fits.getval(service / r["headerlet"], "HDRNAME") for r in index]
    assert len(set(hdrnames)) == len(hdrnames)

    truth = json.loads(sim_apriori.truth_json.read_text())
    for i, member in enumerate(sim_apriori.members):
        for kind in ("GSC240", "HSC30") if i == 0 else ("GSC240",):
            solution = truth["exposures"][i]["apriori"][kind]
            copy = updated_copy(sim_apriori.flt[i], sim_apriori.outdir, tmp_path / f"{member}_{kind}")
            headerlet.apply_headerlet_as_primary(str(copy), str(service / solution["headerlet"]),
                                                 attach=True, archive=True, logging=False)
            assert fits.getval(copy, "WCSNAME", ext=("SCI", 1)) == f"IDC_sm00001aj-{kind}"
            measured = _residual(true_wcs[member], copy)
            expected = solution["residual_arcsec"]
            print(f"\n{member} {kind}: recorded residual {np.round(np.multiply(expected, 1e3), 3)} mas, "
                  f"measured {np.round(np.multiply(measured, 1e3), 3)} mas")
            assert np.hypot(measured[0] - expected[0], measured[1] - expected[1]) < 1e-3
    # 0.6" injected at PA 45, GSC240 leaves a quarter of it, HSC30 half of it.
    gsc0 = truth["exposures"][0]["apriori"]["GSC240"]["residual_arcsec"]
    hsc0 = truth["exposures"][0]["apriori"]["HSC30"]["residual_arcsec"]
    assert np.hypot(*gsc0) == pytest.approx(0.150, abs=1e-6)
    assert np.hypot(*hsc0) == pytest.approx(0.300, abs=1e-6)
    # Exposure 1 keeps its whole guiding failure: the guide stars cannot correct it.
    gsc1 = np.subtract(truth["exposures"][1]["apriori"]["GSC240"]["residual_arcsec"], gsc0)
    injected1 = np.subtract(truth["exposures"][1]["injected_offset_arcsec"],
                            truth["exposures"][0]["injected_offset_arcsec"])
    assert np.allclose(gsc1, injected1, atol=1e-9) and np.hypot(*gsc1) > 0.09


class _FakeServices:
    """``requests.get`` answered from a simulator's ``service/`` directory, as the STScI services answer.

    Speaks only what stwcs asks for: the astrometry database's ``availability``,
    ``observation/read/<rootname>`` (XML list of solutions, 404 for unknown
    observations) and ``...?wcsname=<name>`` (headerlet bytes), and the guide-star
    service's ``GSCConvert/GSCconvert.aspx?IPPPSSOOT=<ROOT>``.
    """

    def __init__(self, service_dir: Path):
        self.dir = service_dir
        self.index = Table.read(service_dir / "astrometrydb.ecsv", format="ascii.ecsv")
        self.gsc = Table.read(service_dir / "gsc_offsets.ecsv", format="ascii.ecsv")
        self.urls: list[str] = []

    @staticmethod
    def _answer(code: int, content: bytes = b""):
        return SimpleNamespace(status_code=code, ok=code == 200, content=content, reason=str(code),
                               text=content.decode(errors="replace"))

    def get(self, url, headers=None, timeout=None):
        self.urls.append(url)
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        if parts.path.endswith("/availability"):
            return self._answer(200)
        if parts.path.endswith("/GSCconvert.aspx"):
            root = query["IPPPSSOOT"][0].lower()
            [row] = [r for r in self.gsc if r["rootname"] == root]
            fields = "".join(f"<{c}>{row[c]!s}</{c}>" for c in self.gsc.colnames[1:])
            return self._answer(200, f"<GSCConvert><msg>Success</msg>{fields}</GSCConvert>".encode())
        root = parts.path.rsplit("/", 1)[-1]
        rows = [r for r in self.index if r["rootname"] == root]
        if not rows:
            return self._answer(404)
        if "wcsname" in query:
            [row] = [r for r in rows if r["wcsname"] == query["wcsname"][0]]
            return self._answer(200, (self.dir / row["headerlet"]).read_bytes())
        solutions = "".join(f"<solution><solutionID>{k}</solutionID><wcsName>{r['wcsname']}</wcsName>"
                            "</solution>" for k, r in enumerate(rows, 1))
        best = next(k for k, r in enumerate(rows, 1) if r["best"])
        return self._answer(200, f"<observation>{solutions}<bestSolutionID>{best}</bestSolutionID>"
                                 "</observation>".encode())


@pytest.fixture
def fake_services(monkeypatch, tmp_path):
    """Route stwcs' web requests to `_FakeServices` of a given service directory."""
    from stwcs.updatewcs import astrometry_utils

    monkeypatch.chdir(tmp_path)  # stwcs writes headerlet files into the working directory
    monkeypatch.setenv("ASTROMETRY_SERVICE_URL", "http://astrometry.invalid/")
    monkeypatch.setenv("GSSS_WEBSERVICES_URL", "http://gsss.invalid")
    monkeypatch.delenv("ASTROMETRY_STEP_CONTROL", raising=False)

    def install(service_dir: Path) -> _FakeServices:
        services = _FakeServices(service_dir)
        monkeypatch.setattr(astrometry_utils.requests, "get", services.get)
        return services

    return install


def test_gsc_offsets_give_the_gsc240_residual_through_apply_new_apriori(sim_apriori, true_wcs, tmp_path,
                                                                        fake_services):
    from stwcs.updatewcs import astrometry_utils

    services = fake_services(sim_apriori.service_dir)
    truth = json.loads(sim_apriori.truth_json.read_text())
    db = astrometry_utils.AstrometryDB()
    assert db.available
    for i, member in enumerate(sim_apriori.members):
        copy = updated_copy(sim_apriori.flt[i], sim_apriori.outdir, tmp_path / member)
        with jref_environment(sim_apriori.outdir), fits.open(copy, mode="update") as hdul:
            # The computation stwcs does for an exposure whose IDCTAB the database does not know.
            offsets = astrometry_utils.find_gsc_offset(hdul)
            wcsname = db.apply_new_apriori(hdul)
        measured = _residual(true_wcs[member], copy)
        expected = truth["exposures"][i]["apriori"]["GSC240"]["residual_arcsec"]
        print(f"\n{member}: guide-star shift ({offsets['delta_x']:.4f}, {offsets['delta_y']:.4f}) pixels,"
              f" residual {np.round(np.multiply(measured, 1e3), 3)} mas, recorded "
              f"{np.round(np.multiply(expected, 1e3), 3)} mas")
        assert wcsname == fits.getval(copy, "WCSNAME", ext=("SCI", 1)) == "IDC_sm00001aj-GSC240"
        assert np.hypot(measured[0] - expected[0], measured[1] - expected[1]) < 1e-3
    assert any("IPPPSSOOT=JSM001A1Q" in url for url in services.urls)


def test_updatewcs_use_db_applies_the_best_solution_or_derives_it_from_guide_stars(
        sim_apriori, true_wcs, tmp_path, fake_services):
    from stwcs import updatewcs
    from stwcs.wcsutil import headerlet

    truth = json.loads(sim_apriori.truth_json.read_text())
    expected = truth["exposures"][0]["apriori"]["GSC240"]["residual_arcsec"]

    # Database solutions computed with the exposure's IDCTAB: the best one becomes primary (FLC here;
    # FLT and FLC share the rootname and hence the solutions).
    services = fake_services(sim_apriori.service_dir)
    flc = tmp_path / "db" / sim_apriori.flc[0].name
    flc.parent.mkdir()
    shutil.copyfile(sim_apriori.flc[0], flc)
    with jref_environment(sim_apriori.outdir):
        updatewcs.updatewcs(str(flc), use_db=True, checkfiles=False)
    with fits.open(flc) as hdul:
        attached = headerlet.get_headerlet_kw_names(hdul, kw="WCSNAME")
    from_db = _residual(true_wcs["jsm001a1q"], flc)
    assert fits.getval(flc, "WCSNAME", ext=("SCI", 1)) == "IDC_sm00001aj-GSC240"
    assert {"IDC_sm00001aj-GSC240", "IDC_sm00001aj-HSC30"} <= set(attached)
    assert not any("GSCconvert" in url for url in services.urls)

    # Solutions labelled with another IDCTAB: stwcs ignores them and uses the guide-star offsets.
    outdir = tmp_path / "mismatch"
    mismatch = simulate_association(outdir, SimConfig(n_exposures=1, pointing_error=0.6,
                                                      apriori_idctab_mismatch=True))
    index = Table.read(mismatch.service_dir / "astrometrydb.ecsv", format="ascii.ecsv")
    assert set(index["wcsname"]) == {"IDC_0461802ej-GSC240", "IDC_0461802ej-HSC30"}
    services = fake_services(mismatch.service_dir)
    flt = tmp_path / "gs" / mismatch.flt[0].name
    flt.parent.mkdir()
    shutil.copyfile(mismatch.flt[0], flt)
    with jref_environment(outdir):
        updatewcs.updatewcs(str(flt), use_db=True, checkfiles=False)
    with fits.open(flt) as hdul:
        attached = headerlet.get_headerlet_kw_names(hdul, kw="WCSNAME")
    from_gs = _residual(true_wcs["jsm001a1q"], flt)
    assert fits.getval(flt, "WCSNAME", ext=("SCI", 1)) == "IDC_sm00001aj-GSC240"
    assert not any(name.startswith("IDC_0461802ej") for name in attached)
    assert any("GSCconvert" in url for url in services.urls)

    print(f"\nrecorded {np.round(np.multiply(expected, 1e3), 3)} mas; database headerlet "
          f"{np.round(np.multiply(from_db, 1e3), 3)} mas; guide-star offsets {np.round(np.multiply(from_gs, 1e3), 3)} mas")
    for measured in (from_db, from_gs):
        assert np.hypot(measured[0] - expected[0], measured[1] - expected[1]) < 1e-3


def test_association_layout_flagged_member_and_skymethod_options(tmp_path):
    parser = argparse.ArgumentParser(prog="simulate")
    add_simulate_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--association", "crsplit-dither", "--n-exposures", "4", "--ngoodpix-zero-members", "1",
         "--skymethod", "match", "--apriori-scatter", "1.0", "--no-service"]))
    assert (config.association, config.cr_split, config.ngoodpix_zero_members, config.skymethod,
            config.apriori_scatter) == ("crsplit-dither", 2, 1, "match", 1.0)
    result = simulate_association(tmp_path, config)
    with fits.open(result.asn) as asn:
        assert list(zip(asn[1].data["MEMNAME"], asn[1].data["MEMTYPE"])) == [
            ("JSM001A1Q", "EXP-CR1"), ("JSM001A2Q", "EXP-CR1"), ("JSM001A3Q", "EXP-CR2"), ("JSM001A4Q", "EXP-CR2"),
            ("JSM001011", "PROD-CR1"), ("JSM001012", "PROD-CR2"), ("JSM001010", "PROD-DTH")]
    headers = [fits.getheader(path) for path in result.flt]
    assert [(h["ASN_MTYP"], h["CRSPLIT"], h["POSTARG1"]) for h in headers] == [
        ("EXP-CR1", 2, 0.0), ("EXP-CR1", 2, 0.0), ("EXP-CR2", 2, 0.25), ("EXP-CR2", 2, 0.25)]
    # The last member is flagged everywhere; the others keep their good pixels.
    assert [fits.getval(path, "NGOODPIX", ("SCI", 1)) for path in result.flt][-1] == 0
    assert np.all(fits.getdata(result.flt[-1], ("DQ", 1)) & 4)
    assert min(fits.getval(path, "NGOODPIX", ("SCI", 1)) for path in result.flt[:-1]) > 0
    assert set(fits.getdata(result.reference_files["MDRIZTAB"], 1)["skymethod"]) == {"match"}
    repeat = SimConfig(association="repeat")
    assert repeat.association_rows(["jsm001a1q", "jsm001a2q"]) == [
        ("JSM001A1Q", "EXP-RPT"), ("JSM001A2Q", "EXP-RPT"), ("JSM001010", "PROD-RPT")]
    assert {repeat.dither_position(i) for i in range(3)} == {0}
    for kwargs, message in (({"association": "crsplit-dither"}, r"n_exposures \(3\) must be cr_split \(2"),
                            ({"association": "crsplit-dither", "n_exposures": 4, "root": "jsm001011"},
                             "must end in 0"),
                            ({"ngoodpix_zero_members": 2, "zero_exptime_members": 2}, r"must lie in 0\.\.1"),
                            ({"skymethod": "median"}, "skymethod must be one of"),
                            ({"association": "mosaic"}, "association must be one of")):
        with pytest.raises(ValueError, match=message):
            SimConfig(**kwargs)
