"""What operators meet: hung services, full disks, damaged stores, odd associations, signals.

Each fault is the real thing: a socket server that accepts and never answers, a tmpfs that fills
at the promote step, a damaged SQLite file, a real SIGTERM. Each test checks the exit code, the
one-line message, the input files' sha256, and that the next start or resume ends done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from astropy.io import fits
from astropy.table import Table

from astrodriz_sm.crashtest import start_and_kill
from astrodriz_sm.errors import ExitCode
from astrodriz_sm.services import service_environment
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

from .conftest import NO_ALIGNMENT, run_cli, sha256_tree

ROOT = "jsm001010"
STORE = "astrodriz_sm.db"
DEADLINE = 2.0


def _run(d: Path, store: Path | None = None):
    store = EventStore(store or d / STORE)
    return fold(store.events(store.latest_run()["run_id"]))


def _inputs_of(d: Path) -> dict:
    return {n: h for n, h in sha256_tree(d).items() if n.endswith(".fits") and "/" not in n}


def _last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


# -- a service that answers its probe and then nothing ------------------------------------------
class _Proxy:
    """A real HTTP server on 127.0.0.1 in front of the local service; ``stop`` ends what it holds open."""

    def __init__(self):
        self.stop = threading.Event()

    def _serve(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def environment(self) -> dict:
        return service_environment(self.url)

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


class HangingProxy(_Proxy):
    """A real HTTP server in front of the local service: forwards what ``forward(path)`` accepts,
    holds every other request open without answering (for at most ``hold`` seconds).
    """

    def __init__(self, upstream: str, forward, hold: float = 120.0):
        super().__init__()
        self.held = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if forward(self.path):
                    r = requests.get(upstream.rstrip("/") + self.path, timeout=30)
                    self.send_response(r.status_code)
                    self.send_header("Content-Type", r.headers.get("Content-Type", "text/plain"))
                    self.send_header("Content-Length", str(len(r.content)))
                    self.end_headers()
                    self.wfile.write(r.content)
                else:
                    proxy.held.append(self.path)
                    proxy.stop.wait(hold)

            def log_message(self, *args):
                pass

        self._serve(Handler)


def _is_probe(path: str) -> bool:
    return path.endswith("/availability") or "RA=0&DEC=0&SR=0.0001" in path


@pytest.fixture
def proxy():
    made = []

    def make(upstream, forward):
        made.append(HangingProxy(upstream, forward))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_a_catalog_service_that_hangs_after_its_probe_skips_the_stage_in_bounded_time(simulated, service, proxy):
    src, d = simulated("hang-catalog", products="flt", pointing_error=0.6)
    real = service(src)
    hung = proxy(real.url, lambda path: _is_probe(path) or "CatalogSearch" not in path)
    before = _inputs_of(d)
    proc = run_cli("start", d / f"{ROOT}_asn.fits",
                   env={"jref": f"{d}/", **hung.environment, "ASTRODRIZ_SM_SERVICE_TIMEOUT": str(DEADLINE)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(d)
    url = hung.environment["ASTROMETRIC_CATALOG_URL"]
    assert run.output("aposteriori", "align")["stop_stage"].startswith(
        f"the GAIAeDR3 catalog at {url}/vo/CatalogSearch.aspx?")
    assert run.output("aposteriori", "align")["stop_stage"].endswith(
        f"did not answer within {DEADLINE:g} s (2 attempts): stage skipped")
    assert run.decision("wcs")["chosen_stage"] == "apriori"
    # Bounded: the request and its one retry, each given up after the deadline; no other catalog asked.
    assert len(hung.held) == 2
    assert set(_inputs_of(d)) >= set(before)


class DrippingProxy(_Proxy):
    """A real HTTP server in front of the local service that sends catalog answers one byte a second.

    ``drip="body"``: the status line and headers at once, then the body byte by byte.
    ``drip="headers"``: everything byte by byte from the status line on, the headers padded so that
    they alone would take minutes. The probe and every other request are forwarded as they are.
    Each dripped request is recorded as ``(path, started, ended)`` in wall-clock seconds, ``ended``
    being when the client hung up (or the drip ran out after ``limit`` bytes).
    """

    def __init__(self, upstream: str, drip: str, limit: int = 240):
        super().__init__()
        self.dripped = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                r = requests.get(upstream.rstrip("/") + self.path, timeout=30)
                head = (f"HTTP/1.0 {r.status_code} OK\r\nContent-Type: text/csv\r\n"
                        f"Content-Length: {len(r.content)}\r\n").encode()
                if _is_probe(self.path) or "CatalogSearch" not in self.path:
                    self.wfile.write(head + b"\r\n" + r.content)
                    return
                started = time.time()
                if drip == "body":
                    self.wfile.write(head + b"\r\n")
                    slow = r.content
                else:
                    slow = head + b"X-Padding: " + b"x" * limit + b"\r\n\r\n" + r.content
                try:
                    for i in range(min(limit, len(slow))):
                        self.wfile.write(slow[i:i + 1])
                        if proxy.stop.wait(1.0):
                            break
                except OSError:
                    pass  # the client hung up: what the deadline should make it do
                proxy.dripped.append((self.path, started, time.time()))
                self.close_connection = True

            def log_message(self, *args):
                pass

        self._serve(Handler)


def _utc_seconds(utc: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(utc).timestamp()


@pytest.mark.parametrize("drip", ["body", "headers"])
def test_a_catalog_service_dripping_its_answer_skips_the_stage_within_one_deadline_per_request(
        simulated, service, drip):
    """One byte a second keeps every read short: only the one deadline per request bounds the run."""
    deadline = 5.0
    src, d = simulated("drip-catalog", products="flt", pointing_error=0.6)
    real = service(src)
    slow = DrippingProxy(real.url, drip)
    try:
        started = time.monotonic()
        proc = run_cli("start", d / f"{ROOT}_asn.fits",
                       env={"jref": f"{d}/", **slow.environment, "ASTRODRIZ_SM_SERVICE_TIMEOUT": f"{deadline:g}"})
        wall = time.monotonic() - started
        # The client hung up on the last drip before the run went on: nothing left to wait for.
        dripped = list(slow.dripped)
    finally:
        slow.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(d)
    url = slow.environment["ASTROMETRIC_CATALOG_URL"]
    reason = run.output("aposteriori", "align")["stop_stage"]
    assert reason.startswith(f"the GAIAeDR3 catalog at {url}/vo/CatalogSearch.aspx?RA=")
    assert reason.endswith(f"did not answer within {deadline:g} s (2 attempts): stage skipped")
    assert run.decision("aposteriori_unanswered")["unanswered"] == reason.removesuffix(": stage skipped")
    assert run.decision("wcs")["chosen_stage"] == "apriori"
    assert f"did not answer within {deadline:g} s (2 attempts): stage skipped" in (d / f"{ROOT}.tra").read_text()
    # The request and its one retry, each cut at the deadline; no other catalog asked.
    assert len(dripped) == 2 and all("CAT=GAIAeDR3" in path for path, _, _ in dripped)
    # The server sees the hang-up at its next byte, a second at most after the cut.
    held = [round(ended - began, 1) for _, began, ended in dripped]
    assert all(deadline - 0.5 <= h <= deadline + 2.0 for h in held), held
    # The catalog phase, from the first catalog request to the end of the fit step: two deadlines and
    # the pause between the attempts, and a margin for the step's own work after the cut.
    events = EventStore(d / STORE).events(run.run_id)
    align_done = next(e for e in events if (e.stage, e.step, e.kind) == ("aposteriori", "align", "step.completed"))
    phase = _utc_seconds(align_done.utc) - dripped[0][1]
    bound = deadline * len(dripped) + 1.0 + 3.0
    print(f"drip={drip}: catalog phase {phase:.1f} s (bound {bound:g} s), requests held {held} s, run {wall:.1f} s")
    assert 2 * deadline <= phase <= bound
    # The whole run: the catalog phase plus a run without catalog (about half a minute here).
    assert wall < bound + 120


def test_an_astrometry_database_that_hangs_after_its_probe_skips_the_apriori_stage(simulated, service, proxy):
    src, d = simulated("hang-db", products="flt", pointing_error=0.6)
    real = service(src)
    hung = proxy(real.url, lambda path: _is_probe(path) or "observation/read" not in path)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={
        "jref": f"{d}/", **hung.environment, "ASTRODRIZ_SM_SERVICE_TIMEOUT": str(DEADLINE),
        "ASTROMETRY_COMPUTE_APOSTERIORI": "off"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(d)
    reason = run.output("apriori", "updatewcs")["stop_stage"]
    db = hung.environment["ASTROMETRY_SERVICE_URL"]
    assert reason.startswith(f"the astrometry database at {db}observation/read/")
    assert reason.endswith(f"did not answer within {DEADLINE:g} s (2 attempts): stage skipped")
    assert run.decision("wcs")["chosen_stage"] == "default"


def test_resume_after_a_hang_takes_the_current_service_urls_and_probes_again(simulated, service, proxy):
    src, d = simulated("hang-resume", products="flt", pointing_error=0.6)
    real = service(src)
    hung = proxy(real.url, lambda path: _is_probe(path) or "CatalogSearch" not in path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(jref=f"{d}/", **hung.environment, ASTRODRIZ_SM_SERVICE_TIMEOUT="600")
    run = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", "-q", "start", d / f"{ROOT}_asn.fits"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not hung.held and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    assert hung.held, "the run never asked the hanging catalog service"
    time.sleep(1.0)
    assert run.poll() is None  # still waiting on the catalog: an operator kills it
    run.kill()
    run.wait()
    proc = run_cli("resume", cwd=d, env={"jref": f"{d}/", **real.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(d)
    assert run.decision("wcs")["chosen_wcsname"].endswith("-FIT_REL_GAIAeDR3")
    events = EventStore(d / STORE).events(run.run_id)
    resumed = next(e for e in events if e.kind == "run.resumed")
    assert resumed.payload["environment_update"] == real.environment
    [redo] = [e for e in events if e.kind == "step.invalidated"]
    assert (redo.stage, redo.step) == ("aposteriori", "probe_service")
    assert redo.payload["reason"].startswith("service settings changed on resume (ASTROMETRIC_CATALOG_URL")
    assert run.output("aposteriori", "probe_service")["services"]["ASTROMETRIC_CATALOG_URL"]["url"] == \
        real.environment["ASTROMETRIC_CATALOG_URL"]


def test_start_restart_abandons_an_unfinished_run_and_starts_anew(simulated):
    _, d = simulated("restart", products="flt", n_exposures=2)
    env = {**os.environ, "jref": f"{d}/", **NO_ALIGNMENT}
    assert start_and_kill(d / f"{ROOT}_asn.fits", env, ("default/astrodrizzle", "step.started", 0.5))
    old = _run(d).run_id
    proc = run_cli("start", "--restart", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = EventStore(d / STORE)
    abandoned = fold(store.events(old))
    assert abandoned.ended == {"status": "abandoned", "exit_code": 7, "products": [],
                               "reason": "abandoned: a new run was started on this input (start --restart)"}
    assert _run(d).run_id != old and _run(d).ended["status"] == "done"


# -- promote: all or nothing ---------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB tmpfs (root only, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", mount], check=True)
    yield mount
    subprocess.run(["umount", mount], check=True)


@pytest.mark.parametrize("point", ["final/promote step.started", "final/promote promoted"],
                         ids=["before-promote", "inside-promote"])
def test_a_disk_that_fills_at_promote_replaces_nothing(simulated, small_disk, tmp_path, point):
    """Full before promote: its space check refuses. Full after its first file: the copy fails, and
    what was written is removed. Either way no input is replaced."""
    sim, src = simulated("disk-full", products="flt", n_exposures=2)
    d = small_disk / "data"
    d.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (d / f.name).write_bytes(f.read_bytes())
    before = _inputs_of(d)
    newpath = tmp_path / "work"
    env = {**os.environ, "jref": f"{d}/", **NO_ALIGNMENT}
    child = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.crashtest", "child", point,
                              str(d / f"{ROOT}_asn.fits"), str(newpath)], env=env)
    _, status = os.waitpid(child.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave 200 kB: less than the products and exposures need
        f.write(b"\0" * (free - 200_000))
    child.send_signal(signal.SIGCONT)
    assert child.wait(timeout=300) == ExitCode.PROCESSING
    run = _run(d)
    assert run.ended["status"] == "failed"
    if point.endswith("step.started"):
        assert run.ended["reason"].startswith(f"{d}: no room to promote 5 files (")
        assert run.ended["reason"].endswith("MB free); nothing was replaced")
    else:
        # The product was written; the first exposure found no room.
        assert run.ended["reason"] == f"{d / f'.{sim.members[0]}_flt.fits.promoted'}: No space left on device"
    assert _inputs_of(d) == before
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")]
    trailer = (d / f"{ROOT}.tra").read_text()
    assert f"kept for inspection: {newpath / ROOT / f'{ROOT}_final'}" in trailer
    filler.unlink()
    proc = run_cli("start", d / f"{ROOT}_asn.fits", f"{newpath}", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (d / f"{ROOT}_drz.fits").is_file()


# -- a failed fit is an invalid candidate ------------------------------------------------------
def test_fits_that_fail_are_invalid_candidates_in_drizzlepacs_order_not_a_failed_run(simulated, service, tmp_path):
    """A singleton FLT against catalogs whose sources all sit at one point: every fit fails."""
    src, d = simulated("singleton", products="flt", pointing_error=0.6)
    served = tmp_path / "service"
    shutil.copytree(src.service_dir, served)
    for catalog in ("GAIAeDR3", "GSC242", "2MASS"):
        table = Table.read(served / "catalogs" / f"{catalog}.ecsv")
        table["ra"], table["dec"] = table["ra"][0], table["dec"][0]
        table.write(served / "catalogs" / f"{catalog}.ecsv", overwrite=True)
    handle = service(dataclasses.replace(src, service_dir=served))
    member = src.members[0]
    proc = run_cli("start", d / f"{member}_flt.fits", env={"jref": f"{d}/", **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(d)
    cands = run.candidates["aposteriori"]
    # One exposure: no relative fit; 2dhist then default, each over the three catalogs in order.
    assert [(c["catalog"], c["method"]) for c in cands] == [
        (cat, method) for method in ("2dhist", "default") for cat in ("GAIAeDR3", "GSC242", "2MASS")]
    assert all(c["rms_mas"] is None and not c["valid"] and c["fit_quality"] == 5 for c in cands)
    assert {c["reason"] for c in cands} == {"the fit failed (drizzlepac reported no RMS)"}
    assert run.output("aposteriori", "conclude")["reason"].startswith(
        "no fit of quality 1-4: GAIAeDR3 2dhist quality 5; GSC242 2dhist quality 5; 2MASS 2dhist quality 5; ")
    assert run.decision("wcs")["chosen_stage"] == "apriori"
    doc = json.loads(run_cli("explain", "--json", cwd=d).stdout)
    assert [f["rms_mas"] for f in doc["aposteriori_fits"]] == [None] * 6
    assert "1000000000" not in run_cli("explain", cwd=d).stdout


def test_a_catalog_service_answering_html_is_named_in_each_candidate(simulated, service):
    src, d = simulated("html", products="flt", pointing_error=0.6)
    real = service(src)

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>maintenance</body></html>"
            if _is_probe(self.path):
                r = requests.get(real.url.rstrip("/") + self.path, timeout=30)
                body = r.content
            self.send_response(200)
            self.send_header("Content-Type", "text/csv" if _is_probe(self.path) else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/gsss"
        proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **real.environment,
                                                            "ASTROMETRIC_CATALOG_URL": url})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    reasons = [c["reason"] for c in _run(d).candidates["aposteriori"]]
    assert reasons and all(r.startswith(f"the {c} catalog service at {url} answered with no catalog (HTTP 200, "
                                        "text/html, ") for r, c in zip(reasons, ("GAIAeDR3", "GSC242", "2MASS")))
    assert len(reasons) == 3  # 2MASS, the last catalog, empty too: drizzlepac abandons the search


def test_a_catalog_service_failing_with_http_500_is_named_as_the_reason_the_stage_is_skipped(simulated, service):
    src, d = simulated("http500", products="flt", pointing_error=0.6)
    real = service(src)
    asked = []

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self):
            if _is_probe(self.path):
                r = requests.get(real.url.rstrip("/") + self.path, timeout=30)
                status, body, kind = r.status_code, r.content, "text/csv"
            else:
                asked.append(self.path)
                status, body, kind = 500, b"<html><body>Internal Server Error</body></html>", "text/html"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/gsss"
        proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **real.environment,
                                                            "ASTROMETRIC_CATALOG_URL": url})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    # drizzlepac asks each catalog once, reads each error page as a catalog of no sources, and gives
    # up after the last: the status is the reason, for each catalog and for the stage.
    host = url.removesuffix("/gsss")
    assert [p.split("&CAT=")[1].split("&")[0] for p in asked] == ["GAIAeDR3", "GSC242", "2MASS"]
    run = _run(d)
    assert [c["reason"] for c in run.candidates["aposteriori"]] == [
        f"HTTP 500 from {host}{path}: no {catalog} catalog"
        for path, catalog in zip(asked, ("GAIAeDR3", "GSC242", "2MASS"), strict=True)]
    reason = (f"HTTP 500 from {host}{asked[-1]}: no 2MASS catalog; 2MASS is the last reference catalog: "
              "drizzlepac abandons the alignment")
    events = EventStore(d / STORE).events(run.run_id)
    align = next(e for e in events if (e.stage, e.step, e.kind) == ("aposteriori", "align", "step.completed"))
    assert (align.payload["abandoned"], align.payload["stop_stage"]) == (reason, reason)
    [fit] = [e for e in events if e.kind == "decision" and e.payload["decision"] == "aposteriori_fit"]
    assert (fit.payload["chosen_catalog"], fit.payload["reason"], fit.payload["stop_stage"]) == (None, reason, reason)
    assert run.decision("aposteriori_stage")["reason"] == reason
    assert run.decision("wcs")["chosen_stage"] == "apriori"
    trailer = (d / f"{ROOT}.tra").read_text()
    assert f"[aposteriori/align] decision aposteriori_fit: no fit chosen - {reason}\n" in trailer
    explained = run_cli("explain", cwd=d).stdout
    assert f"\n    aposteriori  skipped  {reason}\n" in explained
    assert "only 0 sources" not in trailer + explained


# -- inputs as runastrodriz treats them ------------------------------------------------------------
def test_every_member_with_zero_exptime_drizzles_all_and_aligns_none(simulated):
    src, d = simulated("all-zero", products="flt", n_exposures=2)
    for m in src.members:
        fits.setval(d / f"{m}_flt.fits", "EXPTIME", value=0.0, ext=0)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(d)
    # runastrodriz 3.11 turns alignment to GAIA off; the a priori stage still runs.
    guards = {g["guard"]: g for t in run.transitions for g in t["guards"]}
    assert guards["apriori_possible"]["result"] is True
    assert (guards["aposteriori_possible"]["result"], guards["aposteriori_possible"]["reason"]) == (
        False, "every exposure has EXPTIME=0 or NGOODPIX=0: no alignment to GAIA")
    assert [e.empty for e in run.inputs.exposures.flt] == ["EXPTIME=0", "EXPTIME=0"]
    assert (d / f"{ROOT}_drz.fits").is_file()


def _refused(proc, code, message):
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert _last_line(proc) == f"astrodriz-sm: error: {message}"


def test_a_member_listed_twice_is_an_input_error(simulated):
    src, d = simulated("twice", products="flt", n_exposures=2)
    asn = d / f"{ROOT}_asn.fits"
    with fits.open(asn, mode="update") as hdul:
        hdul[1].data["MEMNAME"][1] = hdul[1].data["MEMNAME"][0]
    before = _inputs_of(d)
    proc = run_cli("start", asn, env={"jref": f"{d}/", **NO_ALIGNMENT})
    _refused(proc, ExitCode.INPUT, f"{asn}: member {src.members[0]} is listed more than once")
    assert _inputs_of(d) == before
    with fits.open(asn, mode="update") as hdul:
        hdul[1].data["MEMNAME"][1] = src.members[1].upper()
    assert run_cli("start", asn, env={"jref": f"{d}/", **NO_ALIGNMENT}).returncode == 0


def test_an_all_nan_exposure_is_named(simulated):
    import numpy as np

    src, d = simulated("nan", products="flt", n_exposures=2)
    victim = d / f"{src.members[1]}_flt.fits"
    with fits.open(victim, mode="update") as hdul:
        hdul["SCI", 1].data[:] = np.nan
    before = _inputs_of(d)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    _refused(proc, ExitCode.INPUT, f"{victim}: SCI,1 is all NaN; nothing to drizzle")
    assert _inputs_of(d) == before


def test_simulate_an_empty_field(tmp_path):
    proc = run_cli("simulate", tmp_path / "empty", "--n-stars", "0", "--n-exposures", "2", "--no-service")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from astropy.table import Table

    assert len(Table.read(tmp_path / "empty" / "truth" / f"{ROOT}_truth.ecsv")) == 0
    assert (tmp_path / "empty" / f"{ROOT[:6]}a2q_flt.fits").is_file()


def test_jref_without_its_trailing_slash(simulated):
    _, d = simulated("slash", products="flt", n_exposures=2)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": str(d), **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _run(d).config["environment"]["jref"] == f"{d}/"


def test_demo_uses_its_own_reference_files_whatever_jref_says(tmp_path):
    proc = run_cli("-q", "demo", "--workdir", tmp_path / "demo", env={"jref": "/nonexistent/crds/acs/"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chosen WCS: IDC_sm00001aj-FIT_REL_GAIAeDR3 (aposteriori stage)" in proc.stdout


# -- paths with unusual characters -----------------------------------------------------------------
def test_a_directory_named_data_copy_is_processed_end_to_end(simulated, service, tmp_path):
    """An association in ``data (copy)``, jref there too: done, aligned, with ``-v``.

    Measured with a whole run of an association in a directory named ``d<c>x``, jref in it and
    elsewhere (alignment off); with ``-v``, both alignment stages and ``--report`` for ``data (copy)``
    and ``d$x ,(y)`` (FLT and FLT+FLC, ``-d``); and a WFPC2 ``_c0m`` exposure, uref and CRDS_PATH there too. These work: space (inside a name, leading, trailing), ``(``
    and ``)``, also as a pair (stsci.tools' ``fileutil.Expand`` reads ``(copy)`` in a reference path
    as the variable ``copy``, and ``d$`` as the variable ``d``), ``]``, ``,``, ``'``, ``"``, unicode
    (``é (ü)``), ``#``, ``$``, ``@``, ``*``, ``?``, ``~``, ``{``, ``}``, ``;``, ``&``, ``!``, ``=``,
    ``+``, ``%``, ``:``, ``-``, ``.``: the libraries get names relative to the directory they work in,
    and the reference directories under a plain symbolic link while a step runs. Refused: ``[``
    (AstroDrizzle makes names absolute and cuts them at ``[``, a FITS extension), see
    :func:`test_a_bracket_in_the_path_is_refused_before_anything_is_written`.
    """
    src, copy = simulated("odd-path", products="flt", n_exposures=2, pointing_error=0.6)
    d = tmp_path / "data (copy)"
    shutil.copytree(copy, d)
    links = tmp_path / "tmp"
    links.mkdir()
    handle = service(src)
    proc = run_cli("start", "-v", d / f"{ROOT}_asn.fits",
                   env={"jref": f"{d}/", "TMPDIR": str(links), **handle.environment})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(d)
    assert run.ended["status"] == "done"
    wcs = run.decision("wcs")
    assert wcs["chosen_stage"] == "aposteriori"
    assert fits.getval(d / f"{ROOT}_drz.fits", "WCSNAME", ext=1) == wcs["chosen_wcsname"]
    assert run.config["environment"]["jref"] == f"{d}/"  # recorded as given
    assert list(links.iterdir()) == []  # each step's links went with it


def test_a_bracket_in_the_path_is_refused_before_anything_is_written(simulated, tmp_path):
    """``[`` in the input's directory, or in NEWPATH: exit 3, one line naming the path, nothing written."""
    _, copy = simulated("store", products="flt", n_exposures=2)
    d, plain = tmp_path / "data [1]", tmp_path / "plain"
    shutil.copytree(copy, d)
    shutil.copytree(copy, plain)
    newpath = tmp_path / "work [2]"
    before = {p: p.is_dir() or p.read_bytes() for p in tmp_path.rglob("*")}
    why = "'[' in the path: drizzlepac reads '[' as the start of a FITS extension; use a directory without it"
    for args, path in (((d / f"{ROOT}_asn.fits",), d / f"{ROOT}_asn.fits"),
                       ((plain / f"{ROOT}_asn.fits", newpath), newpath / ROOT)):
        proc = run_cli("start", *args, env={"jref": f"{args[0].parent}/", **NO_ALIGNMENT})
        assert proc.returncode == ExitCode.INPUT, proc.stderr[-3000:]
        assert proc.stderr.strip() == f"astrodriz-sm: error: {path}: {why}"
    assert {p: p.is_dir() or p.read_bytes() for p in tmp_path.rglob("*")} == before


# -- the store -------------------------------------------------------------------------------------
@pytest.fixture
def finished(simulated):
    """A directory with one finished run (alignment off) and its store."""
    _, d = simulated("store", products="flt", n_exposures=2)
    assert run_cli("start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT}).returncode == 0
    return d


def test_a_store_with_random_bytes_in_the_middle(finished):
    store = finished / STORE
    EventStore(store).close()
    size = store.stat().st_size
    with open(store, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(4096))
    damaged = store.read_bytes()
    for command in ("status", "verify-log", "replay", "explain", "resume"):
        proc = run_cli(command, "--store", store, cwd=finished)
        assert proc.returncode == ExitCode.LOG_CORRUPT, (command, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        assert _last_line(proc).startswith(f"astrodriz-sm: error: {store}: damaged event store ("), command
    proc = run_cli("start", finished / f"{ROOT}_asn.fits", env={"jref": f"{finished}/", **NO_ALIGNMENT})
    assert proc.returncode == ExitCode.LOG_CORRUPT
    assert _last_line(proc).startswith(f"astrodriz-sm: error: {store}: damaged event store")
    assert store.read_bytes() == damaged
    # A new store beside it: the next start works.
    proc = run_cli("start", "--store", finished / "fresh.db", finished / f"{ROOT}_asn.fits",
                   env={"jref": f"{finished}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_truncated_store_is_log_corrupt(finished, tmp_path):
    short = tmp_path / "short.db"
    short.write_bytes((finished / STORE).read_bytes()[:10000])
    proc = run_cli("verify-log", "--store", short)
    assert proc.returncode == ExitCode.LOG_CORRUPT
    assert _last_line(proc).startswith(f"astrodriz-sm: error: {short}: damaged event store (")


def test_start_and_resume_refuse_a_truncated_store_and_write_nothing(finished):
    """Cut at half (whole pages), at a size that is no multiple of the page size, and inside the last
    page (the file still opens: SQLite's quick_check finds the damage): exit 8, one line, same bytes."""
    store = finished / STORE
    whole = store.read_bytes()
    page = int.from_bytes(whole[16:18], "big")
    assert len(whole) % page == 0 and len(whole) >= 4 * page
    env = {"jref": f"{finished}/", **NO_ALIGNMENT}
    malformed = f"{store}: damaged event store (database disk image is malformed)"
    for size in (len(whole) // 2, len(whole) // 2 + 1000, len(whole) - 3 * page // 4):
        store.write_bytes(whole[:size])
        before = {p.name: p.read_bytes() for p in finished.iterdir() if p.name.startswith(STORE)}
        assert list(before) == [STORE]
        opens = size > len(whole) - page
        resumed = run_cli("resume", "--store", store, cwd=finished, env=env)
        started = run_cli("start", finished / f"{ROOT}_asn.fits", env=env)
        for proc, tail in ((resumed, "; not resumed"), (started, "; no run is added to it")):
            assert proc.returncode == ExitCode.LOG_CORRUPT, (size, proc.stderr[-2000:])
            assert "Traceback" not in proc.stderr
            line = proc.stderr.strip()
            assert "\n" not in line
            if opens:
                assert line.startswith(f"astrodriz-sm: error: {store}: damaged event store (On tree page ")
                assert line.endswith(f"){tail}")
            else:
                assert line == f"astrodriz-sm: error: {malformed}", size
        # Not a byte written, and no journal or WAL left beside it.
        assert {p.name: p.read_bytes() for p in finished.iterdir() if p.name.startswith(STORE)} == before


def test_a_store_on_a_read_only_file_system_can_be_read(finished):
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    expected = run_cli("replay", cwd=finished).stdout
    subprocess.run(["mount", "--bind", finished, finished], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", finished], check=True)
        for command in ("status", "verify-log", "explain"):
            proc = run_cli(command, cwd=finished)
            assert proc.returncode == 0, (command, proc.stderr[-2000:])
        proc = run_cli("replay", cwd=finished)
        assert proc.returncode == 0 and proc.stdout == expected
    finally:
        subprocess.run(["umount", finished], check=True)


def test_read_commands_never_create_a_store(tmp_path):
    for command in ("status", "verify-log", "replay", "explain"):
        proc = run_cli(command, cwd=tmp_path)
        assert proc.returncode == ExitCode.RUN_STATE
        assert _last_line(proc) == f"astrodriz-sm: error: {tmp_path / STORE}: no event store here (give --store PATH)"
    assert list(tmp_path.iterdir()) == []


def test_a_finished_run_and_its_readers_leave_no_wal_or_shm_files(finished):
    """The store is checkpointed when its last connection closes, a reader's too: one file, as SQLite keeps it."""
    assert sorted(p.name for p in finished.iterdir() if p.name.startswith(STORE)) == [STORE]
    before = (finished / STORE).read_bytes()
    for command in ("status", "verify-log", "replay", "explain"):
        assert run_cli(command, cwd=finished).returncode == 0, command
        assert sorted(p.name for p in finished.iterdir() if p.name.startswith(STORE)) == [STORE], command
    assert (finished / STORE).read_bytes() == before


def test_resume_refuses_a_log_whose_chain_does_not_verify(simulated):
    _, d = simulated("chain", products="flt", n_exposures=2)
    env = {**os.environ, "jref": f"{d}/", **NO_ALIGNMENT}
    assert start_and_kill(d / f"{ROOT}_asn.fits", env, ("default/astrodrizzle", "step.started", 0.5))
    run_id = _run(d).run_id
    con = sqlite3.connect(d / STORE)
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        con.execute(f"DROP TRIGGER {name}")
    con.execute("UPDATE events SET payload = replace(payload, '\"force\":false', '\"force\":true') WHERE seq = 1")
    con.commit()
    con.close()
    proc = run_cli("resume", cwd=d, env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == ExitCode.LOG_CORRUPT
    assert _last_line(proc) == (f"astrodriz-sm: error: {d / STORE}: run {run_id}: the log does not verify "
                                "(first bad event: seq 1: hash mismatch (content altered)); not resumed")


# -- the command line ------------------------------------------------------------------------------
def test_log_json_that_cannot_be_opened_is_a_usage_error(simulated, tmp_path):
    _, d = simulated("logjson", products="flt", n_exposures=2)
    target = tmp_path / "missing" / "log.json"
    proc = run_cli("--log-json", target, "start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == ExitCode.USAGE
    assert _last_line(proc) == f"astrodriz-sm: error: {target}: cannot write the JSON log (No such file or directory)"
    assert not (d / STORE).exists()


def test_a_json_log_that_fails_mid_run_is_a_warning(simulated):
    _, d = simulated("devfull", products="flt", n_exposures=2)
    proc = run_cli("--log-json", "/dev/full", "start", d / f"{ROOT}_asn.fits", env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert warnings == [("astrodriz-sm: warning: /dev/full: cannot write the JSON log (No space left on device); "
                        "it stops here, the event log goes on")]


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_num_cores_must_be_at_least_one(value, tmp_path):
    proc = run_cli("start", "-n", value, tmp_path / f"{ROOT}_asn.fits")
    assert proc.returncode == ExitCode.USAGE
    assert _last_line(proc).endswith(f"argument -n/--num-cores: must be a whole number of at least 1, not '{value}'")


def test_serve_a_missing_database_is_an_error_unless_asked_to_create_it(tmp_path):
    proc = run_cli("serve", "--db", tmp_path / "typo.db", "--port", "0", timeout=30)
    assert proc.returncode == ExitCode.USAGE
    assert _last_line(proc) == (f"astrodriz-sm: error: {tmp_path / 'typo.db'}: no such service database (load one "
                                "with serve-load, or give --create to serve an empty one)")
    assert not (tmp_path / "typo.db").exists()


def test_status_into_a_closed_pipe_prints_no_traceback(finished):
    proc = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", "status"], cwd=finished,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `head -1` does once it has its line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def _session_members(sid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return out


@pytest.mark.parametrize("how,products", [("SIGTERM", "flt"), ("Ctrl-C", "flt+flc")],
                         ids=["sigterm-in-process-drizzle", "ctrl-c-concurrent-drizzles"])
def test_an_interrupted_run_stops_its_workers_and_says_how_to_resume(simulated, how, products):
    """FLT only: AstroDrizzle runs in the process and forks its own workers; FLT and FLC: two
    concurrent drizzles in child processes. Either way no process of the run outlives it."""
    _, d = simulated(f"signal-{products}", products=products, n_exposures=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(jref=f"{d}/", **NO_ALIGNMENT)
    proc = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", "-q", "start", "-n", "2",
                             d / f"{ROOT}_asn.fits"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120

    def drizzling() -> bool:
        # The drizzle's workers: the run's session then holds more than the command itself, in the
        # astrodrizzle step (updatewcs has child processes of its own, for SKYCELL).
        if len(_session_members(proc.pid)) < 2 or not (d / STORE).exists():
            return False
        try:
            return ("default", "astrodrizzle") in _run(d).in_progress
        except Exception:  # noqa: BLE001 - the store is being created; look again
            return False

    while not drizzling() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert drizzling(), "no worker process of the drizzle was seen"
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err[-2000:]
    run = _run(d)
    # Stopped inside the drizzle, or, when the signal landed where Python drops exceptions (in
    # os.fork's callbacks), at the event that ended it.
    where = "at" if run.in_progress == {("default", "astrodrizzle")} else "after"
    assert err.strip().splitlines()[-1] == (
        f"astrodriz-sm: interrupted {where} default/astrodrizzle; continue with: astrodriz-sm resume {run.run_id} "
        f"--store {d / STORE}")
    assert "Traceback" not in err
    assert _session_members(proc.pid) == []
    resumed = run_cli("resume", run.run_id, "--store", d / STORE, env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert resumed.returncode == 0, resumed.stderr[-2000:]


# The command line, with SIGTERM sent to itself the first time stsci.tools parses a configuration
# file for AstroDrizzle: the KeyboardInterrupt that the signal raises then meets the bare ``except:``
# of ``cfgpars.getEmbeddedKeyVal``, which turns it into a KeyError, as when the signal lands there by
# chance.
_SIGTERM_IN_CONFIG_PARSE = """
import os, signal, sys
from stsci.tools import cfgpars
from astrodriz_sm.cli.main import main

parse = cfgpars.configobj.ConfigObj

def parse_and_be_stopped(*args, **kwargs):
    if sys._getframe(1).f_code.co_name == "getEmbeddedKeyVal":
        cfgpars.configobj.ConfigObj = parse
        os.kill(os.getpid(), signal.SIGTERM)
    return parse(*args, **kwargs)

cfgpars.configobj.ConfigObj = parse_and_be_stopped
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_that_library_code_swallows_still_interrupts_the_run_and_the_resume_ends_done(simulated):
    """SIGTERM inside AstroDrizzle's configuration parse, where stsci.tools turns it into a KeyError:
    the run is interrupted (not failed) at the drizzle, which its resume runs again."""
    _, d = simulated("signal-flt", products="flt", n_exposures=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(jref=f"{d}/", **NO_ALIGNMENT)
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_IN_CONFIG_PARSE, "-q", "start", "-n", "1",
                           d / f"{ROOT}_asn.fits"], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    run = _run(d)
    events = EventStore(d / STORE).events(run.run_id)
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stderr[-2000:]
    assert [e.kind for e in events if e.kind == "step.failed"] == []
    assert run.in_progress == {("default", "astrodrizzle")}
    assert _last_line(proc) == (f"astrodriz-sm: interrupted at default/astrodrizzle; continue with: "
                                f"astrodriz-sm resume {run.run_id} --store {d / STORE}")
    resumed = run_cli("resume", run.run_id, "--store", d / STORE, env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = _run(d)
    assert (run.ended["status"], run.ended["exit_code"]) == ("done", 0)
    events = EventStore(d / STORE).events(run.run_id)
    assert [e.kind for e in events if e.kind == "step.failed"] == []
    assert [(e.stage, e.step) for e in events if e.kind == "step.started"].count(("default", "astrodrizzle")) == 2


# The API with the command line's signal handlers and an observer that, at the first file the
# promote step writes, sends SIGTERM to its own process inside an ``except BaseException: pass``, as
# a library's bare ``except:`` would: the step then goes on and returns normally.
_SIGTERM_SWALLOWED_IN_PROMOTE = """
import os, signal, sys
from astrodriz_sm import process
from astrodriz_sm.errors import Interrupted
from astrodriz_sm.runner import request_stop

signal.signal(signal.SIGTERM, request_stop)
pending = ["final/promote promoted"]

def observe(stage, step, point):
    if pending and f"{stage}/{step} {point}" == pending[0]:
        pending.clear()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException:
            pass

try:
    result = process(sys.argv[1], console=False, observer=observe)
except Interrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(int(exc.exit_code))
sys.exit(result.exit_code)
"""


def test_a_step_that_returns_after_a_swallowed_signal_is_not_recorded_and_runs_again(simulated):
    _, d = simulated("signal-flt", products="flt", n_exposures=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTROM")}
    env.update(jref=f"{d}/", **NO_ALIGNMENT)
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_SWALLOWED_IN_PROMOTE, d / f"{ROOT}_asn.fits"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    run = _run(d)
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stderr[-2000:]
    assert _last_line(proc) == (f"interrupted at final/promote; continue with: astrodriz-sm resume {run.run_id} "
                                f"--store {d / STORE}")
    assert run.in_progress == {("final", "promote")}
    assert not run.is_completed("final", "promote")
    resumed = run_cli("resume", run.run_id, "--store", d / STORE, env={"jref": f"{d}/", **NO_ALIGNMENT})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = _run(d)
    assert (run.ended["status"], run.ended["exit_code"]) == ("done", 0)
    events = EventStore(d / STORE).events(run.run_id)
    assert [e.kind for e in events if (e.stage, e.step) == ("final", "promote")] == [
        "step.started", "step.started", "step.completed"]
