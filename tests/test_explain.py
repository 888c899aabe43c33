"""``astrodriz-sm explain``: candidate WCSs, the chosen one and its rule, from the events alone."""

from __future__ import annotations

import json

import pytest

from astrodriz_sm.model import Exposure, ExposureSet, Inputs
from astrodriz_sm.statemachine import FIT_RULE, choose_final_wcs, choose_fit, fold, verify_stage
from astrodriz_sm.store.eventstore import EventStore
from astrodriz_sm.views.explain import explain, render_explain

from .conftest import run_cli

ROOT = "jsm001010"
FILES = ["jsm001a1q_flt.fits", "jsm001a2q_flt.fits"]
DEFAULT = "IDC_sm00001aj"
APRIORI = "IDC_sm00001aj-GSC240"
KEPT = "alignment verified: overlap_similarity pass"
FOCUS_RULE = "pass when the product's z-score lies within [z_min, z_max] and std <= min(single focus)"


def _focus(verdict):
    return {"check": "focus", "verdict": verdict, "product": f"{ROOT}_drz.fits", "sigma": 1.5,
            "product_focus": 10.2, "product_z": -0.49 if verdict == "pass" else -11.0,
            "single_focus": [10.5, 10.0], "single_z": [0.74, -1.41],
            "singles": ["jsm001a1q_single_sci.fits", "jsm001a2q_single_sci.fits"], "mean": 10.3,
            "std": 0.24, "z_min": -8.75, "z_max": 3.0, "product_position": [350, 163], "rule": FOCUS_RULE}


def _overlap(verdict):
    return {"check": "overlap_similarity", "verdict": verdict, "product": f"{ROOT}_drz.fits",
            "max_distance": 0.06 if verdict == "pass" else 1.7, "limit": 1.0, "singles": {},
            "rule": "pass when the largest per-exposure distance (min of Hamming and MSE variants) <= 1"}


def _similarity(verdict):
    return {"check": "similarity_to_default", "verdict": verdict, "product": f"{ROOT}_drz.fits",
            "similarity_index": 2e-05, "limit": 1.0,
            "rule": "pass when the similarity index to the pipeline-default product is at most 1"}


def _fit(catalog, quality, rms, matches, per_chip):
    """A candidate event payload as ``handlers.alignment._fit_candidate`` writes it (two chips each)."""
    return {"catalog": catalog, "method": "relative", "fit_quality": quality, "rms_mas": rms,
            "matches": matches, "reference_sources": 180, "valid": quality in (1, 2, 3, 4),
            "exposures": {f"{name}[{chip}]": {"status": "SUCCESS", "nmatches": n, "fit_rms_mas": r}
                          for name, (n, r) in zip(FILES, per_chip) for chip in (1, 2)}}


class _Log:
    """Appends a run's events the way the runner and the handlers do."""

    def __init__(self, store, **config):
        self.store = store
        self.run_id = store.create_run(f"/data/{ROOT}_asn.fits", ROOT, run_id=f"{ROOT}-test")
        cfg = {"input": f"/data/{ROOT}_asn.fits", "root": ROOT, "run_dir": "/data", "newpath": None,
               "force": False, "inmemory": False, "basic": False, "num_cores": None, "debug": False,
               "apply_apriori": True, "compute_aposteriori": True, "environment": {}, "notes": []}
        cfg.update(config)
        store.append(self.run_id, "init", "", "run.started", {"config": cfg, "version": "0.1.0"})

    def step(self, stage, step, payload=None, emits=()):
        self.store.append(self.run_id, stage, step, "step.started", {"fingerprint": {}})
        for kind, p in emits:
            self.store.append(self.run_id, stage, step, kind, p)
        self.store.append(self.run_id, stage, step, "step.completed", {"seconds": 0.1, **(payload or {})})

    def transition(self, source, dest, guards=()):
        self.store.append(self.run_id, source, "", "transition",
                          {"trigger": "advance", "from": source, "to": dest, "guards": list(guards)})

    def run(self):
        return fold(self.store.events(self.run_id))


def _inputs():
    """The init payload of an FLT-only ACS/WFC association of FILES."""
    exposures = ExposureSet(tuple(Exposure.from_name(f, instrument="ACS", detector="WFC", exptime=400.0)
                                  for f in FILES))
    return Inputs(root=ROOT, kind="asn", exposures=exposures, drizcorr="PERFORM",
                  drizcorr_file="jsm001a1q_raw.fits").to_payload()


def _guard(name, result, reason):
    return {"guard": name, "result": result, "reason": reason}


def _verify(log, stage, checks):
    log.step(stage, "verify_alignment", {"verdicts": {c["check"]: c["verdict"] for c in checks}},
             emits=[("verification", c) for c in checks] + [("decision", verify_stage(stage, checks, len(FILES)))])


