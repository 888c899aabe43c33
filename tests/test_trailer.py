"""The trailer renderer on hand-written events: exact lines, byte-identical replay, unknown shapes in full."""

from __future__ import annotations

from astrodriz_sm.model.events import (
    CANDIDATE,
    DECISION,
    NOTE,
    RUN_ENDED,
    RUN_RESUMED,
    RUN_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_STARTED,
    TRANSITION,
    VERIFICATION,
    WARNING,
)
from astrodriz_sm.model.options import TRAILER_KEYS
from astrodriz_sm.store.eventstore import Event
from astrodriz_sm.views.trailer import render_trailer

RUN = {"run_id": "r-0001", "input": "/data/j8cw03010_asn.fits", "root": "j8cw03010"}
UTC = "2026-12-07T18:00:00.000000Z"
HEAD = ["=" * 78, "astrodriz-sm trailer for j8cw03010   run r-0001", "input /data/j8cw03010_asn.fits",
        "=" * 78]


def _events(*specs):
    return [Event("r-0001", i, UTC, stage, step, kind, payload, "", "")
            for i, (stage, step, kind, payload) in enumerate(specs, start=1)]


def _body(*specs) -> list[str]:
    text = render_trailer(RUN, _events(*specs))
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert lines[:4] == HEAD
    return lines[4:]


def test_step_lines_failures_notes_and_warnings():
    """Each event is one stamped line with its sequence number and place; bodies follow indented."""
    assert _body(
        ("init", "read", STEP_STARTED, {}),
        ("init", "read", STEP_COMPLETED, {"inputs": {"b": 2, "a": 0.1234567891}, "files": ["x", "y"],
                                          "log": "line one\nline two\n"}),
        ("stage_pipeline", "", NOTE, {"message": "kept the pipeline WCS"}),
        ("stage_pipeline", "", WARNING, {"message": "Reverting to 'localmin'"}),
        ("drizzle_pipeline", "drizzle", STEP_FAILED, {"message": "AstroDrizzle raised", "exit_code": 1}),
    ) == [
        f"{UTC} #1    [init/read] started",
        f"{UTC} #2    [init/read] completed",
        '    files: ["x", "y"]',
        "    a: 0.123457",
        "    b: 2",
        "    --- library log (2 lines) ---",
        "    | line one",
        "    | line two",
        "    --- end ---",
        f"{UTC} #3    [stage_pipeline] note: kept the pipeline WCS",
        f"{UTC} #4    [stage_pipeline] WARNING library fallback: Reverting to 'localmin'",
        f"{UTC} #5    [drizzle_pipeline/drizzle] FAILED: AstroDrizzle raised",
        "    exit code 1",
    ]


def test_run_start_lists_every_option_then_the_environment_and_notes():
    config = {k: False for k in TRAILER_KEYS} | {
        "input": "/data/j8cw03010_asn.fits", "run_dir": "/data", "newpath": None, "num_cores": 2,
        "environment": {"jref": "/refs/jref/", "ASTROMETRY_STEP_CONTROL": "on"},
        "notes": ["-g given: a posteriori alignment off"]}
    body = _body(("init", "", RUN_STARTED, {"config": config, "version": "1.0.0",
                                            "libraries": {"stwcs": "1.7.3", "drizzlepac": "3.11.0"}}),
                 ("init", "", RUN_RESUMED, {"after": "an interruption at default/astrodrizzle", "pid": 4242}))
    assert body[:2] == [f"{UTC} #1    [init] run started: input /data/j8cw03010_asn.fits",
                        "    astrodriz-sm 1.0.0; libraries drizzlepac 3.11.0, stwcs 1.7.3"]
    assert body[2:2 + len(TRAILER_KEYS)] == [f"    {k}: {config[k]}" for k in TRAILER_KEYS]
    assert body[2:5] == ["    run_dir: /data", "    newpath: None", "    force: False"]
    assert body[2 + len(TRAILER_KEYS):] == [
        "    environment ASTROMETRY_STEP_CONTROL=on",
        "    environment jref=/refs/jref/",
        "    note: -g given: a posteriori alignment off",
        f"{UTC} #2    [init] run resumed after an interruption at default/astrodrizzle",
        "    pid: 4242",
    ]


