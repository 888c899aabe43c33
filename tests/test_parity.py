"""Parity with drizzlepac's runastrodriz on simulated associations (``benchmarks/parity.py``).

Each parity case runs both pipelines on the 512x512 subarray (runastrodriz alone takes about 45 s)
and asserts, through `parity.parity_problems`: the same final WCSNAME on every exposure and product,
the same stages kept, SCI arrays equal within 1e-4 relative where the WCS is the same, and an error
against the truth no worse than runastrodriz's + 0.5 mas. The harness's reading of runastrodriz's
stage verdicts from its output is checked on made-up output too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import parity  # after the path: the harness lives with the benchmarks, not in the package

# The common case (a priori then a GAIAeDR3 fit kept, FLT and FLC) and the catalog fallback
# (GAIAeDR3 empty in the field, the fit made on GSC242).
PARITY_CASES = ("pointing", "sparse")
# Generous: a hung child is killed rather than holding the suite; no assertion is made on time.
RUN_TIMEOUT_S = 1800


def _runastrodriz_output(apriori: list[str], aposteriori: list[str]) -> list[tuple[float, str]]:
    """Lines as runastrodriz prints them: its stage headings, each followed by a stage's lines."""
    headings = dict(parity.bench.RUNASTRODRIZ_PHASES)
    text = [headings["default"], parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE,
            headings["apriori"], *apriori, headings["aposteriori"], *aposteriori, headings["final"]]
    return [(float(i), f"[INFO    ] {t}" if t.startswith(("Alignment", "Verification", "Could")) else t)
            for i, t in enumerate(text)]


def _fit_table(catalog_sources: int, matches: int) -> list[str]:
    # perform_align prints its filtered table with pprint(max_width=-1), which pformat reproduces.
    table = Table({"imageName": ["jsm001a1q_flc.fits"], "fit_method": ["relative"], "catalog": ["GAIAeDR3"],
                   "catalogSources": [catalog_sources], "matchSources": [matches]})
    return table.pformat(max_width=-1)


@pytest.mark.parametrize("apriori, aposteriori, expected", [
    # Overlap verified in both; 102 of 213 matched is no borderline fit.
    ([parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE],
     [*_fit_table(213, 102), parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE], ("kept", "kept")),
    # Overlap not verified; no fit at all.
    ([parity.OVERLAP_NOT_VERIFIED, parity.VERIFICATION_DONE],
     ["Could not align jsm001a1q_flc.fits to absolute astrometric frame"], ("discarded", "discarded")),
    # An exception before the verification ended; 5 matches: the debug-only focus check decides.
    ([], [*_fit_table(213, 5), parity.OVERLAP_VERIFIED, parity.VERIFICATION_DONE],
     ("discarded", "undetermined")),
    # One exposure: no overlap check, verified; an exception inside align.
    ([parity.VERIFICATION_DONE], ["EXCEPTION encountered in align..."], ("kept", "discarded")),
])
def test_runastrodriz_verdicts_are_read_from_its_info_output(apriori, aposteriori, expected):
    found = parity.runastrodriz_stages(_runastrodriz_output(apriori, aposteriori))
    assert found["stages"] == {"default": "run", "apriori": expected[0], "aposteriori": expected[1],
                               "final": "run"}


@pytest.mark.parametrize("name", PARITY_CASES)
def test_astrodriz_sm_hands_back_what_runastrodriz_does(name, tmp_path):
    result = parity.run_case(parity.CASES[name], tmp_path, timeout=RUN_TIMEOUT_S)
    assert parity.parity_problems(result) == [], parity.case_report(result)
