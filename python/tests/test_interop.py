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


class DlpackOnly:
    """An object numpy can read only through the DLPack protocol (no
    ``__array__``, no buffer protocol), like a tensor of another library."""

    def __init__(self, array):
        self._a = array

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32),
        np.arange(-20, 20, dtype=np.int16).reshape(2, 4, 5),
        np.array([0.1, np.nan, -np.inf, 1e300]),
        np.zeros((0, 3), np.uint8),
    ],
    ids=["f32", "i16-rank3", "f64-specials", "empty"],
)
def test_an_object_with_only_dlpack_roundtrips_exactly(db, array):
    obj = DlpackOnly(array)
    assert not hasattr(obj, "__array__")
    with db.begin_step(1) as tx:
        tx["d"] = obj
    got = db.latest()["d"]
    assert got.dtype == array.dtype and got.shape == array.shape
    assert got.tobytes() == array.tobytes()


def test_jax_arrays_roundtrip_exactly(db):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    key = jax.random.PRNGKey(0)
    inputs = {
        "f32": jax.random.normal(key, (16, 8), jnp.float32),
        "bf16": jax.random.normal(key, (33,), jnp.bfloat16),
        "i8": jnp.arange(-64, 64, dtype=jnp.int8).reshape(2, 8, 8),
        "bool": jnp.arange(10) % 3 == 0,
    }
    with db.begin_step(1) as tx:
        for k, v in inputs.items():
            tx[k] = v
    snap = db.latest()
    for k, v in inputs.items():
        want = np.asarray(v)
        got = snap[k]
        assert got.dtype == want.dtype and got.shape == want.shape, k
        assert got.tobytes() == want.tobytes(), k
        # And back into jax, unchanged.
        assert bool((jnp.asarray(got) == v).all()), k
