"""Tests for the append-only, hash-chained event store."""

import hashlib
import json
import multiprocessing
import pathlib
import re
import sqlite3
import time

import numpy as np
import pytest

from astrodriz_sm.store.eventstore import (
    GENESIS_HASH,
    SCHEMA_VERSION,
    Event,
    EventStore,
    StoreError,
    to_jsonable,
)


def _expected_hash(run_id, seq, utc, stage, step, kind, payload, prev_hash):
    obj = {
        "run_id": run_id,
        "seq": seq,
        "utc": utc,
        "stage": stage,
        "step": step,
        "kind": kind,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def store(tmp_path):
    return EventStore(tmp_path / "events.db")


@pytest.fixture
def run3(store):
    run_id = store.create_run("/data/j8abcd010_asn.fits", "j8abcd010", run_id="run-a")
    store.append(run_id, "init", "", "started", {"n_inputs": 4})
    store.append(run_id, "align", "tweak", "completed", {"rms": 0.012, "names": ["a", "b"]})
    store.append(run_id, "drizzle", "", "failed", {"error": "résumé ✓"})
    return run_id


def _raw(store):
    return sqlite3.connect(store.path)


def test_append_and_read_back(store, run3):
    events = store.events(run3)

    assert [e.seq for e in events] == [1, 2, 3]
    assert all(isinstance(e, Event) for e in events)
    assert [(e.stage, e.step, e.kind) for e in events] == [
        ("init", "", "started"),
        ("align", "tweak", "completed"),
        ("drizzle", "", "failed"),
    ]
    assert [e.payload for e in events] == [
        {"n_inputs": 4},
        {"rms": 0.012, "names": ["a", "b"]},
        {"error": "résumé ✓"},
    ]
    assert events[0].prev_hash == GENESIS_HASH == "0" * 64
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    for e in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", e.utc)
        assert e.hash == _expected_hash(
            e.run_id, e.seq, e.utc, e.stage, e.step, e.kind, e.payload, e.prev_hash
        )
    assert len({e.hash for e in events}) == 3


def test_append_returns_stored_event(store):
    run_id = store.create_run("in.fits", "j8abcd010")
    returned = store.append(run_id, "init", None, "started", {"t": (1, 2)}, utc="2024-05-01T00:00:00.000000Z")

    assert returned.step == ""
    assert returned.payload == {"t": [1, 2]}
    assert returned.utc == "2024-05-01T00:00:00.000000Z"
    assert store.events(run_id) == [returned]


def test_verify_clean_run(store, run3):
    result = store.verify(run3)

    assert result.run_id == run3
    assert result.ok is True
    assert result.n_events == 3
    assert result.first_bad_seq is None
    assert result.reason == ""


def test_verify_empty_run_and_unknown_run(store):
    run_id = store.create_run("in.fits", "root")
    result = store.verify(run_id)
    assert (result.ok, result.n_events, result.first_bad_seq) == (True, 0, None)

    with pytest.raises(StoreError, match="no run 'nope'"):
        store.verify("nope")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE events SET payload = '{}' WHERE seq = 2", "events are append-only"),
        ("DELETE FROM events WHERE seq = 2", "events are append-only"),
        ("UPDATE runs SET root = 'x'", "runs are append-only"),
        ("DELETE FROM runs", "runs are append-only"),
    ],
)
def test_update_and_delete_are_refused(store, run3, sql, message):
    conn = _raw(store)
    with pytest.raises(sqlite3.IntegrityError, match=message):
        conn.execute(sql)
    conn.close()

    assert len(store.events(run3)) == 3
    assert store.get_run(run3)["root"] == "j8abcd010"
    assert store.verify(run3).ok


def test_tampered_payload_is_detected(store, run3):
    conn = _raw(store)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("""UPDATE events SET payload = '{"names":["a","b"],"rms":0.5}' WHERE seq = 2""")
    conn.commit()
    conn.close()

    result = store.verify(run3)

    assert result.ok is False
    assert result.n_events == 3
    assert result.first_bad_seq == 2
    assert result.reason == "seq 2: hash mismatch (content altered)"


def test_non_canonical_payload_is_detected(store, run3):
    conn = _raw(store)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("""UPDATE events SET payload = '{"n_inputs": 4}' WHERE seq = 1""")
    conn.commit()
    conn.close()

    result = store.verify(run3)

    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "canonical" in result.reason


def test_broken_link_is_detected(store, run3):
    conn = _raw(store)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET prev_hash = ? WHERE seq = 3", ["f" * 64])
    conn.commit()
    conn.close()

    result = store.verify(run3)

    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert result.reason == "seq 3: prev_hash does not match seq 2"


def test_deleted_event_is_detected(store, run3):
    conn = _raw(store)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE seq = 2")
    conn.commit()
    conn.close()

    result = store.verify(run3)

    assert result.ok is False
    assert result.n_events == 2
    assert result.first_bad_seq == 3
    assert "missing" in result.reason
    assert result.reason == "seq 2: missing (expected 2, found 3)"


