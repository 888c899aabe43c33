"""Campaigns: ``astrodriz-sm batch`` on a real LocalCluster of 2 workers, ``campaign status``, the campaign's page.

Six simulated associations: one with bad input (a member missing), one whose ``astrodriz-sm``
process is SIGKILLed during its default drizzle, four that simply run. Alignment is off: the point
here is the campaign, not the fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits
from dask_jobqueue import SLURMCluster

from astrodriz_sm.campaign import Ledger, judge
from astrodriz_sm.campaign.worker import Outcome
from astrodriz_sm.errors import CAMPAIGN_RETRY, ExitCode
from astrodriz_sm.sim import SimConfig, simulate_association
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore, StoreError

from .conftest import NO_ALIGNMENT, run_cli

ROOTS = ("jsm001010", "jsm001020", "jsm001030", "jsm001040", "jsm001050", "jsm001060")
KILLED, BAD = "jsm001020", "jsm001040"
STORE = "astrodriz_sm.db"
# Header cards a run writes from the clock, and S_REGION, which drizzlepac's compute_sregion gives
# differently in two uninterrupted runs of the same association.
UNSTABLE_CARDS = {"DATE", "IRAF-TLM", "S_REGION"}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "jref" and not k.startswith("ASTROM")}
    env.update(NO_ALIGNMENT, **extra)
    return env


def _batch(*args, cwd, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", "batch", "--workers", "2",
                             "--dashboard-address", "127.0.0.1:0", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _kill_during_default_drizzle(store_path: Path, deadline: float) -> int:
    """SIGKILL the process holding the run's lease once its log's last event starts default/astrodrizzle."""
    while time.monotonic() < deadline:
        events, lease = [], None
        if store_path.exists():
            try:
                store = EventStore(store_path, read_only=True)
                latest = store.latest_run()
                events = store.events(latest["run_id"]) if latest else []
                lease = store.lease(latest["run_id"]) if latest else None
                store.close()
            except StoreError:  # the store is being created: look again
                pass
            if events and (events[-1].stage, events[-1].step, events[-1].kind) == (
                    "default", "astrodrizzle", "step.started") and lease:
                pid = int(lease["holder"].split(":")[0])
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.01)
    raise AssertionError(f"{store_path}: the run never reached default/astrodrizzle")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _product_content(path: Path) -> list:
    """Every HDU's data bytes and header cards, but for :data:`UNSTABLE_CARDS`."""
    out = []
    with fits.open(path) as hdul:
        for hdu in hdul:
            cards = [(c.keyword, str(c.value)) for c in hdu.header.cards if c.keyword not in UNSTABLE_CARDS]
            data = hashlib.sha256(hdu.data.tobytes()).hexdigest() if hdu.data is not None else None
            out.append((hdu.name, cards, data))
    return out


