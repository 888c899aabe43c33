"""A local stand-in for the STScI web services that the a priori and a posteriori stages call.

One HTTP server, one base URL, three services:

``<base>astrometrydb/``  (``ASTROMETRY_SERVICE_URL``, read by ``stwcs.updatewcs.astrometry_utils``)
    ``GET availability`` -> 200.
    ``GET observation/read/<rootname>`` -> XML listing the solutions, 404 for an unknown rootname
    (stwcs then treats the exposure as a new observation).
    ``GET observation/read/<rootname>?wcsname=<name>`` -> the headerlet, ``application/fits``.
``<base>gsss``  (``GSSS_WEBSERVICES_URL``)
    ``GET /GSCConvert/GSCconvert.aspx?IPPPSSOOT=<ROOT>`` -> XML with ``<msg>Success...`` and the
    offsets; for a rootname without offsets ``<msg>Failure ...`` with status 200, which
    ``find_gsc_offset`` reads as "no offsets" (it then returns zero offsets and scale 1).
``<base>gsss``  (``ASTROMETRIC_CATALOG_URL``, read by ``drizzlepac.haputils.astrometric_utils``)
    ``GET /vo/CatalogSearch.aspx?RA=&DEC=&SR=`` or ``?STCS=polygon ra1 dec1 ...`` with
    ``FORMAT=CSV&CAT=<name>[&MINDET=n][&EPOCH=year]`` -> a description line, then CSV with
    ``\\r\\n`` line ends, in the columns the STScI service answers for that catalog
    (:func:`~astrodriz_sm.services.data.answer_columns`: GSC242 and 2MASS differ from GAIA).

Client errors get a 4xx status and a one-line text body (catalog errors start with ``Error``, the
prefix drizzlepac looks for) and one warning in the log; an exception in a handler gets a 500 and
a logged traceback, and the server goes on.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import logging
import math
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit
from xml.sax.saxutils import escape

import numpy as np

from ..model import headerlet_name
from .data import GSC_OFFSET_COLUMNS, ServiceStore, answer_columns

__all__ = ["Response", "ServiceApp", "ServiceHandle", "serve_forever", "start_server"]

logger = logging.getLogger("astrodriz_sm.services")

ASTROMETRYDB_PREFIX = "astrometrydb"
GSSS_PREFIX = "gsss"
MAS_PER_DEG = 3.6e6
_ROOTNAME = re.compile(r"^[A-Za-z0-9]{1,32}$")


class ClientError(Exception):
    """A request the service cannot answer because of the request itself (4xx)."""

    def __init__(self, status: int, message: str, content_type: str = "text/plain; charset=utf-8"):
        super().__init__(message)
        self.status = status
        self.content_type = content_type


class CatalogError(ClientError):
    """A catalog-search client error; its body starts with 'Error', which drizzlepac recognizes."""

    def __init__(self, status: int, message: str):
        super().__init__(status, f"Error: {message}")


@dataclass
class Response:
    """What the service answers: status, content type, body."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    note: str = ""
    headers: dict = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, (text.rstrip("\n") + "\n").encode(), content_type)


