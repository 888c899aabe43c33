"""Bad input never loses data, and a tampered event log is detected.

Every bad input must end the command with one line on standard error naming the file and the
cause, an exit code from the README's table, a ``step.failed`` event naming the file and a
``run.ended`` event, and every file that existed before byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrodriz_sm.errors import ExitCode
from astrodriz_sm.store.eventstore import EventStore, canonical_json, event_hash

from .conftest import NO_ALIGNMENT, run_cli, sha256_tree

ROOT = "jsm001010"
STORE = "astrodriz_sm.db"
SUPPORTED = "ACS/HRC, ACS/SBC, ACS/WFC, WFC3/IR, WFC3/UVIS, WFPC2/PC"


# -- helpers ---------------------------------------------------------------------------------------
def _env(d: Path) -> dict:
    return {"jref": f"{d}/", **NO_ALIGNMENT}


def _small(simulated):
    """A fresh copy of a two-exposure association: ``(SimResult, directory)``."""
    return simulated("small", n_exposures=2)


def _latest_events(store_path: Path):
    store = EventStore(store_path)
    return store.events(store.latest_run()["run_id"])


def _assert_unchanged(directory: Path, before: dict) -> None:
    """Every file present before is byte-identical; the only new files are the store and trailer."""
    after = sha256_tree(directory)
    assert {name: after.get(name) for name in before} == before
    new = sorted(set(after) - set(before))
    assert all(n.startswith(STORE) or n == f"{ROOT}.tra" for n in new), new


def _assert_refused(proc, *, code: int, path: Path, cause: str, store: Path, step=("init", "resolve_inputs")):
    """The one-line error, the exit code and the events of a run that refused bad input.

    Parameters
    ----------
    proc : subprocess.CompletedProcess
    code : int
        Expected exit code (README table).
    path : Path
        The file the error must name (first on the line, and ``path`` of the event).
    cause : str
        What must follow ``<path>: `` on the line.
    store : Path
        The event store of the run.
    step : tuple of str
        Stage and step that must have failed.
    """
    message = f"{path}: {cause}"
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"astrodriz-sm: error: {message}"
    events = _latest_events(store)
    failed = [e for e in events if e.kind == "step.failed"]
    assert [(e.stage, e.step) for e in failed] == [step]
    assert failed[0].payload["path"] == str(path)
    assert failed[0].payload["message"] == message
    assert failed[0].payload["exit_code"] == code
    assert events[-1].kind == "run.ended"
    assert (events[-1].payload["status"], events[-1].payload["exit_code"]) == ("failed", code)
    assert events[-1].payload["reason"] == message


def _write_asn(asn: Path, rows: list[tuple[str, str]]) -> None:
    """Replace the association table, keeping the primary header.

    Parameters
    ----------
    asn : Path
    rows : list of (MEMNAME, MEMTYPE)
        Every row has MEMPRSNT true.
    """
    names = np.array([r[0] for r in rows], dtype="U14")
    types = np.array([r[1] for r in rows], dtype="U14")
    table = fits.BinTableHDU.from_columns([
        fits.Column(name="MEMNAME", format="14A", array=names),
        fits.Column(name="MEMTYPE", format="14A", array=types),
        fits.Column(name="MEMPRSNT", format="L", array=np.ones(len(rows), dtype=bool)),
    ], name="ASN")
    with fits.open(asn) as hdul:
        primary = fits.PrimaryHDU(header=hdul[0].header.copy())
    fits.HDUList([primary, table]).writeto(asn, overwrite=True)


def _start(d: Path, timeout=600):
    return run_cli("start", d / f"{ROOT}_asn.fits", env=_env(d), timeout=timeout)


# -- missing, unreadable or malformed files ------------------------------------------------------
def test_missing_member(simulated):
    src, d = _small(simulated)
    member = src.members[1]
    for f in d.glob(f"{member}_fl?.fits"):
        f.unlink()
    before = sha256_tree(d)
    proc = _start(d)
    _assert_refused(proc, code=ExitCode.INPUT, path=d / f"{member}_flt.fits",
                    cause=f"exposure {member} listed in {ROOT}_asn.fits is missing (no _flt or _flc file)",
                    store=d / STORE)
    _assert_unchanged(d, before)


def _listing(*directories: Path) -> dict:
    """``{path: sha256, or None for a directory}`` of everything below ``directories``."""
    return {str(p): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for d in directories for p in sorted(d.rglob("*"))}


def test_a_start_on_a_missing_input_leaves_nothing_behind(simulated, tmp_path):
    """Refused before the store is opened: no store, no trailer, no NEWPATH directory, no run."""
    _, d = _small(simulated)
    missing = d / "missing_asn.fits"
    refused = f"astrodriz-sm: error: {missing}: file not found"
    (tmp_path / "existing").mkdir()
    for store in ("none", "one with a finished run"):
        before = _listing(d, tmp_path)
        for args in (("missing_asn.fits",), (missing, tmp_path / "existing"),
                     (missing, tmp_path / "absent" / "deeper")):
            proc = run_cli("start", *args, cwd=d, env=_env(d))
            assert (proc.returncode, proc.stderr.strip()) == (ExitCode.INPUT, refused), (store, args)
        assert _listing(d, tmp_path) == before, store
        if store == "none":
            assert not (d / STORE).exists() and not list(d.glob("*.tra"))
            assert run_cli("start", d / f"{ROOT}_asn.fits", env=_env(d)).returncode == 0


def test_an_input_refused_by_init_leaves_no_newpath_directory(simulated, tmp_path):
    """A member missing, NEWPATH given: the run is recorded beside the input, and ``NEWPATH/<root>`` is not made."""
    src, d = _small(simulated)
    member = src.members[1]
    for f in d.glob(f"{member}_fl?.fits"):
        f.unlink()
    (tmp_path / "newpath").mkdir()
    for newpath in (tmp_path / "newpath", tmp_path / "absent"):
        proc = run_cli("start", d / f"{ROOT}_asn.fits", newpath, env=_env(d))
        _assert_refused(proc, code=ExitCode.INPUT, path=d / f"{member}_flt.fits",
                        cause=f"exposure {member} listed in {ROOT}_asn.fits is missing (no _flt or _flc file)",
                        store=d / STORE)
        assert _latest_events(d / STORE)[-1].payload["kept_directories"] == []
    assert list((tmp_path / "newpath").iterdir()) == []
    assert not (tmp_path / "absent").exists()


def test_every_missing_member_is_named_on_the_one_line(simulated):
    """28 of 30 members absent: all 28 are named, sorted, on one line; nothing is read or changed."""
    src, d = _small(simulated)
    absent = [f"jsm001{n:02d}q" for n in range(28, 0, -1)]  # listed in reverse, named sorted
    _write_asn(d / f"{ROOT}_asn.fits", [(m.upper(), "EXP-DTH") for m in [*absent, *src.members]]
               + [(ROOT.upper(), "PROD-DTH")])
    before = sha256_tree(d)
    proc = _start(d)
    names = ", ".join(f"jsm001{n:02d}q_flt.fits" for n in range(1, 29))
    _assert_refused(proc, code=ExitCode.INPUT, path=d / f"{ROOT}_asn.fits",
                    cause=f"28 of 30 members missing (no _flt or _flc file): {names}", store=d / STORE)
    _assert_unchanged(d, before)


@pytest.mark.parametrize("bad_name", ["../{member}", "sub/{member}"], ids=["dotdot", "separator"])
def test_member_name_with_a_path_is_refused_before_anything_is_read(simulated, tmp_path, bad_name):
    """A member name that is a path is refused; nothing outside the run directory is touched.

    The files the name points at are FIFOs: opening one to read it would block until the
    subprocess times out, so the test fails if the pipeline reads them before refusing.
    """
    src, copy = _small(simulated)
    d = tmp_path / "run"
    shutil.copytree(copy, d)
    name = bad_name.format(member=src.members[0].upper())
    target = d / Path(name.lower()).parent
    target.mkdir(exist_ok=True)
    for suffix in ("flt", "flc", "raw"):
        os.mkfifo(target / f"{src.members[0]}_{suffix}.fits")
    _write_asn(d / f"{ROOT}_asn.fits",
               [(name, "EXP-DTH"), (src.members[1].upper(), "EXP-DTH"), (ROOT.upper(), "PROD-DTH")])
    outside = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if d not in p.parents and p != d)
    outside_hashes = {k: v for k, v in sha256_tree(tmp_path).items() if not k.startswith("run/")}
    before = sha256_tree(d)

    proc = _start(d, timeout=120)

    asn = d / f"{ROOT}_asn.fits"
    _assert_refused(proc, code=ExitCode.INPUT, path=asn, cause=f"member name {name!r} is not an HST rootname",
                    store=d / STORE)
    _assert_unchanged(d, before)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if d not in p.parents and p != d) == outside
    assert {k: v for k, v in sha256_tree(tmp_path).items() if not k.startswith("run/")} == outside_hashes


def test_truncated_fits(simulated):
    src, d = _small(simulated)
    victim = d / f"{src.members[0]}_flt.fits"
    with fits.open(victim) as hdul:
        index = hdul.index_of(("SCI", 1))
        info = hdul.fileinfo(index)
    cut = info["datLoc"] + 1000  # inside the first SCI array
    victim.write_bytes(victim.read_bytes()[:cut])
    before = sha256_tree(d)
    proc = _start(d)
    _assert_refused(proc, code=ExitCode.INPUT, path=victim,
                    cause=f"truncated FITS file (HDU {index} needs {info['datLoc'] + info['datSpan']} bytes, "
                          f"file has {cut})",
                    store=d / STORE)
    _assert_unchanged(d, before)


def test_fits_without_sci(simulated):
    src, d = _small(simulated)
    victim = d / f"{src.members[1]}_flt.fits"
    primary = fits.getheader(victim, 0)
    fits.HDUList([fits.PrimaryHDU(header=primary),
                  fits.ImageHDU(np.zeros((16, 16), dtype=np.float32), name="XYZ")]).writeto(victim, overwrite=True)
    before = sha256_tree(d)
    proc = _start(d)
    _assert_refused(proc, code=ExitCode.INPUT, path=victim, cause="no SCI extension", store=d / STORE)
    _assert_unchanged(d, before)


def test_unsupported_instrument(simulated):
    src, d = _small(simulated)
    for suffix in ("flt", "flc"):
        fits.setval(d / f"{src.members[0]}_{suffix}.fits", "INSTRUME", value="STIS", ext=0)
    before = sha256_tree(d)
    proc = _start(d)
    _assert_refused(proc, code=ExitCode.INPUT, path=d / f"{src.members[0]}_flt.fits",
                    cause=f"unsupported instrument STIS/WFC (supported: {SUPPORTED})", store=d / STORE)
    _assert_unchanged(d, before)


def test_a_zero_exptime_member_is_processed_but_not_drizzled(simulated):
    """As runastrodriz 3.11: the EXPTIME=0 member gets the WCS updates; AstroDrizzle drops it."""
    src, d = _small(simulated)
    victim = d / f"{src.members[1]}_flt.fits"
    fits.setval(victim, "EXPTIME", value=0.0, ext=0)
    proc = _start(d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = _latest_events(d / STORE)
    notes = [e.payload["message"] for e in events if e.kind == "note"]
    said = f"{src.members[1]}: EXPTIME=0: processed, chooses no drizzle parameters, not drizzled"
    assert notes == [said]
    inputs = next(e.payload["inputs"] for e in events if e.kind == "step.completed" and e.step == "resolve_inputs")
    assert inputs["members"] == src.members and inputs["empty"] == {victim.name: "EXPTIME=0"}
    with fits.open(d / f"{ROOT}_drz.fits") as drz:
        assert drz[0].header["NDRIZIM"] == len(src.members) - 1
    assert fits.getval(victim, "WCSNAME", ext=("SCI", 1)).startswith("IDC_")
    assert said in (d / f"{ROOT}.tra").read_text()


@pytest.mark.parametrize("rows", [[], [(ROOT.upper(), "PROD-DTH")]], ids=["no-rows", "product-only"])
def test_empty_association(simulated, rows):
    _, d = _small(simulated)
    asn = d / f"{ROOT}_asn.fits"
    _write_asn(asn, rows)
    assert len(fits.getdata(asn, 1)) == len(rows)
    before = sha256_tree(d)
    proc = _start(d)
    _assert_refused(proc, code=ExitCode.INPUT, path=asn,
                    cause="the association lists no exposure present (MEMPRSNT)", store=d / STORE)
    _assert_unchanged(d, before)


# -- the file system says no ---------------------------------------------------------------------
@pytest.fixture
def read_only_copy(simulated):
    """A copy of the association in a directory the CLI cannot write to.

    Root writes to any directory whatever its mode, so as root the directory is a read-only bind
    mount of itself; otherwise its modes forbid writing.

    Yields
    ------
    dict
        ``dir`` (read-only data), ``store_dir`` (writable), ``cause`` (what the file system says when
        written to) and ``env``.
    """
    _, copy = _small(simulated)
    base = Path(tempfile.mkdtemp(prefix="astrodriz-ro-"))
    d = base / "data"
    shutil.copytree(copy, d)
    (base / "store").mkdir()
    mounted = False
    try:
        if os.geteuid() == 0:
            for cmd in (["mount", "--bind", d, d], ["mount", "-o", "remount,bind,ro", d]):
                subprocess.run(cmd, check=True, capture_output=True)
                mounted = True
            cause = "Read-only file system"
        else:
            for p in [d, *d.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
            cause = "Permission denied"
        with pytest.raises(OSError):
            (d / "probe").touch()
        yield {"dir": d, "store_dir": base / "store", "cause": cause, "env": _env(d)}
    finally:
        if mounted:
            subprocess.run(["umount", d], check=True)
        for p in [base, *base.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(base)


def test_read_only_input_directory_with_store_elsewhere(read_only_copy):
    d, store = read_only_copy["dir"], read_only_copy["store_dir"] / STORE
    before = sha256_tree(d)
    proc = run_cli("start", "--store", store, d / f"{ROOT}_asn.fits", env=read_only_copy["env"], cwd="/")
    _assert_refused(proc, code=ExitCode.INPUT, path=d,
                    cause=f"input directory is not writable ({read_only_copy['cause']})", store=store)
    assert sha256_tree(d) == before


def test_read_only_input_directory_with_the_default_store(read_only_copy):
    """The store cannot be created beside the input: one line naming it, no run, nothing changed."""
    d = read_only_copy["dir"]
    before = sha256_tree(d)
    proc = run_cli("start", d / f"{ROOT}_asn.fits", env=read_only_copy["env"], cwd="/")
    assert proc.returncode == ExitCode.RUN_STATE, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"astrodriz-sm: error: {d / STORE}: cannot open event store: unable to open database file")
    assert sha256_tree(d) == before
    assert not (d / STORE).exists()


def test_no_space_left_in_newpath(simulated, tmp_path):
    """NEWPATH on a 300 kB tmpfs: the first stage copy fails, named by the file it could not write."""
    if os.geteuid() != 0:
        pytest.skip("no tmpfs: mounting one needs root")
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(small)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"no tmpfs: {(mount.stderr or mount.stdout).strip() or f'mount exited {mount.returncode}'}")
    try:
        src, d = _small(simulated)
        before = sha256_tree(d)
        proc = run_cli("start", d / f"{ROOT}_asn.fits", small, env=_env(d))
        first = src.members[0]
        _assert_refused(proc, code=ExitCode.PROCESSING,
                        path=small / ROOT / f"{ROOT}_default" / f"{first}_flt.fits",
                        cause="No space left on device", store=d / STORE, step=("default", "stage_inputs"))
        _assert_unchanged(d, before)
    finally:
        subprocess.run(["umount", str(small)], check=False)


# -- tamper evidence -------------------------------------------------------------------------------
@pytest.fixture
def two_runs(tmp_path):
    """A store with an untouched run ``run-a`` (3 events) and a run ``run-b`` (5 events) to tamper with."""
    store = EventStore(tmp_path / STORE)
    for run_id, n in (("run-a", 3), ("run-b", 5)):
        store.create_run(f"/data/{ROOT}_asn.fits", ROOT, run_id=run_id)
        for i in range(n):
            store.append(run_id, "init", "resolve_inputs", "note", {"i": i, "text": f"event {i}"})
    proc = run_cli("verify-log", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["run-a: ok (3 events, hash chain intact)",
                                        "run-b: ok (5 events, hash chain intact)"]
    return tmp_path / STORE


def _tamper(db: Path, trigger: str, sql: str, params=()) -> None:
    """Change the log behind the store's back: the trigger refuses first, then is dropped."""
    with sqlite3.connect(db) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql, params)
        conn.execute(f"DROP TRIGGER {trigger}")
        assert conn.execute(sql, params).rowcount == 1
    conn.close()


