"""The rules of every decision, on canned facts."""

from __future__ import annotations

from astrodriz_sm.statemachine import (
    FIT_RULE,
    VERIFY_RULE,
    RunState,
    best_fit,
    best_verified_stage,
    choose_final_wcs,
    choose_fit,
    conclude_stage,
    cosmic_ray_path,
    exposures_source,
    fit_search_ends,
    verify_stage,
)

PASS = {"check": "focus", "verdict": "pass"}
FOCUS_FAIL = {"check": "focus", "verdict": "fail"}
OVERLAP_PASS = {"check": "overlap_similarity", "verdict": "pass"}
OVERLAP_FAIL = {"check": "overlap_similarity", "verdict": "fail"}
SIMILAR = {"check": "similarity_to_default", "verdict": "pass"}
DISSIMILAR = {"check": "similarity_to_default", "verdict": "fail"}


def _run(completed=None, facts=None, entered=("default", "apriori", "aposteriori")):
    return RunState(state="final", completed=completed or {}, facts=facts or {},
                    transitions=[{"to": s, "guards": []} for s in entered])


def _fit(catalog, quality, rms=None, matches=None, method="relative", invalid=()):
    return {"catalog": catalog, "method": method, "fit_quality": quality, "valid": quality in (1, 2, 3, 4),
            "rms_mas": rms, "matches": matches,
            "exposures": {f"{n}[1]": {"valid": n not in invalid} for n in ("a_flc.fits", "b_flc.fits")}}


def test_the_first_quality_1_fit_wins_over_a_lower_rms_of_lower_quality():
    fits = [_fit("GAIAeDR3", 2, 3.0, 120), _fit("GSC242", 1, 14.0, 40), _fit("2MASS", 1, 9.0, 30)]
    decision = choose_fit(fits, 150)
    assert (decision["chosen_catalog"], decision["chosen_method"]) == ("GSC242", "relative")
    assert decision["rule"] == FIT_RULE
    assert [c["catalog"] for c in decision["candidates"]] == ["GAIAeDR3", "GSC242", "2MASS"]


def test_a_fit_of_equal_quality_needs_more_matches_and_a_lower_rms():
    assert best_fit([_fit("GAIAeDR3", 3, 25.0, 50), _fit("GSC242", 3, 22.0, 60)])["catalog"] == "GSC242"
    assert best_fit([_fit("GAIAeDR3", 3, 25.0, 50), _fit("GSC242", 3, 22.0, 40)])["catalog"] == "GAIAeDR3"
    assert best_fit([_fit("GAIAeDR3", 4, 25.0, 50), _fit("GSC242", 3, 40.0, 10)])["catalog"] == "GSC242"


def test_the_search_ends_after_relative_fits_of_quality_2_to_4_not_after_failures():
    assert fit_search_ends([_fit("GAIAeDR3", 5), _fit("GSC242", 3, 30.0, 20)], "relative")
    assert not fit_search_ends([_fit("GAIAeDR3", 5), _fit("GSC242", 5)], "relative")
    assert not fit_search_ends([_fit("GAIAeDR3", 3, 30.0, 20, method="2dhist")], "2dhist")
    assert fit_search_ends([_fit("GAIAeDR3", 1, 3.0, 100, method="2dhist")], "2dhist")


def test_no_fit_is_applied_without_quality_1_to_4_or_outside_the_rms_window():
    decision = choose_fit([_fit("GAIAeDR3", 5), _fit("GSC242", 5, method="2dhist")], 150)
    assert decision["chosen_catalog"] is None
    assert decision["reason"] == "no fit of quality 1-4: GAIAeDR3 relative quality 5; GSC242 2dhist quality 5"
    decision = choose_fit([_fit("2MASS", 4, 160.0, 12)], 150)
    assert decision["chosen_catalog"] is None
    assert decision["reason"] == "the best fit, 2MASS relative, has an RMS of 160 mas, outside (0, 150) mas"


def test_a_best_fit_that_leaves_an_exposure_unaligned_is_not_applied():
    decision = choose_fit([_fit("GAIAeDR3", 2, 8.0, 30, invalid=("b_flc.fits",))], 150)
    assert decision["chosen_catalog"] is None
    assert decision["reason"] == ("the best fit, GAIAeDR3 relative, could not align b_flc.fits[1] "
                                  "to the absolute astrometric frame")


