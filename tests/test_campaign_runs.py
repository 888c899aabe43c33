"""The one reader of an association's run that the driver, the worker and the campaign page share."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from astrodriz_sm.campaign import Ledger, campaign_summary
from astrodriz_sm.campaign.driver import Plan, plan
from astrodriz_sm.campaign.ledger import Attempt, LedgerCorrupt
from astrodriz_sm.campaign.report import campaign_report
from astrodriz_sm.campaign.runs import (
    NO_RUN,
    NOT_VERIFIED,
    READ,
    RUN_MISSING,
    STORE_MISSING,
    STORE_UNREADABLE,
    read_run,
    run_summary,
)
from astrodriz_sm.errors import ExitCode
from astrodriz_sm.store.eventstore import EventStore
from astrodriz_sm.views.report.page import href

from .conftest import run_cli, forge_payload

WCSNAME = "IDC_0461802ej-FIT_REL_GAIAeDR3"


def _store(directory: Path, input: Path, ended: bool = True) -> tuple[Path, list[str]]:
    """An event store with two runs of ``input``: the later one chose an a posteriori WCS (and ended, if asked)."""
    path = directory / "astrodriz_sm.db"
    store = EventStore(path)
    ids = []
    for n in range(2):
        run_id = store.create_run(str(input), "jsm001010", run_id=f"jsm001010-{n}")
        store.append(run_id, "init", "", "run.started", {"config": {"input": str(input)}})
        store.append(run_id, "final", "choose", "step.started", {"fingerprint": "f"})
        store.append_many(run_id, [("final", "choose", "decision", {"decision": "wcs", "chosen_stage": "aposteriori",
                                                                     "chosen_wcsname": WCSNAME}),
                                   ("final", "choose", "step.completed", {})])
        if ended or n == 0:
            store.append(run_id, "done", "", "run.ended", {"status": "done", "exit_code": 0})
        ids.append(run_id)
    store.close()
    return path, ids


def test_the_latest_run_of_an_input_or_the_run_named(tmp_path):
    input = tmp_path / "jsm001010_asn.fits"
    path, (first, latest) = _store(tmp_path, input)
    stored = read_run(path, input=str(input))
    assert (stored.state, stored.problem, stored.run_id) == (READ, None, latest)
    assert [e.kind for e in stored.events] == ["run.started", "step.started", "decision", "step.completed",
                                               "run.ended"]
    assert stored.run.decision("wcs")["chosen_wcsname"] == WCSNAME
    assert read_run(path, run_id=first).run_id == first
    assert run_summary(path, str(input)) == {"run_id": latest, "run_status": "done", "exit_code": 0,
                                             "wcsname": WCSNAME, "wcs_type": "a posteriori"}


def test_what_the_store_says_when_it_has_no_run_to_give(tmp_path):
    input = tmp_path / "jsm001010_asn.fits"
    path, _ = _store(tmp_path, input)
    assert read_run(None, run_id="r") == read_run(path) == read_run(path, run_id=None, input=None)
    assert read_run(path).state == NO_RUN and read_run(path).problem == "the run never started: no event log"
    gone = tmp_path / "gone" / "astrodriz_sm.db"
    assert (read_run(gone, input=str(input)).state, read_run(gone, input=str(input)).problem) == (
        STORE_MISSING, f"{gone}: the event store is gone")
    other = str(tmp_path / "jsm002010_asn.fits")
    assert (read_run(path, input=other).state, read_run(path, input=other).problem) == (
        RUN_MISSING, f"{path}: no run of {other} in it")
    assert read_run(path, run_id="jsm001010-9").problem == f"{path}: no run jsm001010-9 in it"
    text = tmp_path / "text.db"
    text.write_text("not a database\n" * 100)
    stored = read_run(text, input=str(input))
    assert stored.state == STORE_UNREADABLE and str(text) in stored.problem and stored.events == ()
    assert run_summary(text, str(input)) == {"run_id": None, "run_status": None, "exit_code": None,
                                             "wcsname": None, "wcs_type": None}


def test_the_driver_plans_from_the_same_reader(tmp_path):
    input = tmp_path / "jsm001010_asn.fits"
    assert plan(input, None) == Plan("start", None, "no run yet")
    _, (_, latest) = _store(tmp_path, input, ended=False)
    p = plan(input, None)
    assert (p.action, p.run_id, p.reason) == ("resume", latest, "unfinished")
    assert run_summary(tmp_path / "astrodriz_sm.db", str(input))["run_status"] == "unfinished"


def test_a_forged_log_gives_no_facts_and_counts_apart_on_the_campaign_page(tmp_path):
    """Two associations done in the ledger; one's wcs decision (seq 3) edited: nothing of it is shown."""
    forged_wcsname = "IDC_0461802ej-FIT_SVM_FORGED"
    runs = {}
    for root in ("jsm001010", "jsm001020"):
        (tmp_path / root).mkdir()
        input = tmp_path / root / f"{root}_asn.fits"
        path, (_, latest) = _store(tmp_path / root, input)
        runs[root] = (input, path, latest)
    input, path, latest = runs["jsm001020"]
    forge_payload(path, latest, 3,
           {"decision": "wcs", "chosen_stage": "aposteriori", "chosen_wcsname": forged_wcsname})

    stored = read_run(path, run_id=latest)
    assert (stored.state, stored.run_id, stored.events, stored.run, stored.first_bad_seq) == (
        NOT_VERIFIED, latest, (), None, 3)
    assert stored.problem == (f"run {latest}: the log does not verify "
                              "(first bad event: seq 3: hash mismatch (content altered))")
    assert run_summary(path, str(input)) == {"run_id": None, "run_status": None, "exit_code": None,
                                             "wcsname": None, "wcs_type": None}
    assert plan(input, None) == Plan("start", None, stored.problem, latest)

    ledger = Ledger(tmp_path / "campaign.db", create=True)
    batch = ledger.begin_batch(2, {})
    for root, (input, path, latest) in runs.items():
        ledger.add_association(str(input), root)
        ledger.record(Attempt(str(input), 1, batch, "start", latest, str(path), 0, None, "ok", "done",
                              wall_s=1.0, wcsname=WCSNAME, wcs_type="a posteriori"))
    ledger.end_batch(batch)
    ledger.close()

    html = campaign_report(tmp_path / "campaign.db", output=tmp_path / "out").read_text()
    states = dict(re.findall(r'<tr data-state="([^"]+)"><td><span class="[^"]*">[^<]*</span></td>'
                             r'<td class="num">(\d+)</td>', html))
    assert states == {"done": "1", NOT_VERIFIED: "1"}
    unread = re.findall(r'<tr data-unread="([^"]+)" data-store-state="([^"]+)">'
                        r'<td>[^<]*</td><td>([^<]*)</td>\s*'
                        r'<td><code>([^<]*)</code></td><td>([^<]*)</td></tr>', html)
    assert unread == [("jsm001020", NOT_VERIFIED, NOT_VERIFIED, latest, f"{NOT_VERIFIED}: {stored.problem}")]
    assert forged_wcsname not in html
    # The ledger's own record of the attempt (done, a posteriori) counts only for the run that verifies.
    forged = frozenset({str(runs["jsm001020"][0])})
    summary = campaign_summary(Ledger(tmp_path / "campaign.db"), not_verified=forged)
    assert (summary["by_state"], summary["by_wcs_type"]["a posteriori"]) == ({"done": 1, NOT_VERIFIED: 1}, 1)


