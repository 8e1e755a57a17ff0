"""Every kind of bad input is a clear exception of the right class."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckptdb


def test_object_and_ragged_and_unsupported(db):
    with db.begin_step(1) as tx:
        with pytest.raises(ckptdb.UnsupportedDtypeError, match="object array"):
            tx["o"] = np.array([object(), 1], dtype=object)
        with pytest.raises(ckptdb.InvalidArgumentError, match="not a rectangular array"):
            tx["r"] = [[1, 2], [3]]
        with pytest.raises(TypeError, match="complex128 cannot be stored"):
            tx["c"] = np.zeros(2, np.complex128)
        with pytest.raises(TypeError, match="not an array"):
            tx["s"] = "text"
        with pytest.raises(ckptdb.InvalidArgumentError):
            tx.put_value("v", float("nan"))
    assert db.steps == [1]


@pytest.mark.parametrize("key", ["../etc", "a/../b", "", "/abs"])
def test_bad_keys(db, key):
    with db.begin_step(1) as tx:
        with pytest.raises(ckptdb.InvalidArgumentError) as e:
            tx[key] = np.zeros(1)
        assert isinstance(e.value, ValueError)


def test_non_increasing_step(db):
    with db.begin_step(5) as tx:
        tx["a"] = np.zeros(1)
    with pytest.raises(ValueError, match="not greater than the last committed step 5"):
        db.begin_step(5)


def test_not_found_is_a_key_error(db):
    with db.begin_step(1) as tx:
        tx["a"] = np.zeros(1)
    snap = db.latest()
    with pytest.raises(KeyError) as e:
        snap["missing"]
    assert isinstance(e.value, ckptdb.KeyNotFoundError)
    assert str(e.value) == 'key "missing" not found in step 1'
    with pytest.raises(ckptdb.StepNotFoundError):
        db.snapshot(99)


def test_closed_db(path):
    db = ckptdb.open(path)
    db.close()
    with pytest.raises(ckptdb.ClosedError, match="closed"):
        db.steps
    with pytest.raises(ckptdb.ClosedError):
        db.begin_step(1)


def test_read_only(path):
    ckptdb.open(path).close()
    ro = ckptdb.open(path, read_only=True)
    with pytest.raises(ckptdb.ReadOnlyError):
        ro.begin_step(1)


def test_wrong_argument_types(db):
    with pytest.raises(TypeError):
        db.snapshot("one")
    with pytest.raises(ValueError, match="mode must be"):
        db.best("m", mode="biggest")


def test_locked_by_another_process(path):
    ckptdb.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, ckptdb
            db = ckptdb.open({str(path)!r})
            print("open", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ckptdb.LockedError, match="locked by a writer in another process"):
            ckptdb.open(path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_io_error_has_errno(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ckptdb.Error) as e:
        ckptdb.open(blocker / "db")
    assert isinstance(e.value, (ckptdb.IoError, ckptdb.NotADatabaseError))
    if isinstance(e.value, ckptdb.IoError):
        assert isinstance(e.value, OSError) and e.value.errno == 20  # ENOTDIR