def _float_param(params: dict, name: str, lo: float = -math.inf, hi: float = math.inf,
                 required: bool = True) -> float | None:
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise CatalogError(400, f"missing parameter {name}")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise CatalogError(400, f"parameter {name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise CatalogError(400, f"parameter {name}={raw!r} is outside [{lo:g}, {hi:g}]")
    return value


def _unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def angular_separation(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (Vincenty formula: accurate at every separation)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra),
                   np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


def propagate(ra, dec, pmra, pmdec, dt_years):
    """Move positions by their proper motions over ``dt_years``.

    First order in the displacement: ``dec + pmdec*dt`` and ``ra + pmra*dt/cos(dec)`` (``pmra``
    includes cos(dec), GAIA's convention). The neglected terms are of order
    (pm*dt)^2*tan(dec)/2: under 1e-10 rad for 2 arcsec of motion away from the poles.

    Parameters
    ----------
    ra, dec : array_like
        Degrees.
    pmra, pmdec : array_like
        mas/yr.
    dt_years : float or array_like
        Target epoch minus source epoch.

    Returns
    -------
    (ndarray, ndarray)
        New RA in [0, 360) and Dec, degrees.
    """
    ra, dec, pmra, pmdec, dt = (np.asarray(a, dtype=float) for a in (ra, dec, pmra, pmdec, dt_years))
    cosd = np.cos(np.radians(dec))
    # At a pole RA is undefined; leave it rather than divide by zero.
    dra = np.where(cosd > 1e-12, pmra * dt / MAS_PER_DEG / np.where(cosd > 1e-12, cosd, 1.0), 0.0)
    new_dec = dec + pmdec * dt / MAS_PER_DEG
    new_ra = ra + dra
    # Crossing a pole: reflect, and RA jumps by 180 degrees.
    over = np.abs(new_dec) > 90.0
    new_dec = np.where(over, np.sign(new_dec) * 180.0 - new_dec, new_dec)
    new_ra = np.where(over, new_ra + 180.0, new_ra)
    return np.mod(new_ra, 360.0), new_dec


def points_in_polygon(ra, dec, poly_ra, poly_dec) -> np.ndarray:
    """Which points lie inside a spherical polygon with great-circle edges.

    The points and vertices are projected gnomonically about the vertices' mean direction; the
    gnomonic projection maps great circles to straight lines, so an even-odd test on the plane is
    exact for any polygon smaller than a hemisphere. Points on the far side are outside.
    """
    center = _unit_vectors(poly_ra, poly_dec).sum(axis=0)
    center /= np.linalg.norm(center)
    east = np.cross([0.0, 0.0, 1.0], center)
    if np.linalg.norm(east) < 1e-12:  # polygon centred on a pole
        east = np.array([0.0, 1.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(center, east)

    def project(r, d):
        v = _unit_vectors(r, d)
        z = v @ center
        with np.errstate(divide="ignore", invalid="ignore"):
            return (v @ east) / z, (v @ north) / z, z

    vx, vy, vz = project(np.asarray(poly_ra, float), np.asarray(poly_dec, float))
    if np.any(vz <= 0):
        raise CatalogError(400, "polygon larger than a hemisphere")
    px, py, pz = project(np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float)))
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        x1, y1, x2, y2 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside & (pz > 0)


def _parse_stcs(text: str) -> tuple[str, list[float]]:
    """``polygon [frame] ra1 dec1 ra2 dec2 ...`` or ``circle [frame] ra dec r``."""
    tokens = text.replace(",", " ").split()
    if not tokens:
        raise CatalogError(400, "empty STCS")
    shape = tokens[0].lower()
    rest = tokens[1:]
    if rest and not re.match(r"^[-+.\d]", rest[0]):
        if rest[0].upper() not in ("ICRS", "J2000", "FK5"):
            raise CatalogError(400, f"STCS frame {rest[0]!r} is not served (ICRS only)")
        rest = rest[1:]
    try:
        numbers = [float(t) for t in rest]
    except ValueError:
        raise CatalogError(400, f"STCS {text!r} has a value that is not a number") from None
    if not all(math.isfinite(v) for v in numbers):
        raise CatalogError(400, "STCS values must be finite")
    if shape == "polygon":
        if len(numbers) < 6 or len(numbers) % 2:
            raise CatalogError(400, "STCS polygon needs at least 3 RA Dec pairs")
        if any(abs(d) > 90 for d in numbers[1::2]):
            raise CatalogError(400, "STCS polygon Dec outside [-90, 90]")
    elif shape == "circle":
        if len(numbers) != 3 or abs(numbers[1]) > 90 or not 0 < numbers[2] <= 180:
            raise CatalogError(400, "STCS circle needs RA Dec radius (0 < radius <= 180)")
    else:
        raise CatalogError(400, f"STCS shape {tokens[0]!r} is not served (polygon or circle)")
    return shape, numbers


class ServiceApp:
    """The services without HTTP: maps a request path to a :class:`Response`.

    Parameters
    ----------
    db_path : str or Path
        The service database; opened read-only for each request, so data loaded while the server
        runs is served at once and concurrent requests never share a connection.
    """

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)

    def handle(self, raw_path: str) -> Response:
        """Answer one GET. Raises :class:`ClientError` for requests that cannot be answered."""
        parts = urlsplit(raw_path)
        # Collapse '//' so a base URL given with a trailing slash still works.
        path = re.sub(r"/{2,}", "/", unquote(parts.path)).strip("/")
        segments = path.split("/") if path else []
        head = segments[0].lower() if segments else ""
        if not segments:
            return Response.text(200, "astrodriz-sm local services: /astrometrydb/ /gsss")
        if head == ASTROMETRYDB_PREFIX:
            return self._astrometrydb(segments[1:], parts.query)
        if head == GSSS_PREFIX:
            return self._gsss(segments[1:], parts.query)
        raise ClientError(404, f"unknown path /{path}")

    # ---- astrometry database -------------------------------------------------------------------

    def _astrometrydb(self, segments: list[str], query: str) -> Response:
        lower = [s.lower() for s in segments]
        if not segments:
            return Response.text(200, "astrometry database: availability, observation/read/<rootname>")
        if lower == ["availability"]:
            return Response.text(200, "available")
        if len(segments) == 3 and lower[:2] == ["observation", "read"]:
            rootname = segments[2]
            if not _ROOTNAME.match(rootname):
                raise ClientError(400, f"{rootname!r} is not a rootname")
            raw = dict(p.split("=", 1) if "=" in p else (p, "") for p in query.split("&") if p)
            wcsraw = next((v for k, v in raw.items() if k.lower() == "wcsname"), None)
            with ServiceStore(self.db_path, readonly=True) as store:
                if wcsraw is None:
                    return self._observation(store, rootname)
                return self._headerlet(store, rootname, wcsraw)
        raise ClientError(404, f"unknown astrometry database path /{ASTROMETRYDB_PREFIX}/{'/'.join(segments)}")

    @staticmethod
    def _observation(store: ServiceStore, rootname: str) -> Response:
        solutions = store.solutions(rootname)
        if not solutions:
            raise ClientError(404, f"no solutions for observation {rootname}")
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<observation>",
                 f"  <observationID>{escape(rootname.lower())}</observationID>", "  <solutions>"]
        for s in solutions:
            lines.append(f"    <solution><solutionID>{s['solution_id']}</solutionID>"
                         f"<wcsName>{escape(s['wcsname'])}</wcsName></solution>")
        lines.append("  </solutions>")
        best = next((s for s in solutions if s["best"]), None)
        if best is not None:
            lines.append(f"  <bestSolutionID>{best['solution_id']}</bestSolutionID>")
        lines.append("</observation>")
        return Response(200, ("\n".join(lines) + "\n").encode(), "text/xml; charset=utf-8",
                        note=f"{len(solutions)} solutions")

    @staticmethod
    def _headerlet(store: ServiceStore, rootname: str, wcsraw: str) -> Response:
        # stwcs does not encode the name: try it as sent first, then with '+' as a space.
        for wcsname in dict.fromkeys((unquote(wcsraw), unquote_plus(wcsraw))):
            blob = store.headerlet(rootname, wcsname)
            if blob is not None:
                return Response(200, blob, "application/fits", note=f"headerlet {wcsname}",
                                headers={"Content-Disposition":
                                         f'attachment; filename="{headerlet_name(rootname.lower())}"'})
        raise ClientError(404, f"no solution {unquote(wcsraw)!r} for observation {rootname}")

    # ---- GSSS ----------------------------------------------------------------------------------

    def _gsss(self, segments: list[str], query: str) -> Response:
        lower = "/".join(s.lower() for s in segments)
        params = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key.upper(), value)
        if not segments:
            return Response.text(200, "GSSS web services: GSCConvert/GSCconvert.aspx, vo/CatalogSearch.aspx")
        if lower == "gscconvert/gscconvert.aspx":
            return self._gsc_convert(params)
        if lower == "vo/catalogsearch.aspx":
            return self._catalog_search(params)
        raise ClientError(404, f"unknown GSSS path /{GSSS_PREFIX}/{'/'.join(segments)}")

    def _gsc_convert(self, params: dict) -> Response:
        root = params.get("IPPPSSOOT", "").strip()
        if not root:
            raise ClientError(400, "missing parameter IPPPSSOOT")
        if not _ROOTNAME.match(root):
            raise ClientError(400, f"IPPPSSOOT {root!r} is not a rootname")
        with ServiceStore(self.db_path, readonly=True) as store:
            row = store.gsc_offset(root)
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<GSCConvert>",
                 f"  <IPPPSSOOT>{escape(root.upper())}</IPPPSSOOT>"]
        if row is None:
            lines += [f"  <msg>Failure (no guide star information for {escape(root.upper())})</msg>",
                      "</GSCConvert>"]
            return Response(200, ("\n".join(lines) + "\n").encode(), "text/xml; charset=utf-8",
                            note="no offsets")
        # find_gsc_offset tests msg.split()[0] == "Success": the word must stand alone.
        lines.append(f"  <msg>Success (guide star offsets for {escape(root.upper())})</msg>")
        for name in GSC_OFFSET_COLUMNS:
            value = row[name]
            text = escape(str(value)) if name == "outputCatalog" else repr(float(value))
            lines.append(f"  <{name}>{text}</{name}>")
        lines.append("</GSCConvert>")
        return Response(200, ("\n".join(lines) + "\n").encode(), "text/xml; charset=utf-8", note="offsets")

    def _catalog_search(self, params: dict) -> Response:
        fmt = params.get("FORMAT", "CSV").strip().upper() or "CSV"
        if fmt != "CSV":
            raise CatalogError(400, f"FORMAT={params['FORMAT']!r} is not served (CSV only)")
        cat = params.get("CAT", "").strip()
        if not cat:
            raise CatalogError(400, "missing parameter CAT")
        # MINDET is accepted for compatibility; the loaded catalogs carry no detection counts.
        if params.get("MINDET", "").strip() and not re.match(r"^\d+$", params["MINDET"].strip()):
            raise CatalogError(400, f"parameter MINDET={params['MINDET']!r} is not an integer")
        epoch = _float_param(params, "EPOCH", 1000.0, 3000.0, required=False)
        if "STCS" in params:
            shape, numbers = _parse_stcs(params["STCS"])
        else:
            numbers = [_float_param(params, "RA"), _float_param(params, "DEC", -90.0, 90.0),
                       _float_param(params, "SR", 0.0, 180.0)]
            if numbers[2] <= 0:
                raise CatalogError(400, "parameter SR must be positive")
            shape = "circle"

        with ServiceStore(self.db_path, readonly=True) as store:
            name = store.resolve_catalog(cat)
            if name is None:
                known = ", ".join(store.catalog_names()) or "none loaded"
                raise CatalogError(400, f"unknown catalog CAT={cat!r} (served: {known})")
            max_pm, e0, e1 = store.catalog_motion_bounds(name)
            # Widen the declination band by the largest motion to the requested epoch, so a source
            # that moves into the field is found.
            margin = 0.0 if epoch is None else max_pm * max(abs(epoch - e0), abs(epoch - e1)) / MAS_PER_DEG
            if shape == "circle":
                _, dec0, sr = numbers
                lo, hi = dec0 - sr - margin, dec0 + sr + margin
            else:
                decs = numbers[1::2]
                # Great-circle edges can bulge past their end points' declination; bound the bulge
                # by the polygon's size.
                size = float(np.max(angular_separation(numbers[0::2][0], decs[0], numbers[0::2], decs)))
                lo, hi = min(decs) - size - margin, max(decs) + size + margin
            rows = store.sources_in_dec_band(name, max(lo, -90.0), min(hi, 90.0))

        rows = self._at_epoch(rows, epoch)
        if rows:
            ra = np.array([r["ra"] for r in rows])
            dec = np.array([r["dec"] for r in rows])
            if shape == "circle":
                keep = angular_separation(numbers[0], numbers[1], ra, dec) <= numbers[2]
            else:
                keep = points_in_polygon(ra, dec, numbers[0::2], numbers[1::2])
            rows = [r for r, k in zip(rows, keep) if k]

        where = (f"polygon of {len(numbers) // 2} vertices" if shape == "polygon"
                 else f"RA={numbers[0]:g} DEC={numbers[1]:g} SR={numbers[2]:g}")
        out = io.StringIO()
        out.write(f"{len(rows)} sources from {name} within {where}"
                  f"{'' if epoch is None else f' at epoch {epoch:g}'}\r\n")
        writer = csv.writer(out, lineterminator="\r\n")
        columns = answer_columns(name)
        writer.writerow([answer for answer, _ in columns])
        if rows and any(source == "jdate" for _, source in columns):
            from astropy.time import Time

            jdates = Time([r["epoch"] for r in rows], format="decimalyear", scale="utc").jd
            rows = [{**r, "jdate": float(jd)} for r, jd in zip(rows, jdates)]
        for r in rows:
            writer.writerow(["" if r[source] is None else r[source] for _, source in columns])
        return Response(200, out.getvalue().encode(), "text/csv; charset=utf-8",
                        note=f"{len(rows)} sources from {name}")

    @staticmethod
    def _at_epoch(rows: list[dict], epoch: float | None) -> list[dict]:
        """Sources with both proper motions moved to ``epoch``; the others as they are."""
        if epoch is None:
            return rows
        moving = [i for i, r in enumerate(rows) if r["pmra"] is not None and r["pmdec"] is not None]
        if not moving:
            return rows
        sel = [rows[i] for i in moving]
        ra, dec = propagate([r["ra"] for r in sel], [r["dec"] for r in sel], [r["pmra"] for r in sel],
                            [r["pmdec"] for r in sel], [epoch - r["epoch"] for r in sel])
        rows = list(rows)
        for i, r, a, d in zip(moving, sel, ra, dec):
            rows[i] = {**r, "ra": float(a), "dec": float(d), "epoch": float(epoch)}
        return rows


