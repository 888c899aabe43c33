"""The data behind the local astrometry services: catalogs, headerlet solutions, guide-star offsets.

Everything lives in one SQLite file (written through sqlite-utils) so that a loaded service can be
restarted, shared between runs and inspected with any SQLite tool:

``catalog_sources``
    One row per source: ``catalog, ra, dec, mag, ra_error, dec_error, pmra, pmra_error, pmdec,
    pmdec_error, epoch, objID``. Positions in degrees at ``epoch`` (decimal year), position errors
    in mas, proper motions (``pmra`` includes cos(dec), as in GAIA) in mas/yr. NULL proper motions
    mean the catalog has none for that source.
``catalogs``
    One row per loaded catalog (name, number of sources, file it came from), so that a catalog
    without a source in some field is still a known catalog.
``solutions``
    Astrometry database content: ``rootname, solution_id, wcsname, best, headerlet`` (FITS bytes).
``gsc_offsets``
    Guide-star offsets per rootname with the fields of the GSSS ``GSCconvert`` answer.

Loading is all-or-nothing per call: every file is read and checked before anything is written,
and the writes of one call share one transaction.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import sqlite_utils

from ..errors import InputError

__all__ = [
    "CATALOG_COLUMNS",
    "GSC_OFFSET_COLUMNS",
    "HEADERLET_KEYWORDS",
    "ServiceDataError",
    "ServiceStore",
    "answer_columns",
]

# Order and names of the CSV columns the catalog service answers for GAIA and for any catalog not
# in _ANSWER_COLUMNS (drizzlepac reads them by name).
CATALOG_COLUMNS = ("ra", "ra_error", "dec", "dec_error", "pmra", "pmra_error", "pmdec", "pmdec_error",
                   "mag", "objID", "epoch")
# (answer column, catalog_sources column) of the catalogs that the STScI service answers with other
# names: drizzlepac's SUPPORTED_CATALOGS renames these and fails on a missing one. "jdate" is the
# epoch as a Julian date.
_GSC_ANSWER = (("ra", "ra"), ("raErr", "ra_error"), ("dec", "dec"), ("decErr", "dec_error"),
               ("rapm", "pmra"), ("rapmErr", "pmra_error"), ("decpm", "pmdec"), ("decpmErr", "pmdec_error"),
               ("mag", "mag"), ("objID", "objID"), ("epoch", "epoch"))
_ANSWER_COLUMNS = {
    "GSC241": _GSC_ANSWER,
    "GSC242": _GSC_ANSWER,
    "2MASS": (("ra", "ra"), ("dec", "dec"), ("mag", "mag"), ("objid", "objID"), ("jdate", "jdate")),
}
GSC_OFFSET_COLUMNS = ("deltaRA", "deltaDEC", "deltaROLL", "deltaSCALE", "dGSinputRA", "dGSinputDEC",
                      "dGSoutputRA", "dGSoutputDEC", "outputCatalog")
# Primary-header keywords stwcs reads from every headerlet it downloads (Headerlet.init_attrs);
# a headerlet without one of them makes stwcs fail after the download.
HEADERLET_KEYWORDS = ("HDRNAME", "WCSNAME", "DESTIM", "SIPNAME", "IDCTAB", "NPOLFILE", "D2IMFILE",
                      "DISTNAME", "AUTHOR", "DESCRIP")
DEFAULT_EPOCH = 2016.0
_ROOTNAME = re.compile(r"^[A-Za-z0-9]{1,32}$")
_UNITS = {"ra": "deg", "dec": "deg", "ra_error": "mas", "dec_error": "mas", "pmra": "mas / yr",
          "pmdec": "mas / yr", "pmra_error": "mas / yr", "pmdec_error": "mas / yr", "mag": "mag"}
_OPTIONAL_FLOATS = ("ra_error", "dec_error", "pmra", "pmra_error", "pmdec", "pmdec_error")
_TABLE_FORMATS = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".fits": "fits", ".fit": "fits",
                  ".fits.gz": "fits", ".fit.gz": "fits"}


class ServiceDataError(InputError):
    """A file given to the service store is missing, unreadable or lacks what the services need.

    The message names the file and the problem, e.g. ``cat.ecsv: missing column 'ra'``.
    """


@dataclass
class _Solution:
    rootname: str
    wcsname: str
    hdrname: str
    best: bool
    headerlet: bytes
    path: str


def answer_columns(catalog: str) -> tuple[tuple[str, str], ...]:
    """The CSV columns the catalog service answers for a catalog, as drizzlepac expects them.

    Parameters
    ----------
    catalog : str
        Catalog name, any case.

    Returns
    -------
    tuple of (str, str)
        ``(answer column, source field)`` in answer order: a ``catalog_sources`` column, or
        ``jdate`` for the epoch as a Julian date. GSC241/GSC242 answer ``raErr, decErr, rapm,
        rapmErr, decpm, decpmErr`` for the errors and proper motions, 2MASS ``ra, dec, mag, objid,
        jdate``; every other catalog :data:`CATALOG_COLUMNS`.
    """
    default = tuple((c, c) for c in CATALOG_COLUMNS)
    return _ANSWER_COLUMNS.get(str(catalog).strip().upper(), default)


def normalize_rootname(rootname: str, source: str = "rootname") -> str:
    """Lower-case a rootname after checking it is one (HST rootnames are 9 alphanumerics).

    Parameters
    ----------
    rootname : str
        The rootname, any case.
    source : str
        Named in the error message.

    Raises
    ------
    ServiceDataError
        When the value is not 1-32 letters and digits.
    """
    text = str(rootname).strip()
    if not _ROOTNAME.match(text):
        raise ServiceDataError(f"{source}: {rootname!r} is not a rootname (letters and digits only)")
    return text.lower()


def _table_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in _TABLE_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise ServiceDataError(f"{path}: unsupported table format (use .ecsv, .csv or .fits)", str(path))


def _read_table(path: str | Path, what: str):
    """Read an ECSV/CSV/FITS table, turning every failure into a one-line ServiceDataError."""
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise ServiceDataError(f"{path}: no such {what} file", str(path))
    fmt = _table_format(path)
    try:
        return Table.read(path, format=fmt)
    except Exception as exc:  # astropy raises many types for a bad file; all mean "unreadable"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServiceDataError(f"{path}: unreadable {what} ({detail})", str(path)) from exc


def _find_column(table, name: str, *aliases: str):
    """The column called ``name`` (or an alias), whatever its case; None when absent."""
    wanted = {n.lower() for n in (name, *aliases)}
    for colname in table.colnames:
        if colname.lower() in wanted:
            return table[colname]
    return None


def _float_values(col, name: str, path: Path) -> list[float | None]:
    """A column as floats in the service's units, masked or non-finite entries as None."""
    from astropy import units as u

    data = col
    unit = getattr(col, "unit", None)
    if unit is not None and name in _UNITS and str(unit) not in ("", "None"):
        try:
            values = np.asarray(col.quantity.to_value(u.Unit(_UNITS[name])), dtype=float)
        except (u.UnitsError, ValueError, TypeError) as exc:
            raise ServiceDataError(f"{path}: column '{name}' has unit '{unit}', not convertible to "
                                   f"{_UNITS[name]}", str(path)) from exc
    else:
        try:
            values = np.asarray(np.ma.getdata(data), dtype=float)
        except (ValueError, TypeError) as exc:
            raise ServiceDataError(f"{path}: column '{name}' is not numeric", str(path)) from exc
    mask = np.ma.getmaskarray(data) | ~np.isfinite(values)
    return [None if m else float(v) for v, m in zip(values, mask)]


