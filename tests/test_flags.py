"""runastrodriz's flags: -g (no alignment to GAIA), -d (debug), -m (manifest)."""

from __future__ import annotations

import json

from astrodriz_sm.config import switches_from_environment
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import run_cli

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
    for stage in ("default", "apriori"):
        focus = json.loads((d / f"{ROOT}_{stage}" / f"{ROOT}_drz_{stage}_focus.json").read_text())
        check = next(v for v in run.verifications[stage] if v["check"] == "focus")
        assert focus[0]["prod"][0] == check["product_focus"]
    # -m: what was handed back, as runastrodriz lists it.
    members = [f"{m}_flt.fits" for m in src.members]
    assert (d / f"{ROOT}_manifest.txt").read_text().splitlines() == [
        f"{ROOT}_drz.fits", *members, *[m.replace(".fits", "_hlet.fits") for m in members], f"{ROOT}.tra"]
