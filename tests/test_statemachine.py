"""The state machine, driven by the real runner with stub handlers; config switches."""

from __future__ import annotations

import pytest

from astrodriz_sm.config import parse_switch, switches_from_environment
from astrodriz_sm.model.options import RunConfig
from astrodriz_sm.errors import ConfigError, ProcessingError
from astrodriz_sm.model import STEPS, Exposure, ExposureSet, Inputs, StepResult
from astrodriz_sm.statemachine import rules
from astrodriz_sm.runner import Runner, start_run
from astrodriz_sm.statemachine import choose_final_wcs, fold, next_action
from astrodriz_sm.store.eventstore import EventStore

ROOT = "jsm001010"


def _inputs(drizcorr="PERFORM", flc=True):
    def exposures(kind):
        return tuple(Exposure(r, kind, "ACS", "WFC", 400.0) for r in ("jsm001a1q", "jsm001a2q"))

    inputs = Inputs(root=ROOT, kind="asn", exposures=ExposureSet(exposures("flt"), exposures("flc") if flc else ()),
                    drizcorr=drizcorr, drizcorr_file="jsm001a1q_raw.fits")
    return StepResult({"inputs": inputs.to_payload()})


def _drive(store, run_id, results):
    """Run the real runner with stub handlers; return what it recorded, one entry per step or transition.

    ``results`` maps ``(stage, step)`` to the stub's StepResult, or to ``"fail"`` for a failing step.
    """
    trail = []

    def handler(stage, step):
        def run(ctx):
            result = results.get((stage, step), StepResult())
            if result == "fail":
                raise ProcessingError(f"{stage}/{step}: boom")
            return result
        return run

    def observe(stage, step, point):
        if point in ("step.completed", "step.failed"):
            trail.append(f"{stage}/{step}")
        elif point == "transition":
            t = store.events(run_id)[-1].payload
            trail.append(f"{t['from']}->{t['to']}")
        elif point == "run.ended":
            trail.append(f"end:{stage}")

    handlers = {(s.stage, s.step): handler(s.stage, s.step) for s in STEPS}
    Runner(store, run_id, handlers=handlers, observer=observe).run()
    return trail


@pytest.fixture
def store(tmp_path):
    return EventStore(tmp_path / "s.db")


def _start(store, **config):
    cfg = RunConfig(input=f"/x/{ROOT}_asn.fits", run_dir="/x", **config)
    return start_run(store, cfg, ROOT)


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
        "final/choose_wcs", "final/stage_inputs", "final/astrodrizzle", "final/update_headers",
        "final/write_headerlets", "final/promote", "final/replace", "final/cleanup", "final->done", "end:done"]
    assert fold(store.events(run_id)).ended["exit_code"] == 0


def test_a_rule_that_stops_a_stage_cuts_it_to_its_conclusion(store):
    run_id = _start(store)
    refused = {"ASTROMETRY_SERVICE_URL": {"url": "http://127.0.0.1:9/", "reachable": False,
                                          "reason": "connection refused"}}
    sparse = {"excluded": {}, "sources_found": {"jsm001a1q_flc.fits": 3, "jsm001a2q_flc.fits": 40},
              "fit_limits": {"alignable": 2, "min_sources": 10, "max_rms_mas": 150}}
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                                   ("apriori", "probe_service"): StepResult({"services": refused}),
                                   ("aposteriori", "align"): StepResult(sparse)})
    assert trail[trail.index("default->apriori") + 1:trail.index("aposteriori->final")] == [
        "apriori/probe_service", "apriori/conclude", "apriori->aposteriori",
        "aposteriori/probe_service", "aposteriori/stage_inputs", "aposteriori/align", "aposteriori/conclude"]
    run = fold(store.events(run_id))
    stop = "ASTROMETRY_SERVICE_URL unreachable (connection refused): stage skipped"
    assert run.output("apriori", "probe_service")["stop_stage"] == stop
    assert run.decision("apriori_service")["stop_stage"] == stop
    assert run.decision("apriori_stage")["reason"] == stop
    few = ("not enough sources for a fit: {'jsm001a1q_flc.fits': 3} found, at least 10 needed per exposure")
    assert run.output("aposteriori", "align")["stop_stage"] == run.decision("aposteriori_sources")["stop_stage"] == few
    assert (run.decision("aposteriori_stage")["outcome"], run.decision("aposteriori_stage")["reason"]) == (
        "skipped", few)


def test_a_rule_that_stops_a_step_that_may_not_stop_its_stage_fails_the_run(store, monkeypatch):
    monkeypatch.setitem(rules.AFTER_STEP, ("default", "astrodrizzle"),
                        (lambda run, stage: [{"decision": "default_test", "stop_stage": "no"}],))
    run_id = _start(store)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs()})
    assert trail[-3:] == ["default/astrodrizzle", "default->failed", "end:failed"]
    run = fold(store.events(run_id))
    assert run.failure["message"] == "default/astrodrizzle: a rule stopped its stage, which this step may not do"


