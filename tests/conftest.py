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