class _Handler(BaseHTTPRequestHandler):
    """HTTP glue around :class:`ServiceApp`: status, headers, one log line per request."""

    server_version = "astrodriz-sm-services/1"
    # Answers to unparseable request lines then carry a status line and headers (not HTTP/0.9).
    default_request_version = "HTTP/1.0"
    # A client that stops sending cannot hold a worker thread for ever.
    timeout = 30

    def do_GET(self):
        self._dispatch(send_body=True)

    def do_HEAD(self):
        self._dispatch(send_body=False)

    def _not_allowed(self):
        self._send(Response.text(405, f"method {self.command} not allowed (GET only)"), True,
                   f"method {self.command} not allowed")

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _dispatch(self, send_body: bool):
        start = time.monotonic()
        try:
            response = self.server.app.handle(self.path)
        except ClientError as exc:
            response = Response.text(exc.status, str(exc), exc.content_type)
            response.note = str(exc)
        except Exception as exc:
            logger.exception("%s %s -> 500: %s", self.command, self.path, type(exc).__name__)
            response = Response.text(500, f"internal error ({type(exc).__name__}); see the server log")
            response.note = "logged"
        self._send(response, send_body, response.note, time.monotonic() - start)

    def _send(self, response: Response, send_body: bool, note: str = "", seconds: float = 0.0):
        # Logged before answering, so the log line exists by the time the client has its answer.
        if response.status < 500:  # a 500 was logged with its traceback
            level = logging.WARNING if response.status >= 400 else logging.INFO
            logger.log(level, "%s %s %s -> %d %s (%.3f s)", self.client_address[0], self.command,
                       self.path, response.status, note, seconds)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            logger.info("%s %s %s: client went away before the answer", self.client_address[0],
                        self.command, self.path)

    def send_error(self, code, message=None, explain=None):
        """Errors http.server detects itself (bad request line, headers, method): one-line text."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            # An unknown method is the client's mistake, not a missing feature of the server.
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} not allowed (GET only)"
        text = " ".join(str(message or HTTPStatus(code).phrase).split())
        self.log_error("-> %d %s", code, text)
        self.close_connection = True
        body = (text + "\n").encode("utf-8", "replace")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        """Requests are logged once, by ``_send``."""

    def log_error(self, format, *args):
        # Malformed request lines and header errors from http.server itself.
        logger.warning("%s: %s", self.client_address[0], format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, app: ServiceApp):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):
        # Errors outside a handler method (e.g. a socket failing mid-request): log, keep serving.
        logger.error("error serving %s", client_address, exc_info=sys.exc_info())


@dataclass
class ServiceHandle:
    """A running server: its base URL, the environment variables pointing the clients at it."""

    url: str
    environment: dict
    server: _Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the serving thread (idempotent)."""
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def service_environment(base_url: str) -> dict:
    """The variables that point stwcs and drizzlepac at services under ``base_url`` (ends with '/')."""
    return {"ASTROMETRY_SERVICE_URL": f"{base_url}{ASTROMETRYDB_PREFIX}/",
            "GSSS_WEBSERVICES_URL": f"{base_url}{GSSS_PREFIX}",
            "ASTROMETRIC_CATALOG_URL": f"{base_url}{GSSS_PREFIX}"}