def test_facts_are_recorded_with_their_step_and_only_then(store):
    run_id = _start(store)
    focus = {"check": "focus", "verdict": "pass", "product": f"{ROOT}_drc.fits"}
    _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                           ("default", "verify_alignment"): StepResult({"verdicts": {"focus": "pass"}},
                                                                       facts=[("verification", focus)])})
    events = store.events(run_id)
    i = next(i for i, e in enumerate(events) if e.kind == "verification")
    # The verification rule's decision, taken by the runner from the recorded check, comes with them.
    assert [(e.stage, e.step, e.kind) for e in events[i - 1:i + 3]] == [
        ("default", "verify_alignment", "step.started"), ("default", "verify_alignment", "verification"),
        ("default", "verify_alignment", "decision"), ("default", "verify_alignment", "step.completed")]
    assert events[i].utc == events[i + 2].utc  # one transaction
    run = fold(events)
    assert run.verifications == {"default": [focus]}
    assert run.decision("default_verification")["reason"] == "verification failed: overlap_similarity not measured"


def test_flt_only_basic_mode_has_no_headerlets(store):
    run_id = _start(store, basic=True)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs(flc=False)})
    assert "final/write_headerlets" not in trail
    assert "final/astrodrizzle" in trail


def test_drizcorr_omit_skips_and_force_processes(store):
    run_id = _start(store)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs("OMIT")})
    assert trail == ["init/resolve_inputs", "init->final", "final/stage_inputs", "final/update_headers",
                     "final/write_headerlets", "final/promote", "final/replace", "final/cleanup", "final->skipped",
                     "end:skipped"]
    run = fold(store.events(run_id))
    assert run.transitions[0]["guards"][0] == {"guard": "drizcorr_perform", "result": False,
                                               "reason": "DRIZCORR=OMIT in jsm001a1q_raw.fits"}
    assert run.ended["exit_code"] == 0 and run.ended["status"] == "skipped"

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
    assert fold(store.events(run_id)).ended == {**fold(store.events(run_id)).ended, "status": "failed",
                                                "exit_code": 5, "reason": "default/astrodrizzle: boom"}


def test_fold_resume_redoes_only_unfinished_step(store):
    run_id = _start(store)
    store.append(run_id, "init", "resolve_inputs", "step.started", {})
    store.append(run_id, "init", "resolve_inputs", "step.completed", _inputs().payload)
    store.append(run_id, "init", "", "transition", {"from": "init", "to": "default", "trigger": "advance",
                                                    "guards": []})
    store.append(run_id, "default", "stage_inputs", "step.started", {})  # the process died here
    run = fold(store.events(run_id))
    assert run.in_progress == {("default", "stage_inputs")}
    assert next_action(run).step == "stage_inputs"
    store.append(run_id, "default", "", "run.resumed", {})
    assert fold(store.events(run_id)).in_progress == set()


def test_facts_of_an_attempt_that_did_not_complete_are_not_in_the_fold(store):
    run_id = _start(store)
    candidate = {"catalog": "GAIAeDR3", "valid": True, "rms_mas": 3.4, "matches": 101, "fit_quality": 1}
    store.append(run_id, "aposteriori", "align", "step.started", {})
    store.append(run_id, "aposteriori", "align", "candidate", candidate)  # a log written while the step ran
    store.append(run_id, "aposteriori", "", "run.resumed", {})
    store.append(run_id, "aposteriori", "align", "step.started", {})
    store.append_many(run_id, [("aposteriori", "align", "candidate", candidate),
                               ("aposteriori", "align", "step.completed", {})])
    assert fold(store.events(run_id)).candidates == {"aposteriori": [candidate]}
    store.append(run_id, "aposteriori", "align", "step.invalidated", {"reason": "file changed"})
    assert fold(store.events(run_id)).candidates == {}


def test_choose_wcs_prefers_kept_aposteriori_and_says_why_others_lost(store):
    run_id = _start(store)
    _drive(store, run_id, {
        ("init", "resolve_inputs"): _inputs(),
        ("default", "updatewcs"): StepResult({"wcsname": "IDC_sm00001aj"}),
        ("apriori", "updatewcs"): StepResult({"wcsname": "IDC_sm00001aj-GSC240"}),
        ("apriori", "conclude"): StepResult({"kept": False, "reason": "verification failed: focus fail"}),
        ("aposteriori", "align"): StepResult({"wcsname": "IDC_sm00001aj-FIT_REL_GAIAeDR3"}),
        ("aposteriori", "conclude"): StepResult({"kept": True, "reason": "alignment verified"})})
    decision = choose_final_wcs(fold(store.events(run_id)))
    assert decision["chosen_stage"] == "aposteriori"
    assert decision["chosen_wcsname"] == "IDC_sm00001aj-FIT_REL_GAIAeDR3"
    assert [(c["stage"], c["wcsname"], c.get("kept")) for c in decision["candidates"]] == [
        ("aposteriori", "IDC_sm00001aj-FIT_REL_GAIAeDR3", True),
        ("apriori", "IDC_sm00001aj-GSC240", False),
        ("default", "IDC_sm00001aj", None)]
    assert decision["candidates"][1]["reason"] == "verification failed: focus fail"


