"""Hashes, copies, captured library output, the working directory, timers and the tie of forked processes."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from astrodriz_sm.plumbing import Timer, captured_output, copy_file, hashes, sha256, working_directory


def test_sha256_reads_in_chunks_and_hashes_share_the_files(tmp_path):
    data = {f"j8cw0{i}_flt.fits": bytes(range(256)) * (3000 + i) for i in range(3)}
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
    expected = {name: hashlib.sha256(content).hexdigest() for name, content in data.items()}
    assert sha256(tmp_path / "j8cw00_flt.fits", chunk=1000) == expected["j8cw00_flt.fits"]
    assert hashes(tmp_path, data) == expected
    assert hashes(tmp_path, ["j8cw01_flt.fits"]) == {"j8cw01_flt.fits": expected["j8cw01_flt.fits"]}


def test_copy_file_keeps_content_and_times(tmp_path):
    src, dest = tmp_path / "j8cw01_flc.fits", tmp_path / "copy_flc.fits"
    src.write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    copy_file(src, dest)
    assert dest.read_bytes() == src.read_bytes() and dest.stat().st_mtime == 1_600_000_000
    with pytest.raises(FileNotFoundError) as exc:
        copy_file(tmp_path / "missing_flc.fits", dest)
    assert exc.value.filename == str(tmp_path / "missing_flc.fits")


def test_working_directory_is_restored_after_an_exception(tmp_path):
    before = os.getcwd()
    with pytest.raises(RuntimeError), working_directory(tmp_path):
        assert os.getcwd() == str(tmp_path)
        raise RuntimeError("AstroDrizzle failed")
    assert os.getcwd() == before


def test_captured_output_takes_prints_logs_and_warnings_and_gives_the_loggers_back():
    stwcs = logging.getLogger("stwcs.wcsutil")
    handlers, propagate = stwcs.handlers[:], stwcs.propagate
    root_handlers = logging.getLogger().handlers[:]
    with captured_output() as out:
        print("Updating astrometry for j8cw01")
        sys.stderr.write("Traceback (most recent call last)\n")
        stwcs.warning("Could not read key A")
        warnings.warn("not shown", UserWarning)
    text = out.getvalue()
    assert "Updating astrometry for j8cw01\n" in text
    assert "Traceback (most recent call last)\n" in text
    assert "WARNING stwcs.wcsutil: Could not read key A\n" in text
    assert "not shown" not in text
    assert stwcs.handlers == handlers and stwcs.propagate == propagate
    assert logging.getLogger().handlers == root_handlers


def test_timer_measures_the_block():
    with Timer() as t:
        time.sleep(0.05)
    assert 0.05 <= t.elapsed < 1.0 and t.elapsed == round(t.elapsed, 3)


# A process that forks three sleepers: one inside forks_tied(), one of that one's own forks (a
# grandchild), one after the block; it prints their pids and waits to be killed.
_FORKER = """
import os, sys, time
from astrodriz_sm.plumbing import forks_tied

def sleeper(then=None):
    pid = os.fork()
    if pid == 0:
        if then is not None:
            then()
        time.sleep(120)
        os._exit(0)
    return pid

def grandchild():
    print(f"grandchild {sleeper()}", flush=True)

with forks_tied():
    print(f"tied {sleeper(grandchild)}", flush=True)
print(f"untied {sleeper()}", flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_processes_forked_in_forks_tied_die_with_their_parent_and_others_do_not():
    proc = subprocess.Popen([sys.executable, "-c", _FORKER], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        named = dict(proc.stdout.readline().split() for _ in range(3))
        pids = [int(named[k]) for k in ("grandchild", "tied", "untied")]
        grandchild, tied, untied = pids
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while (_alive(tied) or _alive(grandchild)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (_alive(grandchild), _alive(tied), _alive(untied)) == (False, False, True)
    finally:
        proc.kill()
        proc.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
