"""ckptdb.destroy, and Rust panics as ckptdb errors."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckptdb
from ckptdb import _native


def test_destroy_removes_the_database(path):
    db = ckptdb.open(path)
    with db.begin_step(1) as tx:
        tx["w"] = np.arange(10, dtype=np.float32)
    db.close()
    assert path.is_dir()
    ckptdb.destroy(path)
    assert not path.exists()
    # A missing path is already destroyed.
    ckptdb.destroy(path)
    # The path can hold a new, empty database.
    db = ckptdb.open(path)
    assert db.steps == []
    db.close()


def test_destroy_refuses_what_is_not_a_database(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    with pytest.raises(ckptdb.NotADatabaseError):
        ckptdb.destroy(plain)
    assert plain.read_text() == "keep me"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.bin").write_bytes(b"x")
    with pytest.raises(ckptdb.NotADatabaseError):
        ckptdb.destroy(foreign)
    assert (foreign / "data.bin").read_bytes() == b"x"


def test_destroy_refuses_a_database_open_in_this_process(path):
    db = ckptdb.open(path)
    with db.begin_step(1) as tx:
        tx["w"] = np.ones(3)
    with pytest.raises(ckptdb.LockedError):
        ckptdb.destroy(path)
    assert db.latest()["w"].tolist() == [1.0, 1.0, 1.0]
    db.close()


HOLDER = textwrap.dedent("""
    import sys, ckptdb
    db = ckptdb.open(sys.argv[1])
    print("open", flush=True)
    sys.stdin.read()
""")


def test_destroy_refuses_a_database_locked_by_another_process(path):
    db = ckptdb.open(path)
    with db.begin_step(1) as tx:
        tx["w"] = np.ones(3)
    db.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ckptdb.LockedError):
            ckptdb.destroy(path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert ckptdb.open(path, read_only=True).latest()["w"].tolist() == [1.0, 1.0, 1.0]
    ckptdb.destroy(path)
    assert not path.exists()


@pytest.mark.parametrize("released_gil", [False, True])
def test_a_rust_panic_is_a_ckptdb_error(released_gil):
    # The hook panics inside the same guard every engine call runs in.
    with pytest.raises(ckptdb.InternalError) as info:
        _native._panic_for_tests(released_gil)
    assert isinstance(info.value, Exception)
    assert isinstance(info.value, ckptdb.Error)
    assert "deliberate panic for the test of the panic guard" in str(info.value)
    # The interpreter goes on, and `except Exception` catches it.
    try:
        _native._panic_for_tests(released_gil)
    except Exception as e:  # noqa: BLE001 - the point of the test
        assert type(e) is ckptdb.InternalError
