"""runastrodriz's flags and variables: -g, -d, -m, -v, -a, PIPELINE_RESET_IDCTAB, PIPELINE_QUALITY_TESTING."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from astrodriz_sm import api
from astrodriz_sm.api import STORE_NAME
from astrodriz_sm.cli.main import build_parser
from astrodriz_sm.config import pipeline_switches_from_environment, switches_from_environment
from astrodriz_sm.errors import ConfigError, ExitCode
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import NO_ALIGNMENT, run_cli, sha256_tree

ROOT = "jsm001010"


def test_g_turns_the_aposteriori_default_off_and_the_variable_overrides_it():
    assert switches_from_environment({}, align_to_gaia=False) == (True, False, [])
    assert switches_from_environment({"ASTROMETRY_COMPUTE_APOSTERIORI": "on"}, align_to_gaia=False) == (
        True, True, ["-g overridden: ASTROMETRY_COMPUTE_APOSTERIORI=on"])


def test_g_d_m_skip_gaia_keep_the_stages_with_their_focus_json_and_list_the_files(simulated, service):
    src, d = simulated("flags", products="flt", n_exposures=2, pointing_error=0.6)
    handle = service(src)
    proc = run_cli("start", "-g", "-d", "-m", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / "astrodriz_sm.db")
    run = fold(store.events(store.latest_run()["run_id"]))
    guards = {g["guard"]: g["reason"] for t in run.transitions for g in t["guards"]}
    assert guards["aposteriori_possible"] == "-g: no alignment to GAIA"
    assert "aposteriori" not in {t["to"] for t in run.transitions}
    assert run.decision("wcs")["chosen_wcsname"] == "IDC_sm00001aj-GSC240"
    # -d: the stage directories stay, each verified product's focus dictionary beside it.
    for stage, mode in (("default", "default-pipeline"), ("apriori", "apriori")):
        focus = json.loads((d / f"{ROOT}_{stage}" / f"{ROOT}_drz_{mode}_focus.json").read_text())
        check = next(v for v in run.verifications[stage] if v["check"] == "focus")
        assert focus[0]["prod"][0] == check["product_focus"]
    # -m: what was handed back, as runastrodriz 3.11 lists it: each OPUS headerlet once as written and
    # once as found beside the inputs.
    members = [f"{m}_flt.fits" for m in src.members]
    headerlets = [m.replace(".fits", "_hlet.fits") for m in members]
    assert (d / f"{ROOT}_manifest.txt").read_text().splitlines() == [
        f"{ROOT}_drz.fits", *members, *headerlets, *headerlets, f"{ROOT}.tra"]


def test_m_hands_back_and_lists_the_headerlets_stwcs_writes_for_the_astrometry_database(simulated, service,
                                                                                         tmp_path):
    """No a priori solution in the database: stwcs archives the pipeline-default WCS as
    ``<exposure>_<sha1(WCSNAME)[:6]>_hlet.fits``; runastrodriz 3.11 hands those back (FLT and FLC)
    and lists the FLT ones in its manifest after the OPUS headerlets."""
    src, d = simulated("flags", products="flt", n_exposures=2, pointing_error=0.6)
    service_dir = tmp_path / "service"
    shutil.copytree(src.service_dir, service_dir)
    for name in ("astrometrydb.ecsv", "gsc_offsets.ecsv"):
        (service_dir / name).unlink()
    handle = service(types.SimpleNamespace(service_dir=service_dir))
    proc = run_cli("start", "-g", "-m", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, run = _run(d)
    default = run.output("default", "updatewcs")["wcsname"]
    digest = hashlib.sha1(default.encode()).hexdigest()[:6]
    members = [f"{m}_flt.fits" for m in src.members]
    database = [m.replace(".fits", f"_{digest}_hlet.fits") for m in members]
    assert run.output("apriori", "updatewcs")["database_headerlets"] == database
    for name in database:
        header = fits.getheader(d / name, 0)
        assert (header["HDRNAME"], header["WCSNAME"], header["AUTHOR"]) == (name, default, "stwcs.updatewcs")
    headerlets = [m.replace(".fits", "_hlet.fits") for m in members]
    assert (d / f"{ROOT}_manifest.txt").read_text().splitlines() == [
        f"{ROOT}_drz.fits", *members, *headerlets,
        database[0], headerlets[0], database[1], headerlets[1], f"{ROOT}.tra"]


# -- -v, -a, PIPELINE_RESET_IDCTAB, PIPELINE_QUALITY_TESTING, exit code 65 --------------------------------

def _trail_stars(path: Path, length: int = 40, angle: float = 0.5) -> None:
    """Smear SCI,1 along a line of ``length`` pixels, as a guide-star failure trails every source.

    The simulator's ``guiding_failure`` only offsets an exposure's header pointing, which
    ``analyze.verify_guiding`` (it looks for trailed sources) rightly calls good; a 40-pixel trail
    it calls bad, a 20-pixel one still good.
    """
    kernel = np.zeros((length + 1, length + 1))
    for t in np.linspace(0, 1, 4 * length):
        kernel[round(t * length * np.sin(angle)), round(t * length * np.cos(angle))] = 1
    kernel /= kernel.sum()
    with fits.open(path, mode="update") as hdul:
        data = hdul["SCI", 1].data.astype(float)
        background = np.median(data)
        hdul["SCI", 1].data = (ndimage.convolve(data - background, kernel) + background).astype(np.float32)


def _run(d: Path):
    store = EventStore(d / STORE_NAME)
    return store, fold(store.events(store.latest_run()["run_id"]))


def _guiding(run) -> list[tuple]:
    return [(v["file"], v["guiding"], v["verdict"], v["action"]) for v in run.verifications["init"]]


def _notes(run, stage: str, step: str) -> list[str]:
    return [p["message"] for kind, p in run.facts[(stage, step)] if kind == "note"]


def _guiding_decisions(run) -> list[tuple[str, str]]:
    return [(p["decision"], p["reason"]) for kind, p in run.facts[("init", "verify_guiding")] if kind == "decision"]


def _guards(run) -> dict:
    return {(t["from"], g["guard"]): (g["result"], g["reason"]) for t in run.transitions for g in t["guards"]}


def test_v_and_a_take_no_argument():
    args = build_parser().parse_args(["start", "-v", "jsm001010_asn.fits"])
    assert (args.input, args.newpath, args.verify_guiding, args.force_alignment) == (
        "jsm001010_asn.fits", None, True, False)
    args = build_parser().parse_args(["start", "-va", "jsm001010_asn.fits", "out"])
    assert (args.input, args.newpath, args.verify_guiding, args.force_alignment) == (
        "jsm001010_asn.fits", "out", True, True)


def test_v_leaves_out_an_exposure_with_trailed_stars_and_turns_alignment_off(simulated):
    src, d = simulated("guiding-v")
    for kind in ("flc", "flt"):
        _trail_stars(d / f"{src.members[1]}_{kind}.fits")
    trailed = sha256_tree(d)
    # -v right before the input: it must not take the input as its argument (runastrodriz's getopt does).
    proc = run_cli("start", "-v", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store, run = _run(d)
    a1, a2, a3 = src.members
    assert _guiding(run) == [(f"{a1}_flc.fits", "good", "pass", None),
                             (f"{a2}_flc.fits", "bad", "fail", "removed from processing with its FLT and FLC files"),
                             (f"{a3}_flc.fits", "good", "pass", None)]
    assert run.verifications["init"][1]["reason"] == f"Image {a2}_flc.fits's GUIDING detected as: BAD."
    assert _notes(run, "init", "verify_guiding") == []
    assert _guiding_decisions(run) == [
        ("guiding_removal", f"-v: removed from processing for bad guiding: {a2}_flt.fits, {a2}_flc.fits"),
        ("guiding_alignment", f"-v: bad guiding in {a2}_flc.fits: no alignment")]
    guards = _guards(run)
    for guard in ("apriori_possible", "aposteriori_possible"):
        assert guards[("default", guard)] == (False, f"-v: bad guiding in {a2}_flc.fits: no alignment")
    assert [(t["from"], t["to"]) for t in run.transitions] == [("init", "default"), ("default", "final"),
                                                               ("final", "done")]
    assert [(p["product"], p["inputs"]) for p in run.output("final", "astrodrizzle")["products"]] == [
        (f"{ROOT}_drz.fits", [f"{a1}_flt.fits", f"{a3}_flt.fits"]),
        (f"{ROOT}_drc.fits", [f"{a1}_flc.fits", f"{a3}_flc.fits"])]
    # The exposure left out is not processed: its files are as they were.
    after = sha256_tree(d)
    assert all(after[f"{a2}_{k}.fits"] == trailed[f"{a2}_{k}.fits"] for k in ("flt", "flc"))
    assert after[f"{a1}_flc.fits"] != trailed[f"{a1}_flc.fits"]
    trailer = (d / f"{ROOT}.tra").read_text()
    assert f"verification guiding: BAD  {a2}_flc.fits" in trailer
    assert f"guard apriori_possible: no - -v: bad guiding in {a2}_flc.fits: no alignment" in trailer
    stages = {s["stage"]: s["reason"] for s in api.explain(run.run_id, store=store.path)["stages"]}
    assert stages["apriori"] == stages["aposteriori"] == f"-v: bad guiding in {a2}_flc.fits: no alignment"


def test_v_with_f_keeps_the_exposure_and_still_turns_alignment_off(simulated):
    src, d = simulated("guiding-f")
    _trail_stars(d / f"{src.members[1]}_flc.fits")
    proc = run_cli("start", "-v", "-f", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, run = _run(d)
    a2 = src.members[1]
    assert _guiding(run)[1] == (f"{a2}_flc.fits", "bad", "fail", "kept: -f")
    assert run.output("init", "verify_guiding")["removed"] == []
    assert _guiding_decisions(run) == [("guiding_alignment", f"-v: bad guiding in {a2}_flc.fits: no alignment")]
    assert _guards(run)[("default", "apriori_possible")] == (False, f"-v: bad guiding in {a2}_flc.fits: no alignment")
    assert [p["inputs"] for p in run.output("final", "astrodrizzle")["products"]] == [
        [f"{m}_{k}.fits" for m in src.members] for k in ("flt", "flc")]


def test_v_with_a_aligns_the_rest_and_quality_testing_examines_the_final_exposures(simulated, service):
    src, d = simulated("guiding-a", pointing_error=0.6)
    _trail_stars(d / f"{src.members[1]}_flc.fits")
    handle = service(src)
    proc = run_cli("start", "-v", "-a", d / f"{ROOT}_asn.fits",
                   env={"jref": f"{d}/", "PIPELINE_QUALITY_TESTING": "on", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, run = _run(d)
    a1, a2, a3 = src.members
    assert run.output("init", "verify_guiding")["removed"] == [f"{a2}_flt.fits", f"{a2}_flc.fits"]
    assert _guiding_decisions(run)[1] == ("guiding_alignment", f"-v: bad guiding in {a2}_flc.fits: alignment kept on (-a)")
    guards = _guards(run)
    assert guards[("default", "apriori_possible")] == (True, "ASTROMETRY_APPLY_APRIORI is on")
    assert guards[("apriori", "aposteriori_possible")] == (True, "ASTROMETRY_COMPUTE_APOSTERIORI is on")
    assert run.decision("wcs")["chosen_wcsname"] == "IDC_sm00001aj-FIT_REL_GAIAeDR3"
    # PIPELINE_QUALITY_TESTING: drizzlepac's analysis ran on the two FLC files handed back. Its relative
    # fit (tweakwcs) matches none of their sources, so it writes no statistics, and says so.
    qa = run.output("final", "quality_analysis")
    assert (qa["examined"], qa["written"], qa["error"]) == ([f"{a1}_flc.fits", f"{a3}_flc.fits"], [], None)
    assert qa["summary"] == "No quality statistics were generated"
    assert _notes(run, "final", "quality_analysis") == [
        f"quality analysis (PIPELINE_QUALITY_TESTING) of {a1}_flc.fits, {a3}_flc.fits: no statistics generated"]
    assert run.config["quality_testing"] is True and run.config["environment"]["PIPELINE_QUALITY_TESTING"] == "on"
    # FLT beside FLC with the fit kept: the alignment headerlets of the fit are handed back, no OPUS ones.
    headerlets = run.output("final", "stage_inputs")["alignment_headerlets"]
    assert headerlets == [f"{a1}_flt_hlet.fits", f"{a3}_flt_hlet.fits"]
    assert run.output("final", "write_headerlets")["headerlets"] == {}
    # The products carry the a posteriori fit: its matched pairs are handed back after the headerlets.
    assert run.output("final", "promote")["targets"] == [
        f"{ROOT}_drz.fits", f"{ROOT}_drc.fits", f"{a1}_flt.fits", f"{a3}_flt.fits", f"{a1}_flc.fits",
        f"{a3}_flc.fits", *headerlets, f"{ROOT}_fit_matches.ecsv"]


def test_v_with_every_exposure_badly_guided_fails_with_exit_code_65(simulated):
    src, d = simulated("guiding-none")
    for m in src.members:
        for kind in ("flt", "flc"):
            # The header's own word for a guide-star failure, which verify_guiding reads first.
            fits.setval(d / f"{m}_{kind}.fits", "QUALITY", value="GSFAIL")
    before = sha256_tree(d)
    asn = d / f"{ROOT}_asn.fits"
    proc = run_cli("start", "-v", asn, env={"jref": f"{d}/"})
    assert proc.returncode == ExitCode.NO_VIABLE_DATA == 65
    message = f"{asn}: no viable data: every exposure has bad guiding (-v): " + ", ".join(
        f"{m}_flc.fits" for m in src.members)
    assert proc.stderr.strip().splitlines()[-1] == f"astrodriz-sm: error: {message}"
    store, run = _run(d)
    assert [(e.stage, e.step, e.kind) for e in store.events(run.run_id)] == [
        ("init", "", "run.started"), ("init", "resolve_inputs", "step.started"),
        ("init", "resolve_inputs", "step.completed"), ("init", "verify_guiding", "step.started"),
        *[("init", "verify_guiding", "verification")] * len(src.members),
        ("init", "verify_guiding", "decision"),
        ("init", "verify_guiding", "step.failed"), ("init", "", "transition"), ("failed", "", "run.ended")]
    # The guiding rule decided it, from the checks the step measured; the runner failed the run by it.
    decision = [e.payload for e in store.events(run.run_id) if e.kind == "decision"]
    assert [(d["decision"], d["reason"], d["fail_run"]) for d in decision] == [
        ("no_viable_data", message, "no_viable_data")]
    assert run.failure == {"error": "NoViableDataError", "message": message, "path": str(asn), "exit_code": 65}
    assert (run.ended["status"], run.ended["exit_code"], run.ended["reason"]) == ("failed", 65, message)
    after = sha256_tree(d)
    assert {n: after[n] for n in before} == before


def test_v_checks_no_guiding_of_a_run_that_is_skipped(simulated):
    src, d = simulated("guiding-omit", drizcorr="OMIT", n_exposures=2)
    for m in src.members:
        fits.setval(d / f"{m}_flc.fits", "QUALITY", value="GSFAIL")
    proc = run_cli("start", "-v", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/"})
    # As runastrodriz: DRIZCORR=OMIT ends the run before the guiding is looked at, so no exit 65.
    assert proc.returncode == ExitCode.OK
    store, run = _run(d)
    assert run.ended["status"] == "skipped"
    assert "verify_guiding" not in [e.step for e in store.events(run.run_id) if e.kind == "step.started"]
    assert "init" not in run.verifications


def test_a_without_v_is_recorded_as_having_no_effect(simulated):
    _, d = simulated("guiding-omit", drizcorr="OMIT", n_exposures=2)
    proc = run_cli("start", "-a", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/"})
    assert proc.returncode == ExitCode.OK
    _, run = _run(d)
    assert (run.config["force_alignment"], run.config["verify_guiding"]) == (True, False)
    assert run.config["notes"] == ["-a has no effect without -v: it keeps alignment on when -v finds bad guiding"]


def test_reset_idctab_changes_the_stage_copies_and_the_inputs_only_when_handed_back(simulated):
    src, d = simulated("reset-idctab")
    raw_idctab, stale = "jref$sm00001aj_idc.fits", "jref$sm00003aj_idc.fits"
    assert fits.getval(d / f"{src.members[0]}_raw.fits", "IDCTAB") == raw_idctab
    # A stale distortion table, as a recalibration would leave it in the FLT/FLC but not in the RAW.
    shutil.copy(d / "sm00001aj_idc.fits", d / "sm00003aj_idc.fits")
    stale_files = [f"{m}_{k}.fits" for m in src.members[:2] for k in ("flt", "flc")]
    for name in stale_files:
        fits.setval(d / name, "IDCTAB", value=stale)
    digests = {n: sha256_tree(d)[n] for n in stale_files}
    seen = []

    def observe(stage, step, point):
        name = stale_files[0]
        seen.append(((stage, step, point), fits.getval(d / name, "IDCTAB"),
                     hashlib.sha256((d / name).read_bytes()).hexdigest() == digests[name]))

    result = api.process(d / f"{ROOT}_asn.fits", console=False, observer=observe,
                         environ={**os.environ, "jref": f"{d}/", "PIPELINE_RESET_IDCTAB": "on", **NO_ALIGNMENT})
    assert (result.status, result.wcsname) == ("done", "IDC_sm00001aj")
    _, run = _run(d)
    expected = {n: {"from": stale, "to": raw_idctab, "raw": f"{n[:9]}_raw.fits"} for n in stale_files}
    assert run.inputs.idctab_reset == expected
    assert run.output("default", "stage_inputs")["idctab_reset"] == expected
    assert _notes(run, "default", "stage_inputs") == [
        f"PIPELINE_RESET_IDCTAB: IDCTAB of {n} reset from {stale} to {raw_idctab} (that of {n[:9]}_raw.fits)"
        for n in sorted(stale_files)]
    assert run.output("default", "updatewcs")["wcsname"] == "IDC_sm00001aj"
    # The input kept its bytes until the final stage put the results in place.
    first_replaced = next(i for i, (where, _, _) in enumerate(seen) if where == ("final", "replace", "replaced"))
    assert all(value == stale and same for _, value, same in seen[:first_replaced])
    assert seen[-1][1:] == (raw_idctab, False)
    for m in src.members:
        for kind in ("flt", "flc"):
            assert fits.getval(d / f"{m}_{kind}.fits", "IDCTAB") == raw_idctab
            assert fits.getval(d / f"{m}_{kind}.fits", "WCSNAME", ext=("SCI", 1)) == "IDC_sm00001aj"


def test_pipeline_switches_are_off_unless_set_and_refuse_other_values(tmp_path):
    assert pipeline_switches_from_environment({}) == (False, False)
    assert pipeline_switches_from_environment({"PIPELINE_RESET_IDCTAB": " Yes", "PIPELINE_QUALITY_TESTING": "off"}) == (
        True, False)
    with pytest.raises(ConfigError) as err:
        pipeline_switches_from_environment({"PIPELINE_QUALITY_TESTING": "sometimes"})
    assert err.value.exit_code == ExitCode.CONFIG
    proc = run_cli("start", tmp_path / f"{ROOT}_asn.fits", env={"PIPELINE_RESET_IDCTAB": "2"})
    assert proc.returncode == 6
    assert proc.stderr.strip().splitlines()[-1] == (
        "astrodriz-sm: error: PIPELINE_RESET_IDCTAB='2': expected one of on/yes/true or off/no/false")
    assert not (tmp_path / STORE_NAME).exists()


def test_the_readme_lists_every_exit_code():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (\w+) \|", readme, flags=re.MULTILINE)
    assert rows == [(str(int(c)), c.name.lower()) for c in ExitCode]
