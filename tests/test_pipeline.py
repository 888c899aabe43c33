"""End to end: simulated association -> event log -> drizzled products and trailer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrodriz_sm.sim import measure_product_astrometry, observation_epoch
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import NO_ALIGNMENT, REFDATA, run_cli, sha256_tree

ROOT = "jsm001010"
EXPECTED_STEPS = [
    ("init", "resolve_inputs"),
    ("default", "stage_inputs"), ("default", "updatewcs"), ("default", "astrodrizzle"),
    ("default", "verify_alignment"),
    ("final", "choose_wcs"), ("final", "stage_inputs"), ("final", "astrodrizzle"), ("final", "update_headers"),
    ("final", "write_headerlets"), ("final", "promote"), ("final", "replace"), ("final", "cleanup"),
]
ALIGNMENT_STEPS = [
    ("apriori", "probe_service"), ("apriori", "stage_inputs"), ("apriori", "updatewcs"),
    ("apriori", "astrodrizzle"), ("apriori", "verify_alignment"), ("apriori", "conclude"),
    ("aposteriori", "probe_service"), ("aposteriori", "stage_inputs"), ("aposteriori", "align"),
    ("aposteriori", "astrodrizzle"), ("aposteriori", "verify_alignment"), ("aposteriori", "conclude"),
]
DEMO_STEPS = EXPECTED_STEPS[:5] + ALIGNMENT_STEPS + EXPECTED_STEPS[5:]


def _accuracy(workdir: Path, product: str):
    """Centroids of truth stars in a product against where its WCS puts them (pixels)."""
    truth = workdir / "truth"
    epoch = observation_epoch(next(truth.glob("*_truth.json")))
    return measure_product_astrometry(workdir / product, next(truth.glob("*_truth.ecsv")), epoch)


def _events(workdir: Path):
    store = EventStore(workdir / "astrodriz_sm.db")
    run_id = store.latest_run()["run_id"]
    return store, run_id, store.events(run_id)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's demo, run once for the module: returns the data directory and the process."""
    workdir = tmp_path_factory.mktemp("demo") / "demo"
    proc = run_cli("demo", "--workdir", workdir)
    return workdir / "data", proc


def test_demo_completes_with_products_trailer_and_store(demo):
    data, proc = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (f"{ROOT}_drc.fits", f"{ROOT}_drz.fits", f"{ROOT}.tra", "astrodriz_sm.db"):
        assert (data / name).is_file(), name
    assert not list(data.glob(f"{ROOT}_*ori")) and not list(data.glob(f"{ROOT}_final"))
    assert "default focus: pass" in proc.stdout

    _, _, events = _events(data)
    completed = [(e.stage, e.step) for e in events if e.kind == "step.completed"]
    assert completed == DEMO_STEPS
    kinds = [e.kind for e in events]
    assert kinds[0] == "run.started" and kinds[-1] == "run.ended"
    assert [e.payload["to"] for e in events if e.kind == "transition"] == [
        "default", "apriori", "aposteriori", "final", "done"]
    run = fold(events)
    assert {k: run.ended[k] for k in ("status", "exit_code", "reason", "products")} == {
        "status": "done", "exit_code": 0, "reason": None, "products": [f"{ROOT}_drz.fits", f"{ROOT}_drc.fits"]}
    # The event log's own share of the wall time, measured in every run.
    assert 0 < run.ended["log_seconds"] < run.ended["process_seconds"]
    print("event log share", run.ended["log_share"])
    # The promoted products are the ones whose hashes the log recorded.
    promoted = run.output("final", "replace")["files"]
    assert promoted[f"{ROOT}_drc.fits"] == sha256_tree(data)[f"{ROOT}_drc.fits"]
    assert sorted(run.output("final", "replace")["headerlets"]) == [
        f"{m}_flt_hlet.fits" for m in ("jsm001a1q", "jsm001a2q", "jsm001a3q")]