@pytest.fixture
def hand_made_run(tmp_path):
    """A priori discarded on its overlap difference; a posteriori kept with three catalog fits, 2MASS the first of quality 1."""
    log = _Log(EventStore(tmp_path / "astrodriz_sm.db"))
    log.step("init", "resolve_inputs", {"inputs": _inputs(), "environment_update": {}})
    log.transition("init", "default", [_guard("drizcorr_perform", True, "DRIZCORR=PERFORM in jsm001a1q_raw.fits")])
    log.step("default", "updatewcs", {"wcsname": DEFAULT, "wcsnames": {f: [DEFAULT, DEFAULT] for f in FILES}})
    _verify(log, "default", [_focus("fail"), _overlap("pass")])
    log.transition("default", "apriori", [_guard("apriori_possible", True, "ASTROMETRY_APPLY_APRIORI is on")])
    log.step("apriori", "probe_service", {"services": {}, "environment_update": {}})
    log.step("apriori", "updatewcs", {
        "wcsname": APRIORI,
        "exposures": {f: {"wcsnames": [APRIORI, APRIORI], "headerlets": [DEFAULT, APRIORI]} for f in FILES}})
    _verify(log, "apriori", [_focus("pass"), _overlap("fail"), _similarity("pass")])
    discarded = "verification failed: overlap_similarity fail"
    log.step("apriori", "conclude", {"kept": False, "reason": discarded},
             emits=[("decision", {"decision": "apriori_stage", "kept": False, "outcome": "discarded", "reason": discarded,
                                  "directory_removed": True, "wcsname": APRIORI})])
    log.transition("apriori", "aposteriori",
                   [_guard("aposteriori_possible", True, "ASTROMETRY_COMPUTE_APOSTERIORI is on")])
    log.step("aposteriori", "probe_service", {"services": {}, "environment_update": {}})
    fits = [{"catalog": "GAIAeDR3", "method": "relative", "fit_quality": 5, "valid": False,
             "reference_sources": 2, "reason": "only 2 reference sources (< 3)"},
            _fit("GSC242", 2, 6.5, 80, [(41, 6.5), (39, 6.5)]),
            _fit("2MASS", 1, 14.25, 78, [(40, 14.25), (38, 14.25)])]
    chosen = f"{DEFAULT}-FIT_REL_2MASS"
    # As the runner records it: the fit rule on the candidates.
    decision = choose_fit(fits, 150, default_wcsname=DEFAULT)
    assert (decision["chosen_catalog"], decision["chosen_wcsname"]) == ("2MASS", chosen)
    log.step("aposteriori", "align",
             {"catalogs": ["GAIAeDR3", "GSC242", "2MASS"], "methods": ["relative", "2dhist", "default"],
              "chosen_catalog": "2MASS", "chosen_method": "relative", "rms_mas": 14.25, "matches": 78, "wcsname": chosen,
              "exposures": {f: {"wcsnames": [chosen, chosen], "headerlets": [DEFAULT, chosen]} for f in FILES}},
             emits=[("candidate", c) for c in fits] + [("decision", decision)])
    _verify(log, "aposteriori", [_focus("pass"), _overlap("pass"), _similarity("pass")])
    log.step("aposteriori", "conclude", {"kept": True, "reason": KEPT},
             emits=[("decision", {"decision": "aposteriori_stage", "kept": True, "outcome": "kept", "reason": KEPT,
                                  "directory_removed": False, "wcsname": chosen})])
    log.transition("aposteriori", "final")
    wcs = choose_final_wcs(log.run())
    log.step("final", "choose_wcs", {"chosen_stage": wcs["chosen_stage"], "chosen_wcsname": wcs["chosen_wcsname"]},
             emits=[("decision", wcs)])
    log.transition("final", "done")
    log.store.append(log.run_id, "done", "", "run.ended",
                     {"status": "done", "exit_code": 0, "reason": None, "products": [f"{ROOT}_drz.fits"]})
    return log.run()


def _candidate(stage, wcsname, source, verdicts, applied=True, chosen=False, reason=None, **fit):
    out = {"stage": stage, "wcsname": wcsname, "source": source, "catalog": None, "method": None,
           "fit_quality": None, "valid": None, "fit_file": None, "matches": None, "rms_mas": None,
           "verdicts": dict(zip(("focus", "overlap_similarity", "similarity_to_default"), verdicts)),
           "applied": applied, "chosen": chosen, "reason": reason}
    out.update(fit)
    return out


