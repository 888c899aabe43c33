"""The pure state machine: fold, next step, guarded transitions, WCS choice; config switches."""

from __future__ import annotations

import pytest

from astrodriz_sm.config import parse_switch, switches_from_environment
from astrodriz_sm.errors import ConfigError
from astrodriz_sm.statemachine import choose_wcs, fold, next_action
from astrodriz_sm.store.eventstore import EventStore


def _inputs(drizcorr="PERFORM", flc=True):
    return {"inputs": {"root": "jsm001010", "drizcorr": drizcorr, "drizcorr_file": "jsm001a1q_raw.fits",
                       "flt": ["a_flt.fits", "b_flt.fits"], "flc": ["a_flc.fits", "b_flc.fits"] if flc else []}}


def _drive(store, run_id, results, limit=60):
    """Run the machine with canned step results instead of handlers; return the kinds seen."""
    trail = []
    for _ in range(limit):
        run = fold(store.events(run_id))
        act = next_action(run)
        if act.kind == "none":
            return trail
        if act.kind == "step":
            store.append(run_id, act.stage, act.step, "step.started", {})
            payload = results.get((act.stage, act.step), {})
            if payload == "fail":
                store.append(run_id, act.stage, act.step, "step.failed",
                             {"message": "boom", "exit_code": 5})
            else:
                store.append(run_id, act.stage, act.step, "step.completed", payload)
            trail.append(f"{act.stage}/{act.step}")
        elif act.kind == "transition":
            store.append(run_id, act.stage, "", "transition", act.transition)
            trail.append(f"{act.transition['from']}->{act.transition['to']}")
        else:
            store.append(run_id, act.stage, "", "run.ended", {"status": act.stage, "exit_code": 0})
            trail.append(f"end:{act.stage}")
    raise AssertionError("machine did not end")


@pytest.fixture
def store(tmp_path):
    return EventStore(tmp_path / "s.db")


def _start(store, **config):
    run_id = store.create_run("/x/jsm001010_asn.fits", "jsm001010")
    cfg = {"input": "/x/jsm001010_asn.fits", "root": "jsm001010", "force": False, "basic": False,
           "apply_apriori": True,
           "compute_aposteriori": True, "environment": {}}
    cfg.update(config)
    store.append(run_id, "init", "", "run.started", {"config": cfg})
    return run_id


APRIORI = ["apriori/probe_service", "apriori/stage_inputs", "apriori/updatewcs", "apriori/astrodrizzle",
           "apriori/verify_alignment", "apriori/conclude"]
APOSTERIORI = ["aposteriori/probe_service", "aposteriori/stage_inputs", "aposteriori/align",
               "aposteriori/astrodrizzle", "aposteriori/verify_alignment", "aposteriori/conclude"]


def test_full_sequence_with_flt_and_flc(store):
    run_id = _start(store)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs()})
    assert trail == [
        "init/resolve_inputs", "init->default",
        "default/stage_inputs", "default/updatewcs", "default/astrodrizzle", "default/verify_alignment",
        "default->apriori", *APRIORI, "apriori->aposteriori", *APOSTERIORI, "aposteriori->final",
        "final/choose_wcs", "final/stage_inputs", "final/copy_flc_wcs", "final/astrodrizzle",
        "final/write_headerlets", "final/promote", "final/cleanup", "final->done", "end:done"]


def test_stop_stage_cuts_a_stage_to_its_conclusion(store):
    run_id = _start(store)
    stop = {"stop_stage": "ASTROMETRY_SERVICE_URL unreachable (connection refused): stage skipped"}
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs(), ("apriori", "probe_service"): stop,
                                   ("aposteriori", "align"): {"stop_stage": "not enough sources"}})
    assert trail[trail.index("default->apriori") + 1:trail.index("aposteriori->final")] == [
        "apriori/probe_service", "apriori/conclude", "apriori->aposteriori",
        "aposteriori/probe_service", "aposteriori/stage_inputs", "aposteriori/align", "aposteriori/conclude"]


def test_flt_only_basic_mode_has_no_wcs_copy_nor_headerlets(store):
    run_id = _start(store, basic=True)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs(flc=False)})
    assert "final/copy_flc_wcs" not in trail and "final/write_headerlets" not in trail
    assert "final/astrodrizzle" in trail


def test_drizcorr_omit_skips_and_force_processes(store):
    run_id = _start(store)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs("OMIT")})
    assert trail == ["init/resolve_inputs", "init->skipped", "end:skipped"]
    guard = fold(store.events(run_id)).transitions[0]["guards"][0]
    assert guard == {"guard": "drizcorr_perform", "result": False,
                     "reason": "DRIZCORR=OMIT in jsm001a1q_raw.fits"}

    forced = _start(store, force=True)
    trail = _drive(store, forced, {("init", "resolve_inputs"): _inputs("OMIT")})
    assert trail[1] == "init->default" and trail[-1] == "end:done"