def _hostile_campaign(tmp_path: Path) -> tuple[Path, Path]:
    """A campaign page written for one association in a directory named ``javascript:alert`1```."""
    hostile = tmp_path / "javascript:alert`1`"
    hostile.mkdir()
    input = hostile / "jsm001010_asn.fits"
    path, (_, latest) = _store(hostile, input)
    report = hostile / "jsm001010_report.html"
    report.write_text("<html><head><title>jsm001010 report</title></head></html>\n")
    ledger = Ledger(tmp_path / "campaign.db", create=True)
    batch = ledger.begin_batch(1, {})
    ledger.add_association(str(input), "jsm001010")
    ledger.record(Attempt(str(input), 1, batch, "start", latest, str(path), 0, None, "ok", "done",
                          wall_s=1.0, wcsname=WCSNAME, wcs_type="a posteriori"))
    ledger.end_batch(batch)
    ledger.close()
    return campaign_report(tmp_path / "campaign.db", output=tmp_path), report


def test_a_hostile_directory_name_gives_a_relative_link_to_its_report(tmp_path):
    """A directory named like a ``javascript:`` URL: its link on the campaign page has no scheme."""
    page, report = _hostile_campaign(tmp_path)
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]*)"', page.read_text())]
    assert [h for h in hrefs if urlsplit(h).scheme] == []
    links = [h for h in hrefs if not h.startswith("#")]
    assert links == ["javascript%3Aalert%601%60/jsm001010_report.html"]
    assert (page.parent / unquote(links[0])).resolve() == report.resolve()


