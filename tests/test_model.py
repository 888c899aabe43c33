"""The model: exposures, products, inputs, the detector table and the step table."""

from __future__ import annotations

from pathlib import Path

import pytest

from astrodriz_sm.handlers import HANDLERS
from astrodriz_sm.model import (
    DETECTORS,
    STEPS,
    Exposure,
    ExposureSet,
    Inputs,
    STORE_NAME,
    Product,
    RunLayout,
    detector_parameters,
    last_step,
    split_input_name,
    stage_steps,
    wcsname_step,
)

ROOT = "ie6d07030"
MEMBERS = ("ie6d07ujq", "ie6d07uqq")


def _set(kinds=("flt", "flc")):
    lists = {k: tuple(Exposure(m, k, "WFC3", "UVIS", 350.0) for m in MEMBERS) if k in kinds else ()
             for k in ("flt", "flc")}
    return ExposureSet(lists["flt"], lists["flc"])


def test_exposure_names_follow_the_archive():
    e = Exposure.from_name("ie6d07ujq_flc.fits", instrument="WFC3", detector="UVIS", exptime=350.0)
    assert (e.rootname, e.kind, e.name) == ("ie6d07ujq", "flc", "ie6d07ujq_flc.fits")
    assert e.single_sci == "ie6d07ujq_single_sci.fits"
    assert e.headerlet == "ie6d07ujq_flc_hlet.fits"
    assert e.final_headerlet == "ie6d07ujq_flt_hlet.fits"
    assert e.instdet == "WFC3/UVIS"
    with pytest.raises(ValueError, match="is not an _flt or _flc file name"):
        Exposure.from_name("ie6d07ujq_raw.fits")
    with pytest.raises(ValueError, match="exposure kind must be one of"):
        Exposure("ie6d07ujq", "c0m")


@pytest.mark.parametrize("name,expected", [("ie6d07030_ASN.fits", ("asn", "ie6d07030")),
                                           ("j8bt06nyq_raw.fits", ("raw", "j8bt06nyq")),
                                           ("j8bt06nyq_flc.fits", ("flc", "j8bt06nyq")),
                                           ("j8bt06nyq_drz.fits", None), ("notes.txt", None)])
def test_split_input_name(name, expected):
    assert split_input_name(name) == expected


def test_flt_and_flc_lists_verify_and_align_the_flc_list():
    ex = _set()
    assert ex.verified == ex.flc and ex.unverified == ex.flt and ex.has_both
    assert ex.names == [f"{m}_flt.fits" for m in MEMBERS] + [f"{m}_flc.fits" for m in MEMBERS]
    assert [p.name for p in ex.products(ROOT, "default")] == [f"{ROOT}_drz.fits", f"{ROOT}_drc.fits"]
    assert [p.name for p in ex.products(ROOT, "final")] == [f"{ROOT}_drz.fits", f"{ROOT}_drc.fits"]
    assert [p.name for p in ex.products(ROOT, "apriori")] == [f"{ROOT}_drc.fits"]
    assert ex.verified_product(ROOT).name == f"{ROOT}_drc.fits"


@pytest.mark.parametrize("kind,suffix", [("flc", "drc"), ("flt", "drz")])
def test_a_single_list_is_drizzled_verified_and_named_by_its_kind(kind, suffix):
    ex = _set((kind,))
    assert not ex.has_both and ex.unverified == ()
    for stage in ("default", "apriori", "aposteriori", "final"):
        assert [p.name for p in ex.products(ROOT, stage)] == [f"{ROOT}_{suffix}.fits"]
    assert ex.verified_product(ROOT).name == f"{ROOT}_{suffix}.fits"


def test_product_names():
    p = Product(ROOT, _set().flc)
    assert (p.kind, p.suffix, p.name, p.runfile) == ("flc", "drc", f"{ROOT}_drc.fits", f"{ROOT}_drc_astrodrizzle")
    assert p.inputs == [f"{m}_flc.fits" for m in MEMBERS]
    assert p.singles == [f"{m}_single_sci.fits" for m in MEMBERS]


def test_inputs_round_trip_through_their_payload():
    inputs = Inputs(root=ROOT, kind="asn", asn=f"{ROOT}_asn.fits", members=MEMBERS, exposures=_set(),
                    raw=tuple(f"{m}_raw.fits" for m in MEMBERS), drizcorr="PERFORM",
                    drizcorr_file=f"{MEMBERS[0]}_raw.fits", references={"IDCTAB": "iref$2731450pi_idc.fits"},
                    reference_paths={"IDCTAB": "/crds/2731450pi_idc.fits"}, input_hashes={"x": "0" * 64},
                    notes=("a note",))
    payload = inputs.to_payload()
    assert payload["flc"] == [f"{m}_flc.fits" for m in MEMBERS] and payload["trailer"] == f"{ROOT}.tra"
    assert payload["exptimes"] == {n: 350.0 for n in inputs.exposures.names}
    assert Inputs.from_payload(payload) == inputs
    assert inputs.detector_parameters == DETECTORS[("WFC3", "UVIS")]