def _epoch_values(table, path: Path) -> list[float]:
    from astropy.time import Time

    col = _find_column(table, "epoch")
    if col is None:
        meta = {str(k).lower(): v for k, v in table.meta.items()}
        value = meta.get("epoch", DEFAULT_EPOCH)
        try:
            epoch = float(str(value).lstrip("Jj")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError) as exc:
            raise ServiceDataError(f"{path}: table meta 'epoch' {value!r} is not a decimal year",
                                   str(path)) from exc
        if not math.isfinite(epoch):
            raise ServiceDataError(f"{path}: table meta 'epoch' is not finite", str(path))
        return [epoch] * len(table)
    if isinstance(col, Time):
        return [float(v) for v in col.decimalyear]
    values = _float_values(col, "epoch", path)
    if any(v is None for v in values):
        raise ServiceDataError(f"{path}: column 'epoch' has missing or non-finite values", str(path))
    return values


def read_catalog(path: str | Path) -> list[dict]:
    """Read a catalog file into rows of the ``catalog_sources`` table (without the catalog name).

    Parameters
    ----------
    path : str or Path
        ECSV, CSV or FITS table with columns ``ra``, ``dec``, ``mag`` (degrees, magnitudes) and
        optionally ``ra_error``, ``dec_error`` (mas), ``pmra``, ``pmdec``, ``pmra_error``,
        ``pmdec_error`` (mas/yr), ``epoch`` (decimal year, or table meta ``epoch``, default 2016.0)
        and ``objID`` (generated 1..N when absent). Columns with units are converted.

    Returns
    -------
    list of dict
        One dict per source.

    Raises
    ------
    ServiceDataError
        Missing file or column, unreadable file, non-numeric or missing positions.
    """
    path = Path(path)
    table = _read_table(path, "catalog")
    columns = {}
    for name in ("ra", "dec", "mag"):
        col = _find_column(table, name)
        if col is None:
            raise ServiceDataError(f"{path}: missing column '{name}'", str(path))
        columns[name] = _float_values(col, name, path)
    for name in ("ra", "dec"):
        bad = sum(v is None for v in columns[name])
        if bad:
            raise ServiceDataError(f"{path}: column '{name}' has {bad} missing or non-finite values",
                                   str(path))
    if any(abs(d) > 90.0 for d in columns["dec"]):
        raise ServiceDataError(f"{path}: column 'dec' has values outside [-90, 90] degrees", str(path))
    for name in _OPTIONAL_FLOATS:
        col = _find_column(table, name)
        columns[name] = _float_values(col, name, path) if col is not None else [None] * len(table)
    columns["epoch"] = _epoch_values(table, path)
    idcol = _find_column(table, "objID", "source_id")
    if idcol is None:
        columns["objID"] = [str(i) for i in range(1, len(table) + 1)]
    else:
        mask = np.ma.getmaskarray(idcol)
        if mask.any():
            raise ServiceDataError(f"{path}: column 'objID' has {int(mask.sum())} missing values", str(path))
        columns["objID"] = [str(v) for v in np.ma.getdata(idcol)]
    return [{name: columns[name][i] for name in columns} | {"ra": columns["ra"][i] % 360.0}
            for i in range(len(table))]


