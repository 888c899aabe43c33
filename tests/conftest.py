"""Shared fixtures: simulated associations (made once per session, copied per test) and the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REFDATA = Path(__file__).resolve().parents[1].parent / "shared" / "refdata"
# Alignment switched off, for tests about everything else.
NO_ALIGNMENT = {"ASTROMETRY_APPLY_APRIORI": "off", "ASTROMETRY_COMPUTE_APOSTERIORI": "off"}
# Name of the test property that carries the crash harness's report to the terminal summary.
HARNESS_REPORT = "crash_harness"


# Marker of a test that provokes a library fallback on purpose; without it a fallback fails the test.
FALLBACK_MARKER = "library_fallback"
STORE_NAME = "astrodriz_sm.db"


# Marker of a test that takes minutes (both pipelines on one association): started first.
LONG_MARKER = "long"


def pytest_configure(config):
    config.addinivalue_line("markers", f"{FALLBACK_MARKER}(reason): the test expects a library fallback "
                            "warning in the event stores it creates")
    config.addinivalue_line("markers", f"{LONG_MARKER}: takes minutes; collected first so that the "
                            "workers do not finish the suite waiting on one of them")


def pytest_collection_modifyitems(config, items):
    """Longest first: with several workers the suite ends sooner when the long tests start early.

    ``--maxschedchunk=1`` (pyproject.toml) makes xdist hand each worker two tests at a time, so the
    long tests spread over the workers instead of all landing in the first worker's initial chunk.
    """
    items.sort(key=lambda item: item.get_closest_marker(LONG_MARKER) is None)


def forge_payload(db: Path, run_id: str, seq: int, payload: dict) -> None:
    """Rewrite one event's payload behind the store's back, as the append-only triggers forbid."""
    import sqlite3

    from astrodriz_sm.store.eventstore import canonical_json

    con = sqlite3.connect(db)
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        con.execute(f"DROP TRIGGER {name}")
    assert con.execute("UPDATE events SET payload = ? WHERE run_id = ? AND seq = ?",
                       (canonical_json(payload), run_id, seq)).rowcount == 1
    con.commit()
    con.close()


def fallback_warnings(store_path: Path) -> list[str]:
    """``'<run> <stage>/<step>: <message>'`` of every ``warning`` event in a store (none if unreadable)."""
    from astrodriz_sm.statemachine.state import WARNING
    from astrodriz_sm.store.eventstore import EventStore

    try:
        store = EventStore(store_path, read_only=True)
        try:
            return [f"{run['run_id']} {ev.stage}/{ev.step}: {ev.payload.get('message')}"
                    for run in store.runs() for ev in store.events(run["run_id"]) if ev.kind == WARNING]
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - stores that tests corrupt on purpose are not this check's business
        return []


_seen_stores: dict = {}


def _changed_stores(base: Path) -> list[Path]:
    """Event stores below ``base`` created or written since the last look."""
    changed = []
    for path in base.rglob(STORE_NAME):
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        if _seen_stores.get(path) != mtime:
            _seen_stores[path] = mtime
            changed.append(path)
    return changed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail a test whose pipeline runs recorded a library fallback, unless it is marked as expecting one.

    Every event store below the session's temporary directory that was written since the last test
    (the test's own runs, and those of the fixtures it set up) is read for ``warning`` events.
    """
    base = item.config._tmp_path_factory.getbasetemp()
    try:
        result = yield
    finally:
        # Also when the test failed: its stores are its own, not the next test's.
        found = [f"{path}: {w}" for path in _changed_stores(base) for w in fallback_warnings(path)]
    if found and item.get_closest_marker(FALLBACK_MARKER) is None:
        pytest.fail("library fallback in a pipeline run (mark the test "
                    f"@pytest.mark.{FALLBACK_MARKER}(reason=...) if it is expected):\n" + "\n".join(found),
                    pytrace=False)
    return result


def pytest_terminal_summary(terminalreporter):
    """Print the crash harness's per-point report and tally, also when tests run in xdist workers."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == HARNESS_REPORT and getattr(report, "when", "call") == "call":
                    terminalreporter.write_sep("-", "crash harness")
                    terminalreporter.write(value)


def sha256_tree(directory: Path) -> dict:
    """``{relative path: sha256}`` of every regular file below a directory."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(*args, env=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``astrodriz-sm`` as a user would, in a child process."""
    full_env = {k: v for k, v in os.environ.items() if k != "jref" and not k.startswith("ASTROM")
                and k != "GSSS_WEBSERVICES_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "astrodriz_sm.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
                          check=False)


@pytest.fixture(scope="session")
def simulated(tmp_path_factory):
    """Factory: ``simulated(name, **SimConfig fields)`` returns a fresh copy of a simulated association.

    Each distinct configuration is simulated once per session; every call gets its own copy, so
    tests may modify or process it freely.
    """
    from astrodriz_sm.sim import SimConfig, simulate_association

    cache = {}

    def make(name: str, **fields):
        key = tuple(sorted(fields.items()))
        if key not in cache:
            cache[key] = simulate_association(tmp_path_factory.mktemp(f"sim-{name}"), SimConfig(**fields))
        src = cache[key]
        dest = tmp_path_factory.mktemp(f"copy-{name}")
        shutil.copytree(src.outdir, dest, dirs_exist_ok=True, symlinks=False)
        return src, dest

    return make


@pytest.fixture
def service(tmp_path):
    """Factory: ``service(sim_result)`` serves that simulation's astrometry data on 127.0.0.1."""
    from astrodriz_sm.services import ServiceStore, start_server

    handles = []

    def start(sim):
        db = tmp_path / f"service-{len(handles)}.db"
        ServiceStore(db).load_directory(sim.service_dir)
        handles.append(start_server(db))
        return handles[-1]

    yield start
    for h in handles:
        h.stop()
