"""AstroDrizzle's parameters as runastrodriz 3.11 sets them, for each kind of drizzle (none is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from astrodriz_sm.config import RunConfig
from astrodriz_sm.handlers.common import StepContext
from astrodriz_sm.handlers.drizzle import PIPELINE_PARS, drizzle_parameters, no_cr_parameters
from astrodriz_sm.model import Inputs, RunLayout
from astrodriz_sm.model.exposures import Exposure, ExposureSet, Product
from astrodriz_sm.statemachine.state import RunState

ROOT = "jsm001010"
DEFAULTS = "AstroDrizzle defaults (no MDRIZTAB in the header)"


def _context(stage: str, plan: dict, detector: str = "SBC", num_cores: int | None = 2, inmemory=False,
             instrument: str = "ACS"):
    exposures = tuple(Exposure(r, "flt", instrument, detector, t)
                      for r, t in (("jsm001a1q", 100.0), ("jsm001a2q", 300.0)))
    inputs = Inputs(root=ROOT, kind="asn", exposures=ExposureSet(exposures, ()))
    config = RunConfig(input=f"/x/{ROOT}_asn.fits", run_dir="/x", num_cores=num_cores, inmemory=inmemory)
    ctx = StepContext(run=RunState(inputs=inputs), config=config, stage=stage, step="astrodrizzle",
                      layout=RunLayout(ROOT, Path(f"/x/{ROOT}_asn.fits")),
                      decisions={f"{stage}_drizzle": {"no_cr_parameters": False, "median_combine": {},
                                                      **plan}})
    return ctx, Product(ROOT, exposures)


def test_no_cr_parameters_are_reset_mdriztab_nocr():
    """runastrodriz 3.11's reset_mdriztab_nocr (RA 1049-1062), skysub left as it was."""
    assert no_cr_parameters(512) == {
        "mdriztab": False, "build": True, "resetbits": 0, "static": False, "driz_separate": True,
        "driz_sep_bits": 512, "driz_sep_fillval": 0.0, "median": False, "blot": False, "driz_cr": False,
        "final_fillval": "INDEF"}


def test_final_products_honour_inmemory_and_clean_up():
    ctx, product = _context("final", {"parameters": "final"}, inmemory=True)
    assert drizzle_parameters(ctx, product, final=True) == {"source": DEFAULTS, "parameters": {
        **PIPELINE_PARS, "mdriztab": False, "resetbits": 4096, "crbit": 4096, "num_cores": 2,
        "in_memory": True, "clean": True}}
    assert PIPELINE_PARS == {"stepsize": 10, "preserve": False, "build": True}


def test_a_default_stage_with_no_alignment_after_it_drizzles_as_the_final_stage_keeping_its_files():
    ctx, product = _context("default", {"parameters": "final"}, num_cores=None)
    assert drizzle_parameters(ctx, product, final=False)["parameters"] == {
        "stepsize": 10, "preserve": False, "build": True, "mdriztab": False, "resetbits": 4096, "crbit": 4096,
        "num_cores": None, "in_memory": False, "clean": False}


VERIFICATION = {"stepsize": 10, "preserve": False, "build": True, "mdriztab": False, "crbit": 4096,
                "num_cores": 2, "in_memory": False, "clean": False, "final_fillval": "INDEF",
                "driz_sep_kernel": "turbo", "driz_sep_fillval": 0.0, "resetbits": 0}


def test_verification_drizzles_with_a_median_when_exptimes_differ():
    """RA 576-593: INDEF fill, turbo single drizzles, resetbits 0; median when EXPTIMEs differ by > 2."""
    ctx, product = _context("default", {"parameters": "verification",
                                        "median_combine": {f"{ROOT}_drz.fits": True}})
    assert drizzle_parameters(ctx, product, final=False) == {
        "source": DEFAULTS, "parameters": {**VERIFICATION, "combine_type": "median", "combine_nhigh": 0}}


@pytest.mark.parametrize(("stage", "detector", "good_bits"),
                         [("apriori", "SBC", 0), ("aposteriori", "WFC", 1360), ("default", "WFC", 512)])
def test_an_alignment_that_was_verified_is_drizzled_without_new_cosmic_rays(stage, detector, good_bits):
    """The detector's good_bits in an alignment stage; verify_alignment's default, 512, in the default one."""
    ctx, product = _context(stage, {"parameters": "verification", "no_cr_parameters": True},
                            detector=detector)
    assert drizzle_parameters(ctx, product, final=False) == {
        "source": DEFAULTS + "; no new cosmic-ray identification (the alignment it starts from was verified)",
        "parameters": {**VERIFICATION, **no_cr_parameters(good_bits)}}


WFPC2 = "drizzlepac's WFPC2 parameters (config_utils.get_wfpc2_pars)"


@pytest.mark.parametrize("final", [True, False])
def test_wfpc2_drizzles_with_drizzlepacs_parameters_and_verification_settings_every_time(final):
    """RA 579, 746-748: every WFPC2 drizzle, the final one too, with the verification settings; no runfile."""
    plan = {"parameters": "final" if final else "verification", "median_combine": {f"{ROOT}_drw.fits": True}}
    ctx, product = _context("final" if final else "default", plan, instrument="WFPC2", detector="PC")
    result = drizzle_parameters(ctx, product, final=final)
    assert result["source"] == WFPC2
    pars = result["parameters"]
    assert "runfile" not in pars
    assert {k: pars[k] for k in ("final_fillval", "driz_sep_kernel", "driz_sep_fillval", "resetbits",
                                 "mdriztab", "crbit", "stepsize", "preserve", "build", "num_cores",
                                 "in_memory", "clean", "combine_type", "combine_nhigh")} == {
        "final_fillval": "INDEF", "driz_sep_kernel": "turbo", "driz_sep_fillval": 0.0, "resetbits": 0,
        "mdriztab": False, "crbit": 4096, "stepsize": 10, "preserve": False, "build": True, "num_cores": 2,
        "in_memory": False, "clean": final, "combine_type": "median", "combine_nhigh": 0}
    # What drizzlepac 3.11's svm configuration for WFPC2/PC gives, untouched.
    assert {k: pars[k] for k in ("driz_sep_bits", "final_bits", "skysub", "final_units", "driz_cr")} == {
        "driz_sep_bits": "1024", "final_bits": "65533", "skysub": False, "final_units": "cps",
        "driz_cr": False}