def test_choose_wcs_falls_back_to_default_when_stages_were_switched_off(store):
    run_id = _start(store, apply_apriori=False, compute_aposteriori=False)
    focus = ("verification", {"check": "focus", "verdict": "fail"})
    _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                           ("default", "updatewcs"): StepResult({"wcsname": "IDC_sm00001aj"}),
                           ("default", "verify_alignment"): StepResult(facts=[focus])})
    decision = choose_final_wcs(fold(store.events(run_id)))
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


def test_step_control_is_stwcs_switch_not_the_apriori_stage():
    """runastrodriz 3.11 runs the a priori stage whatever ASTROMETRY_STEP_CONTROL says; stwcs reads it (on/off)."""
    apriori, compute, notes = switches_from_environment({"ASTROMETRY_STEP_CONTROL": "Off"})
    assert (apriori, compute) == (True, True)
    assert notes == ["ASTROMETRY_STEP_CONTROL=off: the a priori stage runs, and stwcs applies no astrometry "
                     "database solution"]
    assert switches_from_environment({"ASTROMETRY_STEP_CONTROL": "on"}) == (True, True, [])
    for value in ("yes", "true", "0"):
        with pytest.raises(ConfigError, match=f"ASTROMETRY_STEP_CONTROL='{value}': stwcs accepts on or off only"):
            switches_from_environment({"ASTROMETRY_STEP_CONTROL": value})


def test_the_decisions_a_step_works_from_reach_its_handler_and_are_recorded_with_its_facts(store):
    seen = {}

    def stage_inputs(ctx):
        seen.update(ctx.decisions)
        return StepResult({"files": {}}, facts=[("note", {"message": "copied"})])

    handlers = {(s.stage, s.step): (lambda ctx: StepResult()) for s in STEPS}
    handlers[("init", "resolve_inputs")] = lambda ctx: _inputs()
    handlers[("aposteriori", "stage_inputs")] = stage_inputs
    run_id = _start(store, apply_apriori=False)
    Runner(store, run_id, handlers=handlers).run()
    assert list(seen) == ["aposteriori_source", "aposteriori_cosmic_rays"]
    events = [e for e in store.events(run_id) if (e.stage, e.step) == ("aposteriori", "stage_inputs")]
    assert [(e.kind, e.payload.get("decision")) for e in events] == [
        ("step.started", None), ("decision", "aposteriori_source"), ("decision", "aposteriori_cosmic_rays"),
        ("note", None), ("step.completed", None)]
    assert [e.payload for e in events[1:3]] == list(seen.values())
    assert len({e.utc for e in events[1:]}) == 1  # one transaction


def test_a_handler_that_returns_a_decision_fails_its_step(store):
    run_id = _start(store)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                                   ("default", "updatewcs"): StepResult(facts=[("decision", {"decision": "mine"})])})
    assert trail[-3:] == ["default/updatewcs", "default->failed", "end:failed"]
    assert fold(store.events(run_id)).failure["message"] == (
        "default/updatewcs: unexpected error: the handler of default/updatewcs returned a decision: "
        "decisions are the rules'")


def test_a_rule_that_fails_the_run_ends_it_with_its_error_after_recording_the_step_s_facts(store):
    """-v, every exposure badly guided: the step measures, the guiding rule decides, the runner fails."""
    inputs = _inputs().payload["inputs"]
    names = [f"{r}_{k}.fits" for k in ("flt", "flc") for r in ("jsm001a1q", "jsm001a2q")]
    checks = [("verification", {"check": "guiding", "file": f"{r}_flc.fits", "guiding": "bad",
                                 "verdict": "fail"}) for r in ("jsm001a1q", "jsm001a2q")]
    run_id = _start(store, verify_guiding=True)
    measured = StepResult({"inputs": inputs, "removed": names}, facts=checks)
    trail = _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                                   ("init", "verify_guiding"): measured})
    assert trail == ["init/resolve_inputs", "init/verify_guiding", "init->failed", "end:failed"]
    events = [e for e in store.events(run_id) if (e.stage, e.step) == ("init", "verify_guiding")]
    assert [(e.kind, e.payload.get("decision")) for e in events] == [
        ("step.started", None), ("verification", None), ("verification", None),
        ("decision", "no_viable_data"), ("step.failed", None)]
    message = (f"/x/{ROOT}_asn.fits: no viable data: every exposure has bad guiding (-v): "
               "jsm001a1q_flc.fits, jsm001a2q_flc.fits")
    run = fold(store.events(run_id))
    assert run.failure == {"error": "NoViableDataError", "message": message, "path": f"/x/{ROOT}_asn.fits",
                           "exit_code": 65}
    assert (run.ended["status"], run.ended["exit_code"], run.ended["reason"]) == ("failed", 65, message)
