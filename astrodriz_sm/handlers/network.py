"""A deadline and one retry for every HTTP request the libraries make during a step.

stwcs (``astrometry_utils``) and drizzlepac (``astrometric_utils``) call ``requests.get`` without a
timeout, so a service that accepts a connection and never answers would hold a run forever.
:func:`bounded_requests` gives every request made inside it a deadline (unless the caller gave one)
and one retry after a pause, and records each request that still failed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from ..config import DEFAULT_SERVICE_TIMEOUT, SERVICE_TIMEOUT_VARIABLE

RETRIES = 1
RETRY_PAUSE = 1.0


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


def service_timeout(environment: dict) -> float:
    """The per-request deadline, seconds: :data:`SERVICE_TIMEOUT_VARIABLE`, else the default."""
    return float(environment.get(SERVICE_TIMEOUT_VARIABLE) or DEFAULT_SERVICE_TIMEOUT)


@contextlib.contextmanager
def bounded_requests(deadline: float, retries: int = RETRIES, pause: float = RETRY_PAUSE):
    """Bound every ``requests`` call made inside the block.

    Parameters
    ----------
    deadline : float
        Seconds each connection attempt and each read may take.
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
    from urllib.parse import urlsplit

    import requests

    log = RequestLog()
    failures = log.failures
    original = requests.Session.request

    def request(self, method, url, *args, **kwargs):
        host = urlsplit(str(url)).netloc
        earlier = next((f for f in failures if urlsplit(f.url).netloc == host), None)
        if earlier is not None:
            raise requests.ConnectionError(f"{host} did not answer earlier in this step; not asked again")
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = deadline
        for attempt in range(1, retries + 2):
            try:
                response = original(self, method, url, *args, **kwargs)
                log.replies.append(Reply(str(url), response.status_code, response.headers.get("Content-Type", ""),
                                         len(response.content)))
                return response
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt > retries:
                    failures.append(RequestFailure(url=str(url), reason=f"{type(exc).__name__}: {exc}",
                                                   timed_out=isinstance(exc, requests.Timeout),
                                                   deadline=float(kwargs["timeout"] if not isinstance(
                                                       kwargs["timeout"], tuple) else max(kwargs["timeout"])),
                                                   attempts=attempt))
                    raise
                time.sleep(pause)

    requests.Session.request = request
    try:
        yield log
    finally:
        requests.Session.request = original
