"""The service probe and the bounded requests, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from astrodriz_sm.config import RunConfig
from astrodriz_sm.handlers.common import StepContext
from astrodriz_sm.handlers.network import Reply, bounded_requests, probe, service_timeout, service_url
from astrodriz_sm.model import RunLayout
from astrodriz_sm.statemachine.state import RunState

CONE = "vo/CatalogSearch.aspx?RA=0&DEC=0&SR=0.0001&FORMAT=CSV&CAT=GAIAeDR3&MINDET=5"


def _server(status: int, body: bytes, content_type: str = "text/plain"):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


@pytest.fixture
def answering():
    httpd = _server(200, b"available\n")
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def failing():
    httpd = _server(500, b"Internal Server Error\nstack trace\n", "text/html")
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dripping():
    """A catalog service that sends its 100-byte answer one byte every 0.5 s."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass  # the client hung up, as it should

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dripping_headers():
    """A catalog service that sends its status line, then header bytes one every 0.5 s (for 30 s at most)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def drip(conn):
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                for _ in range(60):
                    if stop.wait(0.5):
                        break
                    conn.sendall(b"x")
            except OSError:
                pass  # the client hung up, as it should

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()


@pytest.fixture
def silent():
    """A server that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def closed():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def test_probe_asks_the_astrometry_database_for_availability(answering):
    assert probe(f"{answering}/astrometryDB/") == (True,
                                                   f"HTTP 200 from {answering}/astrometryDB/availability")
    assert probe(f"{answering}/x/availability") == (True, f"HTTP 200 from {answering}/x/availability")


def test_probe_asks_a_catalog_service_a_tiny_cone(answering, failing):
    assert probe(answering) == (True, f"HTTP 200 from {answering}/{CONE}")
    assert probe(f"{failing}/") == (False, f"HTTP 500 from {failing}/{CONE}: Internal Server Error")


@pytest.mark.parametrize(("status", "up"), [(400, True), (404, False), (503, False)])
def test_a_catalog_service_is_up_unless_the_path_is_missing_or_it_fails(status, up):
    """Any answer but 404 and 5xx proves a GSSS service answers (an unknown catalog is a 400)."""
    httpd = _server(status, b"Unknown catalog\n")
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert probe(url) == (up, f"HTTP {status} from {url}/{CONE}: Unknown catalog")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_probe_of_a_url_with_a_query_wants_200(failing):
    url = f"{failing}/caom?ra=1"
    assert probe(url) == (False, f"HTTP 500 from {url}: Internal Server Error")


def test_probe_refused_and_silent(closed, silent):
    assert probe(f"{closed}/astrometryDB/") == (False,
                                                f"connection refused at {closed}/astrometryDB/availability")
    start = time.monotonic()
    assert probe(f"{silent}/astrometryDB/", timeout=0.5) == (
        False, f"no answer within 0.5 s from {silent}/astrometryDB/availability")
    assert time.monotonic() - start < 1.5


def test_bounded_requests_record_every_reply(answering, failing):
    original = requests.Session.request
    with bounded_requests(deadline=2.0) as log:
        assert requests.get(f"{answering}/a").text == "available\n"
        assert requests.get(f"{failing}/b").status_code == 500
    assert requests.Session.request is original
    assert log.failures == []
    assert log.replies == [Reply(f"{answering}/a", 200, "text/plain", 10),
                           Reply(f"{failing}/b", 500, "text/html", 34)]
    assert log.last_reply(failing).describe() == "HTTP 500, text/html, 34 bytes"
    assert log.last_reply("http://elsewhere") is None


def test_a_silent_service_is_retried_once_then_not_asked_again(silent):
    start = time.monotonic()
    with bounded_requests(deadline=0.3, pause=0.1) as log:
        with pytest.raises(requests.Timeout):
            requests.get(f"{silent}/availability")
        with pytest.raises(requests.ConnectionError) as again:
            requests.get(f"{silent}/other")
    elapsed = time.monotonic() - start
    # Two attempts of 0.3 s and one pause of 0.1 s; the second request costs nothing.
    assert 0.7 <= elapsed < 2.0
    host = silent.removeprefix("http://")
    assert str(again.value) == f"{host} did not answer earlier in this step; not asked again"
    [failure] = log.failures
    assert (failure.url, failure.timed_out, failure.deadline, failure.attempts) == (
        f"{silent}/availability", True, 0.3, 2)
    assert failure.describe("The astrometry database") == (
        f"The astrometry database at {silent}/availability did not answer within 0.3 s (2 attempts)")
    assert log.replies == []


def test_a_dripping_service_is_cut_at_the_deadline(dripping):
    """Every read of a dripping answer is short; the whole request still ends at its deadline."""
    start = time.monotonic()
    with bounded_requests(deadline=2.0, retries=0) as log:
        with pytest.raises(requests.Timeout) as cut:
            requests.get(f"{dripping}/cone")
    elapsed = time.monotonic() - start
    assert 1.9 <= elapsed < 6.0
    assert str(cut.value) == f"{dripping}/cone did not send its whole answer within 2 s"
    [failure] = log.failures
    assert (failure.url, failure.timed_out, failure.deadline, failure.attempts) == (f"{dripping}/cone", True, 2.0, 1)
    assert failure.describe("The GAIAeDR3 catalog") == (
        f"The GAIAeDR3 catalog at {dripping}/cone did not answer within 2 s (1 attempts)")
    assert log.replies == []