# Every link as the browser resolves it, and script execution made visible: alert only sets a flag.
LINKS = "Array.from(document.links).map(a => a.href)"
WATCH_ALERT = "window.__ran = false; window.alert = () => { window.__ran = true; }; true"


def test_in_a_browser_a_hostile_directory_name_links_to_its_report_and_runs_no_script(tmp_path):
    """In headless Chromium: every resolved link is a file: URL under the page's directory, and the
    hostile name's link opens its report instead of running script."""
    from .browser import open_page

    page_path, report = _hostile_campaign(tmp_path)
    page_url = page_path.as_uri()
    directory_url = page_path.parent.as_uri() + "/"
    sections = [f"{page_url}#{s}" for s in ("outcomes", "alignment", "error", "failures", "retried", "slowest")]
    with open_page(page_url) as page:
        links = page.evaluate(LINKS)
        # Every link, resolved by the browser, stays under the page's own directory: a file: URL, no
        # other scheme; the report's (its name's ':' and '`' kept percent-quoted) is the report's file URL.
        assert links and all(link.startswith(directory_url) for link in links), links
        assert links == [*sections, f"{directory_url}javascript%3Aalert%601%60/jsm001010_report.html"]
        assert links[-1] == report.as_uri()
        assert page.evaluate(WATCH_ALERT) is True
        page.events.clear()
        # The click navigates away: the script ends before the page does.
        assert page.evaluate("document.querySelector('a[href$=\"_report.html\"]').click(); window.__ran") is False
        page.wait_for("Page.loadEventFired", timeout=30)
        landed = page.evaluate("[location.href, document.title, window.__ran]")
        errors = page.errors()
    # A javascript: link would have run in this page and stayed on it; the click opened the report instead.
    assert landed == [report.as_uri(), "jsm001010 report", None]
    assert errors == []


def test_in_a_browser_the_alert_watch_sees_an_unquoted_javascript_link_run(tmp_path):
    """The check above can fail: the same name left unquoted in a link runs its script when clicked."""
    from .browser import open_page

    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><a href="javascript:alert`1`/jsm001010_report.html">x</a></body></html>\n')
    with open_page(bad.as_uri()) as page:
        links = page.evaluate(LINKS)
        assert page.evaluate(WATCH_ALERT) is True
        # A javascript: URL runs as a task after the click, in this page: give it the time to.
        ran = page.evaluate("""(async () => {
          document.querySelector("a").click();
          await new Promise(r => setTimeout(r, 500));
          return window.__ran;
        })()""")
        where = page.evaluate("location.href")
    assert links == ["javascript:alert`1`/jsm001010_report.html"]
    assert (ran, where) == (True, bad.as_uri())


def test_a_link_is_refused_for_an_absolute_path():
    assert href("../a b/jsm001010_report.html") == "../a%20b/jsm001010_report.html"
    with pytest.raises(ValueError, match="a page links only relative paths"):
        href("//hst.stsci.edu/x")


def _ledger_with_a_damaged_page(path: Path) -> bytes:
    """A real ledger of 300 associations whose third page is overwritten: what a bad disk block leaves."""
    ledger = Ledger(path, create=True)
    batch = ledger.begin_batch(300, {})
    for i in range(300):
        ledger.add_association(f"/archive/j{i:05d}/j{i:05d}010_asn.fits", f"j{i:05d}010")
    ledger.end_batch(batch)
    ledger.close()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[2 * page:2 * page + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("damage", ["page", "empty"])
def test_a_damaged_ledger_is_one_line_exit_8_and_nothing_is_written(tmp_path, capsys, damage):
    from astrodriz_sm.cli.main import main

    db = tmp_path / "campaign.db"
    if damage == "page":
        before = _ledger_with_a_damaged_page(db)
        why = "damaged campaign ledger ("
    else:
        db.write_bytes(b"")
        before = b""
        why = "empty file, not a campaign ledger"
    for command in (["campaign", "status", str(db)], ["report", "--campaign", str(db), "-o", str(tmp_path)]):
        assert main(command) == ExitCode.LOG_CORRUPT == 8, command
        err = capsys.readouterr().err
        assert err.startswith(f"astrodriz-sm: error: {db}: {why}") and err.count("\n") == 1, err
    # batch is refused before its first write (its own process: it sets its own signal handlers).
    proc = run_cli("batch", "--ledger", db, tmp_path / "jsm001010_asn.fits", cwd=tmp_path)
    assert proc.returncode == ExitCode.LOG_CORRUPT, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"astrodriz-sm: error: {db}: {why}") and proc.stderr.count("\n") == 1, proc.stderr
    with pytest.raises(LedgerCorrupt):
        Ledger(db, create=True)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.db"]