def test_detector_table():
    ir = detector_parameters("WFC3", "IR")
    assert (ir.focus_sigma, ir.good_bits, ir.reference_variable, ir.instdet) == (2.0, 512, "iref", "WFC3/IR")
    assert detector_parameters("ACS", "SBC").good_bits == 0
    assert {p.reference_variable for (inst, _), p in DETECTORS.items() if inst == "ACS"} == {"jref"}
    wfpc2 = detector_parameters("WFPC2", "PC")
    assert (wfpc2.focus_sigma, wfpc2.good_bits, wfpc2.reference_variable) == (1.5, 1360, "uref")
    assert (wfpc2.good_pixels_keyword, wfpc2.raw_kind) == ("GPIXELS", "d0m")
    assert (ir.good_pixels_keyword, ir.raw_kind) == ("NGOODPIX", "raw")
    with pytest.raises(KeyError):
        detector_parameters("WFPC2", "WF3")


def test_step_table():
    assert [s.step for s in stage_steps("aposteriori")] == [
        "probe_service", "stage_inputs", "align", "astrodrizzle", "verify_alignment", "conclude"]
    assert set(HANDLERS) == {(s.stage, s.step) for s in STEPS}
    assert {(s.stage, s.step) for s in STEPS if s.may_stop} == {
        ("apriori", "probe_service"), ("apriori", "updatewcs"), ("aposteriori", "probe_service"),
        ("aposteriori", "align")}
    assert [wcsname_step(s) for s in ("default", "apriori", "aposteriori")] == ["updatewcs", "updatewcs", "align"]
    assert [last_step(s) for s in ("default", "apriori", "final")] == ["verify_alignment", "conclude", "cleanup"]
    assert {s.step for s in STEPS if s.files_in == "input"} == {"promote", "replace", "write_manifest"}
    assert stage_steps("done") == ()


def test_default_stage_singles_use_verify_alignments_default_good_bits():
    """runastrodriz 3.11's default stage leaves verify_alignment's good_bits at 512; the alignment stages pass the detector's."""
    from astrodriz_sm.model.detectors import detector_parameters

    sbc = detector_parameters("ACS", "SBC")
    assert [sbc.verification_good_bits(s) for s in ("default", "apriori", "aposteriori")] == [512, 0, 0]
    ir = detector_parameters("WFC3", "IR")
    assert [ir.verification_good_bits(s) for s in ("default", "aposteriori")] == [512, 512]


@pytest.mark.parametrize("newpath", [None, "/scratch/node7"])
def test_layout_of_an_association(newpath):
    layout = RunLayout.of({"input": f"/data/{ROOT}_asn.fits", "newpath": newpath}, ROOT)
    work = f"/scratch/node7/{ROOT}" if newpath else "/data"
    assert str(layout.work_dir) == work
    assert [str(p) for p in layout.stage_dirs] == [f"{work}/{ROOT}_{s}" for s in ("default", "apriori",
                                                                                  "aposteriori", "final")]
    # What the run hands back stays beside the input, wherever it works.
    assert [str(p) for p in (layout.input_dir, layout.trailer, layout.manifest, layout.report(), layout.qa_json(),
                             layout.store)] == [
        "/data", f"/data/{ROOT}.tra", f"/data/{ROOT}_manifest.txt", f"/data/{ROOT}_report.html",
        f"/data/{ROOT}_qa.json", f"/data/{STORE_NAME}"]
    assert str(layout.report("/reports")) == f"/reports/{ROOT}_report.html"


@pytest.mark.parametrize("newpath", [None, "/scratch"])
def test_layout_of_a_singleton(newpath):
    root = MEMBERS[0]
    layout = RunLayout.of({"input": f"/data/{root}_flc.fits", "newpath": newpath}, root)
    assert str(layout.stage_dir("default")) == (f"/scratch/{root}/{root}_default" if newpath
                                                else f"/data/{root}_default")
    assert (layout.trailer.name, layout.store.parent.as_posix()) == (f"{root}.tra", "/data")


def test_the_handed_back_list_ends_with_the_trailer_and_holds_the_quality_json():
    layout = RunLayout(ROOT, Path(f"/data/{ROOT}_asn.fits"))
    assert layout.handed_back([f"{ROOT}_drc.fits"], [f"{MEMBERS[0]}_flc.fits"], [f"{MEMBERS[0]}_hlet.fits"],
                              [f"{ROOT}_fit_matches.ecsv"], [f"{MEMBERS[0]}_cal_qa_astrometry_resids.json"]) == (
        f"{ROOT}_drc.fits", f"{MEMBERS[0]}_flc.fits", f"{MEMBERS[0]}_hlet.fits", f"{ROOT}_fit_matches.ecsv",
        f"{MEMBERS[0]}_cal_qa_astrometry_resids.json", f"{ROOT}.tra")
