"""``astrodriz-sm serve`` and ``astrodriz-sm serve-load``: run and fill the local services."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import ConfigError, UsageError
from .data import ServiceDataError, ServiceStore

__all__ = ["add_serve_arguments", "add_serve_load_arguments", "cmd_serve", "cmd_serve_load"]

DEFAULT_DB = "astrodriz_sm_service.db"
DEFAULT_PORT = 8765
DEFAULT_HOST = "127.0.0.1"


def _port(text: str) -> int:
    """A TCP port number, 0-65535 (0: the system picks a free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``serve``: ``--db``, ``--create``, ``--port``, ``--host``."""
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help=f"service database (default {DEFAULT_DB}; fill it with serve-load)")
    parser.add_argument("--create", action="store_true",
                        help="serve an empty database when --db does not exist (otherwise an error)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="N",
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", default=DEFAULT_HOST, metavar="ADDRESS",
                        help=f"address to listen on (default {DEFAULT_HOST}, this machine only); any other "
                             "address, e.g. 0.0.0.0, is used only when given with this flag and makes the "
                             "service reachable from that network")


def _describe(summary: dict) -> str:
    cats = ", ".join(f"{name}: {n} sources" for name, n in sorted(summary["catalogs"].items()))
    return (f"{len(summary['catalogs'])} catalogs{f' ({cats})' if cats else ''}, "
            f"{summary['solutions']} solutions for {summary['observations']} observations, "
            f"{summary['gsc_offsets']} guide-star offsets")


def cmd_serve(args) -> int:
    """Serve ``--db`` in the foreground until Ctrl-C, after printing the ``export`` lines."""
    from .server import logger, serve_forever

    # The main command configures structlog only; request lines need a stdlib handler. It is
    # removed afterwards so that callers in the same process keep their logging as it was.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    logger.propagate = False
    if not Path(args.db).is_file() and not getattr(args, "create", False):
        raise UsageError(f"{args.db}: no such service database (load one with serve-load, or give --create "
                         "to serve an empty one)", str(args.db))
    try:
        with ServiceStore(args.db) as store:
            print(f"serving {args.db}: {_describe(store.summary())}", file=sys.stderr)
        serve_forever(args.db, host=args.host, port=args.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                          "choose another --port or --host") from exc
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    return 0


class _HeaderletAction(argparse.Action):
    """``--headerlet ROOTNAME FILE``: one solution; ``--best``/``--wcsname`` amend the last one."""

    def __call__(self, parser, namespace, values, option_string=None):
        # A copy: appending to the parser's default list would leak into the next parse.
        items = list(getattr(namespace, self.dest) or [])
        if option_string == "--headerlet":
            items.append({"rootname": values[0], "path": values[1], "best": False, "wcsname": None})
        elif not items:
            parser.error(f"{option_string} must follow a --headerlet ROOTNAME FILE")
        elif option_string == "--best":
            items[-1]["best"] = True
        else:
            items[-1]["wcsname"] = values
        setattr(namespace, self.dest, items)


def add_serve_load_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``serve-load``: ``--db``, ``DIR``, ``--catalog``, ``--headerlet [--best]``, ``--gsc-offsets``."""
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help=f"service database to load into (default {DEFAULT_DB}; created when absent)")
    parser.add_argument("directory", nargs="?", metavar="DIR",
                        help="directory in the simulator's layout: catalogs/<NAME>.ecsv, astrometrydb.ecsv, "
                             "gsc_offsets.ecsv")
    parser.add_argument("--catalog", nargs=2, action="append", default=[], metavar=("NAME", "FILE"),
                        help="load (or replace) catalog NAME from an ECSV, CSV or FITS table with ra, dec, "
                             "mag [ra_error, dec_error, pmra, pmdec, pmra_error, pmdec_error, epoch, objID]")
    parser.add_argument("--headerlet", nargs=2, action=_HeaderletAction, dest="headerlets", default=[],
                        metavar=("ROOTNAME", "FILE"), help="add a headerlet solution for ROOTNAME")
    parser.add_argument("--best", nargs=0, action=_HeaderletAction, dest="headerlets",
                        help="flag the preceding --headerlet as the observation's best solution")
    parser.add_argument("--wcsname", action=_HeaderletAction, dest="headerlets", metavar="NAME",
                        help="database name of the preceding --headerlet (default: its WCSNAME)")
    parser.add_argument("--gsc-offsets", action="append", default=[], metavar="FILE", dest="gsc_offsets",
                        help="guide-star offsets table: rootname, deltaRA, deltaDEC, deltaROLL, deltaSCALE, "
                             "dGSinputRA, dGSinputDEC, dGSoutputRA, dGSoutputDEC, outputCatalog")


def cmd_serve_load(args) -> int:
    """Load what the arguments name, all in one transaction, and print what was loaded."""
    if not (args.directory or args.catalog or args.headerlets or args.gsc_offsets):
        raise ServiceDataError("serve-load: nothing to load (give DIR, --catalog, --headerlet or --gsc-offsets)")
    lines = []
    with ServiceStore(args.db) as store:
        with store.transaction():
            if args.directory:
                counts = store.load_directory(args.directory)
                cats = ", ".join(f"{k}: {v} sources" for k, v in counts["catalogs"].items())
                lines.append(f"loaded {args.directory}: {len(counts['catalogs'])} catalogs"
                             f"{f' ({cats})' if cats else ''}, {counts['solutions']} solutions, "
                             f"{counts['gsc_offsets']} guide-star offsets")
            for name, path in args.catalog:
                lines.append(f"loaded catalog {name}: {store.load_catalog(name, path)} sources from {path}")
            for h in args.headerlets:
                sid = store.load_solution(h["rootname"], h["path"], best=h["best"], wcsname=h["wcsname"])
                wcsname = next(s["wcsname"] for s in store.solutions(h["rootname"]) if s["solution_id"] == sid)
                lines.append(f"loaded solution {sid} '{wcsname}' for {h['rootname'].lower()}"
                             f"{' (best)' if h['best'] else ''} from {h['path']}")
            for path in args.gsc_offsets:
                lines.append(f"loaded guide-star offsets for {store.load_gsc_offsets(path)} rootnames from {path}")
        summary = _describe(store.summary())
    for line in lines:
        print(line)
    print(f"{args.db} now holds {summary}")
    return 0
