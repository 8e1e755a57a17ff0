"""Snapshots read through DLPack and by jax; jax and dlpack objects as input."""

import numpy as np
import pytest

import ckptdb


def test_numpy_from_dlpack_shares_memory(db):
    with db.begin_step(1) as tx:
        tx["w"] = np.arange(10, dtype=np.float32)
    got = db.latest()["w"]
    try:
        again = np.from_dlpack(got)
    except BufferError as e:  # numpy < 2.1 cannot export read-only arrays
        pytest.skip(f"this numpy refuses read-only DLPack export: {e}")
    assert np.shares_memory(got, again)
    assert not again.flags.writeable
    np.testing.assert_array_equal(again, np.arange(10, dtype=np.float32))


def test_jax_reads_a_snapshot_and_is_stored(db):
    jnp = pytest.importorskip("jax.numpy")
    with db.begin_step(1) as tx:
        tx["w"] = np.arange(12, dtype=np.float32).reshape(3, 4)
        tx["j"] = jnp.arange(5, dtype=jnp.int32) * 2  # input through __dlpack__
    snap = db.latest()
    x = jnp.asarray(snap["w"])
    np.testing.assert_array_equal(np.asarray(x), np.arange(12, dtype=np.float32).reshape(3, 4))
    assert float(x.sum()) == 66.0
    np.testing.assert_array_equal(snap["j"], np.arange(5, dtype=np.int32) * 2)
    assert snap["j"].dtype == np.int32


def test_bfloat16_through_ml_dtypes(db):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    with db.begin_step(1) as tx:
        tx["bf"] = a
        tx["h"] = a.astype(np.float16)
    snap = db.latest()
    assert snap.info("bf") == ("tensor", "bf16", (3,))
    assert snap["bf"].dtype == ml_dtypes.bfloat16
    assert snap["h"].dtype == np.float16
    np.testing.assert_array_equal(snap["bf"].astype(np.float32), [1.5, -2.0, 3.25])
