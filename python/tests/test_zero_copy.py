"""Snapshots return read-only arrays over the segment maps, not copies."""

import gc
import os

import numpy as np
import pytest

import ckptdb


def mapping_of(addr):
    """The /proc/self/maps line whose range holds ``addr``."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.strip()
    return None


def test_array_points_into_a_segment_map(db, path):
    a = np.arange(1 << 16, dtype=np.float32)
    with db.begin_step(1) as tx:
        tx["w"] = a
    snap = db.latest()
    got = snap["w"]
    line = mapping_of(got.__array_interface__["data"][0])
    assert line is not None
    mapped_file = line.split(maxsplit=5)[5]
    assert os.path.dirname(mapped_file).startswith(os.path.realpath(path))
    again = db.latest()["w"]
    assert np.shares_memory(got, again)
    assert got.base.base.step == 1  # the Rust object keeping the map alive


def test_writes_raise(db):
    with db.begin_step(1) as tx:
        tx["w"] = np.zeros(8, np.int64)
    got = db.latest()["w"]
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1
    with pytest.raises(ValueError):
        got.setflags(write=True)


def test_array_outlives_snapshot_and_db(path):
    db = ckptdb.open(path)
    with db.begin_step(1) as tx:
        tx["w"] = np.arange(1000, dtype=np.float64)
    snap = db.latest()
    got = snap["w"]
    db.close()
    del snap, db
    gc.collect()
    np.testing.assert_array_equal(got, np.arange(1000, dtype=np.float64))
    # The writer lock was released: the database opens again for writing.
    ckptdb.open(path).close()


def test_array_survives_reclamation_of_its_segment(path):
    db = ckptdb.open(path, segment_size=1 << 20)
    big = np.arange(1 << 20, dtype=np.float32)
    with db.begin_step(1) as tx:
        tx["w"] = big
    held = db.latest()["w"]
    addr = held.__array_interface__["data"][0]
    mgr = ckptdb.CheckpointManager(db, keep_last=1)
    for step in range(2, 6):
        mgr.save(step, {"w": big + step})
    db.compact()
    assert db.steps == [5]
    line = mapping_of(addr)
    assert line is not None and line.endswith("(deleted)")
    np.testing.assert_array_equal(held, big)
    db.close()


def flip_payload_byte(path, payload: bytes):
    """Flips one byte inside ``payload`` where it sits in a segment file."""
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                data = f.read()
            at = data.find(payload)
            if at >= 0:
                with open(p, "r+b") as f:
                    f.seek(at + len(payload) // 2)
                    f.write(bytes([data[at + len(payload) // 2] ^ 0xFF]))
                return
    raise AssertionError("payload not found in any file")


def test_unverified_array_is_the_checked_one_without_the_check(db):
    a = np.arange(1 << 16, dtype=np.float32).reshape(256, 256)
    with db.begin_step(1) as tx:
        tx["w"] = a
    snap = db.latest()
    fast = snap.array("w", verify=False)
    checked = snap.array("w")
    assert fast.dtype == np.float32 and fast.shape == (256, 256)
    assert fast.tobytes() == a.tobytes()
    assert np.shares_memory(fast, checked)
    assert not fast.flags.writeable


def test_damaged_payload_fails_only_the_checked_read(path):
    a = np.random.default_rng(7).integers(0, 1 << 30, 4096, dtype=np.int64)
    # Damaged under an open snapshot, before any checked read of it: the
    # shared map shows the flipped byte. (Damage to the newest step while
    # closed would be caught by recovery at open, a different path.)
    db = ckptdb.open(path)
    with db.begin_step(1) as tx:
        tx["w"] = a
    snap = db.latest()
    flip_payload_byte(path, a.tobytes())
    got = snap.array("w", verify=False)
    assert got.shape == (4096,)
    diff = np.flatnonzero(got != a)
    assert len(diff) == 1  # the one flipped byte, read as it is on disk
    with pytest.raises(ckptdb.ChecksumMismatchError) as e:
        snap.array("w")
    assert isinstance(e.value, ckptdb.CorruptionError)
    with pytest.raises(ckptdb.ChecksumMismatchError):
        snap["w"]
    # The unchecked read still answers after the checked one refused.
    assert np.array_equal(snap.array("w", verify=False), got)
    db.close()