def test_explain_names_every_candidate_the_chosen_fit_and_every_reason(hand_made_run):
    doc = explain(hand_made_run)
    none = (None, None, None)
    assert doc["run_id"] == f"{ROOT}-test" and doc["status"] == "done"
    assert doc["chosen"] == {"stage": "aposteriori", "wcsname": f"{DEFAULT}-FIT_REL_2MASS", "catalog": "2MASS"}
    assert doc["rule"].startswith("the most refined stage whose alignment was verified and kept")
    assert doc["fit_rule"] == FIT_RULE
    assert doc["stages"] == [
        {"stage": "default", "entered": True, "outcome": "default",
         "reason": "pipeline-default WCS (updatewcs without the astrometry database), the fallback when no "
                   "alignment stage is kept; verification: focus fail, overlap_similarity pass"},
        {"stage": "apriori", "entered": True, "outcome": "discarded",
         "reason": "verification failed: overlap_similarity fail"},
        {"stage": "aposteriori", "entered": True, "outcome": "kept", "reason": KEPT},
    ]
    assert doc["aposteriori_fits"] == [
        {"catalog": "GAIAeDR3", "method": "relative", "fit_quality": 5, "valid": False, "rms_mas": None,
         "matches": None, "reference_sources": 2, "reason": "only 2 reference sources (< 3)", "chosen": False},
        {"catalog": "GSC242", "method": "relative", "fit_quality": 2, "valid": True, "rms_mas": 6.5,
         "matches": 80, "reference_sources": 180, "reason": None, "chosen": False},
        {"catalog": "2MASS", "method": "relative", "fit_quality": 1, "valid": True, "rms_mas": 14.25,
         "matches": 78, "reference_sources": 180, "reason": None, "chosen": True},
    ]
    assert list(doc["exposures"]) == FILES
    fit = {"method": "relative", "valid": True}
    assert doc["exposures"]["jsm001a2q_flt.fits"] == [
        _candidate("default", DEFAULT, "pipeline default", ("fail", "pass", None),
                   reason="the more refined a posteriori stage was kept"),
        _candidate("apriori", APRIORI, "astrometry database", ("pass", "fail", "pass"),
                   reason="a priori stage discarded: verification failed: overlap_similarity fail"),
        _candidate("aposteriori", f"{DEFAULT}-FIT_REL_GAIAeDR3", "fit to GAIAeDR3", none, applied=False,
                   catalog="GAIAeDR3", method="relative", fit_quality=5, valid=False,
                   reason="not a valid fit: only 2 reference sources (< 3)"),
        _candidate("aposteriori", f"{DEFAULT}-FIT_REL_GSC242", "fit to GSC242", none, applied=False,
                   catalog="GSC242", fit_file="jsm001a2q_flt.fits", matches=39, rms_mas=6.5, fit_quality=2,
                   reason="valid (quality 2), but the rule chose the 2MASS relative fit (quality 1)", **fit),
        _candidate("aposteriori", f"{DEFAULT}-FIT_REL_2MASS", "fit to 2MASS", ("pass", "pass", "pass"),
                   chosen=True, catalog="2MASS", fit_file="jsm001a2q_flt.fits", matches=38, rms_mas=14.25,
                   fit_quality=1, reason="a posteriori stage kept, with the fit drizzlepac's rule chose", **fit),
    ]
    first = doc["exposures"]["jsm001a1q_flt.fits"]
    assert [(c["catalog"], c["matches"], c["rms_mas"]) for c in first[2:]] == [
        ("GAIAeDR3", None, None), ("GSC242", 41, 6.5), ("2MASS", 40, 14.25)]
    assert [c["chosen"] for c in first] == [False, False, False, False, True]
    json.dumps(doc, allow_nan=False)  # one plain JSON document

    text = render_explain(doc)
    marked = [ln for ln in text.splitlines() if ln.lstrip().startswith("*")]
    assert len(marked) == 3  # one per exposure, and the chosen row of the fits table
    assert all(f"{DEFAULT}-FIT_REL_2MASS" in ln and "14.25" in ln for ln in marked[:2])
    assert marked[2].split()[:2] == ["*", "2MASS"]
    assert "apriori      discarded  verification failed: overlap_similarity fail" in text
    assert f"chosen WCS: {DEFAULT}-FIT_REL_2MASS (aposteriori stage, catalog 2MASS)" in text


