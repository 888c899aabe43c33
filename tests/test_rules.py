"""The rules of every decision, on canned facts."""

from __future__ import annotations

from astrodriz_sm.statemachine import (
    FIT_RULE,
    RunState,
    best_verified_stage,
    choose_final_wcs,
    choose_fit,
    conclude_stage,
)

PASS = {"check": "focus", "verdict": "pass"}


def _run(completed=None, facts=None, entered=("default", "apriori", "aposteriori")):
    return RunState(state="final", completed=completed or {}, facts=facts or {},
                    transitions=[{"to": s, "guards": []} for s in entered])


def _fit(catalog, quality, rms=None, matches=None):
    return {"catalog": catalog, "fit_quality": quality, "valid": quality in (1, 2, 3), "rms_mas": rms,
            "matches": matches}


def test_choose_fit_takes_the_lowest_rms_among_valid_fits():
    decision = choose_fit([_fit("GAIAeDR3", 1, 3.44, 101), _fit("GAIADR2", 2, 3.40, 90),
                           _fit("GAIADR1", 4, 1.0, 120)], "relative")
    assert decision["chosen_catalog"] == "GAIADR2" and decision["rule"] == FIT_RULE
    assert [c["catalog"] for c in decision["candidates"]] == ["GAIAeDR3", "GAIADR2", "GAIADR1"]


def test_choose_fit_breaks_an_rms_tie_by_matches():
    decision = choose_fit([_fit("GAIAeDR3", 1, 3.4, 90), _fit("GAIADR2", 1, 3.4, 101)], "relative")
    assert decision["chosen_catalog"] == "GAIADR2"


def test_choose_fit_without_a_valid_fit_chooses_nothing_and_says_why():
    decision = choose_fit([_fit("GAIAeDR3", 5), _fit("GAIADR2", 4, 80.0, 6)], "default")
    assert decision["chosen_catalog"] is None
    assert decision["reason"] == "no valid fit to any reference catalog: GAIAeDR3 quality 5; GAIADR2 quality 4"


def test_conclude_keeps_a_verified_stage():
    run = _run({("apriori", "updatewcs"): {"wcsname": "IDC_x-GSC240"}},
               {("apriori", "verify_alignment"): [("verification", PASS),
                                                  ("verification", {"check": "overlap_similarity",
                                                                    "verdict": "pass"})]})
    assert conclude_stage(run, "apriori") == {"decision": "apriori_stage", "kept": True,
                                              "reason": "alignment verified (focus and similarity)",
                                              "wcsname": "IDC_x-GSC240"}


def test_conclude_discards_a_stage_that_failed_a_check():
    run = _run(facts={("aposteriori", "verify_alignment"): [
        ("verification", PASS), ("verification", {"check": "overlap_similarity", "verdict": "fail"})]})
    decision = conclude_stage(run, "aposteriori")
    assert (decision["kept"], decision["reason"]) == (False, "verification failed: overlap_similarity fail")


def test_conclude_gives_the_stop_reason_first():
    run = _run({("aposteriori", "align"): {"stop_stage": "not enough sources for a fit"}},
               {("aposteriori", "verify_alignment"): [("verification", PASS)]})
    assert conclude_stage(run, "aposteriori")["reason"] == "not enough sources for a fit"


def test_final_wcs_is_the_most_refined_kept_stage():
    completed = {("default", "updatewcs"): {"wcsname": "IDC_x"},
                 ("apriori", "updatewcs"): {"wcsname": "IDC_x-GSC240"},
                 ("apriori", "conclude"): {"kept": True, "reason": "verified"},
                 ("aposteriori", "conclude"): {"kept": False, "reason": "no valid fit"}}
    run = _run(completed)
    decision = choose_final_wcs(run)
    assert (decision["chosen_stage"], decision["chosen_wcsname"]) == ("apriori", "IDC_x-GSC240")
    assert [(c["stage"], c.get("kept")) for c in decision["candidates"]] == [
        ("aposteriori", False), ("apriori", True), ("default", None)]
    assert best_verified_stage(run) == "apriori"
    assert best_verified_stage(_run()) == "default"