def test_an_abandoned_search_chooses_nothing_whatever_it_found():
    decision = choose_fit([_fit("GAIAeDR3", 2, 8.0, 30)], 150, abandoned="only 1 sources in 2MASS")
    assert (decision["chosen_catalog"], decision["reason"]) == (None, "only 1 sources in 2MASS")


def test_the_overlap_difference_decides_the_focus_only_when_few_sources_matched():
    default = verify_stage("default", [FOCUS_FAIL, OVERLAP_PASS], 3)
    assert (default["verified"], default["quality"], default["deciding"]) == (True, 0, ["overlap_similarity"])
    assert default["rule"] == VERIFY_RULE
    few = verify_stage("aposteriori", [FOCUS_FAIL, OVERLAP_PASS, SIMILAR], 3,
                       {"sources": 8, "catalog_sources": 40, "fraction": 0.2})
    assert (few["verified"], few["quality"], few["reason"]) == (False, 6, "verification failed: focus fail")
    many = verify_stage("aposteriori", [FOCUS_FAIL, OVERLAP_PASS, SIMILAR], 3,
                        {"sources": 80, "catalog_sources": 200, "fraction": 0.4})
    assert (many["verified"], many["quality"]) == (True, 0)


def test_similarity_to_the_default_adds_to_the_quality_and_never_rejects():
    v = verify_stage("apriori", [PASS, OVERLAP_PASS, DISSIMILAR], 3)
    assert (v["verified"], v["quality"]) == (True, 3)
    single = verify_stage("apriori", [{"check": "focus", "verdict": "n/a"}, SIMILAR], 1)
    assert (single["verified"], single["quality"], single["reason"]) == (True, 0, "a single exposure: always verified")


def _verified(stage, checks, n=3):
    return [("verification", c) for c in checks] + [("decision", verify_stage(stage, checks, n))]


def test_conclude_keeps_a_verified_stage():
    run = _run({("apriori", "updatewcs"): {"wcsname": "IDC_x-GSC240"}},
               {("apriori", "verify_alignment"): _verified("apriori", [FOCUS_FAIL, OVERLAP_PASS, SIMILAR])})
    assert conclude_stage(run, "apriori") == {"decision": "apriori_stage", "kept": True, "outcome": "kept", "quality": 0,
                                              "reason": "alignment verified: overlap_similarity pass",
                                              "wcsname": "IDC_x-GSC240"}


def test_conclude_discards_a_stage_that_failed_a_check():
    run = _run(facts={("aposteriori", "verify_alignment"): _verified("aposteriori", [PASS, OVERLAP_FAIL, SIMILAR])})
    decision = conclude_stage(run, "aposteriori")
    assert (decision["kept"], decision["outcome"], decision["reason"], decision["quality"]) == (
        False, "discarded", "verification failed: overlap_similarity fail", 6)


def test_conclude_gives_the_stop_reason_first():
    run = _run({("aposteriori", "align"): {"stop_stage": "not enough sources for a fit"}},
               {("aposteriori", "verify_alignment"): _verified("aposteriori", [PASS, OVERLAP_PASS])})
    assert conclude_stage(run, "aposteriori")["reason"] == "not enough sources for a fit"
    assert conclude_stage(run, "aposteriori")["outcome"] == "skipped"


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


def test_after_a_discarded_apriori_stage_its_restored_exposures_go_on():
    """3.11 restores the pipeline-default WCS in place: the database headerlets stay in the exposures."""
    restored = {("apriori", "conclude"): {"kept": False, "reason": "verification failed: overlap_similarity fail",
                                          "restored": {"a_flc.fits": "0" * 64}}}
    decision = exposures_source(_run(restored), "aposteriori")
    assert (decision["decision"], decision["source_stage"], decision["restored"]) == (
        "aposteriori_source", "apriori", True)
    # Nothing restored (the stage stopped before its update): the pipeline-default exposures.
    stopped = {("apriori", "conclude"): {"kept": False, "reason": "ASTROMETRY_SERVICE_URL unreachable"}}
    assert exposures_source(_run(stopped), "aposteriori")["source_stage"] == "default"
    # A kept a posteriori stage is the final stage's source, whatever came before it.
    kept = {**restored, ("aposteriori", "conclude"): {"kept": True, "reason": "verified"}}
    assert exposures_source(_run(kept), "final")["source_stage"] == "aposteriori"
    assert exposures_source(_run(restored), "final")["source_stage"] == "apriori"