def test_demo_hands_back_drizzlepacs_alignment_headerlets_and_clears_the_flc_cosmic_ray_flags(demo):
    """FLT beside FLC with the a posteriori fit kept: runastrodriz 3.11 hands back, as each
    ``<rootname>_flt_hlet.fits``, the headerlet drizzlepac's alignment wrote for the FLC, not an OPUS one."""
    data, _ = demo
    _, _, events = _events(data)
    run = fold(events)
    fit = run.output("aposteriori", "align")
    assert run.decision("wcs")["chosen_stage"] == "aposteriori"
    assert run.output("final", "write_headerlets")["headerlets"] == {}
    members = ("jsm001a1q", "jsm001a2q", "jsm001a3q")
    assert fit["flt_headerlets"] == {f"{m}_flt.fits": f"{m}_flt_hlet.fits" for m in members}
    for m in members:
        with fits.open(data / f"{m}_flt_hlet.fits") as hlet:
            h = hlet[0].header
            assert h["HDRNAME"] == f"{m}_flc_{fit['wcsname']}-hlet.fits"
            assert (h["WCSNAME"], h["CATALOG"], h["FITMETH"], h["DESTIM"]) == (
                fit["wcsname"], fit["chosen_catalog"], fit["chosen_method"], m)
            assert h["NMATCH"] > 0 and 0 < h["FIT_RMS"] < 100 and 0 < h["RMS_RA"] < 100
            assert len(h["HISTORY"]) == 7 and h["HISTORY"][0] == "~~~~~ FIT PARAMETERS ~~~~~"
        # The same headerlet is the one attached to the FLC and applied to the FLT.
        for kind in ("flc", "flt"):
            with fits.open(data / f"{m}_{kind}.fits") as hdul:
                attached = [x.header["HDRNAME"] for x in hdul if x.name == "HDRLET"]
                assert h["HDRNAME"] in attached, (kind, attached)
    # The default stage cleared the cosmic-ray flags of the verified (FLC) list before drizzling.
    assert run.output("default", "stage_inputs")["dq_bits_reset"] == {
        "bits": "4096,8192", "files": [f"{m}_flc.fits" for m in members]}


def test_demo_focus_numbers_are_in_the_events(demo):
    data, _ = demo
    _, _, events = _events(data)
    focus = next(e.payload for e in events if e.kind == "verification" and e.stage == "default")
    assert focus["check"] == "focus" and focus["verdict"] == "pass"
    assert focus["product"] == f"{ROOT}_drc.fits"
    assert len(focus["single_focus"]) == 3 and all(v > 0 for v in focus["single_focus"])
    assert focus["z_min"] <= focus["product_z"] <= focus["z_max"]


def test_replay_renders_the_trailer_byte_identical(demo, tmp_path):
    data, _ = demo
    out = tmp_path / "replayed.tra"
    proc = run_cli("replay", "-o", out, cwd=data)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (data / f"{ROOT}.tra").read_bytes()
    text = out.read_text()
    assert "verification focus: PASS" in text and "run ended: DONE (exit code 0)" in text
    assert "AstroDrizzle log for jsm001010_drc.fits" in text


def test_verify_log_and_status(demo):
    data, _ = demo
    proc = run_cli("verify-log", cwd=data)
    assert proc.returncode == 0 and "hash chain intact" in proc.stdout
    proc = run_cli("status", cwd=data)
    assert proc.returncode == 0 and "done (exit 0)" in proc.stdout


def test_updated_inputs_carry_the_chosen_wcs(demo):
    data, _ = demo
    _, _, events = _events(data)
    chosen = next(e.payload for e in events if e.kind == "decision" and e.payload["decision"] == "wcs")
    for suffix in ("flt", "flc"):
        for f in sorted(data.glob(f"*_{suffix}.fits")):
            assert fits.getval(f, "WCSNAME", ext=("SCI", 1)) == chosen["chosen_wcsname"], f


