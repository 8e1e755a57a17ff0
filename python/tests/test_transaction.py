"""The step transaction: puts written at put time, the writer it holds."""

import gc
import threading

import numpy as np
import pytest

import ckptdb


def test_a_step_holds_the_bytes_an_array_had_when_put(db):
    a = np.arange(1 << 18, dtype=np.float32)  # 1 MiB: a direct write
    small = np.arange(10, dtype=np.int64)  # a buffered write
    with db.begin_step(1) as tx:
        tx["a"] = a
        tx["small"] = small
        a[:] = -1
        small[:] = -1
    snap = db.latest()
    assert np.array_equal(snap["a"], np.arange(1 << 18, dtype=np.float32))
    assert np.array_equal(snap["small"], np.arange(10, dtype=np.int64))


def test_a_put_error_leaves_the_step_usable(db):
    with db.begin_step(1) as tx:
        tx["a"] = np.ones(3)
        with pytest.raises(ckptdb.InvalidArgumentError):
            tx["bad/../key"] = np.ones(3)
        with pytest.raises(ckptdb.UnsupportedDtypeError):
            tx["c"] = np.array(["text"])
        tx["b"] = np.zeros(2)
    assert db.latest().keys() == ["a", "b"]


def test_writer_calls_inside_an_open_step_fail_instead_of_waiting(db):
    with db.begin_step(1) as tx:
        tx["a"] = np.ones(3)
    with db.begin_step(2) as tx:
        with pytest.raises(ckptdb.InvalidArgumentError, match="open transaction of step 2"):
            db.begin_step(3)
        with pytest.raises(ckptdb.InvalidArgumentError, match="commit or abort it first"):
            db.tag(1, "first")
        with pytest.raises(ckptdb.InvalidArgumentError):
            db.compact()
        tx["b"] = np.ones(2)
    db.tag(1, "first")
    assert db.tags == {"first": 1}
    assert db.steps == [1, 2]
    assert db.latest().keys() == ["a", "b"]


def test_an_abandoned_step_is_rolled_back_and_frees_the_writer(db):
    tx = db.begin_step(1)
    tx["a"] = np.ones(1000)
    del tx
    gc.collect()
    with db.begin_step(1) as tx:
        tx["b"] = np.ones(2)
    assert db.steps == [1]
    assert db.latest().keys() == ["b"]


def test_abort_writes_nothing_and_is_idempotent(db):
    tx = db.begin_step(1)
    tx["a"] = np.ones(1000)
    tx.abort()
    tx.abort()
    with pytest.raises(ckptdb.InvalidArgumentError, match="already been committed or aborted"):
        tx["b"] = np.ones(1)
    assert db.steps == []
    assert db.latest() is None


def test_another_thread_waits_for_an_open_step(db):
    with db.begin_step(1) as tx:
        tx["a"] = np.ones(1)
    tagged = threading.Event()

    def tag():
        db.tag(1, "one")
        tagged.set()

    tx = db.begin_step(2)
    tx["b"] = np.ones(1)
    t = threading.Thread(target=tag)
    t.start()
    # The tag waits for the writer the open step holds...
    assert not tagged.wait(0.2)
    tx.commit()
    # ...and gets it once the step commits.
    assert tagged.wait(30)
    t.join()
    assert db.tags == {"one": 1}
    assert db.steps == [1, 2]