def test_env_switches_name_the_variable_in_the_skip_reason(store):
    run_id = _start(store, apply_apriori=False, compute_aposteriori=False)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs()})
    assert "default->final" in trail
    reasons = [g["reason"] for g in fold(store.events(run_id)).transitions[1]["guards"]]
    assert reasons == ["ASTROMETRY_APPLY_APRIORI is off", "ASTROMETRY_COMPUTE_APOSTERIORI is off"]


def test_failed_step_ends_failed_and_stops(store):
    run_id = _start(store)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                                   ("default", "astrodrizzle"): "fail"})
    assert trail[-3:] == ["default/astrodrizzle", "default->failed", "end:failed"]
    assert "default/verify_alignment" not in trail


def test_fold_resume_redoes_only_unfinished_step(store):
    run_id = _start(store)
    store.append(run_id, "init", "resolve_inputs", "step.started", {})
    store.append(run_id, "init", "resolve_inputs", "step.completed", _inputs())
    store.append(run_id, "init", "", "transition", {"from": "init", "to": "default", "trigger": "advance",
                                                    "guards": []})
    store.append(run_id, "default", "stage_inputs", "step.started", {})  # the process died here
    run = fold(store.events(run_id))
    assert run.in_progress == {("default", "stage_inputs")}
    assert next_action(run).step == "stage_inputs"
    store.append(run_id, "default", "", "run.resumed", {})
    assert fold(store.events(run_id)).in_progress == set()


def test_choose_wcs_prefers_kept_aposteriori_and_says_why_others_lost(store):
    run_id = _start(store)
    _drive(store, run_id, {
        ("init", "resolve_inputs"): _inputs(),
        ("default", "updatewcs"): {"wcsname": "IDC_sm00001aj"},
        ("apriori", "updatewcs"): {"wcsname": "IDC_sm00001aj-GSC240"},
        ("apriori", "conclude"): {"kept": False, "reason": "verification failed: focus fail"},
        ("aposteriori", "align"): {"wcsname": "IDC_sm00001aj-FIT_REL_GAIAeDR3"},
        ("aposteriori", "conclude"): {"kept": True, "reason": "alignment verified"}})
    decision = choose_wcs(fold(store.events(run_id)))
    assert decision["chosen_stage"] == "aposteriori"
    assert decision["chosen_wcsname"] == "IDC_sm00001aj-FIT_REL_GAIAeDR3"
    assert [(c["stage"], c["wcsname"], c.get("kept")) for c in decision["candidates"]] == [
        ("aposteriori", "IDC_sm00001aj-FIT_REL_GAIAeDR3", True),
        ("apriori", "IDC_sm00001aj-GSC240", False),
        ("default", "IDC_sm00001aj", None)]
    assert decision["candidates"][1]["reason"] == "verification failed: focus fail"


def test_choose_wcs_falls_back_to_default_when_stages_were_switched_off(store):
    run_id = _start(store, apply_apriori=False, compute_aposteriori=False)
    _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                           ("default", "updatewcs"): {"wcsname": "IDC_sm00001aj"}})
    store.append(run_id, "default", "verify_alignment", "verification", {"check": "focus", "verdict": "fail"})
    decision = choose_wcs(fold(store.events(run_id)))
    assert decision["chosen_stage"] == "default" and decision["chosen_wcsname"] == "IDC_sm00001aj"
    assert [(c["stage"], c["verdict"], c.get("reason")) for c in decision["candidates"]] == [
        ("aposteriori", "not run", "ASTROMETRY_COMPUTE_APOSTERIORI is off"),
        ("apriori", "not run", "ASTROMETRY_APPLY_APRIORI is off"),
        ("default", "fail", None)]


@pytest.mark.parametrize("value,expected", [("on", True), ("YES", True), (" true ", True),
                                            ("off", False), ("No", False), ("FALSE", False), (None, True)])
def test_parse_switch(value, expected):
    assert parse_switch("X", value) is expected


def test_parse_switch_rejects_other_values():
    with pytest.raises(ConfigError, match=r"ASTROMETRY_APPLY_APRIORI='maybe': expected one of"):
        parse_switch("ASTROMETRY_APPLY_APRIORI", "maybe")


def test_deprecated_step_control():
    apriori, compute, notes = switches_from_environment({"ASTROMETRY_STEP_CONTROL": "off"})
    assert (apriori, compute) == (False, True)
    assert notes == ["ASTROMETRY_STEP_CONTROL is deprecated; use ASTROMETRY_APPLY_APRIORI"]
