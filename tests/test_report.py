"""The report page in a real browser (headless Chromium), its QA JSON through drizzlepac's reader.

Every number checked here is compared with the one in the run's events, never with a constant.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrodriz_sm.crashtest import start_and_kill
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .browser import open_page
from .conftest import run_cli

ROOT = "jsm001010"
# The figures of a run with an a posteriori fit: timeline, residual vectors, residual histogram, focus,
# overlap and similarity, then one preview per product.
FIGURES_BEFORE_PREVIEWS = 5

# What the page shows, read in the browser after the page has loaded and decoded its images.
PAGE_FACTS = """(async () => {
  await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
  const fact = name => document.querySelector(`[data-fact="${name}"]`);
  return {
    images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
    external: Array.from(document.querySelectorAll("[src],[href]")).map(e => e.getAttribute("src") || e.getAttribute("href"))
      .filter(u => !u.startsWith("data:") && !u.startsWith("#")),
    wcsname: fact("wcsname").textContent,
    chosen_stage: fact("chosen-stage").textContent,
    fit_rms_text: fact("fit-rms") && fact("fit-rms").textContent,
    fit_rms_value: fact("fit-rms") && fact("fit-rms").dataset.value,
    fit_matches: fact("fit-matches") && fact("fit-matches").textContent,
    status: fact("status").textContent, exit_code: fact("exit-code").textContent,
    log_verified: fact("log-verified").textContent,
    marks: Array.from(document.querySelectorAll("[data-mark]")).map(r => ({kind: r.dataset.mark, text: r.textContent})),
    attempts: Array.from(document.querySelectorAll("[data-attempt]")).map(r => ({
      step: r.dataset.attempt, outcome: r.dataset.outcome,
      process: Number(r.children[1].textContent), start: Number(r.children[2].textContent)})),
  };
})()"""


def _run(store_path: Path):
    store = EventStore(store_path, read_only=True)
    run_id = store.latest_run()["run_id"]
    return store, run_id, fold(store.events(run_id))


def _printed(stdout: str, label: str) -> Path:
    """The path a command printed after ``label``."""
    m = re.search(rf"^{label}\s+(\S+)$", stdout, re.MULTILINE)
    assert m, f"no '{label}' line in:\n{stdout}"
    return Path(m.group(1))


def _show(html: Path) -> dict:
    """Load the page in headless Chromium; fail on any console error or image that did not decode."""
    with open_page(html.resolve().as_uri()) as page:
        shown = page.evaluate(PAGE_FACTS)
        errors = page.errors()
    assert errors == []
    assert shown["external"] == []  # self-contained: nothing to fetch
    assert shown["images"] and all(i["complete"] and i["width"] > 0 for i in shown["images"]), shown["images"]
    return shown


def test_browser_check_sees_console_errors_and_broken_images(tmp_path):
    """The page check itself: a page with a broken image and a console error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><img src="data:image/png;base64,AAAA" alt="broken">'
                   '<script>console.error("boom")</script>')
    with open_page(bad.as_uri()) as page:
        images = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        errors = page.errors()
    assert images == [0]
    assert any("boom" in e for e in errors)


