"""A priori and a posteriori alignment against the local astrometry service, measured against the truth."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from astrodriz_sm.sim import measure_product_astrometry, observation_epoch
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import run_cli

ROOT = "jsm001010"
PRODUCT = f"{ROOT}_drz.fits"  # FLT-only simulations: half the drizzling, same logic


def _error_mas(directory, product=PRODUCT, truth=None):
    """RMS and mean offset (mas) of truth stars in a product against where its WCS puts them."""
    truth = truth or directory / "truth"
    acc = measure_product_astrometry(directory / product, next(truth.glob("*_truth.ecsv")),
                                     observation_epoch(next(truth.glob("*_truth.json"))))
    scale = proj_plane_pixel_scales(WCS(fits.getheader(directory / product, ("SCI", 1))))[0] * 3.6e6
    mean = (acc.mean_dx ** 2 + acc.mean_dy ** 2) ** 0.5
    return {"rms_mas": acc.rms * scale, "mean_offset_mas": mean * scale, "n": acc.n_stars}


def _run(simulated, service, name, env=(), args=(), **config):
    src, d = simulated(name, products="flt", **config)
    handle = service(src)
    proc = run_cli("start", *args, d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **handle.environment, **dict(env)})
    store = EventStore(d / "astrodriz_sm.db")
    run = fold(store.events(store.latest_run()["run_id"]))
    return src, d, proc, run


def _decision(run, name):
    return next(p for p in run.decisions if p["decision"] == name)


def test_pointing_error_is_removed_to_under_10_mas_and_wcsname_names_the_best_catalog(simulated, service):
    _, d, proc, run = _run(simulated, service, "aligned", pointing_error=0.6)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = _error_mas(d)
    print("final", err)
    assert err["n"] >= 20 and err["rms_mas"] < 10.0, err
    fit = _decision(run, "aposteriori_fit")
    tried = [(c["catalog"], c["method"], c["fit_quality"]) for c in run.candidates["aposteriori"]]
    print(tried, [c.get("rms_mas") for c in run.candidates["aposteriori"]])
    # drizzlepac 3.11's order: GAIAeDR3 with the relative fit first; at quality 1 the search ends.
    assert tried == [("GAIAeDR3", "relative", 1)]
    assert (fit["chosen_catalog"], fit["chosen_method"]) == ("GAIAeDR3", "relative")
    wcs = _decision(run, "wcs")
    assert wcs["chosen_stage"] == "aposteriori"
    assert wcs["chosen_wcsname"] == "IDC_sm00001aj-FIT_REL_GAIAeDR3"
    assert fits.getval(d / PRODUCT, "WCSNAME", ext=("SCI", 1)) == wcs["chosen_wcsname"]


def test_aposteriori_off_keeps_the_gsc240_solution_and_its_residual(simulated, service):
    src, d, proc, run = _run(simulated, service, "apriori-only", pointing_error=0.6,
                             env={"ASTROMETRY_COMPUTE_APOSTERIORI": "off"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    wcs = _decision(run, "wcs")
    assert wcs["chosen_stage"] == "apriori" and wcs["chosen_wcsname"].endswith("-GSC240")
    truth = json.loads(src.truth_json.read_text())
    east, north = truth["exposures"][0]["apriori"]["GSC240"]["residual_arcsec"]
    expected = 1000.0 * (east ** 2 + north ** 2) ** 0.5  # 150 mas: a quarter of the 0.6 arcsec error
    err = _error_mas(d)
    print("expected residual", expected, "measured", err)
    assert abs(err["mean_offset_mas"] - expected) < 5.0, (err, expected)


def test_guiding_failure_is_repaired_or_rejected_never_silently_worse(simulated, service):
    src, d, proc, run = _run(simulated, service, "guiding-aligned", pointing_error=0.6, guiding_failure=2.0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final_err = _error_mas(d)
    post = run.output("aposteriori", "conclude")
    # The default WCS is off by the injected pointing error (known from the truth, 600 mas here):
    # too far for centroiding to measure, and what the final product must beat.
    truth = json.loads(src.truth_json.read_text())
    default_mas = min(1000.0 * (e["injected_offset_arcsec"][0] ** 2 + e["injected_offset_arcsec"][1] ** 2) ** 0.5
                      for e in truth["exposures"])
    print("default", default_mas, "final", final_err, post)
    # runastrodriz 3.11 decides on the overlap difference (< 1 here), not on the focus.
    default = {v["check"]: v for v in run.verifications["default"]}
    assert default["focus"]["decides"] is False
    assert run.verdict("default") is (default["overlap_similarity"]["verdict"] == "pass")
    if post["kept"]:
        assert run.verdict("aposteriori") is True
        # runastrodriz 3.11's own products of this association are 15.6 mas from the truth (docs/parity.md,
        # `guiding`): the failed exposure pulls the relative fit. Ours are the same files.
        assert final_err["rms_mas"] < 20.0
    else:
        assert post["reason"]
        assert _decision(run, "wcs")["chosen_stage"] != "aposteriori"
    assert final_err["rms_mas"] < default_mas


def test_sparse_field_skips_aposteriori_with_its_reason(simulated, service):
    _, _, proc, run = _run(simulated, service, "sparse", pointing_error=0.6, n_stars=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    post = run.output("aposteriori", "conclude")
    print(post, run.output("aposteriori", "align").get("sources_found"))
    assert post["kept"] is False
    assert "sources" in post["reason"], post["reason"]
    wcs = _decision(run, "wcs")
    best = "apriori" if run.output("apriori", "conclude").get("kept") else "default"
    assert wcs["chosen_stage"] == best


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_services_cost_under_five_seconds(simulated):
    _, d = simulated("down", products="flt", pointing_error=0.6)
    base = f"http://127.0.0.1:{_closed_port()}/"
    env = {"jref": f"{d}/", "ASTROMETRY_SERVICE_URL": base + "astrometrydb/",
           "GSSS_WEBSERVICES_URL": base + "gsss", "ASTROMETRIC_CATALOG_URL": base + "gsss"}
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / "astrodriz_sm.db")
    run = fold(store.events(store.latest_run()["run_id"]))
    for stage in ("apriori", "aposteriori"):
        assert "unreachable" in run.output(stage, "conclude")["reason"]
    spent = sum(run.output(s, "probe_service")["seconds"] + run.output(s, "conclude")["seconds"]
                for s in ("apriori", "aposteriori"))
    print("seconds spent on unreachable services", spent)
    assert spent < 5.0
    assert _decision(run, "wcs")["chosen_stage"] == "default"


def test_drizzlepac_runastrodriz_aligns_against_the_local_service(simulated, service):
    """The service speaks the real protocols: drizzlepac's own pipeline aligns through it."""
    src, d = simulated("runastrodriz", products="flt", pointing_error=0.6)
    handle = service(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(handle.environment, jref=f"{d}/")
    script = f"from drizzlepac import runastrodriz; runastrodriz.process('{ROOT}_asn.fits')"
    proc = subprocess.run([sys.executable, "-c", script],
                          cwd=d, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wcsname = fits.getval(d / PRODUCT, "WCSNAME", ext=("SCI", 1))
    err = _error_mas(d)
    print(wcsname, err)
    assert "-FIT_" in wcsname
    assert err["rms_mas"] < 10.0


def test_new_apriori_from_guide_star_offsets_when_the_database_has_none_for_this_idctab(simulated, service):
    """Database solutions computed with another IDCTAB are not applied; the guide-star offsets give GSC240."""
    src, d, proc, run = _run(simulated, service, "idctab-mismatch", pointing_error=0.6,
                             apriori_idctab_mismatch=True, env={"ASTROMETRY_COMPUTE_APOSTERIORI": "off"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    upd = run.output("apriori", "updatewcs")
    print(upd["wcsname"], upd["exposures"])
    assert upd["wcsname"] == "IDC_sm00001aj-GSC240"
    assert all(not any("0461802ej" in w for w in e["wcsnames"]) for e in upd["exposures"].values())
    truth = json.loads(src.truth_json.read_text())
    east, north = truth["exposures"][0]["apriori"]["GSC240"]["residual_arcsec"]
    err = _error_mas(d)
    print(err)
    assert abs(err["mean_offset_mas"] - 1000.0 * (east ** 2 + north ** 2) ** 0.5) < 5.0


def test_an_exposure_analyze_data_excludes_is_a_decision_and_the_others_are_fitted(simulated, service):
    """drizzlepac's analyze_data keeps a moving-target exposure out of the fit; explain names it."""
    src, d = simulated("excluded", products="flt", pointing_error=0.6)
    fits.setval(d / "jsm001a3q_flt.fits", "MTFLAG", value="T")
    handle = service(src)
    proc = run_cli("-q", "start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / "astrodriz_sm.db")
    run_id = store.latest_run()["run_id"]
    run = fold(store.events(run_id))
    exclusions = [p for p in run.decisions if p["decision"] == "aposteriori_exclusion"]
    assert [e["exposure"] for e in exclusions] == ["jsm001a3q_flt.fits"]
    assert "MTFLAG" in exclusions[0]["rule"] and exclusions[0]["reason"]
    fitted = {k.split("[")[0] for k in run.candidates["aposteriori"][0]["exposures"]}
    assert fitted == {"jsm001a1q_flt.fits", "jsm001a2q_flt.fits"}
    assert run.decision("wcs")["chosen_stage"] == "aposteriori"
    explained = run_cli("explain", run_id, cwd=d)
    assert explained.returncode == 0
    assert f"    jsm001a3q_flt.fits: {exclusions[0]['reason']}" in explained.stdout



def test_the_apriori_update_leaves_an_exptime_0_exposure_out_as_stwcs_input_check_does(simulated, service):
    """runastrodriz 3.11 calls ``updatewcs(use_db=True)`` with stwcs's ``checkfiles=True``: an
    EXPTIME=0 exposure gets no database solution (no headerlet, no archived alternate WCS); only
    ``verify_gaia_wcsnames`` renames its pipeline-default WCS ``-GSC240`` (data after 2017-10-01)."""
    src, d, proc, run = _run(simulated, service, "zero-exptime", args=("-g",), pointing_error=0.6,
                             zero_exptime_members=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    default = run.output("default", "updatewcs")["wcsname"]
    empty, *others = reversed([f"{m}_flt.fits" for m in src.members])
    updated = run.output("apriori", "updatewcs")["exposures"]
    assert updated[empty] == {"wcsnames": [f"{default}-GSC240"], "headerlets": []}
    for name in others:
        assert f"{default}-GSC240" in updated[name]["headerlets"], updated[name]
    with fits.open(d / empty) as hdul:
        assert hdul[0].header["EXPTIME"] == 0
        assert not [h for h in hdul if h.name == "HDRLET"]
        assert sorted(k for k in hdul[1].header if k.startswith("WCSNAME")) == ["WCSNAME", "WCSNAMEO"]
