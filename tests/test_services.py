"""Tests for the local astrometry services, driven through the real stwcs and drizzlepac clients."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.table import Table

from astrodriz_sm.handlers.network import probe
from astrodriz_sm.services import (
    CATALOG_COLUMNS,
    ServiceApp,
    ServiceDataError,
    ServiceStore,
    answer_columns,
    start_server,
)
from astrodriz_sm.services.cli import (
    add_serve_arguments,
    add_serve_load_arguments,
    cmd_serve_load,
)

REFDATA = Path(__file__).resolve().parents[1].parent / "shared" / "refdata"
SIP_FLT = REFDATA / "j8bt06nyq_sip_flt.fits"  # ACS/HRC, ROOTNAME j8bt06nyq, no pixel data
SAMPLE_FLC = REFDATA / "sample_ipppssoot_flc.fits"  # WFC3, ROOTNAME ib4606c5q, 10x10 pixels

ROOT = "j8bt06nyq"
FIT_WCSNAME = "IDC_n721640fj-FIT_REL_GAIAeDR3"
CENTER = (6.025, -72.083)
CAT_EPOCH = 2016.0
# objID: (ra, dec, pmra, pmdec); None = no proper motion.
STARS = {
    1: (6.020, -72.080, 5.0, -3.0),
    2: (6.030, -72.085, -10.0, 4.0),
    3: (6.025, -72.083, 20.0, 8.0),
    # 0.030 deg of RA at this declination is 0.0092 deg on the sky: inside SR=0.01 although
    # its RA differs by more than SR.
    4: (6.055, -72.083, 0.5, -0.5),
    # 0.0108 deg on the sky: outside SR=0.01.
    5: (6.060, -72.083, 100.0, -50.0),
    6: (6.027, -72.084, None, None),
}
FOOTPRINT = np.array([[6.022, -72.082], [6.028, -72.082], [6.028, -72.0845], [6.022, -72.0845]])
GSC = {"deltaRA": 1.2e-4, "deltaDEC": -2.5e-4, "deltaROLL": 0.0013, "deltaSCALE": 1.000012,
       "dGSinputRA": 6.1, "dGSinputDEC": -72.01, "dGSoutputRA": 6.10012, "dGSoutputDEC": -72.01025,
       "outputCatalog": "GAIAeDR3"}


def _write_catalog(path: Path, stars=STARS, drop=()) -> None:
    ids = sorted(stars)
    pm = {k: np.ma.masked_invalid([np.nan if stars[i][2] is None else stars[i][j] for i in ids])
          for k, j in (("pmra", 2), ("pmdec", 3))}
    table = Table({"ra": [stars[i][0] for i in ids], "dec": [stars[i][1] for i in ids],
                   "mag": [15.0 + i for i in ids], "ra_error": [0.1 * i for i in ids],
                   "dec_error": [0.2 * i for i in ids], **pm, "objID": ids})
    table.meta["epoch"] = CAT_EPOCH
    table.remove_columns(list(drop))
    table.write(path, format="ascii.ecsv", overwrite=True)


def _make_headerlet(path: Path, wcsname: str | None, hdrname: str) -> None:
    from stwcs.wcsutil import headerlet

    with fits.open(SIP_FLT) as hdul:
        if wcsname:
            hdul[1].header["WCSNAME"] = wcsname
        # logging=False: otherwise stwcs writes headerlet.log into the current directory.
        headerlet.create_headerlet(hdul, hdrname=hdrname, logging=False).writeto(path, overwrite=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A service directory in the simulator's layout."""
    d = tmp_path_factory.mktemp("service-data")
    (d / "catalogs").mkdir()
    _write_catalog(d / "catalogs" / "GAIAeDR3.ecsv")
    (d / "hlet").mkdir()
    _make_headerlet(d / "hlet" / "apriori.fits", None, "J8BT06NYQ_APRIORI")
    _make_headerlet(d / "hlet" / "fit.fits", FIT_WCSNAME, "J8BT06NYQ_FIT")
    Table({"rootname": [ROOT, ROOT], "wcsname": ["", FIT_WCSNAME],
           "headerlet": ["hlet/apriori.fits", "hlet/fit.fits"], "best": [False, True]}).write(
        d / "astrometrydb.ecsv", format="ascii.ecsv")
    Table({"rootname": ["IB4606C5Q", ROOT], **{k: [v, v] for k, v in GSC.items()}}).write(
        d / "gsc_offsets.ecsv", format="ascii.ecsv")
    return d


