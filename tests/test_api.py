"""The Python API: ``astrodriz_sm.process`` as runastrodriz users call ``runastrodriz.process``."""

from __future__ import annotations

import logging
import os

import astrodriz_sm
from astrodriz_sm import api, runner
from astrodriz_sm.config import RECORDED_VARIABLES
from astrodriz_sm.crashtest import start_and_kill

from .conftest import NO_ALIGNMENT

ROOT = "jsm001010"


def _caller_state():
    from drizzlepac.haputils import astrometric_utils as amutils

    root = logging.getLogger()
    return {"environ": dict(os.environ), "cwd": os.getcwd(), "root handlers": list(root.handlers),
            "root level": root.level, "SERVICELOCATION": amutils.SERVICELOCATION}


def test_process_twice_with_different_environ_leaves_the_caller_as_it_was(simulated, service, monkeypatch):
    # Whatever the caller's shell records (jref/iref/uref, CRDS, the switches) would join each run's record.
    for name in RECORDED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    src, aligned = simulated("api-aligned", products="flt", pointing_error=0.6)
    _, plain = simulated("api-plain", products="flt", n_exposures=2)
    handle = service(src)
    before = _caller_state()

    first = astrodriz_sm.process(aligned / f"{ROOT}_asn.fits", console=False,
                                 environ={**os.environ, "jref": f"{aligned}/", **handle.environment})
    assert _caller_state() == before
    second = astrodriz_sm.process(plain / f"{ROOT}_asn.fits", num_cores=1, console=False,
                                  environ={**os.environ, "jref": f"{plain}/", **NO_ALIGNMENT})
    assert _caller_state() == before

    assert (first.status, first.exit_code, first.reason) == ("done", 0, None)
    assert first.wcsname == "IDC_sm00001aj-FIT_REL_GAIAeDR3"
    assert first.products == (aligned / f"{ROOT}_drz.fits",) and first.products[0].is_file()
    assert first.trailer == aligned / f"{ROOT}.tra" and first.store == aligned / api.STORE_NAME
    assert (second.status, second.wcsname) == ("done", "IDC_sm00001aj")
    # Each run recorded its own environment.
    recorded = [api.status(r.run_id, store=r.store)[0][1].config["environment"] for r in (first, second)]
    assert recorded[0]["jref"] == f"{aligned}/" and recorded[0]["ASTROMETRIC_CATALOG_URL"] == handle.environment["ASTROMETRIC_CATALOG_URL"]
    assert recorded[1] == {"jref": f"{plain}/", **NO_ALIGNMENT}
    assert astrodriz_sm.replay(second.run_id, store=second.store) == second.trailer.read_text()
    doc = astrodriz_sm.explain(first.run_id, store=first.store)
    assert doc["chosen"] == {"stage": "aposteriori", "wcsname": first.wcsname, "catalog": "GAIAeDR3"}


def test_a_resume_by_another_version_redoes_the_stage_with_the_reason(simulated, monkeypatch):
    _, d = simulated("api-version", products="flt", n_exposures=2)
    env = {**os.environ, "jref": f"{d}/", **NO_ALIGNMENT}
    assert start_and_kill(d / f"{ROOT}_asn.fits", env, ("default/verify_alignment", "step.started", 0.0))
    monkeypatch.setattr(runner, "VERSION", f"{runner.VERSION}+other")
    result = astrodriz_sm.resume(store=d / api.STORE_NAME, environ=env, console=False)
    assert result.status == "done"
    run = api.status(result.run_id, store=result.store)[0][1]
    assert [(i["stage"], i["step"], i["reason"]) for i in run.invalidations] == [
        ("default", step, "fingerprint of default/stage_inputs changed (astrodriz_sm)")
        for step in ("stage_inputs", "updatewcs", "astrodrizzle")]
    assert run.fingerprints[("default", "astrodrizzle")]["astrodriz_sm"] == f"{runner.VERSION}"