def _bind(db_path, host: str, port: int) -> tuple[_Server, str]:
    # Creates the tables when the file is new, so an empty store serves 404s rather than 500s.
    ServiceStore(db_path).close()
    server = _Server((host, port), ServiceApp(db_path))
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return server, f"http://{shown}:{bound_port}/"


def beyond_loopback(server: _Server) -> bool:
    """Whether ``server`` listens on an address other machines can reach (anything but loopback)."""
    return not ipaddress.ip_address(server.server_address[0]).is_loopback


def start_server(db_path: str | Path, host: str = "127.0.0.1", port: int = 0) -> ServiceHandle:
    """Serve a service database from a daemon thread.

    Parameters
    ----------
    db_path : str or Path
        The service database (created empty when absent).
    host : str
        Address to bind; loopback unless another one is passed explicitly.
    port : int
        Port; 0 picks a free one.

    Returns
    -------
    ServiceHandle
        ``.url`` (base, trailing slash), ``.environment``, ``.stop()``.
    """
    server, url = _bind(db_path, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"astrodriz-sm-services-{server.server_address[1]}", daemon=True)
    thread.start()
    logger.info("services for %s at %s", db_path, url)
    return ServiceHandle(url=url, environment=service_environment(url), server=server, thread=thread)


def serve_forever(db_path: str | Path, host: str = "127.0.0.1", port: int = 8765, out=None) -> None:
    """Serve in the foreground until interrupted, after printing the ``export`` lines for a shell.

    Parameters
    ----------
    db_path : str or Path
        The service database.
    host, port
        Where to listen.
    out : file, optional
        Where the ``export`` lines go (standard output by default).
    """
    out = out or sys.stdout
    server, url = _bind(db_path, host, port)
    if beyond_loopback(server):
        print(f"warning: listening on {server.server_address[0]}, beyond this machine: anyone who can reach "
              f"port {server.server_address[1]} can query {db_path}", file=sys.stderr, flush=True)
    try:
        for key, value in service_environment(url).items():
            print(f"export {key}={value}", file=out)
        out.flush()
        logger.info("services for %s at %s (Ctrl-C stops)", db_path, url)
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        logger.info("stopped")
    finally:
        server.server_close()
