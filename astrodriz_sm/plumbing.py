"""Plumbing for every layer: file hashes, copies, captured library output, working directory, timers, sizes,
and the tie that ends a run's child processes with it.

A leaf: it imports nothing of the package, so a view, a handler and the runner can share it without
importing each other.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hashes(directory: Path, names) -> dict:
    """``{name: sha256}`` for files in a directory.

    Two threads share the files: hashlib releases the GIL while it digests a block.
    """
    names = list(names)
    if len(names) < 2:
        return {n: sha256(directory / n) for n in names}
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(lambda n: sha256(directory / n), names)))


# Errors of the side being written: a copy that fails with one of these failed on its destination.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def copy_file(src: Path, dest: Path) -> None:
    """Copy a file with its metadata; a failure to write names the destination.

    ``shutil.copy2`` reports a full disk against the *source* file (or against no file at all),
    which would blame an input for a problem of the place being written. A partial destination
    is removed.

    Raises
    ------
    OSError
        With ``filename`` the destination when writing it failed (no space, quota, read-only
        file system); otherwise as ``shutil.copy2`` raised it.
    """
    try:
        shutil.copy2(src, dest)
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS or (exc.filename is not None and exc.filename2 is None):
            raise  # an open or stat failure already names its own file
        with contextlib.suppress(OSError):
            Path(dest).unlink()
        raise OSError(exc.errno, exc.strerror, str(dest)) from exc


# What stsci.tools' fileutil.Expand (stwcs, drizzlepac) reads back unchanged in a directory variable: it
# takes '(name)' and 'name$' for variables, splits at commas and strips blanks around path components.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+-]*")


@contextlib.contextmanager
def plain_directory_variables(names):
    """Show the libraries each directory variable of ``names`` (``jref``, ``uref``...) under a plain name.

    A directory such as ``/data (copy)/`` is read as a variable ``copy`` by the libraries' file-name
    expansion: in ``os.environ`` it becomes, until the context exits, a symbolic link of a plain
    name to it (in a temporary directory, removed on exit, when the variable gets its value back).
    """
    odd = {k: v for k in names if (v := os.environ.get(k)) and not _PLAIN_PATH.fullmatch(v)}
    if not odd:
        yield
        return
    try:
        with tempfile.TemporaryDirectory(prefix="astrodriz-sm-refs-") as links:
            for name, directory in odd.items():
                (Path(links) / name).symlink_to(Path(directory).resolve(), target_is_directory=True)
                os.environ[name] = f"{links}/{name}/"
            yield
    finally:
        os.environ.update(odd)


@contextlib.contextmanager
def working_directory(path: Path):
    """Run a library that writes to the current directory inside ``path``."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def captured_output(loggers=("stwcs", "drizzlepac", "stsci", "tweakwcs", "astropy")):
    """Capture what the stsci libraries print and log, so it goes into the event instead.

    Records reach one buffer through the root logger, where drizzlepac also hangs its runfile
    handler; the libraries' own console handlers are silenced for the duration.

    Yields
    ------
    io.StringIO
        The captured text.
    """
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    names = set(loggers) | {n for n in logging.root.manager.loggerDict if n.split(".")[0] in loggers}
    saved = []
    for name in sorted(names):
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:], lg.propagate))
        # A NullHandler rather than none: stwcs's headerlet logging fails on a logger without handlers.
        lg.handlers = [logging.NullHandler()]
        lg.propagate = True
    try:
        # stderr too: AstroDrizzle's logging teardown hands an exception in flight to sys.excepthook,
        # which would print its traceback on the console; the runner reports the exception itself.
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for h in root.handlers:
            if h not in saved_root[0] and h is not handler:
                h.close()  # handlers the library added (its runfile) and did not remove
        root.handlers, _ = saved_root
        root.setLevel(saved_root[1])
        for lg, handlers, propagate in saved:
            for h in lg.handlers:
                if h not in handlers:
                    h.close()  # e.g. the headerlet.log handler stwcs attaches on the fly
            lg.handlers = handlers
            lg.propagate = propagate


class Timer:
    """Wall time of a block, in seconds (``elapsed``)."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = round(time.perf_counter() - self.start, 3)


def size_text(n: int | None) -> str:
    """Bytes as the console shows them (decimal units, as Dask's sizes): ``280 MB``, ``2.50 GB``."""
    if n is None:
        return "-"
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


# Linux prctl option: the signal a process receives when the thread that created it ends.
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
# Runs going on in this process; the at-fork tie acts only while there is one. A counter rather than
# a switch, for runs in several threads of one process.
_runs_tying = 0
_tying_lock = threading.Lock()
_fork_parent = None
_fork_hook_registered = False


def tie_to_parent(parent: int) -> bool:
    """Have this process killed (SIGKILL) when its parent ends (Linux ``PR_SET_PDEATHSIG``).

    The kernel sends the signal when the *thread* that created the process ends, so the process
    must be started by a thread that lives as long as the run.

    Parameters
    ----------
    parent : int
        The pid of the process that started this one.

    Returns
    -------
    bool
        False when the parent had already gone before the tie took effect (this process has been
        handed to another parent, and nothing will kill it): the caller should exit.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.getppid() == parent


def _note_fork_parent() -> None:
    global _fork_parent
    _fork_parent = os.getpid()


def _tie_forked_child() -> None:
    # In the child of os.fork: the memory is the parent's copy, so _fork_parent is the parent's pid.
    if _runs_tying and not tie_to_parent(_fork_parent):
        os._exit(1)


def _register_fork_hook() -> None:
    global _fork_hook_registered
    if not _fork_hook_registered:
        # Registrations cannot be undone: the hook stays, and the counter says whether it acts.
        os.register_at_fork(before=_note_fork_parent, after_in_child=_tie_forked_child)
        _fork_hook_registered = True


@contextlib.contextmanager
def forks_tied():
    """While the block runs, every process forked here (and their forks) dies with its parent.

    Process pools of the fork context and AstroDrizzle's multiprocessing workers fork without
    tying themselves to the run; a run killed outright (SIGKILL, out of memory) would leave them
    running, blocked on a pipe from a parent that is gone. The tie is inherited by every forked
    generation, since each child keeps the hook and its counter. A process started by exec
    (``subprocess``) runs no fork hook: it ties itself (see :mod:`astrodriz_sm.child`).
    Outside the block a fork in this process is left as it is, for the processes of the program
    that calls the API.
    """
    global _runs_tying
    with _tying_lock:
        _register_fork_hook()
        _runs_tying += 1
    try:
        yield
    finally:
        with _tying_lock:
            _runs_tying -= 1


def tie_forks_in_this_process() -> None:
    """Tie every process forked from here on to its parent, for the life of this process.

    For a process that exists for one run only, started by exec (a concurrent drizzle's child).
    """
    global _runs_tying
    with _tying_lock:
        _register_fork_hook()
        _runs_tying += 1