def test_demo_report_in_a_browser_shows_the_logged_wcsname_and_fit_rms(tmp_path):
    proc = run_cli("-q", "demo", "--workdir", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html, qa_path = _printed(proc.stdout, "report"), _printed(proc.stdout, "qa json")
    data = tmp_path / "demo" / "data"
    assert html == data / f"{ROOT}_report.html" and qa_path == data / f"{ROOT}_qa.json"
    _, run_id, run = _run(data / "astrodriz_sm.db")
    wcs = run.decision("wcs")
    align = run.output("aposteriori", "align")
    products = run.ended["products"]

    shown = _show(html)
    assert shown["wcsname"] == wcs["chosen_wcsname"]
    assert shown["chosen_stage"] == wcs["chosen_stage"] == "aposteriori"
    assert float(shown["fit_rms_value"]) == align["rms_mas"]
    assert shown["fit_rms_text"] == f"{align['rms_mas']:.2f} mas"
    assert int(shown["fit_matches"]) == align["matches"]
    assert (shown["status"], int(shown["exit_code"])) == (run.ended["status"], run.ended["exit_code"])
    assert shown["log_verified"] == "verifies"
    assert len(shown["images"]) == FIGURES_BEFORE_PREVIEWS + len(products)
    assert shown["marks"] == []  # one process: no crash, no resume

    # The matched pairs: handed back beside the products, with the sha256 the align step recorded,
    # and their separations give the fit RMS drizzlepac reported.
    record = align["fit_matches"]
    pairs_file = data / record["file"]
    assert hashlib.sha256(pairs_file.read_bytes()).hexdigest() == record["sha256"]
    pairs = Table.read(pairs_file, format="ascii.ecsv")
    kept = pairs[pairs["fitted"]]
    assert len(pairs) == record["pairs"] and len(kept) == record["fitted_pairs"] > 10
    assert np.std(np.hypot(kept["dra_mas"], kept["ddec_mas"])) == pytest.approx(align["rms_mas"], rel=1e-4)

    # The QA JSON, read by drizzlepac's own reader.
    from drizzlepac.haputils.diagnostic_utils import read_json_file

    qa = read_json_file(str(qa_path))
    header = fits.getheader(data / f"{ROOT}_drc.fits")
    info = qa["general information"]
    assert (info["instrument"], info["detector"], info["imgname"]) == (header["INSTRUME"], header["DETECTOR"],
                                                                       f"{ROOT}_drc.fits")
    assert qa["data"]["run"]["final_wcsname"] == wcs["chosen_wcsname"]
    assert qa["data"]["run"]["log_verified"] is True
    fits_table = qa["data"]["candidate fits"]
    assert isinstance(fits_table, Table)
    chosen = fits_table[fits_table["chosen"]]
    assert list(chosen["catalog"]) == [align["chosen_catalog"]] and list(chosen["rms_mas"]) == [align["rms_mas"]]
    assert len(qa["data"]["fit matches"]) == record["pairs"]
    exposures = run.inputs.exposures.names
    assert qa["data"]["alignment counts"]["exposures"] == len(exposures)
    assert qa["data"]["alignment counts"]["aposteriori"] == len(exposures)
    assert qa["data"]["alignment counts"]["aligned_to_gaia"] == len(exposures)
    focus = next(v for v in run.verifications["aposteriori"] if v["check"] == "focus")
    assert qa["data"]["focus"]["aposteriori"]["product_focus"] == focus["product_focus"]

    # Made from the events and the products alone: the same log gives the same bytes.
    again = run_cli("report", run_id, "-o", tmp_path / "again", "--store", data / "astrodriz_sm.db")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / html.name).read_bytes() == html.read_bytes()
    assert (tmp_path / "again" / qa_path.name).read_bytes() == qa_path.read_bytes()

    # Bad input: one line naming the run or the file, and the exit code of errors.py.
    proc = run_cli("report", "nosuchrun", "--store", data / "astrodriz_sm.db")
    assert proc.returncode == 7
    assert proc.stderr.strip().splitlines() == [(
        f"astrodriz-sm: error: {data / 'astrodriz_sm.db'}: no run, rootname or input file named 'nosuchrun' "
        f"(it holds 1 run, of {ROOT})")]
    product = data / products[0]
    product.rename(tmp_path / "moved.fits")
    proc = run_cli("report", "--store", data / "astrodriz_sm.db", "-o", tmp_path / "missing")
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        f"astrodriz-sm: error: {product}: product is missing (the run's log lists it)"]