def test_numpy_payload_is_stored_as_plain_json(store):
    run_id = store.create_run("in.fits", "root")
    payload = {
        "f": np.float64(2.5),
        "i": np.int64(7),
        "b": np.bool_(True),
        "a": np.array([[1, 2], [3, 4]], dtype=np.int32),
        "af": np.array([0.5, 1.5], dtype=np.float32),
        "p": pathlib.Path("/data/x.fits"),
        "t": (np.int16(1), "z"),
    }
    event = store.append(run_id, "init", "", "started", payload)

    conn = _raw(store)
    (text,) = conn.execute("SELECT payload FROM events WHERE run_id = ?", [run_id]).fetchone()
    conn.close()
    assert text == (
        '{"a":[[1,2],[3,4]],"af":[0.5,1.5],"b":true,"f":2.5,"i":7,"p":"/data/x.fits","t":[1,"z"]}'
    )
    expected = {
        "a": [[1, 2], [3, 4]],
        "af": [0.5, 1.5],
        "b": True,
        "f": 2.5,
        "i": 7,
        "p": "/data/x.fits",
        "t": [1, "z"],
    }
    assert event.payload == expected
    assert store.events(run_id)[0].payload == expected
    assert type(event.payload["b"]) is bool
    assert type(event.payload["i"]) is int
    assert store.verify(run_id).ok


def test_to_jsonable_converts_and_rejects():
    out = to_jsonable({"x": np.float32(0.25), "y": [np.uint8(3), None], "z": np.bool_(False)})
    assert out == {"x": 0.25, "y": [3, None], "z": False}
    assert [type(v) for v in (out["x"], out["y"][0], out["z"])] == [float, int, bool]

    for bad in (object(), {1, 2}, 1 + 2j, b"bytes", {1: "non-str key"}, np.array(["s"])):
        with pytest.raises(TypeError):
            to_jsonable(bad)


def test_append_rejects_bad_payload_and_unknown_run(store):
    run_id = store.create_run("in.fits", "root")
    with pytest.raises(TypeError):
        store.append(run_id, "init", "", "started", [1, 2])
    with pytest.raises(TypeError):
        store.append(run_id, "init", "", "started", {"x": object()})
    with pytest.raises(StoreError, match="no run 'ghost'"):
        store.append("ghost", "init", "", "started")
    assert store.events(run_id) == []


def _append_worker(path, run_id, worker, n, barrier):
    store = EventStore(path)
    barrier.wait()
    for i in range(n):
        store.append(run_id, "stage", f"w{worker}", "tick", {"worker": worker, "i": i})
        # Releasing the lock briefly lets the other writer in, so the appends interleave.
        time.sleep(0.002)


def test_two_processes_append_concurrently(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    run_id = store.create_run("in.fits", "root", run_id="shared")

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_append_worker, args=(str(path), run_id, w, 50, barrier)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]

    events = store.events(run_id)
    assert len(events) == 100
    assert [e.seq for e in events] == list(range(1, 101))
    for worker in (0, 1):
        mine = [e.payload["i"] for e in events if e.payload["worker"] == worker]
        assert mine == list(range(50))
    result = store.verify(run_id)
    assert (result.ok, result.n_events, result.first_bad_seq) == (True, 100, None)


def test_non_sqlite_file_is_rejected(tmp_path):
    path = tmp_path / "not_a_db.db"
    path.write_bytes(b"hello")

    with pytest.raises(StoreError) as excinfo:
        EventStore(path)
    assert str(path) in str(excinfo.value)
    assert path.read_bytes() == b"hello"


def test_foreign_sqlite_database_is_rejected(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE stuff (x)")
    conn.commit()
    conn.close()

    with pytest.raises(StoreError, match="without an event-store schema"):
        EventStore(path)


def test_newer_schema_version_is_rejected(store):
    conn = _raw(store)
    conn.execute("UPDATE schema SET version = ?", [SCHEMA_VERSION + 1])
    conn.commit()
    conn.close()

    with pytest.raises(StoreError) as excinfo:
        EventStore(store.path)
    assert str(excinfo.value) == f"{store.path}: schema version 2 is newer than this software (1)"


def test_new_store_schema_and_wal(store):
    assert isinstance(store.path, pathlib.Path)
    conn = _raw(store)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema").fetchall() == [(1,)]
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    conn.close()
    assert triggers == {"events_no_update", "events_no_delete", "runs_no_update", "runs_no_delete"}


def test_runs_api(store):
    run_id = store.create_run("/data/a_asn.fits", "j8abcd010")
    assert re.fullmatch(r"j8abcd010-\d{8}T\d{6}-[0-9a-f]{4}", run_id)

    store.create_run("/data/b_asn.fits", "j8efgh020", run_id="b-1")
    store.create_run("/data/a_asn.fits", "j8abcd010", run_id="a-2")
    with pytest.raises(StoreError, match="already exists"):
        store.create_run("/data/a_asn.fits", "j8abcd010", run_id="a-2")

    assert [r["run_id"] for r in store.runs()] == [run_id, "b-1", "a-2"]
    assert store.get_run("b-1") == {
        "run_id": "b-1",
        "input": "/data/b_asn.fits",
        "root": "j8efgh020",
        "created_utc": store.get_run("b-1")["created_utc"],
    }
    assert store.latest_run()["run_id"] == "a-2"
    assert store.latest_run("/data/b_asn.fits")["run_id"] == "b-1"
    assert store.latest_run("/data/none.fits") is None
    with pytest.raises(StoreError) as excinfo:
        store.get_run("zzz")
    assert str(excinfo.value) == f"no run 'zzz' in {store.path}"


def test_reopen_preserves_events(store, run3):
    hashes = [e.hash for e in store.events(run3)]
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.events(run3)

    with EventStore(store.path) as again:
        event = again.append(run3, "finish", "", "completed")
        assert event.seq == 4
        assert event.prev_hash == hashes[-1]
        assert [e.hash for e in again.events(run3)][:3] == hashes
        assert again.verify(run3).ok
