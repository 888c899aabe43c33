"""The commands that read a run: which run a name means, and nothing shown from a log that does not verify.

``resume``, ``report``, ``replay``, ``status``, ``verify-log`` and ``explain`` (and their API functions)
take a run id, an association rootname or an input file. ``replay``, ``explain``, ``status`` and
``report`` check the hash chain first: a forged log is exit 8 and one line, and with ``--unverified``
every output opens with the banner.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from astrodriz_sm import api
from astrodriz_sm.cli.main import main
from astrodriz_sm.errors import ExitCode, LogCorruptError, RunStateError
from astrodriz_sm.store.eventstore import EventStore

from .browser import open_page
from .conftest import NO_ALIGNMENT, forge_payload, run_cli

ROOT = "jsm001010"
STORE = api.STORE_NAME


# -- names, on hand-made stores --------------------------------------------------------------------
@pytest.fixture
def three_runs(tmp_path, monkeypatch):
    """A store in the current directory: two runs of an association (this directory's), one of an exposure."""
    monkeypatch.chdir(tmp_path)
    store = EventStore(tmp_path / STORE)
    runs = (("jsm001010-1", tmp_path / f"{ROOT}_asn.fits", ROOT),
            ("jsm001010-2", tmp_path / f"{ROOT}_asn.fits", ROOT),
            ("j8abc1xyq-1", Path("/archive/j8abc1xyq_flt.fits"), "j8abc1xyq"))
    for run_id, input, root in runs:
        store.create_run(str(input), root, run_id=run_id)
        store.append(run_id, "init", "", "note", {"message": f"run {run_id}"})
    store.append("jsm001010-2", "done", "", "run.ended", {"status": "done", "exit_code": 0})
    store.close()
    return tmp_path / STORE


@pytest.mark.parametrize("name, run_id", [
    ("jsm001010-1", "jsm001010-1"),                    # a run id, also an older one
    (ROOT, "jsm001010-2"),                             # a rootname: its latest run
    (ROOT.upper(), "jsm001010-2"),
    (f"{ROOT}_asn.fits", "jsm001010-2"),               # the input file, from its directory
    ("j8abc1xyq_flt.fits", "j8abc1xyq-1"),             # an input file of that name elsewhere
    ("/archive/j8abc1xyq_flt.fits", "j8abc1xyq-1"),
    ("j8abc1xyq", "j8abc1xyq-1"),
    (None, "j8abc1xyq-1"),                             # no name: the latest run
])
def test_a_run_is_named_by_its_id_its_rootname_or_its_input_file(three_runs, name, run_id):
    assert api.find_run(EventStore(three_runs, read_only=True), name) == run_id
    assert f"note: run {run_id}" in api.replay(name)


@pytest.mark.parametrize("name", ["jsm001011", "jsm001011_asn.fits", "j8abc1xyq_flc.fits"])
def test_an_unknown_name_is_one_line_naming_the_store(three_runs, name):
    with pytest.raises(RunStateError) as raised:
        api.status(name)
    assert str(raised.value) == (f"{three_runs}: no run, rootname or input file named {name!r} "
                                 "(it holds 3 runs, of j8abc1xyq, jsm001010)")


def test_the_unknown_name_line_lists_no_more_than_three_rootnames(tmp_path):
    store = EventStore(tmp_path / STORE)
    for i in range(5):
        store.create_run(f"/data/jsm00101{i}_asn.fits", f"jsm00101{i}")
    with pytest.raises(RunStateError, match=r": no run, rootname or input file named 'x' \(it holds 5 runs\)$"):
        api.find_run(store, "x")


def test_every_command_that_names_a_run_takes_a_rootname(three_runs, capsys):
    for command in ("replay", "status", "verify-log", "explain"):
        assert main([command, ROOT]) == 0, command
        assert "jsm001010-2" in capsys.readouterr().out, command
    # Found, and refused for what it is.
    assert main(["resume", ROOT]) == ExitCode.RUN_STATE
    assert capsys.readouterr().err == "astrodriz-sm: error: run jsm001010-2 already ended done; nothing to resume\n"



def test_replay_into_a_missing_directory_is_one_line_and_leaves_nothing(three_runs, capsys):
    out = three_runs.parent / "no such dir" / "x.tra"
    assert main(["replay", ROOT, "-o", str(out)]) == ExitCode.USAGE == 2
    assert capsys.readouterr().err == (f"astrodriz-sm: error: -o {out}: cannot write the trailer there: "
                                       "No such file or directory\n")
    assert not out.parent.exists()
    # Written whole, under its own name, with no partial file beside it.
    good = three_runs.parent / "x.tra"
    assert main(["replay", ROOT, "-o", str(good)]) == 0
    assert good.read_text().startswith("=" * 78) and "jsm001010-2" in good.read_text()
    assert sorted(p.name for p in three_runs.parent.iterdir() if p.name.startswith("x.tra")) == ["x.tra"]

# -- a forged log, on a hand-made store ------------------------------------------------------------
def test_status_of_every_run_refuses_the_store_when_one_log_does_not_verify(three_runs, capsys):
    forge_payload(three_runs, "jsm001010-1", 1, {"message": "forged"})
    line = (f"{three_runs}: run jsm001010-1: the log does not verify (first bad event: seq 1: hash mismatch "
            "(content altered))")
    with pytest.raises(LogCorruptError, match=r"; render it anyway with --unverified$") as raised:
        api.status()
    assert str(raised.value).startswith(line)
    assert [s.check.ok for s in api.status(unverified=True)] == [False, True, True]
    assert main(["status", "--unverified"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("WARNING: run jsm001010-1: the log does not verify (first bad event: seq 1:")
    assert out[1].startswith("jsm001010-1  ") and out[2].startswith("jsm001010-2  ")
    # The other runs are read as they are.
    assert api.status("jsm001010-2")[0].check.ok


def test_an_event_that_is_not_json_cannot_be_rendered_even_unverified(three_runs):
    con = sqlite3.connect(three_runs)
    con.execute("DROP TRIGGER events_no_update")
    con.execute("UPDATE events SET payload = '{not json' WHERE run_id = 'jsm001010-2'")
    con.commit()
    con.close()
    with pytest.raises(LogCorruptError, match=r"run 'jsm001010-2' seq 1: payload is not valid JSON; it cannot"):
        api.replay(ROOT, unverified=True)


# -- a real run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(simulated):
    """A real run (alignment off) in its association's directory: ``(directory, result)``."""
    _, d = simulated("reading", products="flt", n_exposures=2)
    result = api.process(d / f"{ROOT}_asn.fits", environ={**os.environ, "jref": f"{d}/", **NO_ALIGNMENT},
                         console=False)
    assert result.status == "done", result.reason
    return d, result


def test_report_and_explain_of_a_rootname_in_the_association_directory(finished, tmp_path):
    d, result = finished
    proc = run_cli("report", ROOT, cwd=d)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [f"report   {d / f'{ROOT}_report.html'}", f"qa json  {d / f'{ROOT}_qa.json'}"]
    assert f'data-fact="wcsname">{result.wcsname}<' in (d / f"{ROOT}_report.html").read_text()


def test_report_of_a_copied_run_directory_is_written_in_the_copy(finished, tmp_path):
    """The run records the original input directory; the report goes beside the store read, and the
    original directory keeps every file, byte and mtime. ``-o`` still chooses."""
    d, result = finished
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)

    def listing(directory):
        return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.is_file() and p.read_bytes())
                for p in sorted(directory.rglob("*"))}

    before = listing(d)
    proc = run_cli("report", "--store", Path("copy") / STORE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [f"report   {copy / f'{ROOT}_report.html'}",
                                        f"qa json  {copy / f'{ROOT}_qa.json'}"]
    assert f'data-fact="wcsname">{result.wcsname}<' in (copy / f"{ROOT}_report.html").read_text()
    assert json.loads((copy / f"{ROOT}_qa.json").read_text())["data"]["run"]["data"]["run_id"] == result.run_id
    proc = run_cli("report", "--store", copy / STORE, "-o", tmp_path / "elsewhere")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == [f"{ROOT}_qa.json", f"{ROOT}_report.html"]
    assert listing(d) == before


def test_explain_and_replay_by_rootname_and_input_file(finished, monkeypatch):
    d, result = finished
    monkeypatch.chdir(d)
    doc = api.explain(ROOT)
    assert doc["run_id"] == result.run_id and doc["chosen"]["wcsname"] == result.wcsname
    assert doc["log"] == {"verified": True, "events": doc["log"]["events"], "first_bad_seq": None, "reason": "",
                          "banner": None}
    assert api.replay(f"{ROOT}_asn.fits") == result.trailer.read_text()
    assert api.replay(d / f"{ROOT}_asn.fits") == api.replay(result.run_id)
    assert api.status(ROOT)[0].row["run_id"] == result.run_id


def test_a_forged_decision_is_refused_by_every_view_and_shown_only_under_the_banner(finished, tmp_path, capsys):
    d, result = finished
    db = tmp_path / STORE
    with sqlite3.connect(d / STORE) as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    wcs = next(e for e in EventStore(db, read_only=True).events(result.run_id)
               if e.kind == "decision" and e.payload.get("decision") == "wcs")
    forged = f"{wcs.payload['chosen_wcsname']}-FIT_REL_GAIAeDR3"
    forge_payload(db, result.run_id, wcs.seq, {**wcs.payload, "chosen_wcsname": forged})
    where = f"run {result.run_id}: the log does not verify (first bad event: seq {wcs.seq}: hash mismatch " \
            "(content altered))"
    out_dir = tmp_path / "report"

    for command in (["replay"], ["explain"], ["explain", "--json"], ["status"], ["report", "-o", str(out_dir)]):
        assert main([*command, ROOT, "--store", str(db)]) == ExitCode.LOG_CORRUPT == 8, command
        shown = capsys.readouterr()
        assert shown.out == "", command
        assert shown.err.splitlines() == [f"astrodriz-sm: error: {db}: {where}; render it anyway with --unverified"]
    assert not out_dir.exists()
    with pytest.raises(LogCorruptError):
        api.explain(result.run_id, store=db)

    banner = f"WARNING: {where}; shown anyway (--unverified): what follows may not be what the run recorded"
    for command in (["replay"], ["explain"], ["status"]):
        assert main([*command, ROOT, "--store", str(db), "--unverified"]) == 0, command
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == banner, command
        assert lines[1].startswith(("=====", "run ", result.run_id)), command
        if command != ["status"]:  # status does not name the WCS
            assert any(forged in line for line in lines[1:]), command
    assert main(["explain", "--json", ROOT, "--store", str(db), "--unverified"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["log"] == {"verified": False, "events": len(EventStore(db, read_only=True).events(result.run_id)),
                          "first_bad_seq": wcs.seq, "reason": f"seq {wcs.seq}: hash mismatch (content altered)",
                          "banner": banner}
    assert doc["chosen"]["wcsname"] == forged

    assert main(["report", ROOT, "--store", str(db), "--unverified", "-o", str(out_dir)]) == 0
    capsys.readouterr()
    html = (out_dir / f"{ROOT}_report.html").read_text()
    assert html.index(f'data-fact="log-banner">{banner}</div>') < html.index(forged)
    with open_page((out_dir / f"{ROOT}_report.html").as_uri()) as page:
        # The banner is what the reader sees first, at the top of the page.
        top = page.evaluate("document.elementFromPoint(5, 5).closest('[data-fact]')?.dataset.fact ?? null")
        assert top == "log-banner"
    from drizzlepac.haputils.diagnostic_utils import read_json_file

    run = read_json_file(str(out_dir / f"{ROOT}_qa.json"))["data"]["run"]
    assert (run["log_verified"], run["log_first_bad_seq"], run["log_banner"]) == (False, wcs.seq, banner)
    assert run["final_wcsname"] == forged
    # The honest store is untouched and still renders without a banner.
    assert api.replay(result.run_id, store=d / STORE) == result.trailer.read_text()