def read_headerlet(path: str | Path, rootname: str, wcsname: str | None = None) -> tuple[bytes, str, str]:
    """Read and check a headerlet file for the astrometry database.

    Parameters
    ----------
    path : str or Path
        Headerlet FITS file (as written by ``stwcs.wcsutil.headerlet``).
    rootname : str
        Observation the headerlet is for; must match its DESTIM, because stwcs refuses to attach
        a headerlet whose DESTIM differs from the exposure's ROOTNAME.
    wcsname : str, optional
        Name of the solution in the database. Default: WCSNAME of the SIPWCS header, else of the
        primary header. A different name is written into the headerlet's WCSNAME keywords, since
        stwcs compares the database name with the headerlet's own WCSNAME to apply the best one.

    Returns
    -------
    (bytes, str, str)
        The FITS bytes to serve, the WCSNAME and the HDRNAME.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise ServiceDataError(f"{path}: no such headerlet file", str(path))
    try:
        with fits.open(path, memmap=False) as hdul:
            hdul.verify("silentfix")
            primary = hdul[0].header
            sipwcs = next((h for h in hdul[1:] if h.name == "SIPWCS"), None)
            missing = [k for k in HEADERLET_KEYWORDS if k not in primary]
            if missing:
                raise ServiceDataError(f"{path}: not a headerlet, primary header lacks "
                                       f"{', '.join(missing)}", str(path))
            if sipwcs is None:
                raise ServiceDataError(f"{path}: not a headerlet, no SIPWCS extension", str(path))
            if str(primary["HDRNAME"]).strip() == "OPUS" and "DATE" not in primary:
                # stwcs appends DATE to an 'OPUS' HDRNAME.
                raise ServiceDataError(f"{path}: HDRNAME 'OPUS' needs a DATE keyword", str(path))
            destim = str(primary["DESTIM"]).strip()
            if destim.lower() != rootname.lower():
                raise ServiceDataError(f"{path}: headerlet DESTIM '{destim}' is not rootname '{rootname}'",
                                       str(path))
            own = str(sipwcs.header.get("WCSNAME", primary["WCSNAME"])).strip()
            name = own if wcsname is None else str(wcsname).strip()
            if not name:
                raise ServiceDataError(f"{path}: headerlet has an empty WCSNAME", str(path))
            if name != own or str(primary["WCSNAME"]).strip() != name:
                primary["WCSNAME"] = name
                sipwcs.header["WCSNAME"] = name
            hdrname = str(primary["HDRNAME"]).strip()
            buf = io.BytesIO()
            hdul.writeto(buf)
    except ServiceDataError:
        raise
    except Exception as exc:  # any FITS failure means the file cannot be served
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServiceDataError(f"{path}: unreadable headerlet ({detail})", str(path)) from exc
    return buf.getvalue(), name, hdrname


def read_gsc_offsets(path: str | Path) -> list[dict]:
    """Read a guide-star offsets table into ``gsc_offsets`` rows.

    Parameters
    ----------
    path : str or Path
        ECSV, CSV or FITS table with columns ``rootname`` and the GSCconvert fields
        (:data:`GSC_OFFSET_COLUMNS`); all but ``outputCatalog`` numeric (degrees; deltaSCALE a ratio).

    Returns
    -------
    list of dict
        One dict per rootname (lower case).
    """
    path = Path(path)
    table = _read_table(path, "guide-star offsets")
    rootcol = _find_column(table, "rootname")
    if rootcol is None:
        raise ServiceDataError(f"{path}: missing column 'rootname'", str(path))
    values = {"rootname": [normalize_rootname(r, f"{path}: rootname") for r in rootcol]}
    for name in GSC_OFFSET_COLUMNS:
        col = _find_column(table, name)
        if col is None:
            raise ServiceDataError(f"{path}: missing column '{name}'", str(path))
        if name == "outputCatalog":
            values[name] = [str(v) for v in np.ma.filled(col.astype(str), "")]
            continue
        # No unit conversion: the service passes these numbers through verbatim.
        try:
            nums = np.asarray(np.ma.getdata(col), dtype=float)
        except (TypeError, ValueError) as exc:
            raise ServiceDataError(f"{path}: column '{name}' is not numeric", str(path)) from exc
        bad = np.ma.getmaskarray(col) | ~np.isfinite(nums)
        if bad.any():
            raise ServiceDataError(f"{path}: column '{name}' has {int(bad.sum())} missing or non-finite "
                                   "values", str(path))
        values[name] = [float(v) for v in nums]
    if len(set(values["rootname"])) != len(table):
        raise ServiceDataError(f"{path}: a rootname appears more than once", str(path))
    return [{k: values[k][i] for k in values} for i in range(len(table))]


def _as_bool(value, path: Path) -> bool:
    if np.ma.is_masked(value):
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "1"):
        return True
    if text in ("false", "f", "no", "0", ""):
        return False
    raise ServiceDataError(f"{path}: column 'best' value {value!r} is not a boolean", str(path))


class ServiceStore:
    """The SQLite file the local services answer from.

    Parameters
    ----------
    db_path : str or Path
        SQLite file; created with its tables when absent.
    readonly : bool
        Open an existing file read-only (what the server does for each request), so a server can
        never change its data and loads may run while it serves.
    """

    def __init__(self, db_path: str | Path, readonly: bool = False):
        self.path = Path(db_path)
        self._depth = 0
        if readonly:
            if not self.path.is_file():
                raise ServiceDataError(f"{self.path}: no such service database", str(self.path))
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
        else:
            try:
                self.db = sqlite_utils.Database(self.path)
                self._ensure_schema()
            except sqlite3.DatabaseError as exc:
                raise ServiceDataError(f"{self.path}: not a service database ({exc})", str(self.path)) from exc

    def close(self) -> None:
        """Close the connection."""
        self.db.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self):
        """Group loads: everything inside is committed together or not at all (re-entrant)."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with self.db.conn:
                yield self
        finally:
            self._depth = 0

    def _ensure_schema(self) -> None:
        db = self.db
        db["catalogs"].create({"name": str, "n_sources": int, "path": str}, pk="name", if_not_exists=True)
        db["catalog_sources"].create(
            {"catalog": str, "ra": float, "dec": float, "mag": float, "ra_error": float, "dec_error": float,
             "pmra": float, "pmra_error": float, "pmdec": float, "pmdec_error": float, "epoch": float,
             "objID": str},
            if_not_exists=True)
        db["catalog_sources"].create_index(["catalog", "dec"], if_not_exists=True)
        db["solutions"].create({"rootname": str, "solution_id": int, "wcsname": str, "best": int,
                                "headerlet": bytes}, pk=("rootname", "solution_id"), if_not_exists=True)
        db["gsc_offsets"].create({"rootname": str, **{c: float for c in GSC_OFFSET_COLUMNS[:-1]},
                                  "outputCatalog": str}, pk="rootname", if_not_exists=True)

    # ---- loading -------------------------------------------------------------------------------

    def load_catalog(self, name: str, path: str | Path) -> int:
        """Load (or replace) one catalog.

        Parameters
        ----------
        name : str
            Catalog name as clients ask for it (``CAT=``); matched without regard to case.
        path : str or Path
            ECSV, CSV or FITS table; see :func:`read_catalog`.

        Returns
        -------
        int
            Number of sources loaded.
        """
        rows = read_catalog(path)
        name = self._check_catalog_name(name, path)
        with self.transaction():
            self._write_catalog(name, rows, path)
        return len(rows)

    def load_solution(self, rootname: str, headerlet_path: str | Path, best: bool = False,
                      wcsname: str | None = None) -> int:
        """Add (or replace, for the same WCSNAME) one astrometry database solution.

        Parameters
        ----------
        rootname : str
            Observation rootname (e.g. ``j8bt06nyq``).
        headerlet_path : str or Path
            Headerlet FITS file; see :func:`read_headerlet`.
        best : bool
            Flag this solution as the observation's best (clears the flag on the others).
        wcsname : str, optional
            Solution name; default the headerlet's WCSNAME.

        Returns
        -------
        int
            The solution id (1, 2, ... per rootname; a replaced solution keeps its id).
        """
        root = normalize_rootname(rootname)
        blob, name, hdrname = read_headerlet(headerlet_path, root, wcsname)
        sol = _Solution(root, name, hdrname, bool(best), blob, str(headerlet_path))
        self._check_hdrnames([sol])
        with self.transaction():
            return self._write_solution(sol)

    def load_gsc_offsets(self, path: str | Path) -> int:
        """Load (or replace, per rootname) guide-star offsets; see :func:`read_gsc_offsets`.

        Returns
        -------
        int
            Number of rootnames loaded.
        """
        rows = read_gsc_offsets(path)
        with self.transaction():
            self._write_gsc_offsets(rows)
        return len(rows)

    def load_directory(self, directory: str | Path) -> dict:
        """Load the layout the simulator writes.

        ``catalogs/<NAME>.ecsv`` (one catalog per file, also ``.csv``/``.fits``),
        ``astrometrydb.ecsv`` (columns ``rootname, wcsname, headerlet, best``; ``headerlet`` a path
        relative to the directory, ``wcsname`` may be empty) and ``gsc_offsets.ecsv``. Each part is
        optional but at least one must be present. Every file is checked before anything is written.

        Parameters
        ----------
        directory : str or Path
            The directory.

        Returns
        -------
        dict
            ``{"catalogs": {name: n_sources}, "sources": int, "solutions": int, "gsc_offsets": int}``.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ServiceDataError(f"{directory}: no such directory", str(directory))
        catalogs = {}
        catdir = directory / "catalogs"
        if catdir.is_dir():
            for path in sorted(catdir.iterdir()):
                suffix = next((s for s in _TABLE_FORMATS if path.name.lower().endswith(s)), None)
                if path.is_file() and suffix:
                    name = path.name[:-len(suffix)]
                    self._check_catalog_name(name, path)
                    if name.upper() in {n.upper() for n in catalogs}:
                        raise ServiceDataError(f"{path}: catalog '{name}' given by two files", str(path))
                    catalogs[name] = (path, read_catalog(path))
        solutions = []
        index = directory / "astrometrydb.ecsv"
        if index.is_file():
            solutions = self._read_solution_index(index, directory)
            self._check_hdrnames(solutions)
        offsets = []
        gsc = directory / "gsc_offsets.ecsv"
        if gsc.is_file():
            offsets = read_gsc_offsets(gsc)
        if not (catalogs or index.is_file() or gsc.is_file()):
            raise ServiceDataError(f"{directory}: nothing to load (no catalogs/, astrometrydb.ecsv or "
                                   "gsc_offsets.ecsv)", str(directory))
        with self.transaction():
            for name, (path, rows) in catalogs.items():
                self._write_catalog(name, rows, path)
            for sol in solutions:
                self._write_solution(sol)
            self._write_gsc_offsets(offsets)
        return {"catalogs": {name: len(rows) for name, (_, rows) in catalogs.items()},
                "sources": sum(len(rows) for _, rows in catalogs.values()),
                "solutions": len(solutions), "gsc_offsets": len(offsets)}

    def _read_solution_index(self, index: Path, directory: Path) -> list[_Solution]:
        table = _read_table(index, "astrometry database index")
        cols = {}
        for name in ("rootname", "headerlet"):
            cols[name] = _find_column(table, name)
            if cols[name] is None:
                raise ServiceDataError(f"{index}: missing column '{name}'", str(index))
        wcscol = _find_column(table, "wcsname")
        bestcol = _find_column(table, "best")
        solutions = []
        for i in range(len(table)):
            root = normalize_rootname(cols["rootname"][i], f"{index}: row {i + 1} rootname")
            wcsname = None
            if wcscol is not None and not np.ma.is_masked(wcscol[i]) and str(wcscol[i]).strip():
                wcsname = str(wcscol[i]).strip()
            best = _as_bool(bestcol[i], index) if bestcol is not None else False
            hpath = directory / str(cols["headerlet"][i])
            blob, name, hdrname = read_headerlet(hpath, root, wcsname)
            solutions.append(_Solution(root, name, hdrname, best, blob, str(hpath)))
        seen = set()
        for sol in solutions:
            if (sol.rootname, sol.wcsname) in seen:
                raise ServiceDataError(f"{index}: {sol.rootname} lists WCSNAME '{sol.wcsname}' twice",
                                       str(index))
            seen.add((sol.rootname, sol.wcsname))
        for root in {s.rootname for s in solutions}:
            if sum(s.best for s in solutions if s.rootname == root) > 1:
                raise ServiceDataError(f"{index}: {root} has more than one best solution", str(index))
        return solutions

    @staticmethod
    def _check_catalog_name(name: str, path) -> str:
        name = str(name).strip()
        # The name travels unencoded in query strings and in the CSV description line.
        if not re.match(r"^[A-Za-z0-9_.+-]{1,64}$", name):
            raise ServiceDataError(f"{path}: catalog name {name!r} must be letters, digits or _.+-",
                                   str(path))
        return name

    def _check_hdrnames(self, new: list[_Solution]) -> None:
        """stwcs refuses to attach a headerlet whose HDRNAME an attached one already has."""
        from astropy.io import fits

        for sol in new:
            others = [(s.wcsname, s.hdrname) for s in new if s.rootname == sol.rootname and s is not sol]
            for row in self.db.query("SELECT wcsname, headerlet FROM solutions WHERE rootname = ?",
                                     [sol.rootname]):
                if row["wcsname"] not in {s.wcsname for s in new if s.rootname == sol.rootname}:
                    with fits.open(io.BytesIO(row["headerlet"])) as hdul:
                        others.append((row["wcsname"], str(hdul[0].header["HDRNAME"]).strip()))
            for wname, hname in others:
                if hname == sol.hdrname and wname != sol.wcsname:
                    raise ServiceDataError(f"{sol.path}: HDRNAME '{sol.hdrname}' is already used by "
                                           f"solution '{wname}' of {sol.rootname}", sol.path)

    def _write_catalog(self, name: str, rows: list[dict], path) -> None:
        conn = self.db.conn
        old = [r[0] for r in conn.execute("SELECT name FROM catalogs WHERE upper(name) = upper(?)", [name])]
        for oldname in old:
            conn.execute("DELETE FROM catalog_sources WHERE catalog = ?", [oldname])
            conn.execute("DELETE FROM catalogs WHERE name = ?", [oldname])
        cols = ("catalog", "ra", "dec", "mag", "ra_error", "dec_error", "pmra", "pmra_error", "pmdec",
                "pmdec_error", "epoch", "objID")
        conn.executemany(
            f"INSERT INTO catalog_sources ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [[name] + [r[c] for c in cols[1:]] for r in rows])
        conn.execute("INSERT INTO catalogs (name, n_sources, path) VALUES (?, ?, ?)",
                     [name, len(rows), str(path)])

    def _write_solution(self, sol: _Solution) -> int:
        conn = self.db.conn
        row = conn.execute("SELECT solution_id FROM solutions WHERE rootname = ? AND wcsname = ?",
                           [sol.rootname, sol.wcsname]).fetchone()
        if row:
            sid = row[0]
        else:
            sid = conn.execute("SELECT COALESCE(MAX(solution_id), 0) + 1 FROM solutions WHERE rootname = ?",
                               [sol.rootname]).fetchone()[0]
        if sol.best:
            conn.execute("UPDATE solutions SET best = 0 WHERE rootname = ?", [sol.rootname])
        conn.execute("INSERT OR REPLACE INTO solutions (rootname, solution_id, wcsname, best, headerlet) "
                     "VALUES (?, ?, ?, ?, ?)", [sol.rootname, sid, sol.wcsname, int(sol.best), sol.headerlet])
        return int(sid)

    def _write_gsc_offsets(self, rows: list[dict]) -> None:
        cols = ("rootname", *GSC_OFFSET_COLUMNS)
        self.db.conn.executemany(
            f"INSERT OR REPLACE INTO gsc_offsets ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [[r[c] for c in cols] for r in rows])

    # ---- queries -------------------------------------------------------------------------------

    def catalog_names(self) -> list[str]:
        """Names of the loaded catalogs, sorted."""
        return sorted(r["name"] for r in self.db.query("SELECT name FROM catalogs"))

    def resolve_catalog(self, name: str) -> str | None:
        """The loaded catalog called ``name`` regardless of case (drizzlepac spells GAIAeDR3 both
        ``GAIAeDR3`` and ``GAIAedr3``), or None."""
        row = next(self.db.query("SELECT name FROM catalogs WHERE upper(name) = upper(?)", [name]), None)
        return row["name"] if row else None

    def catalog_motion_bounds(self, catalog: str) -> tuple[float, float, float]:
        """Largest total proper motion (mas/yr) and epoch range of a catalog.

        Used to widen a declination band so that sources moving into a field are not missed.
        """
        row = next(self.db.query(
            "SELECT MAX(pmra * pmra + pmdec * pmdec) AS pm2, MIN(epoch) AS e0, MAX(epoch) AS e1 "
            "FROM catalog_sources WHERE catalog = ?", [catalog]))
        return (math.sqrt(row["pm2"]) if row["pm2"] else 0.0,
                row["e0"] if row["e0"] is not None else DEFAULT_EPOCH,
                row["e1"] if row["e1"] is not None else DEFAULT_EPOCH)

    def sources_in_dec_band(self, catalog: str, dec_min: float, dec_max: float) -> list[dict]:
        """All sources of a catalog with ``dec_min <= dec <= dec_max`` (catalog epoch), in load order."""
        return list(self.db.query(
            "SELECT * FROM catalog_sources WHERE catalog = ? AND dec BETWEEN ? AND ? ORDER BY rowid",
            [catalog, dec_min, dec_max]))

    def solutions(self, rootname: str) -> list[dict]:
        """``solution_id``, ``wcsname``, ``best`` of an observation's solutions (no headerlet bytes)."""
        return list(self.db.query(
            "SELECT solution_id, wcsname, best FROM solutions WHERE rootname = ? ORDER BY solution_id",
            [rootname.lower()]))

    def headerlet(self, rootname: str, wcsname: str) -> bytes | None:
        """The headerlet FITS bytes of one solution, or None."""
        row = next(self.db.query("SELECT headerlet FROM solutions WHERE rootname = ? AND wcsname = ?",
                                 [rootname.lower(), wcsname]), None)
        return bytes(row["headerlet"]) if row else None

    def gsc_offset(self, rootname: str) -> dict | None:
        """The guide-star offsets of a rootname, or None."""
        return next(self.db.query("SELECT * FROM gsc_offsets WHERE rootname = ?", [rootname.lower()]), None)

    def summary(self) -> dict:
        """Counts of what the store holds, for start-up messages."""
        return {"catalogs": {r["name"]: r["n_sources"] for r in self.db.query("SELECT * FROM catalogs")},
                "solutions": self.db["solutions"].count,
                "observations": next(self.db.query(
                    "SELECT COUNT(DISTINCT rootname) AS n FROM solutions"))["n"],
                "gsc_offsets": self.db["gsc_offsets"].count}