def test_cosmic_rays_are_identified_again_only_after_an_unverified_alignment():
    """3.11's find_crs: the default verdict, except that a kept a priori stage ends the cosmic-ray path."""
    unverified = {("default", "verify_alignment"): [("decision", {"decision": "default_verification",
                                                                   "verified": False})]}
    verified = {("default", "verify_alignment"): [("decision", {"decision": "default_verification",
                                                                 "verified": True})]}
    apriori_kept = {("apriori", "conclude"): {"kept": True, "reason": "verified"}}
    assert cosmic_ray_path(_run(facts=unverified), "apriori")["identify"] is True
    assert cosmic_ray_path(_run(facts=unverified), "aposteriori")["identify"] is True
    assert cosmic_ray_path(_run(apriori_kept, unverified), "aposteriori")["identify"] is False
    decision = cosmic_ray_path(_run(facts=verified), "apriori")
    assert (decision["decision"], decision["identify"]) == ("apriori_cosmic_rays", False)


# --- The rules the runner evaluates around a step (statemachine.rules.BEFORE_STEP / AFTER_STEP) ---------

from astrodriz_sm.model import Exposure, ExposureSet, Inputs
from astrodriz_sm.statemachine.rules import (
    AFTER_STEP,
    BEFORE_STEP,
    SOURCES_RULE,
    _exptimes_differ,
    align_outcome,
    alignment_follows_decision,
    bad_guiding,
    catalog_search_ends,
    decisions_after,
    decisions_before,
    drizzle_plan,
    final_reuse,
    reusable_product,
    service_reachable,
    too_few_sources,
)


def _inputs(n=3, no_alignment=None):
    flc = tuple(Exposure(f"jsm001a{i}q", "flc", "ACS", "WFC", 400.0) for i in range(1, n + 1))
    return Inputs(root="jsm001010", kind="asn", exposures=ExposureSet((), flc), drizcorr="PERFORM",
                  drizcorr_file="jsm001a1q_raw.fits", no_alignment=no_alignment)


def test_the_probe_of_the_needed_service_decides_and_says_why_it_stops():
    services = {"ASTROMETRIC_CATALOG_URL": {"url": "http://127.0.0.1:9/", "reachable": False,
                                            "reason": "connection refused"}}
    run = _run({("aposteriori", "probe_service"): {"services": services}})
    decision = service_reachable(run, "aposteriori")
    assert decision == {"decision": "aposteriori_service", "service": "ASTROMETRIC_CATALOG_URL",
                        "url": "http://127.0.0.1:9/", "reachable": False, "reason": "connection refused",
                        "rule": decision["rule"],
                        "stop_stage": "ASTROMETRIC_CATALOG_URL unreachable (connection refused): stage skipped"}
    services["ASTROMETRIC_CATALOG_URL"].update(reachable=True, reason="HTTP 200")
    assert "stop_stage" not in service_reachable(run, "aposteriori")
    # A probe that recorded no services (nothing measured) decides nothing.
    assert decisions_after(_run({("aposteriori", "probe_service"): {}}), "aposteriori", "probe_service") == []


def test_too_few_sources_names_the_sparse_exposures_and_the_threshold():
    assert too_few_sources(0, {}, 10) == "no exposure can be aligned (drizzlepac analyze excluded them all)"
    assert too_few_sources(2, {"a_flc.fits": 4, "b_flc.fits": 40}, 10) == (
        "not enough sources for a fit: {'a_flc.fits': 4} found, at least 10 needed per exposure")
    assert too_few_sources(2, {"a_flc.fits": 14, "b_flc.fits": 40}, 10) is None
    assert catalog_search_ends([_fit("GAIAeDR3", 2, 8.0, 30), _fit("GSC242", 1, 5.0, 40)])
    assert not catalog_search_ends([_fit("GAIAeDR3", 2, 8.0, 30)])
    assert not catalog_search_ends([])