def test_a_service_dripping_its_headers_is_cut_at_the_deadline(dripping_headers):
    """Each header byte comes well within a read timeout; the one deadline still ends the request."""
    start = time.monotonic()
    with bounded_requests(deadline=2.0, retries=1, pause=0.2) as log, pytest.raises(requests.Timeout) as cut:
        requests.get(f"{dripping_headers}/cone")
    elapsed = time.monotonic() - start
    # Two attempts of 2 s and a pause of 0.2 s; the server would drip for 30 s.
    assert 4.1 <= elapsed < 6.0
    assert str(cut.value) == f"{dripping_headers}/cone did not send its whole answer within 2 s"
    [failure] = log.failures
    assert (failure.url, failure.timed_out, failure.deadline, failure.attempts) == (
        f"{dripping_headers}/cone", True, 2.0, 2)
    assert log.replies == []


def test_drizzlepacs_own_catalog_request_is_cut_at_the_deadline(dripping, monkeypatch):
    from drizzlepac.haputils import astrometric_utils as amutils

    monkeypatch.setattr(amutils, "SERVICELOCATION", dripping)
    start = time.monotonic()
    with bounded_requests(deadline=2.0, retries=0) as log:
        with pytest.raises(requests.Timeout, match=r"did not send its whole answer within 2 s$"):
            amutils.get_catalog(10.0, 20.0, catalog="GAIAeDR3")
    assert time.monotonic() - start < 6.0
    [failure] = log.failures
    assert failure.url.startswith(f"{dripping}/vo/CatalogSearch.aspx?RA=10.0&DEC=20.0&")


def test_an_error_status_is_named_as_the_reason_for_no_catalog(failing, answering, monkeypatch):
    from drizzlepac.haputils import astrometric_utils as amutils

    monkeypatch.setattr(amutils, "SERVICELOCATION", failing)
    with bounded_requests(deadline=2.0) as log:
        # drizzlepac reads the 500 page as a catalog of no sources.
        assert len(amutils.get_catalog(10.0, 20.0, catalog="GAIAeDR3")) == 0
        [asked] = [r.url for r in log.replies]
        assert asked.startswith(f"{failing}/vo/CatalogSearch.aspx?RA=10.0&DEC=20.0&")
        assert log.no_catalog(failing, "GAIAeDR3") == f"HTTP 500 from {asked}: no GAIAeDR3 catalog"
        assert requests.get(f"{failing}/{CONE}").status_code == 500
        assert requests.get(f"{answering}/{CONE}").status_code == 200
    assert log.failures == []
    assert log.no_catalog(failing, "GAIAeDR3") == f"HTTP 500 from {failing}/{CONE}: no GAIAeDR3 catalog"
    assert log.no_catalog(answering, "GAIAeDR3") is None  # a 200 with a body: zero sources are the sky's


def test_the_callers_own_timeout_is_kept(silent):
    with bounded_requests(deadline=30.0, retries=0) as log:
        with pytest.raises(requests.Timeout):
            requests.get(silent, timeout=(0.2, 0.25))
    assert (log.failures[0].deadline, log.failures[0].attempts) == (0.25, 1)


def test_a_refused_connection_is_a_failure_not_a_timeout(closed):
    with bounded_requests(deadline=1.0, pause=0.0) as log:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{closed}/gsss")
    [failure] = log.failures
    assert (failure.timed_out, failure.attempts) == (False, 2)
    assert failure.describe("GSSS").startswith(f"GSSS at {closed}/gsss failed: ConnectionError: ")
    assert failure.describe("GSSS").endswith(" (2 attempts)")


def test_service_timeout_reads_the_environment():
    assert service_timeout({}) == 30.0
    assert service_timeout({"ASTRODRIZ_SM_SERVICE_TIMEOUT": "2.5"}) == 2.5
    assert service_timeout({"ASTRODRIZ_SM_SERVICE_TIMEOUT": ""}) == 30.0


def test_service_url_is_the_recorded_environment_else_the_library_default():
    def context(environment):
        return StepContext(run=RunState(environment=environment),
                           config=RunConfig(input="/x/j8cw03010_asn.fits", run_dir="/x"), stage="apriori",
                           step="probe_service", layout=RunLayout("j8cw03010", Path("/x/j8cw03010_asn.fits")))

    recorded = context({"ASTROMETRY_SERVICE_URL": "http://127.0.0.1:8080/astrometryDB/"})
    assert service_url(recorded, "ASTROMETRY_SERVICE_URL") == "http://127.0.0.1:8080/astrometryDB/"
    assert service_url(recorded, "GSSS_WEBSERVICES_URL") == "https://gsss.stsci.edu/webservices"
    assert service_url(context({"ASTROMETRY_SERVICE_URL": ""}), "ASTROMETRY_SERVICE_URL") == (
        "https://mast.stsci.edu/portal/astrometryDB/")
