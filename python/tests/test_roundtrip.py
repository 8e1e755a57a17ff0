"""Every dtype, rank 0 to 8, non-contiguous and Fortran input, empty arrays."""

import ml_dtypes
import numpy as np
import pytest

import ckptdb

DTYPES = [
    np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
    np.uint64, np.int64, np.float16, ml_dtypes.bfloat16, np.float32, np.float64,
]


def sample(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(size=shape) * 100).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_and_rank(db, dtype):
    arrays = {}
    for rank in range(9):
        shape = tuple([2] * rank) if rank < 6 else tuple([1] * (rank - 2) + [3, 2])
        arrays[f"r{rank}"] = sample(dtype, shape, rank)
    with db.begin_step(1) as tx:
        for k, a in arrays.items():
            tx[k] = a
    snap = db.latest()
    for k, a in arrays.items():
        got = snap[k]
        assert got.dtype == np.dtype(dtype)
        assert got.shape == a.shape
        assert got.tobytes() == a.tobytes()


def test_non_contiguous_fortran_and_big_endian(db):
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    strided = base[::2, 1::3]
    fortran = np.asfortranarray(base)
    big = base.astype(">f8")
    with db.begin_step(1) as tx:
        tx["strided"] = strided
        tx["fortran"] = fortran
        tx["big"] = big
    snap = db.latest()
    np.testing.assert_array_equal(snap["strided"], strided)
    np.testing.assert_array_equal(snap["fortran"], base)
    np.testing.assert_array_equal(snap["big"], base)
    assert snap["big"].dtype == np.dtype("<f8")


def test_empty_arrays(db):
    with db.begin_step(1) as tx:
        tx["e"] = np.zeros((0, 3), np.float32)
        tx["e0"] = np.zeros((0,), np.int64)
    snap = db.latest()
    assert snap["e"].shape == (0, 3) and snap["e"].dtype == np.float32
    assert snap["e0"].shape == (0,) and snap["e0"].dtype == np.int64


def test_values_blobs_metrics_and_delete(db):
    with db.begin_step(1) as tx:
        tx["keep"] = np.ones(3, np.int32)
        tx["gone"] = np.ones(3, np.int32)
        tx.put_value("rng", {"state": 2**127 + 12345, "inc": 3})
        tx.put_blob("raw", b"\x00\x01\xff")
        tx.put_metric("loss", 0.125)
    with db.begin_step(2) as tx:  # inherits step 1
        del tx["gone"]
        tx.put_metric("loss", 0.0625)
    snap = db.latest()
    assert snap.step == 2
    assert snap.keys() == ["keep", "raw", "rng"]
    assert snap.value("rng") == {"state": 2**127 + 12345, "inc": 3}
    assert snap["raw"] == b"\x00\x01\xff"
    assert snap.metrics == {"loss": 0.0625}
    assert db.snapshot(1).keys() == ["gone", "keep", "raw", "rng"]
    with db.begin_step(3, parent=None) as tx:
        tx["only"] = np.zeros(1, np.uint8)
    assert db.latest().keys() == ["only"]


def test_block_that_raises_aborts(db):
    with db.begin_step(1) as tx:
        tx["a"] = np.ones(2, np.float32)
    with pytest.raises(RuntimeError):
        with db.begin_step(2) as tx:
            tx["a"] = np.zeros(2, np.float32)
            raise RuntimeError("boom")
    assert db.steps == [1]
    np.testing.assert_array_equal(db.latest()["a"], np.ones(2, np.float32))


def test_steps_best_tag_subset(db):
    for step, ret in [(10, 1.0), (20, 5.0), (30, 3.0)]:
        with db.begin_step(step) as tx:
            tx["policy/w"] = np.full(2, step, np.float32)
            tx["value/w"] = np.full(2, -step, np.float32)
            tx["optim/m"] = np.zeros(2, np.float32)
            tx.put_metric("eval_return", ret)
    assert db.steps == [10, 20, 30]
    assert db.best("eval_return").step == 20
    assert db.best("eval_return", mode="min").step == 10
    assert db.best("nothing") is None
    db.tag(20, "good")
    assert db.tags == {"good": 20}
    assert db.snapshot_by_tag("good").step == 20
    sub = db.latest().to_dict(prefix="policy/")
    assert list(sub) == ["policy/w"]
    np.testing.assert_array_equal(sub["policy/w"], np.full(2, 30, np.float32))
    report = db.verify()
    assert report.ok and report.steps == 3


def test_interop_inputs(db):
    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.arange(4, dtype=np.int16)

    with db.begin_step(1) as tx:
        tx["like"] = ArrayLike()
        tx["list"] = [[1.5, 2.5], [3.5, 4.5]]
    snap = db.latest()
    np.testing.assert_array_equal(snap["like"], np.arange(4, dtype=np.int16))
    assert snap["list"].dtype == np.float64
    np.testing.assert_array_equal(snap["list"], [[1.5, 2.5], [3.5, 4.5]])
