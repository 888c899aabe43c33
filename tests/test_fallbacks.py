"""Library fallbacks: which log lines count, how the runner records them, and the check over every test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from astrodriz_sm.handlers.common import library_fallbacks
from astrodriz_sm.model import StepResult
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore
from astrodriz_sm.views.explain import explain, render_explain
from astrodriz_sm.views.trailer import render_trailer

from .conftest import STORE_NAME, fallback_warnings
from .test_statemachine import _drive, _inputs, _start

PROJECT = Path(__file__).resolve().parents[1]
# What AstroDrizzle's runfile log says when skypac's skymatch fails with spherical-geometry 1.4.0.
SKY_REVERTED = '[WARNING ] Reverting sky computation to "localmin" from "match'
ASTRODRIZZLE_LOG = f"""\
[INFO    ] 	skymethod :	match
[INFO    ] 'MDRIZSKY' header keyword will represent sky value *computed* from data.
{SKY_REVERTED}
[INFO    ]       - EXT = 'SCI',1   delta(MDRIZSKY) = 49.9766   NEW MDRIZSKY = 49.9766
"""


def test_fallback_lines_are_the_substitutions_not_the_failed_fits():
    text = ASTRODRIZZLE_LOG + textwrap.dedent("""\
        INFO drizzlepac.runastrodriz: Could not align jsm001a1q_flc.fits to any catalog
        WARNING stwcs.wcsutil.altwcs: wcs_from_key: Could not read WCS with key O
        Could not read data quality file jsm001a1q_flt.fits
        INFO drizzlepac: falling back to the default FWHM
        INFO drizzlepac: Background2D failure detected. Using alternative background calculation instead....
        WARNING tweakwcs: MalformedPolygonError in spherical_geometry. Using convex hull instead of multi_union.
        """) + SKY_REVERTED + "\n"
    assert library_fallbacks(text) == [
        SKY_REVERTED,
        "WARNING stwcs.wcsutil.altwcs: wcs_from_key: Could not read WCS with key O",
        "Could not read data quality file jsm001a1q_flt.fits",
        "INFO drizzlepac: falling back to the default FWHM",
        "INFO drizzlepac: Background2D failure detected. Using alternative background calculation instead....",
        "WARNING tweakwcs: MalformedPolygonError in spherical_geometry. Using convex hull instead of multi_union.",
    ]
    assert library_fallbacks("[INFO    ] Couldn't, reverted, fallback, recovering, instead of, using") == []


@pytest.mark.library_fallback(reason="records a sky fallback on purpose")
def test_runner_records_a_fallback_in_a_product_log_as_a_warning(tmp_path):
    store = EventStore(tmp_path / STORE_NAME)
    run_id = _start(store)
    product = {"product": "jsm001010_drz.fits", "inputs": [], "sha256": "0" * 64, "seconds": 1.0,
               "parameter_source": "MDRIZTAB", "parameters": {"skymethod": "match"}, "log": ASTRODRIZZLE_LOG}
    _drive(store, run_id, {("init", "resolve_inputs"): _inputs(),
                           ("default", "astrodrizzle"): StepResult({"products": [product]})})
    events = store.events(run_id)
    run = fold(events)
    assert run.ended["status"] == "done"
    assert run.warnings == [("default", "astrodrizzle", SKY_REVERTED)]
    assert f"WARNING library fallback: {SKY_REVERTED}" in render_trailer(store.get_run(run_id), events)
    doc = explain(run)
    assert doc["library_warnings"] == [{"stage": "default", "step": "astrodrizzle", "message": SKY_REVERTED}]
    assert f"default/astrodrizzle: {SKY_REVERTED}" in render_explain(doc)
    assert fallback_warnings(tmp_path / STORE_NAME) == [f"{run_id} default/astrodrizzle: {SKY_REVERTED}"]


def test_the_check_fails_a_test_whose_store_holds_a_fallback_unless_marked(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_configure, pytest_runtest_call  # noqa\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(f"""\
        import pytest
        from astrodriz_sm.store.eventstore import EventStore

        def _store_with(tmp_path, kind):
            store = EventStore(tmp_path / "{STORE_NAME}")
            run_id = store.create_run("/x/jsm001010_asn.fits", "jsm001010")
            store.append(run_id, "default", "astrodrizzle", kind, {{"message": {SKY_REVERTED!r}}})

        def test_unmarked(tmp_path):
            _store_with(tmp_path, "warning")

        @pytest.mark.library_fallback(reason="provoked")
        def test_marked(tmp_path):
            _store_with(tmp_path, "warning")

        def test_note_is_no_fallback(tmp_path):
            _store_with(tmp_path, "note")
        """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q", "-rA",
                           "-o", "addopts=", "--rootdir", str(tmp_path), "test_inner.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)}, check=False)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED test_inner.py::test_unmarked - Failed: library fallback in a pipeline" in proc.stdout
    # The failure names the store, the run's step and the line.
    assert f"{STORE_NAME}: " in proc.stdout and f" default/astrodrizzle: {SKY_REVERTED}" in proc.stdout
    assert "PASSED test_inner.py::test_marked" in proc.stdout
    assert "PASSED test_inner.py::test_note_is_no_fallback" in proc.stdout
    assert "1 failed, 2 passed" in proc.stdout