def _aligned(excluded=None, found=None, candidates=(), **extra):
    limits = {"alignable": 2, "min_sources": 10, "max_rms_mas": 150}
    done = {"excluded": excluded or {}, "sources_found": found or {"a_flc.fits": 40, "b_flc.fits": 50},
            "fit_limits": limits, **extra}
    return _run({("aposteriori", "align"): done},
                {("aposteriori", "align"): [("candidate", c) for c in candidates]})


def test_the_fit_step_decisions_come_in_order_and_the_first_stop_ends_them():
    run = _aligned({"c_flc.fits": "EXPTIME = 0"}, candidates=[_fit("GAIAeDR3", 1, 8.0, 30)])
    kinds = [(d["decision"], d.get("stop_stage")) for d in align_outcome(run, "aposteriori")]
    assert kinds == [("aposteriori_exclusion", None), ("aposteriori_sources", None), ("aposteriori_fit", None)]
    fit = align_outcome(run, "aposteriori")[-1]
    assert (fit["chosen_catalog"], fit["max_rms_mas"]) == ("GAIAeDR3", 150)
    sparse = align_outcome(_aligned(found={"a_flc.fits": 4, "b_flc.fits": 50}), "aposteriori")
    assert sparse == [{"decision": "aposteriori_sources", "alignable": 2, "sources_found": {"a_flc.fits": 4,
                       "b_flc.fits": 50}, "min_sources": 10, "rule": SOURCES_RULE,
                       "stop_stage": "not enough sources for a fit: {'a_flc.fits': 4} found, at least 10 needed "
                                     "per exposure"}]
    silent = align_outcome(_aligned(unanswered="the GAIAeDR3 catalog at http://x/ did not answer"), "aposteriori")
    assert [(d["decision"], d["stop_stage"]) for d in silent[1:]] == [
        ("aposteriori_unanswered", "the GAIAeDR3 catalog at http://x/ did not answer: stage skipped")]
    rejected = align_outcome(_aligned(candidates=[_fit("2MASS", 4, 160.0, 12)]), "aposteriori")[-1]
    assert rejected["stop_stage"] == rejected["reason"] == (
        "the best fit, 2MASS relative, has an RMS of 160 mas, outside (0, 150) mas")


def test_bad_guiding_removes_the_exposure_unless_f_and_turns_alignment_off_unless_a():
    bad, removed = ["b_flc.fits"], ["b_flt.fits", "b_flc.fits"]
    assert [(d["decision"], d["reason"]) for d in bad_guiding(bad, removed, False, False)] == [
        ("guiding_removal", "-v: removed from processing for bad guiding: b_flt.fits, b_flc.fits"),
        ("guiding_alignment", "-v: bad guiding in b_flc.fits: no alignment")]
    assert [(d["decision"], d["alignment"]) for d in bad_guiding(bad, [], True, True)] == [
        ("guiding_alignment", True)]
    assert bad_guiding([], [], False, False) == []


def test_no_exposure_left_after_the_guiding_removal_fails_the_run_by_its_own_decision():
    """Every exposure badly guided, no -f: one decision, which fails the run; not while one is left, or -f."""
    from dataclasses import replace

    from astrodriz_sm.statemachine import FAIL_RUN
    from astrodriz_sm.statemachine.rules import NO_VIABLE_DATA, NO_VIABLE_DATA_RULE

    asn = "/data/jsm001010/jsm001010_asn.fits"
    inputs = _inputs(2)
    names = inputs.exposures.names
    checks = [("verification", {"check": "guiding", "file": n, "guiding": "bad", "verdict": "fail"})
              for n in names]
    # With none left the inputs stay as resolved; every one of them is removed.
    payload = {"inputs": inputs.to_payload(), "removed": list(names)}
    run = RunState(state="init", config={"input": asn}).after_step("init", "verify_guiding", checks, payload)
    message = f"{asn}: no viable data: every exposure has bad guiding (-v): {', '.join(names)}"
    assert decisions_after(run, "init", "verify_guiding") == [
        {"decision": NO_VIABLE_DATA, "bad": names, "left": [], "reason": message, "path": asn,
         "rule": NO_VIABLE_DATA_RULE, FAIL_RUN: NO_VIABLE_DATA}]
    # With -f the exposures stay: alignment is off, the run goes on.
    forced = RunState(state="init", config={"input": asn, "force": True}).after_step(
        "init", "verify_guiding", checks, {"inputs": inputs.to_payload(), "removed": []})
    assert [d["decision"] for d in decisions_after(forced, "init", "verify_guiding")] == ["guiding_alignment"]
    # One exposure of two bad: it is removed, the other is left.
    one_left = replace(inputs, exposures=ExposureSet((), inputs.exposures.flc[1:]))
    partly = RunState(state="init", config={"input": asn}).after_step(
        "init", "verify_guiding", checks[:1], {"inputs": one_left.to_payload(), "removed": [names[0]]})
    assert [d["decision"] for d in decisions_after(partly, "init", "verify_guiding")] == [
        "guiding_removal", "guiding_alignment"]