def test_drizzle_products_carry_parameters_and_their_log():
    product = {"product": "j8cw03010_drc.fits", "inputs": ["j8cw03f6q_flc.fits", "j8cw03f8q_flc.fits"],
               "sha256": "ab" * 32, "seconds": 12.345, "parameter_source": "mdriztab",
               "parameters": {"final_scale": 0.05, "build": True}, "log": "AstroDrizzle Version 3.11.0\n"}
    assert _body(("drizzle_pipeline", "drizzle", STEP_COMPLETED, {"products": [product]})) == [
        f"{UTC} #1    [drizzle_pipeline/drizzle] completed",
        "    product j8cw03010_drc.fits from j8cw03f6q_flc.fits, j8cw03f8q_flc.fits: "
        f"sha256 {'ab' * 32}, 12.3 s",
        '      parameters (mdriztab): {"build": true, "final_scale": 0.05}',
        "    --- AstroDrizzle log for j8cw03010_drc.fits (1 lines) ---",
        "    | AstroDrizzle Version 3.11.0",
        "    --- end ---",
    ]


def test_transition_and_run_end_close_a_paragraph():
    assert _body(
        ("stage_apriori", "", TRANSITION, {"from": "pipeline", "to": "apriori", "trigger": "next",
                                           "guards": [{"guard": "has_apriori", "result": True,
                                                       "reason": "IDC_ solutions in the headers"}]}),
        ("final", "", RUN_ENDED, {"status": "ok", "exit_code": 0, "products": ["j8cw03010_drc.fits"],
                                  "kept_directories": ["j8cw03010_pipeline"], "process_seconds": 61.26,
                                  "log_seconds": 0.1234, "log_share": 0.002015}),
    ) == [
        f"{UTC} #1    [stage_apriori] transition pipeline -> apriori (next)",
        "    guard has_apriori: yes - IDC_ solutions in the headers",
        "",
        f"{UTC} #2    [final] run ended: OK (exit code 0)",
        "    product j8cw03010_drc.fits",
        "    kept for inspection: j8cw03010_pipeline",
        "    61.3 s in this process, of which 0.12 s (0.20 %) on the event log and trailer",
        "",
    ]


def test_wcs_decision_lists_each_candidate():
    assert _body(("verify", "", DECISION, {
        "decision": "wcs", "chosen_stage": "apriori", "chosen_wcsname": "IDC_0461802ej-GSC240",
        "rule": "highest stage that verified",
        "candidates": [
            {"stage": "pipeline", "wcsname": "IDC_0461802ej", "verdict": "ok"},
            {"stage": "apriori", "wcsname": "IDC_0461802ej-GSC240", "verdict": "ok", "kept": True},
            {"stage": "aposteriori", "wcsname": None, "verdict": "failed", "kept": False, "reason": "no fit"},
        ]})) == [
        f"{UTC} #1    [verify] decision wcs: chose apriori (WCSNAME IDC_0461802ej-GSC240)",
        "    rule: highest stage that verified",
        "    candidate pipeline: WCSNAME IDC_0461802ej, verification ok",
        "    candidate apriori: WCSNAME IDC_0461802ej-GSC240, verification ok, kept",
        "    candidate aposteriori: WCSNAME None, verification failed, discarded (no fit)",
    ]


