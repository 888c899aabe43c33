"""The handlers' side of the web services: their URLs, a probe, and bounds on the libraries' requests.

:func:`service_url` is where a stage finds a service: the run's recorded environment, else the
library's default. :func:`probe` asks a service once, briefly, whether it answers.

stwcs (``astrometry_utils``) and drizzlepac (``astrometric_utils``) call ``requests.get`` without a
timeout, so a service that accepts a connection and never answers would hold a run forever.
:func:`bounded_requests` gives every request made inside it one deadline for the whole exchange
(connection, status line, headers and body; the caller's own timeout takes its place) and one retry
after a pause, and records each request that still failed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..config import DEFAULT_SERVICE_TIMEOUT, SERVICE_TIMEOUT_VARIABLE
from .common import StepContext

RETRIES = 1
RETRY_PAUSE = 1.0
# The libraries' own defaults, used when the variables are unset (runastrodriz does the same).
DEFAULT_URLS = {
    "ASTROMETRY_SERVICE_URL": "https://mast.stsci.edu/portal/astrometryDB/",
    "GSSS_WEBSERVICES_URL": "https://gsss.stsci.edu/webservices",
    "ASTROMETRIC_CATALOG_URL": "https://gsss.stsci.edu/webservices",
}
# Each probe gets this long at most; a stage probes one or two services, so an unreachable
# network costs a run under 5 s in all instead of stwcs's minutes of retries.
PROBE_TIMEOUT = 1.5
# A catalog probe small enough to cost any catalog service nothing.
_PROBE_QUERY = "vo/CatalogSearch.aspx?RA=0&DEC=0&SR=0.0001&FORMAT=CSV&CAT=GAIAeDR3&MINDET=5"


@dataclass(frozen=True)
class Reply:
    """What a service answered: enough to say why a reply was not what the library needed."""

    url: str
    status: int
    content_type: str
    length: int

    def describe(self) -> str:
        """``'HTTP 200, text/html, 512 bytes'``."""
        return f"HTTP {self.status}, {self.content_type or 'no content type'}, {self.length} bytes"


@dataclass
class RequestLog:
    """The requests made inside :func:`bounded_requests`: the ones that failed, and every reply."""

    failures: list = field(default_factory=list)
    replies: list = field(default_factory=list)

    def last_reply(self, url_prefix: str) -> Reply | None:
        """The latest reply from a URL starting with ``url_prefix``."""
        return next((r for r in reversed(self.replies) if r.url.startswith(url_prefix)), None)

    def no_catalog(self, url_prefix: str, catalog: str) -> str | None:
        """Why the latest reply from ``url_prefix`` held no catalog: an HTTP error, an empty body, a page.

        An error status names itself and the request (``'HTTP 500 from <url>: no 2MASS catalog'``):
        drizzlepac reads the error page as a catalog of no sources, which would blame the sky.
        ``None`` when it looked like a catalog (or there was none), so zero sources were the sky's.
        """
        reply = self.last_reply(url_prefix)
        if reply is None or (reply.status < 400 and reply.length and "html" not in reply.content_type.lower()):
            return None
        if reply.status >= 400:
            return f"HTTP {reply.status} from {reply.url}: no {catalog} catalog"
        return f"the {catalog} catalog service at {url_prefix} answered with no catalog ({reply.describe()})"


@dataclass(frozen=True)
class RequestFailure:
    """A request that did not get an answer in time, or at all, after its retry."""

    url: str
    reason: str
    timed_out: bool
    deadline: float
    attempts: int

    def describe(self, what: str) -> str:
        """``'<what> at <url> did not answer within N s (2 attempts)'`` and the like."""
        if self.timed_out:
            return f"{what} at {self.url} did not answer within {self.deadline:g} s ({self.attempts} attempts)"
        return f"{what} at {self.url} failed: {self.reason} ({self.attempts} attempts)"


def service_url(ctx: StepContext, variable: str) -> str:
    """The service URL a stage uses: the recorded environment, else the library default."""
    return ctx.run.environment.get(variable) or DEFAULT_URLS[variable]


def probe(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """Decide with one short GET whether a service answers.

    An astrometry database URL (ending ``availability``, or an ``.../astrometryDB/`` base, to which
    ``availability`` is added) is up when it answers 200, stwcs's own test. A URL with a query is
    up when it answers 200. Any other URL is taken
    as a GSSS base and asked a tiny catalog cone; it is up when that path exists and the server
    works (any status but 404 and 5xx: an unknown catalog still proves the service answers).

    Parameters
    ----------
    url : str
        Service URL.
    timeout : float
        The whole probe takes at most this long, connection included; no retries.

    Returns
    -------
    (bool, str)
        Whether it answers, and why (e.g. ``connection refused at http://127.0.0.1:9/availability``).
    """
    import requests

    parts = urlsplit(url)
    if parts.path.rstrip("/").lower().endswith("availability"):
        target, kind = url, "astrometrydb"
    elif parts.path.endswith("/") and "astrometrydb" in parts.path.lower() and not parts.query:
        target, kind = url + "availability", "astrometrydb"
    elif parts.query:
        target, kind = url, "other"
    else:
        target, kind = f"{url.rstrip('/')}/{_PROBE_QUERY}", "gsss"

    result: list = []

    def attempt():
        try:
            result.append(requests.get(target, timeout=timeout, allow_redirects=True))
        except requests.exceptions.ConnectionError as exc:
            text = str(exc).lower()
            if "refused" in text:
                result.append(f"connection refused at {target}")
            elif "timed out" in text or isinstance(exc, requests.exceptions.ConnectTimeout):
                result.append(f"no connection within {timeout:g} s to {target}")
            elif "name or service" in text or "resolve" in text or "nodename" in text:
                result.append(f"cannot resolve the host of {target}")
            else:
                result.append(f"cannot connect to {target} ({type(exc).__name__})")
        except requests.exceptions.Timeout:
            result.append(f"no answer within {timeout:g} s from {target}")
        except requests.exceptions.RequestException as exc:
            result.append(f"bad request to {target} ({type(exc).__name__}: {exc})")

    # requests bounds connect and each read separately; the thread bounds the whole probe.
    worker = threading.Thread(target=attempt, daemon=True, name="astrodriz-sm-probe")
    worker.start()
    worker.join(timeout)
    if not result:
        return False, f"no answer within {timeout:g} s from {target}"
    answer = result[0]
    if isinstance(answer, str):
        return False, answer
    status = answer.status_code
    first = answer.text.strip().splitlines()[0][:120] if answer.text.strip() else ""
    detail = f"HTTP {status} from {target}" + (f": {first}" if first and status != 200 else "")
    if kind == "gsss":
        return status < 500 and status != 404, detail
    return status == 200, detail


def service_timeout(environment: dict) -> float:
    """The per-request deadline, seconds: :data:`SERVICE_TIMEOUT_VARIABLE`, else the default."""
    return float(environment.get(SERVICE_TIMEOUT_VARIABLE) or DEFAULT_SERVICE_TIMEOUT)


@contextlib.contextmanager
def bounded_requests(deadline: float, retries: int = RETRIES, pause: float = RETRY_PAUSE):
    """Bound every ``requests`` call made inside the block.

    Parameters
    ----------
    deadline : float
        Seconds each attempt may take in all, from connecting to the last byte of the body, the
        headers included however slowly they come (a caller's own timeout, the longest of a tuple,
        takes its place).
    retries : int
        Further attempts after a timeout or connection failure.
    pause : float
        Seconds between attempts.

    Yields
    ------
    RequestLog
        ``failures``: the requests that failed after their retries (the exception still reaches the
        library, which handles it or not as it does); ``replies``: every answer. Once a host has
        failed, further requests to it in the block fail at once: a library that loops over
        exposures would otherwise wait out the deadline again for each.
    """
    import requests
    from urllib3.connectionpool import HTTPConnectionPool

    log = RequestLog()
    failures = log.failures
    original = requests.Session.request
    original_make_request = HTTPConnectionPool._make_request
    # The connections the current attempt of this thread uses; a request on another thread is not ours to cut.
    attempt_of = threading.local()

    def make_request(pool, conn, *args, **kwargs):
        connections = getattr(attempt_of, "connections", None)
        if connections is not None:
            connections.append(conn)
        return original_make_request(pool, conn, *args, **kwargs)

    def whole(self, method, url, args, kwargs, total):
        """One attempt: connection, status line, headers and whole body within ``total`` seconds."""
        expired, finished = threading.Event(), threading.Event()
        # Until the headers are in, the socket is the connection's; a connection that closes after its
        # answer then hands the socket to the response, which reads the body from it.
        connections: list = []
        sockets: list = []
        lock = threading.Lock()

        def cut():
            # A server that drips its headers or its body keeps every read short, so the socket's own
            # timeout never fires: only shutting the socket down ends the attempt.
            expired.set()
            with lock:
                if finished.is_set():
                    return
                live = [s for s in [*(getattr(c, "sock", None) for c in connections), *sockets] if s is not None]
                for sock in live:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                if not live:
                    # Still connecting, within its own connect timeout: cut the socket once it is there.
                    again = threading.Timer(0.05, cut)
                    again.daemon = True
                    again.start()

        attempt_of.connections = connections
        watchdog = threading.Timer(total, cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            response = original(self, method, url, *args, **{**kwargs, "stream": True})
            with contextlib.suppress(AttributeError), lock:
                sockets.append(response.raw._fp.fp.raw._sock)
            if expired.is_set():
                cut()
            response.content  # noqa: B018 - reads the whole body under the watchdog
            if expired.is_set():
                # A body without a length ends quietly when its socket is shut: it may be cut short.
                raise requests.Timeout(f"{url} did not send its whole answer within {total:g} s")
            return response
        except requests.RequestException as exc:
            if expired.is_set():
                raise requests.Timeout(f"{url} did not send its whole answer within {total:g} s") from exc
            raise
        finally:
            with lock:
                finished.set()
            watchdog.cancel()
            attempt_of.connections = None

    def request(self, method, url, *args, **kwargs):
        host = urlsplit(str(url)).netloc
        earlier = next((f for f in failures if urlsplit(f.url).netloc == host), None)
        if earlier is not None:
            raise requests.ConnectionError(f"{host} did not answer earlier in this step; not asked again")
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = deadline
        timeout = kwargs["timeout"]
        total = float(max(timeout) if isinstance(timeout, tuple) else timeout)
        for attempt in range(1, retries + 2):
            try:
                response = whole(self, method, url, args, kwargs, total)
                log.replies.append(Reply(str(url), response.status_code, response.headers.get("Content-Type", ""),
                                         len(response.content)))
                return response
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt > retries:
                    failures.append(RequestFailure(url=str(url), reason=f"{type(exc).__name__}: {exc}",
                                                   timed_out=isinstance(exc, requests.Timeout),
                                                   deadline=total, attempts=attempt))
                    raise
                time.sleep(pause)

    requests.Session.request = request
    HTTPConnectionPool._make_request = make_request
    try:
        yield log
    finally:
        requests.Session.request = original
        HTTPConnectionPool._make_request = original_make_request