def test_alignment_follows_the_default_stage_by_the_transition_guards():
    run = RunState(state="default", config={}, inputs=_inputs())
    decision = alignment_follows_decision(run, "default")
    assert (decision["decision"], decision["follows"]) == ("alignment_follows", True)
    assert decision["guards"] == [{"guard": "apriori_possible", "result": True,
                                   "reason": "ASTROMETRY_APPLY_APRIORI is on"}]
    off = alignment_follows_decision(RunState(state="default", config={}, inputs=_inputs(no_alignment="WFPC2")),
                                     "default")
    assert (off["follows"], [g["reason"] for g in off["guards"]]) == (False, ["WFPC2", "WFPC2"])


def test_the_runner_evaluates_the_verification_rule_on_the_checks_the_step_recorded():
    checks = [("verification", FOCUS_FAIL), ("verification", OVERLAP_PASS)]
    run = RunState(state="default", inputs=_inputs(), facts={("default", "verify_alignment"): checks})
    [decision] = decisions_after(run, "default", "verify_alignment")
    assert (decision["decision"], decision["verified"], decision["deciding"]) == (
        "default_verification", True, ["overlap_similarity"])
    # Nothing measured: no decision.
    assert decisions_after(RunState(state="default", inputs=_inputs()), "default", "verify_alignment") == []


def test_every_step_with_rules_is_a_step_of_the_table_and_the_decisions_before_a_step_are_recorded_as_taken():
    from astrodriz_sm.model import step_spec

    for stage, step in [*BEFORE_STEP, *AFTER_STEP]:
        assert step_spec(stage, step).step == step
    restored = {("apriori", "conclude"): {"kept": False, "reason": "verification failed",
                                          "restored": {"a_flc.fits": "0" * 64}}}
    run = _run(restored)
    run.inputs = _inputs()
    assert [d["decision"] for d in decisions_before(run, "aposteriori", "stage_inputs")] == [
        "aposteriori_source", "aposteriori_cosmic_rays"]
    assert [d["decision"] for d in decisions_before(run, "final", "choose_wcs")] == ["wcs"]
    assert decisions_before(run, "final", "stage_inputs") == [exposures_source(run, "final")]


def test_the_fit_decision_carries_the_wcsnames_the_ranking_and_the_margin_the_views_show():
    fits = [_fit("GAIAeDR3", 2, 3.0, 120), _fit("GSC242", 1, 14.0, 40), _fit("2MASS", 3, 9.0, 30),
            _fit("GAIADR2", 5)]
    decision = choose_fit(fits, 150, default_wcsname=["IDC_x", "IDC_x"])
    assert decision["chosen_wcsname"] == "IDC_x-FIT_REL_GSC242"
    assert [c["wcsname"] for c in decision["candidates"]] == [
        "IDC_x-FIT_REL_GAIAeDR3", "IDC_x-FIT_REL_GSC242", "IDC_x-FIT_REL_2MASS", "IDC_x-FIT_REL_GAIADR2"]
    assert decision["ranking"] == [["GSC242", "relative"], ["GAIAeDR3", "relative"], ["2MASS", "relative"]]
    margin = decision["margin"]
    assert (margin["chosen"]["catalog"], margin["next_best"]["catalog"], margin["rms_mas"], margin["matches"]) == (
        "GSC242", "GAIAeDR3", -11.0, 80)
    # No fit applied: no margin, no WCSNAME chosen.
    none = choose_fit([_fit("GAIADR2", 5)], 150, default_wcsname="IDC_x")
    assert (none["margin"], none.get("chosen_wcsname"), none["ranking"]) == (None, None, [])