def _assert_broken(db: Path, first_bad: int, reason: str) -> None:
    proc = run_cli("verify-log", cwd=db.parent)
    assert proc.returncode == ExitCode.LOG_CORRUPT, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "run-a: ok (3 events, hash chain intact)"
    assert lines[1].startswith(f"run-b: BROKEN at seq {first_bad}: "), lines
    assert reason in lines[1], lines
    proc = run_cli("verify-log", "--store", db, "run-b")
    assert proc.returncode == ExitCode.LOG_CORRUPT
    assert proc.stdout.startswith(f"run-b: BROKEN at seq {first_bad}: ")


def test_edited_row_is_named_by_verify_log(two_runs):
    _tamper(two_runs, "events_no_update", "UPDATE events SET payload = ? WHERE run_id = 'run-b' AND seq = 3",
            (canonical_json({"i": 2, "text": "rewritten"}),))
    _assert_broken(two_runs, 3, "hash mismatch")


def test_edited_row_with_its_hash_recomputed_breaks_the_chain(two_runs):
    """Rewriting a row's hash to match its new content still breaks the link from the next row."""
    with sqlite3.connect(two_runs) as conn:
        utc, prev = conn.execute("SELECT utc, prev_hash FROM events WHERE run_id = 'run-b' AND seq = 3").fetchone()
    conn.close()
    payload = {"i": 2, "text": "rewritten"}
    digest = event_hash("run-b", 3, utc, "init", "resolve_inputs", "note", payload, prev)
    _tamper(two_runs, "events_no_update",
            "UPDATE events SET payload = ?, hash = ? WHERE run_id = 'run-b' AND seq = 3",
            (canonical_json(payload), digest))
    _assert_broken(two_runs, 4, "prev_hash does not match seq 3")