def test_explain_of_an_unfinished_run_says_what_has_not_happened(tmp_path):
    log = _Log(EventStore(tmp_path / "astrodriz_sm.db"), apply_apriori=False)
    log.step("init", "resolve_inputs", {"inputs": _inputs()})
    log.transition("init", "default", [_guard("drizcorr_perform", True, "DRIZCORR=PERFORM")])
    log.step("default", "updatewcs", {"wcsname": DEFAULT, "wcsnames": {f: [DEFAULT] for f in FILES}})
    log.store.append(log.run_id, "default", "astrodrizzle", "step.started", {})
    doc = explain(log.run())
    assert doc["status"] == "unfinished"
    assert doc["chosen"] == {"stage": None, "wcsname": None, "catalog": None} and doc["rule"] is None
    assert [(s["outcome"], s["reason"]) for s in doc["stages"]] == [
        ("incomplete", "the stage has not finished: the run is unfinished"),
        ("not run", "not reached: the run is unfinished"),
        ("not run", "not reached: the run is unfinished")]
    assert [[c["stage"] for c in cands] for cands in doc["exposures"].values()] == [["default"], ["default"]]
    assert "chosen WCS: none yet" in render_explain(doc)


# --- end to end, against the local astrometry service ---------------------------------------------


def _processed(simulated, service, name, env=()):
    src, d = simulated(name, products="flt", pointing_error=0.6)
    handle = service(src)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **handle.environment, **dict(env)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / "astrodriz_sm.db")
    return d, fold(store.events(store.latest_run()["run_id"]))


def _explain_json(d):
    proc = run_cli("explain", "--json", cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_explain_of_a_real_run_shows_the_first_quality_1_fit_chosen(simulated, service, tmp_path):
    d, run = _processed(simulated, service, "aligned")
    doc = _explain_json(d)
    wcs = next(p for p in run.decisions if p["decision"] == "wcs")
    assert doc["run_id"] == run.run_id and doc["status"] == "done"
    assert doc["chosen"]["stage"] == wcs["chosen_stage"] == "aposteriori"
    # GAIAeDR3 fits the simulated field at quality 1 with the relative fit: the search ends there.
    assert [(f["catalog"], f["method"], f["fit_quality"], f["chosen"]) for f in doc["aposteriori_fits"]] == [
        ("GAIAeDR3", "relative", 1, True)]
    assert doc["fit_rule"] == FIT_RULE
    assert len(doc["exposures"]) == 3
    for name, cands in doc["exposures"].items():
        assert [c["stage"] for c in cands] == ["default", "apriori", "aposteriori"], name
        assert [c["catalog"] for c in cands[2:]] == ["GAIAeDR3"]
        chosen = [c for c in cands if c["chosen"]]
        assert len(chosen) == 1, name
        assert (chosen[0]["stage"], chosen[0]["wcsname"]) == (wcs["chosen_stage"], wcs["chosen_wcsname"])
        assert chosen[0]["catalog"] == "GAIAeDR3" and chosen[0]["rms_mas"] < 10
        assert chosen[0]["verdicts"]["overlap_similarity"] == "pass"
    assert [s["outcome"] for s in doc["stages"]] == ["default", "kept", "kept"]

    proc = run_cli("explain", cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    marked = [ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("*")]
    assert sum(wcs["chosen_wcsname"] in ln for ln in marked) == 3, proc.stdout

    # The log alone explains the run: without a single FITS file the answer is the same.
    for path in d.rglob("*.fits"):
        path.unlink()
    assert _explain_json(d) == doc

    proc = run_cli("explain", "no-such-run", cwd=d)
    assert proc.returncode == 7
    assert proc.stderr.strip().splitlines() == [(
        f"astrodriz-sm: error: {d / 'astrodriz_sm.db'}: no run, rootname or input file named 'no-such-run' "
        f"(it holds 1 run, of {ROOT})")]
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("explain", cwd=empty)
    assert proc.returncode == 7 and len(proc.stderr.strip().splitlines()) == 1
    assert not (empty / "astrodriz_sm.db").exists()


def test_explain_shows_aposteriori_not_run_when_switched_off(simulated, service):
    d, run = _processed(simulated, service, "aligned", env={"ASTROMETRY_COMPUTE_APOSTERIORI": "off"})
    doc = _explain_json(d)
    assert doc["stages"][2] == {"stage": "aposteriori", "entered": False, "outcome": "not run",
                                "reason": "ASTROMETRY_COMPUTE_APOSTERIORI is off"}
    assert doc["aposteriori_fits"] == [] and doc["fit_rule"] is None
    wcs = next(p for p in run.decisions if p["decision"] == "wcs")
    assert doc["chosen"] == {"stage": "apriori", "wcsname": wcs["chosen_wcsname"], "catalog": None}
    for cands in doc["exposures"].values():
        assert [c["stage"] for c in cands] == ["default", "apriori"]
        assert [c["chosen"] for c in cands] == [False, True]
        assert cands[1]["wcsname"] == wcs["chosen_wcsname"]
    proc = run_cli("explain", cwd=d)
    assert "aposteriori  not run  ASTROMETRY_COMPUTE_APOSTERIORI is off" in proc.stdout