def test_the_report_of_a_resumed_run_shows_the_crash_and_the_resume(simulated, service):
    src, d = simulated("report-resume", products="flt", n_exposures=2, pointing_error=0.6)
    handle = service(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(jref=f"{d}/", **handle.environment)
    assert start_and_kill(d / f"{ROOT}_asn.fits", env, ("aposteriori/astrodrizzle", "step.started", 1.0),
                          timeout=300)
    # The report of the run as the crash left it: unfinished, its log ending inside the drizzle.
    proc = run_cli("report", "-o", d / "before", cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = _show(_printed(proc.stdout, "report"))
    assert before["status"] == "unfinished" and before["marks"] == []
    last = before["attempts"][-1]
    assert (last["step"], last["outcome"], last["process"]) == ("aposteriori/astrodrizzle", "running", 1)
    proc = run_cli("start", "--resume", "--report", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/",
                                                                                **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = _printed(proc.stdout, "report")
    store, run_id, run = _run(d / "astrodriz_sm.db")
    assert run.resumes == 1 and run.ended["status"] == "done"
    resumed = next(e for e in store.events(run_id) if e.kind == "run.resumed")

    shown = _show(html)
    assert shown["wcsname"] == run.decision("wcs")["chosen_wcsname"]
    assert [m["kind"] for m in shown["marks"]] == ["crash", "resume"]
    assert "inside aposteriori/astrodrizzle" in shown["marks"][0]["text"]
    assert f"resumed after {resumed.payload['after']}" in shown["marks"][1]["text"]
    drizzles = [a for a in shown["attempts"] if a["step"] == "aposteriori/astrodrizzle"]
    assert [(a["process"], a["outcome"]) for a in drizzles] == [(1, "interrupted"), (2, "completed")]
    assert drizzles[0]["start"] <= drizzles[1]["start"]
    assert {a["process"] for a in shown["attempts"]} == {1, 2}

    qa = json.loads((d / f"{ROOT}_qa.json").read_text())
    assert qa["data"]["run"]["data"]["processes"] == 2


def test_start_report_and_manifest_hand_back_the_fit_matches_and_d_previews_each_kept_stage(simulated, service):
    src, d = simulated("report-manifest", products="flt", n_exposures=2, pointing_error=0.6)
    handle = service(src)
    proc = run_cli("start", "-m", "-d", "--report", d / f"{ROOT}_asn.fits",
                   env={"jref": f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, run = _run(d / "astrodriz_sm.db")
    # -d keeps the stage directories: each kept stage's product is previewed after the final one.
    kept = ["default"] + [s for s in ("apriori", "aposteriori") if run.output(s, "conclude").get("kept")]
    shown = _show(_printed(proc.stdout, "report"))
    previews = [i["alt"] for i in shown["images"][FIGURES_BEFORE_PREVIEWS:]]
    assert previews == [f"preview of {ROOT}_drz.fits"] * (1 + len(kept))
    matches = run.output("aposteriori", "align")["fit_matches"]["file"]
    assert run.output("final", "replace")["fit_matches"] == [matches]
    members = [f"{m}_flt.fits" for m in src.members]
    headerlets = [m.replace(".fits", "_hlet.fits") for m in members]
    assert (d / f"{ROOT}_manifest.txt").read_text().splitlines() == [
        f"{ROOT}_drz.fits", *members, *headerlets, *headerlets, matches, f"{ROOT}.tra"]
    assert _printed(proc.stdout, "report") == d / f"{ROOT}_report.html"
    assert _printed(proc.stdout, "qa json") == d / f"{ROOT}_qa.json"


def test_in_a_browser_a_run_report_in_a_hostile_directory_links_only_within_itself(simulated, service, tmp_path):
    """A run in a directory named like a ``javascript:`` URL: its page's links stay on the page, no script runs."""
    src, d = simulated("hostile-report", products="flt", n_exposures=2, pointing_error=0.6)
    handle = service(src)
    hostile = tmp_path / "javascript:alert`1`"
    shutil.copytree(d, hostile)
    proc = run_cli("start", "--report", hostile / f"{ROOT}_asn.fits", env={"jref": f"{hostile}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = _printed(proc.stdout, "report")
    assert html == hostile / f"{ROOT}_report.html"
    page_url = html.as_uri()
    directory_url = html.parent.as_uri() + "/"
    with open_page(page_url) as page:
        links = page.evaluate("Array.from(document.links).map(a => a.href)")
        sources = page.evaluate("Array.from(document.querySelectorAll('[src]')).map(e => e.src.slice(0, 22))")
        shown = page.evaluate("document.body.textContent")
        assert page.evaluate("window.__ran = false; window.alert = () => { window.__ran = true; }; true") is True
        # Click every link, then give a javascript: URL (run as a task after its click) time to run.
        clicked = page.evaluate("""(async () => {
          for (const a of Array.from(document.links)) a.click();
          await new Promise(r => setTimeout(r, 500));
          return [window.__ran, location.href.split("#")[0]];
        })()""")
        errors = page.errors()
    # The only links are the page's sections: no path made a link, so none can carry another scheme.
    assert links == [f"{page_url}#{s}" for s in ("summary", "timeline", "wcs", "fits", "residuals", "verification",
                                                 "products")]
    assert all(link.startswith(directory_url) for link in links)
    assert sources and set(sources) == {"data:image/png;base64,"}
    assert str(hostile) in shown  # the name is on the page, as text
    assert clicked == [False, page_url]
    assert errors == []