def _run_campaign(base: Path) -> dict:
    """Six associations, a standalone run of the one to be killed, and two batches over the list."""
    for root in ROOTS:
        simulate_association(base / root, SimConfig(root=root, products="flt", n_exposures=2, service=False))
    pristine = base / "standalone"
    shutil.copytree(base / KILLED, pristine)
    bad_member = fits.getdata(base / BAD / f"{BAD}_asn.fits", "ASN")["MEMNAME"][1].strip().lower()
    (base / BAD / f"{bad_member}_flt.fits").unlink()
    listing = base / "inputs.txt"
    listing.write_text("# the test campaign\n" + "".join(f"{base / r / f'{r}_asn.fits'}\n" for r in ROOTS))
    env = _env()

    standalone = run_cli("start", "-n", "1", pristine / f"{KILLED}_asn.fits", env=NO_ALIGNMENT)
    assert standalone.returncode == 0, standalone.stderr[-2000:]

    t0 = time.monotonic()
    first = _batch("--from-file", listing, cwd=base, env=env)
    try:
        killed_pid = _kill_during_default_drizzle(base / KILLED / STORE, time.monotonic() + 300)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    first_seconds = time.monotonic() - t0

    t0 = time.monotonic()
    second = _batch("--from-file", listing, cwd=base, env=env)
    out2, err2 = second.communicate(timeout=120)
    second_seconds = time.monotonic() - t0
    status = run_cli("campaign", "status", cwd=base)
    return {"base": str(base), "pristine": str(pristine), "bad_member": bad_member, "killed_pid": killed_pid,
            "first": [first.returncode, out, err, first_seconds],
            "second": [second.returncode, out2, err2, second_seconds],
            "status": [status.returncode, status.stdout, status.stderr]}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The test campaign, run once per test session also when its tests are spread over xdist workers.

    Under xdist the first worker to get here runs it in the session's shared directory and writes
    what it saw; the others wait for the lock and read it.
    """
    import fcntl

    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent
        with open(shared / "campaign.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = shared / "campaign.json"
            if not record.is_file():
                (shared / "campaign").mkdir()
                record.write_text(json.dumps(_run_campaign(shared / "campaign")))
            seen = json.loads(record.read_text())
    else:
        seen = _run_campaign(tmp_path_factory.mktemp("campaign"))
    return {**seen, "base": Path(seen["base"]), "pristine": Path(seen["pristine"]),
            "status": subprocess.CompletedProcess([], *seen["status"])}


def test_the_campaign_ends_with_five_done_and_the_bad_input_in_its_class(campaign):
    code, _out, err, _ = campaign["first"]
    base = campaign["base"]
    # One association failed with bad input, so the batch ends with that class's code.
    assert code == ExitCode.INPUT, err[-3000:]
    assert "Dask dashboard: http://127.0.0.1:" in err
    assert "[##############################] 6/6 (done 5, failed 1)" in err
    ledger = Ledger(base / "campaign.db")
    rows = {r["root"]: r["attempts"] for r in ledger.associations()}
    assert sorted(rows) == sorted(ROOTS)
    bad = rows[BAD]
    missing = base / BAD / f"{campaign['bad_member']}_flt.fits"
    assert [(a.action, a.exit_code, a.exit_class, a.verdict) for a in bad] == [("start", 3, "input", "failed")]
    assert bad[0].message == (f"astrodriz-sm: error: {missing}: exposure {campaign['bad_member']} listed in "
                              f"{BAD}_asn.fits is missing (no _flt or _flc file)")
    for root in set(ROOTS) - {KILLED, BAD}:
        assert [(a.action, a.exit_code, a.verdict, a.wcs_type) for a in rows[root]] == [
            ("start", 0, "done", "default")]
        assert rows[root][0].peak_rss_bytes > 50 * 2 ** 20
        assert rows[root][0].worker.startswith("tcp://127.0.0.1:")
        run = fold(EventStore(base / root / STORE).events(rows[root][0].run_id))
        assert run.ended["status"] == "done"


def test_the_killed_run_is_resumed_and_its_products_equal_a_standalone_run(campaign):
    base = campaign["base"]
    attempts = Ledger(base / "campaign.db").attempts_of(str(base / KILLED / f"{KILLED}_asn.fits"))
    assert [(a.attempt, a.action, a.exit_code, a.signal, a.exit_class, a.verdict) for a in attempts] == [
        (1, "start", None, signal.SIGKILL, "signal SIGKILL", "retry"), (2, "resume", 0, None, "ok", "done")]
    assert attempts[0].run_id == attempts[1].run_id
    events = EventStore(base / KILLED / STORE).events(attempts[0].run_id)
    kinds = [(e.stage, e.step, e.kind) for e in events]
    resumed = kinds.index(("default", "", "run.resumed"))
    # Killed inside the default drizzle: started, never completed, then taken over from the dead process.
    assert kinds[resumed - 2] == ("default", "astrodrizzle", "step.started")
    assert kinds[resumed - 1] == ("default", "", "lease.taken_over")
    assert events[resumed - 1].payload["previous_holder"].startswith(f"{campaign['killed_pid']}:")
    assert events[resumed].payload["after"] == "interrupted step default/astrodrizzle"
    assert events[-1].payload["status"] == "done"
    ours, theirs = base / KILLED, campaign["pristine"]
    handed_back = sorted(p.name for p in theirs.glob("*.fits"))
    assert sorted(p.name for p in ours.glob("*.fits")) == handed_back
    assert f"{KILLED}_drz.fits" in handed_back
    for name in handed_back:
        if name.endswith(("_drz.fits", "_hlet.fits")):
            # Written with the time of day: equal but for those cards (and the product's S_REGION).
            assert _product_content(ours / name) == _product_content(theirs / name), name
        else:
            assert _sha(ours / name) == _sha(theirs / name), name


def test_a_second_batch_over_the_same_list_does_nothing_within_ten_seconds(campaign):
    code, _out, err, seconds = campaign["second"]
    assert seconds < 10, (seconds, err)
    assert code == ExitCode.INPUT, err[-2000:]
    assert "6 of 6 associations already finished with these settings" in err
    assert "Dask dashboard" not in err
    ledger = Ledger(campaign["base"] / "campaign.db")
    assert [b["already_done"] for b in ledger.batches()] == [0, 6]
    assert sum(len(r["attempts"]) for r in ledger.associations()) == 7
    # Nothing of the batches is left beside the ledger: no lock file, no -wal or -shm.
    assert sorted(p.name for p in campaign["base"].iterdir() if p.name.startswith("campaign.db")) == ["campaign.db"]


def test_campaign_status_counts_states_classes_wcs_types_and_the_retried_run(campaign):
    proc = campaign["status"]
    base = campaign["base"]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{base / 'campaign.db'}: 6 associations, 7 attempts in 2 batches"
    assert lines[1] == "by state:       done 5  failed 1"
    assert lines[2] == "by exit class:  ok 5  input 1"
    assert lines[3] == "by final WCS:   default 5  a priori 0  a posteriori 0"
    assert lines[4] == "failed:"
    assert lines[5].startswith(f"  {BAD}  exit 3 (input) after 1 attempt: astrodriz-sm: error: ")
    assert lines[6:8] == ["retried:", (f"  {KILLED}  2 attempts: start signal SIGKILL, then resume ok  "
                                      f"[{base / KILLED / f'{KILLED}_asn.fits'}]")]
    assert lines[8] == "slowest:"
    assert len(lines) == 9 + 5
    doc = json.loads(run_cli("campaign", "status", "--json", base / "campaign.db").stdout)
    assert doc["by_state"] == {"done": 5, "failed": 1}
    assert [e["attempts"] for e in doc["retried"]] == [2]


# What the campaign page shows, read in the browser once its images are decoded.
CAMPAIGN_PAGE = """(async () => {
  await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
  const rows = sel => Array.from(document.querySelectorAll(sel));
  return {
    images: rows("img").map(i => ({complete: i.complete, width: i.naturalWidth})),
    states: Object.fromEntries(rows("[data-state]").map(r => [r.dataset.state, Number(r.children[1].textContent)])),
    classes: Object.fromEntries(rows("#outcomes [data-exit-class]").map(r => [r.dataset.exitClass,
                                                                             Number(r.children[1].textContent)])),
    wcs: Object.fromEntries(rows("[data-wcs-type]").map(r => [r.dataset.wcsType, [Number(r.dataset.n), Number(r.dataset.of)]])),
    exposures: Object.fromEntries(rows("[data-exposures]").map(c => [c.dataset.exposures, Number(c.textContent)])),
    detectors: Object.fromEntries(rows("[data-detector]").map(r => [r.dataset.detector,
      {fits: Number(r.dataset.fits), applied: Number(r.dataset.applied), rms: JSON.parse(r.dataset.rms)}])),
    failed: rows("[data-failed]").map(r => [r.dataset.failed, r.dataset.exitClass, r.dataset.step]),
    failure_classes: Object.fromEntries(rows("[data-failure-class]").map(r => [r.dataset.failureClass,
                                                                              Number(r.children[1].textContent)])),
    retried: rows("[data-retried]").map(r => ({root: r.dataset.retried,
      attempts: rows(`[data-retried="${r.dataset.retried}"] li`).map(l => [l.dataset.action, l.dataset.exitClass]),
      interrupted: r.querySelector("[data-interrupted]").dataset.interrupted})),
    slow: rows("[data-slow]").map(r => [r.dataset.slow, Number(r.dataset.wall), r.querySelector("a") && r.querySelector("a").href]),
    unread: rows("[data-unread]").map(r => [r.dataset.unread, r.dataset.storeState]),
  };
})()"""


def test_the_campaign_report_shows_what_the_ledger_and_the_stores_say(campaign, tmp_path):
    from urllib.parse import unquote, urlparse

    from astrodriz_sm.campaign.report import campaign_report

    from .browser import open_page

    base = campaign["base"]
    ledger_path = base / "campaign.db"
    # One run with its own report, for the page to link to.
    linked = "jsm001010"
    proc = run_cli("report", "--store", base / linked / STORE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("report", "--campaign", ledger_path, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = tmp_path / "out" / "campaign_campaign_report.html"
    assert proc.stdout.splitlines() == [f"report   {html}"]
    with open_page(html.as_uri()) as page:
        shown = page.evaluate(CAMPAIGN_PAGE)
        errors = page.errors()
    assert errors == []

    # What the stores say, run by run: each association's latest attempt names its run and store.
    rows = {r["root"]: r["attempts"] for r in Ledger(ledger_path).associations()}
    runs = {root: fold(EventStore(a[-1].store, read_only=True).events(a[-1].run_id)) for root, a in rows.items()
            if a[-1].run_id}
    stage = {root: run.decision("wcs").get("chosen_stage") for root, run in runs.items()}
    exposures = {root: len(run.inputs.exposures.names) if run.inputs else 0 for root, run in runs.items()}
    detectors = {}
    for root, run in runs.items():
        name = ", ".join(sorted({e.instdet for e in run.inputs.exposures.all})) if run.inputs else "unknown"
        d = detectors.setdefault(name, {"fits": 0, "applied": 0, "rms": []})
        align = run.output("aposteriori", "align")
        if align.get("chosen_catalog"):
            d["fits"] += 1
            d["applied"] += stage[root] == "aposteriori"
            d["rms"].append(align["rms_mas"])

    assert shown["states"] == {"done": 5, "failed": 1}
    assert shown["classes"] == {"ok": 5, "input": 1}
    n_aposteriori = sum(s == "aposteriori" for s in stage.values())
    assert shown["wcs"]["a posteriori"] == [n_aposteriori, len(ROOTS)]
    assert shown["wcs"]["a priori"] == [sum(s == "apriori" for s in stage.values()), len(ROOTS)]
    assert shown["exposures"]["exposures"] == sum(exposures.values())
    assert shown["exposures"]["aposteriori"] == sum(n for r, n in exposures.items() if stage[r] == "aposteriori")
    assert shown["exposures"]["pipeline_default"] == sum(n for r, n in exposures.items() if stage[r] == "default")
    assert shown["detectors"] == detectors
    assert len(shown["images"]) == 1 + any(d["fits"] for d in detectors.values())
    assert all(i["complete"] and i["width"] > 0 for i in shown["images"]), shown["images"]

    failed_steps = [e for e in EventStore(rows[BAD][-1].store, read_only=True).events(rows[BAD][-1].run_id)
                    if e.kind == "step.failed"] if rows[BAD][-1].run_id else []
    step = f"{failed_steps[-1].stage}/{failed_steps[-1].step}" if failed_steps else ""
    assert shown["failed"] == [[BAD, "input", step]]
    assert shown["failure_classes"] == {"input": 1}
    # The killed run: two attempts, the first stopped inside the step its log had open when it died.
    events = EventStore(rows[KILLED][-1].store, read_only=True).events(rows[KILLED][-1].run_id)
    kinds = [(e.stage, e.step, e.kind) for e in events]
    open_at_kill = kinds[kinds.index(("default", "", "run.resumed")) - 2]
    assert shown["retried"] == [{"root": KILLED, "attempts": [["start", "signal SIGKILL"], ["resume", "ok"]],
                                 "interrupted": f"{open_at_kill[0]}/{open_at_kill[1]}"}]
    walls = {root: sum(a.wall_s for a in attempts) for root, attempts in rows.items()}
    assert [(root, wall) for root, wall, _ in shown["slow"]] == sorted(walls.items(), key=lambda x: -x[1])
    links = {root: Path(unquote(urlparse(href).path)) for root, _, href in shown["slow"] if href}
    assert links == {linked: base / linked / f"{linked}_report.html"}
    assert shown["unread"] == ([] if rows[BAD][-1].run_id else [[BAD, "no run"]])

    # A run whose store is gone is listed as such, and its exposures drop out of the counts.
    gone = tmp_path / "gone.db"
    shutil.copy(ledger_path, gone)
    with sqlite3.connect(gone) as db:
        db.execute("UPDATE attempts SET store = ? WHERE input = ?",
                   [str(tmp_path / "nowhere" / STORE), str(base / linked / f"{linked}_asn.fits")])
    page = campaign_report(gone).read_text()
    assert f'data-unread="{linked}" data-store-state="store missing"' in page
    assert f'data-exposures="exposures">{sum(exposures.values()) - exposures[linked]}<' in page


def test_every_exit_code_has_a_campaign_class_and_signals_are_resumed():
    assert set(CAMPAIGN_RETRY) == set(ExitCode)
    base = {"memory_killed": False, "memory_budget": None, "wall_s": 1.0, "peak_rss_bytes": 1, "message": None,
            "run_id": "r", "run_status": None, "wcsname": None, "wcs_type": None, "host": "h", "worker": None,
            "started_utc": "", "ended_utc": ""}
    assert judge(Outcome(exit_code=5, signal=None, **base), 1, 3) == ("processing", "retry")
    assert judge(Outcome(exit_code=5, signal=None, **base), 2, 3) == ("processing", "failed")
    assert judge(Outcome(exit_code=6, signal=None, **base), 1, 3) == ("config", "failed")
    assert judge(Outcome(exit_code=8, signal=None, **base), 1, 3) == ("log_corrupt", "failed")
    assert judge(Outcome(exit_code=0, signal=None, **{**base, "run_status": "skipped"}), 1, 3) == ("skipped", "skipped")
    assert judge(Outcome(exit_code=0, signal=None, **{**base, "run_status": "done"}), 1, 3) == ("ok", "done")
    assert judge(Outcome(exit_code=None, signal=9, **base), 2, 3) == ("signal SIGKILL", "retry")
    assert judge(Outcome(exit_code=None, signal=9, **{**base, "memory_killed": True}), 3, 3) == ("memory", "failed")
    assert judge(None, 1, 3) == ("worker lost", "retry")


def test_a_slurm_cluster_for_campaigns_is_constructed_as_the_docs_give_it():
    cluster = SLURMCluster(cores=1, processes=1, memory="8GB", walltime="04:00:00", queue="normal",
                           job_extra_directives=["--tmp=20G"], worker_extra_args=["--resources", "MEMORY=8e9"],
                           job_script_prologue=["export jref=/grp/crds/hst/references/hst/"])
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --mem=8G" in script
    assert "#SBATCH --tmp=20G" in script
    assert "--resources MEMORY=8e9" in script
    assert "export jref=/grp/crds/hst/references/hst/" in script


def test_the_embedded_cluster_serves_its_dashboard_on_loopback_and_says_where():
    import psutil

    from astrodriz_sm.campaign.driver import DASHBOARD_ADDRESS, _cluster
    from astrodriz_sm.cli.main import build_parser

    default = build_parser().parse_args(["batch", "x"]).dashboard_address
    assert default == DASHBOARD_ADDRESS == "127.0.0.1:8787"
    # Port 0: another campaign on this machine may hold 8787; the host is what is checked.
    with _cluster(None, 1, None, "127.0.0.1:0") as (client, _, dashboard):
        http = client.cluster.scheduler.http_server
        listening = {c.laddr for c in psutil.Process().net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert [(a.ip, a.port) for a in listening if a.port == http.port] == [("127.0.0.1", http.port)]
        assert dashboard == f"http://127.0.0.1:{http.port}/status"


def test_a_run_killed_for_memory_is_retried_with_twice_the_memory(tmp_path):
    """A 100 MB budget: killed past it, retried with 200 MB (killed again), then 400 MB, enough.

    The run works on scratch disk (NEWPATH), and is resumed there.
    """
    root = "jsm001070"
    simulate_association(tmp_path / root, SimConfig(root=root, products="flt", n_exposures=2, service=False))
    asn = tmp_path / root / f"{root}_asn.fits"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = _batch("--memory-limit", "2GB", "--task-memory", "100MB", "--scratch", scratch, asn, cwd=tmp_path,
                  env=_env())
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    attempts = Ledger(tmp_path / "campaign.db").attempts_of(str(asn))
    assert [(a.exit_class, a.verdict, a.memory_budget_bytes) for a in attempts] == [
        ("memory", "retry", 100 * 10 ** 6), ("memory", "retry", 200 * 10 ** 6), ("ok", "done", 400 * 10 ** 6)]
    assert all(a.peak_rss_bytes > a.memory_budget_bytes for a in attempts[:2])
    assert attempts[2].peak_rss_bytes <= attempts[2].memory_budget_bytes
    assert "killed past 100 MB; retried with 200 MB" in err
    assert [a.message for a in attempts[:2]] == ["killed past 100 MB; retried with 200 MB",
                                                 "killed past 200 MB; retried with 400 MB"]
    run = fold(EventStore(tmp_path / root / STORE).events(attempts[2].run_id))
    assert run.ended["status"] == "done"
    assert run.config["run_dir"] == str(scratch / root)
    assert list(scratch.iterdir()) == []  # the results moved back beside the input
    assert (tmp_path / root / f"{root}_drz.fits").is_file()


def test_a_bad_ledger_or_list_is_one_line_naming_the_file(tmp_path):
    not_a_ledger = tmp_path / "astrodriz_sm.db"
    EventStore(not_a_ledger).close()
    cases = [
        (("campaign", "status", tmp_path / "none.db"), ExitCode.RUN_STATE,
         f"{tmp_path / 'none.db'}: no campaign ledger here (give its path, or run batch first)"),
        (("campaign", "status", not_a_ledger), ExitCode.LOG_CORRUPT,
         f"{not_a_ledger}: SQLite file without a campaign ledger (tables: events, runs, schema)"),
        (("report", "--campaign", tmp_path / "none.db"), ExitCode.RUN_STATE,
         f"{tmp_path / 'none.db'}: no campaign ledger here (give its path, or run batch first)"),
        (("report", "--campaign", not_a_ledger), ExitCode.LOG_CORRUPT,
         f"{not_a_ledger}: SQLite file without a campaign ledger (tables: events, runs, schema)"),
        (("batch", "--from-file", tmp_path / "list.txt"), ExitCode.USAGE,
         f"{tmp_path / 'list.txt'}: cannot read the list of inputs (No such file or directory)"),
        (("batch", "--ledger", tmp_path / "no" / "c.db", tmp_path / "x_asn.fits"), ExitCode.RUN_STATE,
         f"{tmp_path / 'no' / 'c.db'}: cannot create the campaign ledger: directory {tmp_path / 'no'} does not exist"),
    ]
    for args, code, message in cases:
        proc = run_cli(*args, cwd=tmp_path)
        assert (proc.returncode, proc.stderr.strip().splitlines()) == (code, [f"astrodriz-sm: error: {message}"])


def test_a_processing_failure_is_retried_once_as_a_new_run(tmp_path):
    """Scratch disk too small for the stage copies: exit 5, a new run, exit 5 again, then failed."""
    if os.geteuid() != 0:
        pytest.skip("no tmpfs: mounting one needs root")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(scratch)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"no tmpfs: {(mount.stderr or mount.stdout).strip() or f'mount exited {mount.returncode}'}")
    try:
        root = "jsm001080"
        simulate_association(tmp_path / root, SimConfig(root=root, products="flt", n_exposures=2, service=False))
        asn = tmp_path / root / f"{root}_asn.fits"
        proc = _batch("--scratch", scratch, asn, cwd=tmp_path, env=_env())
        _, err = proc.communicate(timeout=600)
    finally:
        subprocess.run(["umount", str(scratch)], check=False)
    assert proc.returncode == ExitCode.PROCESSING, err[-3000:]
    attempts = Ledger(tmp_path / "campaign.db").attempts_of(str(asn))
    assert [(a.action, a.exit_code, a.exit_class, a.verdict) for a in attempts] == [
        ("start", 5, "processing", "retry"), ("start", 5, "processing", "failed")]
    assert attempts[0].run_id != attempts[1].run_id
    assert attempts[1].message.startswith(f"astrodriz-sm: error: {scratch / root / f'{root}_default'}/")
    assert attempts[1].message.endswith(": No space left on device")


def test_a_run_finished_by_hand_is_found_once_and_not_run_again(campaign):
    base, asn = campaign["base"], campaign["pristine"] / f"{KILLED}_asn.fits"
    for _ in range(2):
        proc = run_cli("batch", "--ledger", base / "by-hand.db", asn, cwd=base, env=NO_ALIGNMENT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Dask dashboard" not in proc.stderr
    rows = Ledger(base / "by-hand.db").associations()
    assert [(a.attempt, a.action, a.exit_code, a.exit_class, a.verdict, a.wcs_type) for a in rows[0]["attempts"]] == [
        (0, "found", 0, "ok", "done", "default")]
    assert proc.stdout.splitlines()[:4] == [
        f"{base / 'by-hand.db'}: 1 association, 0 attempts in 2 batches", "by state:       done 1",
        "by exit class:  ok 1", "by final WCS:   default 1  a priori 0  a posteriori 0"]


def test_the_driver_lock_is_removed_when_its_batch_ends_and_taken_anew(tmp_path):
    first = Ledger(tmp_path / "campaign.db", create=True)
    first.lock_for_driver()
    stale = open(tmp_path / "campaign.db.lock")  # a second batch that opened the file before it was removed
    first.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.db"]
    second = Ledger(tmp_path / "campaign.db")
    second.lock_for_driver()
    assert (tmp_path / "campaign.db.lock").read_text() == f"pid {os.getpid()} on {__import__('socket').gethostname()}\n"
    import fcntl

    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the removed file's lock is no lock on the ledger
    stale.close()
    second.close()


def test_one_batch_per_ledger_at_a_time(tmp_path):
    import fcntl

    ledger = tmp_path / "campaign.db"
    with open(tmp_path / "campaign.db.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on node17\n")
        held.flush()
        proc = run_cli("batch", "--ledger", ledger, tmp_path / "x_asn.fits", cwd=tmp_path)
    message = f"{ledger}: in use by another batch (pid 4242 on node17); one batch per ledger at a time"
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (ExitCode.RUN_STATE,
                                                                   [f"astrodriz-sm: error: {message}"])
    assert Ledger(ledger).batches() == []