def test_products_match_truth_within_a_tenth_of_a_pixel(simulated, tmp_path, monkeypatch):
    """No pointing error, no alignment: the pipeline-default products lie on the truth.

    The final stage reuses the default stage's DRC, and both products equal what a fresh
    AstroDrizzle run with the final parameters on the final exposures writes.
    """
    from drizzlepac import astrodrizzle

    _, d = simulated("clean", n_exposures=3)
    proc = run_cli("start", "--debug", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, events = _events(d)
    assert [(e.stage, e.step) for e in events if e.kind == "step.completed"] == EXPECTED_STEPS
    for product in (f"{ROOT}_drc.fits", f"{ROOT}_drz.fits"):
        err = _accuracy(d, product)
        print(product, err)
        assert err.n_stars >= 20
        assert err.rms < 0.1, err

    final = next(e.payload for e in events if e.kind == "step.completed" and e.stage == "final"
                 and e.step == "astrodrizzle")
    # The default stage drizzles both products, concurrently and with the final parameters; the
    # default WCS being chosen, the final stage reuses both.
    assert [(p["product"], p.get("reused_from")) for p in final["products"]] == [
        (f"{ROOT}_drz.fits", f"default/{ROOT}_drz.fits"), (f"{ROOT}_drc.fits", f"default/{ROOT}_drc.fits")]
    default = next(e.payload for e in events if e.kind == "step.completed" and e.stage == "default"
                   and e.step == "astrodrizzle")
    assert [p["parameters"]["num_cores"] for p in default["products"]] == [max(1, len(os.sched_getaffinity(0)) // 2)] * 2
    for p in final["products"]:
        fresh = tmp_path / p["product"][:-5]
        fresh.mkdir()
        for name in p["inputs"]:
            (fresh / name).write_bytes((d / f"{ROOT}_final" / name).read_bytes())
        monkeypatch.chdir(fresh)
        astrodrizzle.AstroDrizzle(input=p["inputs"], output=ROOT, configobj=None, **p["parameters"])
        with fits.open(d / p["product"]) as reused, fits.open(fresh / p["product"]) as new:
            for ext in ("SCI", "WHT", "CTX"):
                np.testing.assert_array_equal(reused[ext].data, new[ext].data, err_msg=f"{p['product']} {ext}")
            for key in ("WCSNAME", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CRPIX1", "CRPIX2"):
                assert reused["SCI"].header[key] == new["SCI"].header[key], key


def test_focus_fails_with_a_two_pixel_guiding_failure(simulated):
    _, d = simulated("guiding", guiding_failure=2.0)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, events = _events(d)
    focus, overlap = [e.payload for e in events if e.kind == "verification"]
    print(focus, overlap)
    assert (focus["check"], focus["verdict"], focus["decides"]) == ("focus", "fail", False)
    assert not (focus["z_min"] <= focus["product_z"] <= focus["z_max"]) or focus["std"] > min(focus["single_focus"])
    # runastrodriz 3.11 decides the default stage on the overlap difference alone: 2 pixels of one
    # exposure stay under its limit of 1, so the stage verifies although the focus failed.
    assert (overlap["check"], overlap["verdict"], overlap["decides"]) == ("overlap_similarity", "pass", True)
    assert 0.1 < overlap["max_distance"] < 1.0
    verdict = next(e.payload for e in events if e.kind == "decision" and e.payload["decision"] == "default_verification")
    assert (verdict["verified"], verdict["quality"], verdict["deciding"]) == (True, 0, ["overlap_similarity"])
    decision = next(e.payload for e in events if e.kind == "decision" and e.payload["decision"] == "wcs")
    assert decision["chosen_stage"] == "default"
    assert ("default", "pass") in [(c["stage"], c["verdict"]) for c in decision["candidates"]]


def test_without_cosmic_ray_rejection_the_verification_drizzle_is_redone_for_its_singles(simulated):
    """MDRIZTAB rows without separate drizzles (as ACS/SBC's): runastrodriz 3.11 drizzles again for the singles."""
    _, d = simulated("nocr", products="flt")
    with fits.open(d / "sm00002aj_mdz.fits", mode="update") as mdz:
        for column in ("driz_separate", "median", "blot", "driz_cr"):
            mdz[1].data[column] = False
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, events = _events(d)
    run = fold(events)
    [default] = run.output("default", "astrodrizzle")["products"]
    assert default["redrizzled_for_singles"] is True
    assert (default["parameters"]["driz_separate"], default["parameters"]["driz_cr"]) == (True, False)
    assert default["parameter_source"].endswith("drizzled again for single-drizzle images (reset_mdriztab_nocr)")
    checks = {v["check"]: v for v in run.verifications["default"]}
    assert checks["focus"]["verdict"] in ("pass", "fail") and len(checks["focus"]["single_focus"]) == 3
    assert checks["overlap_similarity"]["verdict"] == "pass"
    # The final product keeps the MDRIZTAB's parameters: drizzled anew, not the default stage's copy.
    [final] = run.output("final", "astrodrizzle")["products"]
    assert "reused_from" not in final and final["parameters"]["driz_separate"] is False


def test_real_acs_wfc_reference_files(simulated):
    _, d = simulated("refdir", refdir=str(REFDATA), products="flt")
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, events = _events(d)
    upd = next(e.payload for e in events if e.step == "updatewcs" and e.kind == "step.completed")
    assert upd["wcsname"] == "IDC_qbu1641sj"
    err = _accuracy(d, f"{ROOT}_drz.fits")
    print(err)
    assert err.n_stars >= 20 and err.rms < 0.1, err


def test_drizcorr_omit_ends_skipped_with_the_header_updates_of_runastrodriz(simulated):
    """DRIZCORR=OMIT: nothing is drizzled, and the run exits 0 as runastrodriz's command does.

    runastrodriz 3.11 still writes S_REGION (before it reads DRIZCORR, RA 477-478) and WCSTYPE into
    every exposure, and a headerlet of each FLT (RA 783-843); the WCS itself is left as delivered.
    """
    src, d = simulated("omit", drizcorr="OMIT", n_exposures=2)
    before = sha256_tree(d)
    wcs_before = {n: fits.getval(d / n, "CRVAL1", ext=("SCI", 1)) for n in before if n.endswith(("_flt.fits", "_flc.fits"))}
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(d.glob("*_dr[zc].fits"))
    _, _, events = _events(d)
    end = events[-1].payload
    assert end["status"] == "skipped" and end["exit_code"] == 0
    assert "DRIZCORR=OMIT" in end["reason"]
    assert proc.stderr.strip().splitlines()[-1] == "astrodriz-sm: skipped: DRIZCORR=OMIT in jsm001a1q_raw.fits"
    after = sha256_tree(d)
    changed = sorted(n for n in before if after[n] != before[n])
    assert changed == sorted(wcs_before)
    for name, crval1 in wcs_before.items():
        header = fits.getheader(d / name, ("SCI", 1))
        assert header["S_REGION"].startswith("POLYGON ICRS ")
        assert header["CRVAL1"] == crval1 and header["WCSTYPE"]
        assert fits.getval(d / name, "DRIZCORR") == "OMIT"
    # stwcs cannot write a headerlet of a WCS that never had a distortion model: 3.11 passes over it.
    assert not [n for n in after if n not in before and n.endswith(".fits")]
    notes = [e.payload["message"] for e in events if e.kind == "note"]
    assert [n.split(":")[0] for n in notes if n.startswith("no headerlet")] == [
        f"no headerlet written for {m}_flt.fits" for m in src.members]
    assert not list(d.glob(f"{ROOT}_*/"))


def test_force_processes_an_omitted_singleton_raw(simulated):
    """-f on a singleton _raw input: processed, no relative alignment to verify, products named after it."""
    src, d = simulated("omit", drizcorr="OMIT", n_exposures=2)
    member = src.members[0]
    proc = run_cli("start", "-f", d / f"{member}_raw.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (d / f"{member}_drc.fits").is_file() and (d / f"{member}_drz.fits").is_file()
    assert (d / f"{member}.tra").is_file()
    _, _, events = _events(d)
    guard = next(e.payload for e in events if e.kind == "transition")["guards"][0]
    assert guard["reason"] == "DRIZCORR=OMIT, forced by -f"
    [check] = [e.payload for e in events if e.kind == "verification"]
    assert check["verdict"] == "n/a" and "single exposure" in check["reason"]
    inputs = next(e.payload["inputs"] for e in events if e.step == "resolve_inputs" and e.kind == "step.completed")
    assert (inputs["kind"], inputs["flt"], inputs["flc"]) == ("raw", [f"{member}_flt.fits"], [f"{member}_flc.fits"])


def test_simulate_command(tmp_path):
    proc = run_cli("simulate", tmp_path / "out", "--n-exposures", "2", "--flt-only", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "out").glob("*.fits"))
    assert names == ["jsm001010_asn.fits", "jsm001a1q_flt.fits", "jsm001a1q_raw.fits", "jsm001a2q_flt.fits",
                     "jsm001a2q_raw.fits", "sm00001aj_idc.fits", "sm00002aj_mdz.fits"]
    assert proc.stdout.splitlines()[-1] == (f"run it with: jref={tmp_path}/out/ astrodriz-sm start "
                                            f"{tmp_path}/out/jsm001010_asn.fits")


def test_missing_member_names_the_file_and_changes_nothing(simulated):
    src, d = simulated("small", n_exposures=2)
    for f in d.glob(f"{src.members[1]}_fl?.fits"):
        f.unlink()
    before = sha256_tree(d)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 3
    line = proc.stderr.strip().splitlines()[-1]
    assert line == (f"astrodriz-sm: error: {d}/{src.members[1]}_flt.fits: exposure {src.members[1]} listed in "
                    f"{ROOT}_asn.fits is missing (no _flt or _flc file)")
    _, _, events = _events(d)
    assert [(e.stage, e.step, e.kind) for e in events[-4:]] == [
        ("init", "resolve_inputs", "step.started"), ("init", "resolve_inputs", "step.failed"),
        ("init", "", "transition"), ("failed", "", "run.ended")]
    assert events[-3].payload["path"] == f"{d}/{src.members[1]}_flt.fits"
    assert events[-1].payload["exit_code"] == 3
    assert {k: v for k, v in sha256_tree(d).items() if k in before} == before


def test_truncated_fits_is_a_clear_error(simulated):
    src, d = simulated("small", n_exposures=2)
    victim = d / f"{src.members[0]}_flc.fits"
    victim.write_bytes(victim.read_bytes()[:20000])
    before = sha256_tree(d)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 3
    assert f"{victim}: truncated FITS file" in proc.stderr
    assert {k: v for k, v in sha256_tree(d).items() if k in before} == before


def test_failed_processing_leaves_every_input_byte_identical(simulated):
    """updatewcs fails on a distortion table without a row for the filter: inputs stay as they were."""
    src, d = simulated("small", n_exposures=2)
    idctab = d / src.reference_files["IDCTAB"].name
    with fits.open(idctab) as hdul:
        hdul[1].data = hdul[1].data[:0]
        broken = d / "broken"
        broken.mkdir()
        hdul.writeto(broken / idctab.name)
    for name in [p.name for p in d.iterdir() if p.is_file() and p.name != idctab.name]:
        (broken / name).symlink_to(d / name)
    before = sha256_tree(d)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{broken}/", **NO_ALIGNMENT})
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "updatewcs failed" in proc.stderr
    after = sha256_tree(d)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not (d / f"{ROOT}_drc.fits").exists()


def test_newpath_moves_results_back_and_removes_the_work_directory(simulated, tmp_path):
    _, d = simulated("small", n_exposures=2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    log = tmp_path / "log.jsonl"
    proc = run_cli("start", d / f"{ROOT}_asn.fits", scratch, "--log-json", log, env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (d / f"{ROOT}_drc.fits").is_file() and (d / f"{ROOT}_drz.fits").is_file()
    assert list(scratch.iterdir()) == []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step completed"]
    assert {r["run_id"] for r in records} == {records[0]["run_id"]}
    assert [(r["stage"], r["step"]) for r in steps] == EXPECTED_STEPS


def test_bad_switch_value_is_a_config_error(simulated):
    _, d = simulated("small", n_exposures=2)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", "ASTROMETRY_APPLY_APRIORI": "maybe"})
    assert proc.returncode == 6
    assert proc.stderr.strip() == ("astrodriz-sm: error: ASTROMETRY_APPLY_APRIORI='maybe': "
                                   "expected one of on/yes/true or off/no/false")


@pytest.mark.library_fallback(reason="runastrodriz 3.11 updates an FLC-only ASN's files twice (they are both of its "
                               "lists): on the second a priori update stwcs cannot read an alternate WCS 'A' and "
                               "says so, as it does in 3.11, whose files are the same (docs/parity.md, flc-only)")
def test_flc_only_delivery_ends_done_with_a_drc_near_the_truth(simulated, service):
    """An association delivered as FLC files only: one DRC, verified and aligned, no DRZ."""
    src, d = simulated("flc-only", products="flc", pointing_error=0.6)
    assert not list(d.glob("*_flt.fits"))
    handle = service(src)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, events = _events(d)
    run = fold(events)
    assert run.inputs.exposures.flt == () and [e.name for e in run.inputs.exposures.flc] == [
        f"{m}_flc.fits" for m in src.members]
    assert run.ended["products"] == [f"{ROOT}_drc.fits"] and not (d / f"{ROOT}_drz.fits").exists()
    # runastrodriz 3.11 takes an FLC-only ASN's files as both its lists, so the fit's headerlet is applied
    # to them as to FLT files and handed back as <rootname>_flt_hlet.fits, in place of an OPUS headerlet.
    assert run.output("final", "write_headerlets")["headerlets"] == {}
    assert run.output("final", "stage_inputs")["alignment_headerlets"] == [f"{m}_flt_hlet.fits" for m in src.members]
    for m in src.members:
        assert fits.getval(d / f"{m}_flt_hlet.fits", "HDRNAME") == (
            f"{m}_flc_{run.decision('wcs')['chosen_wcsname']}-hlet.fits")
    assert {v["product"] for vs in run.verifications.values() for v in vs} == {f"{ROOT}_drc.fits"}
    assert run.decision("wcs")["chosen_wcsname"].endswith("-FIT_REL_GAIAeDR3")
    acc = _accuracy(d, f"{ROOT}_drc.fits")
    assert acc.n_stars >= 20 and acc.rms < 0.1, (acc.rms, acc.n_stars)
    assert sorted(p.name for p in d.glob("*_hlet.fits")) == [f"{m}_flt_hlet.fits" for m in src.members]


def test_flc_singleton_processes_the_flc_only_and_marks_it_complete(simulated):
    """An _flc input with its FLT beside it: runastrodriz 3.11 processes the FLC alone (RA 432-441).

    The FLT is left byte for byte as delivered; the FLC carries DRIZCORR=COMPLETE (RA 755-760) and
    its product names the trailer in DRIZPARS (RA 982-985).
    """
    src, d = simulated("flc-singleton", n_exposures=1, pointing_error=0.6)
    member = src.members[0]
    flt_before = sha256_tree(d)[f"{member}_flt.fits"]
    proc = run_cli("start", d / f"{member}_flc.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, events = _events(d)
    inputs = next(e.payload["inputs"] for e in events if e.step == "resolve_inputs" and e.kind == "step.completed")
    assert (inputs["kind"], inputs["flt"], inputs["flc"]) == ("flc", [], [f"{member}_flc.fits"])
    after = sha256_tree(d)
    assert after[f"{member}_flt.fits"] == flt_before
    assert not (d / f"{member}_drz.fits").exists() and (d / f"{member}_drc.fits").is_file()
    assert fits.getval(d / f"{member}_flc.fits", "DRIZCORR") == "COMPLETE"
    assert fits.getval(d / f"{member}_flt.fits", "DRIZCORR") == "PERFORM"
    assert fits.getval(d / f"{member}_drc.fits", "DRIZPARS") == f"{member}.tra"


def test_exposure_without_good_pixels_is_processed_but_not_drizzled(simulated):
    """NGOODPIX=0 on every chip with EXPTIME > 0: AstroDrizzle's check_files drops the exposure.

    runastrodriz 3.11 still updates its WCS and lets it choose no drizzle parameters; the product and
    its verification are made from the other exposures, whose single-drizzle images alone exist.
    """
    src, d = simulated("ngoodpix", products="flt", pointing_error=0.6)
    empty = src.members[1]
    with fits.open(d / f"{empty}_flt.fits", mode="update") as hdul:
        for h in hdul:
            if h.name == "SCI":
                h.header["NGOODPIX"] = 0
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, events = _events(d)
    notes = [e.payload["message"] for e in events if e.kind == "note"]
    assert (f"{empty}: NGOODPIX=0 in SCI,1: processed, chooses no drizzle parameters; "
            "NGOODPIX=0 in every SCI extension: not drizzled") in notes
    focus = next(e.payload for e in events if e.kind == "verification" and e.payload["check"] == "focus")
    assert focus["singles"] == [f"{m}_single_sci.fits" for m in src.members if m != empty]
    assert focus["verdict"] == "pass"
    with fits.open(d / f"{ROOT}_drz.fits") as hdul:
        assert hdul[0].header["NDRIZIM"] == 2
    assert fits.getval(d / f"{empty}_flt.fits", "WCSNAME", ext=("SCI", 1)) == "IDC_sm00001aj"