def _mixed_inputs(exptimes=(400.0, 400.0, 100.0), instrument="ACS"):
    flc = tuple(Exposure(f"jsm001a{i}q", "flc", instrument, "WFC", t) for i, t in enumerate(exptimes, 1))
    return Inputs(root="jsm001010", kind="asn", exposures=ExposureSet((), flc), drizcorr="PERFORM",
                  drizcorr_file="jsm001a1q_raw.fits")


def _decided(*decisions, inputs=None):
    return RunState(state="default", inputs=inputs or _mixed_inputs(),
                    facts={("x", "y"): [("decision", d) for d in decisions]})


def test_how_a_stage_drizzles_follows_what_comes_after_it_and_its_cosmic_ray_decision():
    follows = {"decision": "alignment_follows", "follows": True}
    default = drizzle_plan(_decided(follows), "default")
    assert (default["parameters"], default["no_cr_parameters"], default["passes"]) == ("verification", False, 2)
    # EXPTIMEs 400 and 100: over a factor of 2, a median for the verification drizzle.
    assert default["median_combine"] == {"jsm001010_drc.fits": True}
    alone = drizzle_plan(_decided({"decision": "alignment_follows", "follows": False},
                                  inputs=_mixed_inputs((400.0, 300.0))), "default")
    assert (alone["parameters"], alone["passes"], alone["median_combine"]) == ("final", 1, {"jsm001010_drc.fits": False})
    kept_flags = drizzle_plan(_decided(follows, {"decision": "aposteriori_cosmic_rays", "identify": False}),
                              "aposteriori")
    assert (kept_flags["parameters"], kept_flags["no_cr_parameters"], kept_flags["passes"]) == (
        "verification", True, 1)
    again = drizzle_plan(_decided(follows, {"decision": "apriori_cosmic_rays", "identify": True}), "apriori")
    assert (again["no_cr_parameters"], again["passes"]) == (False, 2)
    final = drizzle_plan(_decided(follows), "final")
    assert (final["parameters"], final["median_combine"], final["passes"]) == ("final", {}, 1)
    # An EXPTIME of 0 among others is an infinite ratio (a median); all zero is none.
    assert _exptimes_differ([0.0, 400.0]) and not _exptimes_differ([0.0, 0.0]) and not _exptimes_differ([400.0, 200.0])


def test_a_final_product_is_reused_only_with_the_same_inputs_parameters_and_bytes():
    pars = {"final_scale": 0.05, "clean": False, "num_cores": 2}
    entry = {"product": "jsm001010_drc.fits", "inputs": ["a_flc.fits", "b_flc.fits"], "parameters": pars,
             "sha256": "f" * 64}
    completed = {("default", "astrodrizzle"): {"products": [entry], "files": {"a_flc.fits": "1", "b_flc.fits": "2"}},
                 ("final", "stage_inputs"): {"files": {"a_flc.fits": "1", "b_flc.fits": "2"}}}
    run = RunState(state="final", completed=completed,
                   facts={("final", "choose_wcs"): [("decision", {"decision": "wcs", "chosen_stage": "default"})]})
    final_pars = {"final_scale": 0.05, "clean": True, "num_cores": None, "in_memory": True}
    reuse = reusable_product(run, "jsm001010_drc.fits", ["a_flc.fits", "b_flc.fits"], final_pars)
    assert reuse["reusable_from"] == {**entry, "stage": "default"}
    other = reusable_product(run, "jsm001010_drc.fits", ["a_flc.fits", "b_flc.fits"], {**final_pars, "final_scale": 0.04})
    assert other == {"reusable_from": None, "reason": "the default stage drizzled jsm001010_drc.fits with other parameters"}
    completed[("final", "stage_inputs")]["files"]["b_flc.fits"] = "3"
    changed = reusable_product(run, "jsm001010_drc.fits", ["a_flc.fits", "b_flc.fits"], final_pars)
    assert changed["reason"] == "the exposures differ from those the default stage drizzled"
    completed[("final", "astrodrizzle")] = {"products": [{**entry, "parameters": final_pars}]}
    [decision] = final_reuse(run, "final")
    assert decision["products"] == {"jsm001010_drc.fits": {"reusable_from": None, "reason": changed["reason"]}}