@pytest.fixture(scope="module")
def service_db(dataset, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("service-db") / "service.db"
    ServiceStore(db).load_directory(dataset)
    return db


@pytest.fixture
def service(service_db):
    handle = start_server(service_db)
    yield handle
    handle.stop()


def _load_parser():
    parser = argparse.ArgumentParser()
    add_serve_load_arguments(parser)
    return parser


def _csv_rows(text: str) -> tuple[str, Table]:
    lines = text.split("\r\n")
    return lines[0], Table.read(lines[1:], format="ascii.csv")


# ---- loading -------------------------------------------------------------------------------------


def test_serve_load_directory_counts_and_rows(dataset, tmp_path, capsys):
    db = tmp_path / "s.db"
    assert cmd_serve_load(_load_parser().parse_args(["--db", str(db), str(dataset)])) == 0
    out = capsys.readouterr().out
    assert "1 catalogs (GAIAeDR3: 6 sources), 2 solutions, 2 guide-star offsets" in out

    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT objID, ra, dec, mag, ra_error, pmra, pmdec, epoch FROM catalog_sources "
                        "WHERE catalog = 'GAIAeDR3' ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[3][1:7] == (6.055, -72.083, 19.0, pytest.approx(0.4), 0.5, -0.5)
    assert rows[5][5:7] == (None, None)  # no proper motion stays NULL
    assert {r[7] for r in rows} == {CAT_EPOCH}
    sols = conn.execute("SELECT rootname, solution_id, wcsname, best FROM solutions ORDER BY solution_id").fetchall()
    assert sols == [(ROOT, 1, "IDC_n721640fj", 0), (ROOT, 2, FIT_WCSNAME, 1)]
    gsc = conn.execute("SELECT rootname, deltaRA, dGSoutputDEC, outputCatalog FROM gsc_offsets "
                       "ORDER BY rootname").fetchall()
    assert gsc == [("ib4606c5q", 1.2e-4, -72.01025, "GAIAeDR3"), (ROOT, 1.2e-4, -72.01025, "GAIAeDR3")]
    indexes = {tuple(c[2] for c in conn.execute(f"PRAGMA index_info('{i[1]}')"))
               for i in conn.execute("PRAGMA index_list('catalog_sources')")}
    assert ("catalog", "dec") in indexes
    conn.close()


def test_catalog_without_ra_names_the_file_and_loads_nothing(dataset, tmp_path):
    bad = tmp_path / "bad.ecsv"
    _write_catalog(bad, drop=("ra",))
    db = tmp_path / "s.db"
    args = _load_parser().parse_args(["--db", str(db), str(dataset), "--catalog", "BAD", str(bad)])
    with pytest.raises(ServiceDataError, match=r"bad\.ecsv: missing column 'ra'") as err:
        cmd_serve_load(args)
    assert err.value.path == str(bad)
    # One transaction: the directory loaded before the bad file is rolled back too.
    with ServiceStore(db) as store:
        assert store.catalog_names() == []
        assert store.solutions(ROOT) == []


def test_catalog_formats_units_epoch_and_generated_ids(tmp_path):
    from astropy import units as u

    t = Table({"RA": [10.0, 10.1] * u.deg, "Dec": [-5.0, -5.1] * u.deg, "mag": [12.0, 13.0],
               "pmra": [1.0, 2.0] * u.arcsec / u.yr, "pmdec": [0.0, -1.0] * u.mas / u.yr,
               "epoch": [2015.5, 2016.0]})
    t.write(tmp_path / "c.fits")
    t2 = Table({"ra": [370.0], "dec": [1.0], "mag": [9.0]})
    t2.write(tmp_path / "c.csv", format="ascii.csv")
    with ServiceStore(tmp_path / "s.db") as store:
        assert store.load_catalog("FITSCAT", tmp_path / "c.fits") == 2
        assert store.load_catalog("csvcat", tmp_path / "c.csv") == 1
        rows = store.sources_in_dec_band("FITSCAT", -90, 90)
        assert [(r["pmra"], r["pmdec"], r["epoch"], r["objID"]) for r in rows] == [
            (pytest.approx(1000.0), 0.0, 2015.5, "1"), (pytest.approx(2000.0), -1.0, 2016.0, "2")]
        (row,) = store.sources_in_dec_band("csvcat", -90, 90)
        assert (row["ra"], row["epoch"], row["pmra"]) == (pytest.approx(10.0), 2016.0, None)
        assert store.resolve_catalog("CSVCAT") == "csvcat"
        # Reloading under another case replaces the catalog.
        assert store.load_catalog("CSVcat", tmp_path / "c.csv") == 1
        assert store.catalog_names() == ["CSVcat", "FITSCAT"]
    (tmp_path / "junk.ecsv").write_text("this is not a table\n\x00\x01")
    with pytest.raises(ServiceDataError, match=r"junk\.ecsv: (unreadable catalog|missing column 'ra')"):
        ServiceStore(tmp_path / "s.db").load_catalog("J", tmp_path / "junk.ecsv")
    with pytest.raises(ServiceDataError, match=r"nothere\.ecsv: no such catalog file"):
        ServiceStore(tmp_path / "s.db").load_catalog("J", tmp_path / "nothere.ecsv")


def test_load_solution_ids_best_and_checks(dataset, tmp_path):
    with ServiceStore(tmp_path / "s.db") as store:
        assert store.load_solution(ROOT, dataset / "hlet" / "apriori.fits") == 1
        assert store.load_solution(ROOT.upper(), dataset / "hlet" / "fit.fits", best=True) == 2
        # Same WCSNAME again: replaced in place, keeps its id; best moves.
        assert store.load_solution(ROOT, dataset / "hlet" / "apriori.fits", best=True) == 1
        assert [(s["solution_id"], s["wcsname"], s["best"]) for s in store.solutions(ROOT)] == [
            (1, "IDC_n721640fj", 1), (2, FIT_WCSNAME, 0)]
        # A database name different from the file's WCSNAME is written into the headerlet.
        with pytest.raises(ServiceDataError, match="HDRNAME 'J8BT06NYQ_FIT' is already used"):
            store.load_solution(ROOT, dataset / "hlet" / "fit.fits", wcsname="IDC_n721640fj-OTHER")
        with pytest.raises(ServiceDataError, match="DESTIM 'j8bt06nyq' is not rootname 'ib4606c5q'"):
            store.load_solution("ib4606c5q", dataset / "hlet" / "fit.fits")
        with pytest.raises(ServiceDataError, match=r"c5q\.fits: not a headerlet, primary header lacks HDRNAME"):
            shutil.copy(SAMPLE_FLC, tmp_path / "c5q.fits")
            store.load_solution("ib4606c5q", tmp_path / "c5q.fits")
    _make_headerlet(tmp_path / "renamed.fits", None, "RENAMED")
    with ServiceStore(tmp_path / "s.db") as store:
        assert store.load_solution(ROOT, tmp_path / "renamed.fits", wcsname="IDC_n721640fj-RENAMED") == 3
        blob = store.headerlet(ROOT, "IDC_n721640fj-RENAMED")
    with fits.open(BytesIO(blob)) as hdul:
        assert hdul[0].header["WCSNAME"] == hdul["SIPWCS"].header["WCSNAME"] == "IDC_n721640fj-RENAMED"


# ---- astrometry database -------------------------------------------------------------------------


def test_astrometrydb_client(service, tmp_path, monkeypatch):
    from stwcs.updatewcs.astrometry_utils import AstrometryDB

    db = AstrometryDB(url=service.environment["ASTROMETRY_SERVICE_URL"], raise_errors=True)
    assert db.available is True
    headerlets, best = db.getObservation(ROOT)
    assert {k: h[0].header["WCSNAME"] for k, h in headerlets.items()} == {
        "1": "IDC_n721640fj", "2": FIT_WCSNAME}
    assert {k: h[0].header["HDRNAME"] for k, h in headerlets.items()} == {
        "1": "J8BT06NYQ_APRIORI", "2": "J8BT06NYQ_FIT"}
    assert best == FIT_WCSNAME

    unknown = AstrometryDB(url=service.environment["ASTROMETRY_SERVICE_URL"], raise_errors=True)
    response, best = unknown.getObservation("j8bt99zzq")
    assert unknown.new_observation is True
    assert best is None and response.status_code == 404

    # The whole a priori update: both solutions attached, the best one made primary.
    monkeypatch.setenv("jref", str(REFDATA) + "/")
    flt = tmp_path / "j8bt06nyq_flt.fits"
    shutil.copy(SIP_FLT, flt)
    flt.chmod(0o644)
    db.updateObs(str(flt))
    with fits.open(flt) as hdul:
        assert hdul[("SCI", 1)].header["WCSNAME"] == FIT_WCSNAME
        attached = {h.header["WCSNAME"] for h in hdul if h.name == "HDRLET"}
        assert {"IDC_n721640fj", FIT_WCSNAME} <= attached


def test_astrometrydb_raw_answers(service):
    base = service.environment["ASTROMETRY_SERVICE_URL"]
    r = requests.get(base + f"observation/read/{ROOT}?wcsname={FIT_WCSNAME}", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/fits"
    with fits.open(BytesIO(r.content)) as hdul:
        assert hdul[0].header["WCSNAME"] == FIT_WCSNAME and hdul[0].header["DESTIM"] == ROOT
    r = requests.get(base + f"observation/read/{ROOT}?wcsname=NOPE", timeout=5)
    assert (r.status_code, r.text) == (404, f"no solution 'NOPE' for observation {ROOT}\n")
    r = requests.get(base + f"observation/read/{ROOT}", timeout=5)
    assert r.headers["Content-Type"].startswith("text/xml")
    assert "<solution><solutionID>2</solutionID><wcsName>IDC_n721640fj-FIT_REL_GAIAeDR3</wcsName>" in r.text
    assert "<bestSolutionID>2</bestSolutionID>" in r.text


# ---- guide-star offsets --------------------------------------------------------------------------


def test_find_gsc_offset(service, monkeypatch):
    from stwcs.updatewcs.astrometry_utils import find_gsc_offset

    monkeypatch.setenv("GSSS_WEBSERVICES_URL", service.environment["GSSS_WEBSERVICES_URL"])
    got = find_gsc_offset(str(SAMPLE_FLC))
    assert got["message"].split()[0] == "Success"
    assert {"delta_ra": got["delta_ra"], "delta_dec": got["delta_dec"], "roll": got["roll"],
            "scale": got["scale"], "dGSinputRA": got["dGSinputRA"], "dGSinputDEC": got["dGSinputDEC"],
            "dGSoutputRA": got["dGSoutputRA"], "dGSoutputDEC": got["dGSoutputDEC"],
            "catalog": got["catalog"]} == {
        "delta_ra": 1.2e-4, "delta_dec": -2.5e-4, "roll": 0.0013, "scale": 1.000012, "dGSinputRA": 6.1,
        "dGSinputDEC": -72.01, "dGSoutputRA": 6.10012, "dGSoutputDEC": -72.01025, "catalog": "GAIAeDR3"}
    # The guide-star shift moves the reference pixel: non-zero pixel offsets.
    assert math.hypot(got["delta_x"], got["delta_y"]) > 0.1

    with fits.open(SAMPLE_FLC) as hdul:
        hdul[0].header["ROOTNAME"] = "ib4606zzq"
        none = find_gsc_offset(hdul)
    assert none["message"].startswith("Failure")
    assert (none["delta_ra"], none["delta_dec"], none["roll"], none["scale"], none["catalog"],
            none["delta_x"], none["delta_y"]) == (0.0, 0.0, 0.0, 1.0, None, 0.0, 0.0)


# ---- catalogs ------------------------------------------------------------------------------------


def test_get_catalog_propagates_proper_motions(service, monkeypatch):
    from drizzlepac.haputils import astrometric_utils as amutils

    monkeypatch.setattr(amutils, "SERVICELOCATION", service.environment["ASTROMETRIC_CATALOG_URL"])
    epoch = 2026.25  # drizzlepac sends EPOCH with 3 decimals
    table = amutils.get_catalog(*CENTER, sr=0.01, catalog="GAIAeDR3", epoch=epoch)
    assert table.colnames == list(CATALOG_COLUMNS)
    assert list(table["objID"]) == [1, 2, 3, 4, 6]  # 4 by true distance; 5 is outside
    dt = epoch - CAT_EPOCH
    for row in table:
        ra0, dec0, pmra, pmdec = STARS[int(row["objID"])]
        if pmra is None:
            assert (row["ra"], row["dec"], row["epoch"]) == (ra0, dec0, CAT_EPOCH)
            assert np.ma.is_masked(row["pmra"]) and np.ma.is_masked(row["pmdec"])
            continue
        assert row["dec"] == pytest.approx(dec0 + pmdec * dt / 3.6e6, abs=1e-9)
        assert row["ra"] == pytest.approx(ra0 + pmra * dt / 3.6e6 / math.cos(math.radians(dec0)), abs=1e-9)
        assert row["dec"] != dec0 and row["epoch"] == epoch
        assert (row["pmra"], row["pmdec"]) == (pmra, pmdec)
    assert table[table["objID"] == 4]["ra_error"][0] == pytest.approx(0.4)

    # Without EPOCH: the catalog positions and epoch.
    table = amutils.get_catalog(*CENTER, sr=0.01, catalog="GAIAedr3")
    assert [(r["ra"], r["dec"], r["epoch"]) for r in table] == [
        (STARS[i][0], STARS[i][1], CAT_EPOCH) for i in (1, 2, 3, 4, 6)]


def test_footprint_polygon_returns_exactly_the_sources_inside(service, monkeypatch):
    from drizzlepac.haputils import astrometric_utils as amutils

    monkeypatch.setattr(amutils, "SERVICELOCATION", service.environment["ASTROMETRIC_CATALOG_URL"])
    table = amutils.get_catalog_from_footprint(FOOTPRINT, catalog="GAIAeDR3")
    assert sorted(table["objID"]) == [3, 6]
    assert [(r["ra"], r["dec"]) for r in table] == [STARS[3][:2], STARS[6][:2]]

    # A raw STC-S request with a polygon around stars 2 and 5 only (RA given past 360 wraps).
    poly = "polygon 366.029 -72.0845 366.061 -72.0845 366.061 -72.0855 366.029 -72.0855"
    r = requests.get(service.environment["ASTROMETRIC_CATALOG_URL"] + "/vo/CatalogSearch.aspx",
                     params={"STCS": poly, "FORMAT": "CSV", "CAT": "GAIAeDR3"}, timeout=5)
    assert r.status_code == 200
    first, rows = _csv_rows(r.text)
    assert first.startswith("1 sources from GAIAeDR3 within polygon of 4 vertices")
    assert sorted(rows["objID"]) == [2]  # star 5 is at Dec -72.083, outside


def test_empty_answer_parses_to_an_empty_table(service, monkeypatch):
    from drizzlepac.haputils import astrometric_utils as amutils

    monkeypatch.setattr(amutils, "SERVICELOCATION", service.environment["ASTROMETRIC_CATALOG_URL"])
    table = amutils.get_catalog(120.0, 30.0, sr=0.01, catalog="GAIAeDR3", epoch=2020.0)
    assert len(table) == 0 and table.colnames == list(CATALOG_COLUMNS)


def test_gsc242_and_2mass_answer_the_columns_drizzlepac_reads(tmp_path, monkeypatch):
    from astropy.time import Time
    from drizzlepac.haputils import astrometric_utils as amutils

    _write_catalog(tmp_path / "gsc.ecsv")
    ids = sorted(STARS)
    Table({"ra": [STARS[i][0] for i in ids], "dec": [STARS[i][1] for i in ids], "mag": [12.0 + i for i in ids],
           "epoch": [2000.0] * len(ids), "objID": [100 + i for i in ids]}).write(tmp_path / "tmass.ecsv")
    db = tmp_path / "s.db"
    with ServiceStore(db) as store:
        store.load_catalog("GAIAeDR3", tmp_path / "gsc.ecsv")
        store.load_catalog("GSC242", tmp_path / "gsc.ecsv")
        store.load_catalog("2mass", tmp_path / "tmass.ecsv")
    with start_server(db) as handle:
        monkeypatch.setattr(amutils, "SERVICELOCATION", handle.environment["ASTROMETRIC_CATALOG_URL"])
        gaia = amutils.get_catalog(*CENTER, sr=0.01, catalog="GAIAeDR3", epoch=2026.25)
        gsc = amutils.get_catalog(*CENTER, sr=0.01, catalog="GSC242", epoch=2026.25)
        tmass = amutils.get_catalog(*CENTER, sr=0.01, catalog="2MASS", epoch=2026.25)

    # GSC242: GAIA's values (proper motions applied) under GSC names.
    assert gsc.colnames == ["ra", "raErr", "dec", "decErr", "rapm", "rapmErr", "decpm", "decpmErr", "mag",
                            "objID", "epoch"]
    assert [a for a, _ in answer_columns("gsc242")] == gsc.colnames
    for answer, field in answer_columns("GSC242"):
        assert [str(v) for v in gsc[answer]] == [str(v) for v in gaia[field]], answer
    # 2MASS (loaded as '2mass'): no errors or proper motions, objid, and the epoch as a Julian date.
    assert tmass.colnames == ["ra", "dec", "mag", "objid", "jdate"]
    assert list(tmass["objid"]) == [101, 102, 103, 104, 106]
    assert [(r["ra"], r["dec"]) for r in tmass] == [STARS[i][:2] for i in (1, 2, 3, 4, 6)]
    assert np.all(tmass["jdate"] == Time(2000.0, format="decimalyear").jd) and tmass["jdate"][0] == 2451544.5

    # drizzlepac's renaming finds every column it looks for.
    amutils.convert_astrometric_table(gsc, "GSC242")
    amutils.convert_astrometric_table(tmass, "2MASS")
    assert gsc.meta["converted"] and tmass.meta["converted"]
    assert list(gsc["RA_error"]) == [pytest.approx(0.1 * i) for i in (1, 2, 3, 4, 6)]
    assert set(gsc["epoch"]) == {2026.25, CAT_EPOCH}  # star 6 has no proper motion
    assert np.allclose(tmass["epoch"], 2000.0, atol=1e-9) and np.isnan(tmass["RA_error"]).all()
    assert list(tmass["objID"]) == [101, 102, 103, 104, 106]


# ---- errors --------------------------------------------------------------------------------------


def test_malformed_requests_get_4xx_and_one_log_line(service, caplog):
    cat = "gsss/vo/CatalogSearch.aspx?FORMAT=CSV&CAT=GAIAeDR3&"
    cases = [
        (cat + "DEC=-72&SR=0.1", 400, "Error: missing parameter RA"),
        (cat + "RA=6&DEC=-72&SR=abc", 400, "Error: parameter SR='abc' is not a number"),
        (cat + "RA=6&DEC=-95&SR=0.1", 400, "Error: parameter DEC='-95' is outside [-90, 90]"),
        (cat + "RA=6&DEC=-72&SR=0.1&EPOCH=soon", 400, "Error: parameter EPOCH='soon' is not a number"),
        ("gsss/vo/CatalogSearch.aspx?RA=6&DEC=-72&SR=0.1&FORMAT=CSV&CAT=NOPE", 400,
         "Error: unknown catalog CAT='NOPE' (served: GAIAeDR3)"),
        (cat + "STCS=polygon%206%20-72%207%20-72", 400, "Error: STCS polygon needs at least 3 RA Dec pairs"),
        ("gsss/vo/CatalogSearch.aspx?RA=6&DEC=-72&SR=0.1&FORMAT=VOTABLE&CAT=GAIAeDR3", 400,
         "Error: FORMAT='VOTABLE' is not served (CSV only)"),
        ("gsss/GSCConvert/GSCconvert.aspx", 400, "missing parameter IPPPSSOOT"),
        ("gsss/GSCConvert/GSCconvert.aspx?IPPPSSOOT=../etc", 400, "IPPPSSOOT '../etc' is not a rootname"),
        ("astrometrydb/observation/read/", 404, "unknown astrometry database path /astrometrydb/observation/read"),
        ("no/such/path", 404, "unknown path /no/such/path"),
    ]
    caplog.set_level(logging.INFO, logger="astrodriz_sm.services")
    for path, status, message in cases:
        caplog.clear()
        r = requests.get(service.url + path, timeout=5)
        assert (r.status_code, r.text) == (status, message + "\n"), path
        warnings = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert len(warnings) == 1 and warnings[0].exc_info is None
        assert f"-> {status}" in warnings[0].getMessage()
    r = requests.post(service.url + "astrometrydb/availability", timeout=5)
    assert (r.status_code, r.text) == (405, "method POST not allowed (GET only)\n")
    r = requests.request("BREW", service.url, timeout=5)
    assert (r.status_code, r.text) == (405, "method BREW not allowed (GET only)\n")
    # Not HTTP at all.
    caplog.clear()
    with socket.create_connection(service.server.server_address[:2], timeout=5) as s:
        s.sendall(b"garbage\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") and body == b"Bad request syntax ('garbage')\n"
    assert [rec.getMessage() for rec in caplog.records] == ["127.0.0.1: -> 400 Bad request syntax ('garbage')"]
    assert requests.get(service.url + "astrometrydb/availability", timeout=5).status_code == 200


def test_handler_exception_gives_500_and_server_survives(service, caplog, monkeypatch):
    def broken(self, params):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(ServiceApp, "_gsc_convert", broken)
    caplog.set_level(logging.INFO, logger="astrodriz_sm.services")
    r = requests.get(service.url + "gsss/GSCConvert/GSCconvert.aspx?IPPPSSOOT=IB4606C5Q", timeout=5)
    assert (r.status_code, r.text) == (500, "internal error (ZeroDivisionError); see the server log\n")
    (record,) = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert record.exc_info[0] is ZeroDivisionError
    assert requests.get(service.url + "astrometrydb/availability", timeout=5).status_code == 200


# ---- server and probe ----------------------------------------------------------------------------


def test_server_binds_loopback_and_stops(service_db):
    handle = start_server(service_db)
    try:
        host, port = handle.server.server_address[:2]
        assert host == "127.0.0.1" and handle.url == f"http://127.0.0.1:{port}/"
        assert handle.environment == {"ASTROMETRY_SERVICE_URL": f"http://127.0.0.1:{port}/astrometrydb/",
                                      "GSSS_WEBSERVICES_URL": f"http://127.0.0.1:{port}/gsss",
                                      "ASTROMETRIC_CATALOG_URL": f"http://127.0.0.1:{port}/gsss"}
        assert handle.thread.daemon
    finally:
        handle.stop()
    assert not handle.thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(handle.url + "astrometrydb/availability", timeout=2)


def test_probe(service):
    ok, reason = probe(service.environment["ASTROMETRY_SERVICE_URL"] + "availability")
    assert (ok, reason) == (True, f"HTTP 200 from {service.url}astrometrydb/availability")
    ok, reason = probe(service.environment["GSSS_WEBSERVICES_URL"])
    assert ok and reason.startswith(f"HTTP 200 from {service.url}gsss/vo/CatalogSearch.aspx?")
    ok, reason = probe(service.url + "elsewhere/availability")
    assert not ok and reason.startswith("HTTP 404")

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    start = time.monotonic()
    ok, reason = probe(f"http://127.0.0.1:{port}/astrometrydb/availability", timeout=2.0)
    assert time.monotonic() - start < 2.0
    assert (ok, reason) == (False, f"connection refused at http://127.0.0.1:{port}/astrometrydb/availability")


def test_probe_gives_up_on_a_silent_server():
    # Accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/astrometrydb/availability"
        start = time.monotonic()
        ok, reason = probe(url, timeout=0.5)
        elapsed = time.monotonic() - start
    assert not ok and reason == f"no answer within 0.5 s from {url}"
    assert elapsed < 1.0


def test_concurrent_requests(service):
    url = service.environment["ASTROMETRIC_CATALOG_URL"] + (
        "/vo/CatalogSearch.aspx?RA=6.025&DEC=-72.083&SR=0.01&FORMAT=CSV&CAT=GAIAeDR3&EPOCH=2020.000")
    results = []

    def fetch():
        results.append(_csv_rows(requests.get(url, timeout=10).text)[1])

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(list(t["objID"]) == [1, 2, 3, 4, 6] for t in results)


def test_cli_arguments():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([])
    assert (args.db, args.port, args.host) == ("astrodriz_sm_service.db", 8765, "127.0.0.1")
    assert "only when given with this flag" in " ".join(parser.format_help().split())
    args = _load_parser().parse_args(["--headerlet", "a1", "a.fits", "--best", "--headerlet", "b1", "b.fits",
                                      "--wcsname", "W", "--catalog", "X", "x.ecsv", "--gsc-offsets", "g.ecsv"])
    assert args.headerlets == [{"rootname": "a1", "path": "a.fits", "best": True, "wcsname": None},
                               {"rootname": "b1", "path": "b.fits", "best": False, "wcsname": "W"}]
    assert (args.catalog, args.gsc_offsets, args.directory) == ([["X", "x.ecsv"]], ["g.ecsv"], None)
    assert _load_parser().parse_args([]).headerlets == []
    with pytest.raises(SystemExit):
        _load_parser().parse_args(["--best"])


def test_serve_command_prints_exports_and_stops_on_interrupt(service_db, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ASTROMETRY_SERVICE_URL", "GSSS_WEBSERVICES_URL")}
    proc = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", "serve", "--db", str(service_db),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        exports = dict(proc.stdout.readline().strip().removeprefix("export ").split("=", 1) for _ in range(3))
        assert set(exports) == {"ASTROMETRY_SERVICE_URL", "GSSS_WEBSERVICES_URL", "ASTROMETRIC_CATALOG_URL"}
        assert exports["ASTROMETRY_SERVICE_URL"].startswith("http://127.0.0.1:")
        r = requests.get(exports["ASTROMETRY_SERVICE_URL"] + f"observation/read/{ROOT}", timeout=5)
        assert "<bestSolutionID>2</bestSolutionID>" in r.text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"serving {service_db}: 1 catalogs (GAIAeDR3: 6 sources), 2 solutions for 1 observations" in err
    assert f"GET /astrometrydb/observation/read/{ROOT} -> 200 2 solutions" in err
    assert "warning" not in err


def test_serve_beyond_loopback_warns_and_prints_the_address_it_is_bound_to(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ASTROMETRY_SERVICE_URL", "GSSS_WEBSERVICES_URL")}
    db = tmp_path / "service.db"
    command = ["serve", "--db", str(db), "--create", "--host", "0.0.0.0", "--port", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "astrodriz_sm.cli.main", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        first = [proc.stderr.readline().rstrip("\n") for _ in range(2)]
        exports = dict(proc.stdout.readline().strip().removeprefix("export ").split("=", 1) for _ in range(3))
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=10)
    port = exports["ASTROMETRY_SERVICE_URL"].removeprefix("http://0.0.0.0:").split("/")[0]
    assert exports["ASTROMETRY_SERVICE_URL"] == f"http://0.0.0.0:{port}/astrometrydb/"
    assert first == [f"serving {db}: 0 catalogs, 0 solutions for 0 observations, 0 guide-star offsets",
                     (f"warning: listening on 0.0.0.0, beyond this machine: anyone who can reach port {port} "
                      f"can query {db}")]
    assert proc.returncode == 0


def test_serve_on_a_busy_port_is_a_config_error(service, service_db):
    from astrodriz_sm.errors import ConfigError
    from astrodriz_sm.services.cli import cmd_serve

    port = service.server.server_address[1]
    args = argparse.Namespace(db=str(service_db), host="127.0.0.1", port=port, quiet=True)
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} "):
        cmd_serve(args)
    logger = logging.getLogger("astrodriz_sm.services")
    assert logger.handlers == [] and logger.propagate


@pytest.mark.parametrize("port, why", [("99999", "99999 is not a port number (0-65535)"),
                                       ("-1", "-1 is not a port number (0-65535)"),
                                       ("http", "'http' is not a port number")])
def test_serve_refuses_a_port_out_of_range_in_one_line(tmp_path, port, why):
    done = subprocess.run([sys.executable, "-m", "astrodriz_sm.cli.main", "serve", "--db", str(tmp_path / "s.db"),
                           "--create", "--port", port], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"astrodriz-sm serve: error: argument --port: {why}"
    assert "Traceback" not in done.stderr and not (tmp_path / "s.db").exists()