def test_verification_stage_and_fit_decisions():
    assert _body(
        ("verify", "", DECISION, {"decision": "apriori_verification", "verified": False, "quality": 3,
                                  "reason": "focus outside the singles' range", "rule": "z within 3 sigma"}),
        ("verify", "", DECISION, {"decision": "apriori_stage", "kept": True, "wcsname": "IDC_x-GSC240",
                                  "reason": "verified"}),
        ("aposteriori", "", DECISION, {"decision": "aposteriori_fit", "chosen_catalog": "GAIAeDR3",
                                       "chosen_method": "relative", "rule": "first valid fit",
                                       "candidates": [{"catalog": "GAIAeDR3", "method": "relative",
                                                       "fit_quality": 1, "rms_mas": 7.891234, "matches": 42,
                                                       "valid": True}]}),
        ("aposteriori", "", DECISION, {"decision": "aposteriori_fit", "chosen_catalog": None,
                                       "reason": "no catalog matched", "rule": "first valid fit",
                                       "candidates": [{"catalog": "GAIAeDR3", "method": "relative",
                                                       "fit_quality": 5, "rms_mas": None, "matches": 0,
                                                       "valid": False}]}),
    ) == [
        f"{UTC} #1    [verify] decision apriori_verification: NOT VERIFIED (quality 3) - "
        "focus outside the singles' range",
        "    rule: z within 3 sigma",
        f"{UTC} #2    [verify] decision apriori_stage: KEPT (WCSNAME IDC_x-GSC240) - verified",
        f"{UTC} #3    [aposteriori] decision aposteriori_fit: chose GAIAeDR3 (relative fit)",
        "    rule: first valid fit",
        "    candidate GAIAeDR3 relative: quality 1, rms 7.89123 mas, 42 matches, valid",
        f"{UTC} #4    [aposteriori] decision aposteriori_fit: no fit chosen - no catalog matched",
        "    rule: first valid fit",
        "    candidate GAIAeDR3 relative: quality 5, rms None mas, 0 matches, not valid",
    ]


def test_candidate_fits_and_focus_verification():
    assert _body(
        ("aposteriori", "fit", CANDIDATE, {"catalog": "GAIAeDR3", "method": "relative", "fit_quality": 1,
                                           "rms_mas": 7.891, "matches": 42, "reference_sources": 120,
                                           "valid": True,
                                           "exposures": {"j2_flc.fits": {"status": "SUCCESS", "nmatches": 20,
                                                                         "fit_rms_mas": 8.0},
                                                         "j1_flc.fits": {"status": "SUCCESS", "nmatches": 22,
                                                                         "fit_rms_mas": 7.5}}}),
        ("aposteriori", "fit", CANDIDATE, {"catalog": "GSC242", "method": "match", "rms_mas": None,
                                           "reason": "too few sources"}),
        ("verify", "", VERIFICATION, {"check": "focus", "verdict": "ok", "product": "j_drc.fits",
                                      "product_focus": 0.81234567, "product_z": -0.5, "z_min": -3.0,
                                      "z_max": 3.0, "singles": ["a_sx2.fits"], "single_focus": [0.9],
                                      "single_z": [0.25], "mean": 0.85, "std": 0.1, "rule": "|z| <= 3"}),
        ("verify", "", VERIFICATION, {"check": "guiding", "guiding": "bad", "file": "j1_flc.fits",
                                      "reason": "streaked stars"}),
    ) == [
        f"{UTC} #1    [aposteriori/fit] candidate fit GAIAeDR3 (relative): quality 1, rms 7.89 mas, "
        "42 matches of 120 reference sources, valid",
        "    j1_flc.fits: SUCCESS, 22 matches, fit rms 7.5 mas",
        "    j2_flc.fits: SUCCESS, 20 matches, fit rms 8 mas",
        f"{UTC} #2    [aposteriori/fit] candidate fit GSC242 (match): not valid - too few sources",
        f"{UTC} #3    [verify] verification focus: OK  product j_drc.fits",
        "    product focus index 0.812346 (z = -0.500); accepted z range [-3.000, +3.000]",
        "    single a_sx2.fits: focus index 0.9 (z = +0.250)",
        "    singles mean 0.85, std 0.1; rule: |z| <= 3",
        f"{UTC} #4    [verify] verification guiding: BAD  j1_flc.fits",
        "    reason: streaked stars",
    ]


def test_unknown_shapes_reach_the_trailer_in_full():
    """An unknown kind, or a known kind missing a field, is rendered as its kind and every field."""
    assert _body(
        ("final", "", "something.new", {"b": [1, 2], "a": "x"}),
        ("verify", "", DECISION, {"decision": "wcs_verification", "verified": True}),
    ) == [
        f"{UTC} #1    [final] something.new",
        "    a: x",
        "    b: [1, 2]",
        f"{UTC} #2    [verify] decision",
        "    decision: wcs_verification",
        "    verified: True",
    ]


def test_same_events_same_bytes():
    events = _events(("init", "read", STEP_STARTED, {}), ("init", "read", STEP_COMPLETED, {"n": 1.5}))
    assert render_trailer(RUN, events) == render_trailer(RUN, list(events))
    assert render_trailer(RUN, []) == "\n".join(HEAD) + "\n"