def test_deleted_middle_row_is_named_by_verify_log(two_runs):
    _tamper(two_runs, "events_no_delete", "DELETE FROM events WHERE run_id = 'run-b' AND seq = 3")
    _assert_broken(two_runs, 4, "seq 3: missing")


def test_one_of_two_concurrent_drizzles_failing_names_its_product_and_keeps_every_input(simulated, monkeypatch):
    """The FLT and FLC lists drizzle concurrently in directories of their own; a failure in one
    is reported against its product, and every exposure is back in the stage directory."""
    from stwcs.updatewcs import updatewcs

    from astrodriz_sm.errors import ProcessingError
    from astrodriz_sm.handlers.drizzle import PIPELINE_PARS, _drizzle_concurrently
    from astrodriz_sm.model import Exposure, ExposureSet

    _, d = simulated("concurrent", n_exposures=2)
    monkeypatch.setenv("jref", f"{d}/")
    monkeypatch.chdir(d)
    flt, flc = (sorted(p.name for p in d.glob(f"*_{kind}.fits")) for kind in ("flt", "flc"))
    updatewcs(flt + flc, use_db=False, checkfiles=False)
    pars = {**PIPELINE_PARS, "num_cores": 1}
    exposures = ExposureSet(*(tuple(Exposure.from_name(n) for n in names) for names in (flt, flc)))
    drz, drc = exposures.products("x", "default")
    jobs = [(drz, pars), (drc, {**pars, "final_kernel": "no-such-kernel"})]
    with pytest.raises(ProcessingError) as failure:
        _drizzle_concurrently(d, jobs)
    assert str(failure.value) == f"{d}/x_drc.fits: AstroDrizzle failed: Exception: Unknown kernel type 'no-such-kernel'"
    assert all((d / n).is_file() for n in flt + flc)
    assert (d / "x_drz.fits").is_file() and not (d / "x_drc.fits").exists()
    assert sorted(p.name for p in d.iterdir() if p.name.startswith("astrodrizzle_")) == []
