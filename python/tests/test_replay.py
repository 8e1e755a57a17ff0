"""Replay tables from Python: exact rows after reopen, sampling statistics."""

import numpy as np
import pytest

import ckptdb

SCHEMA = "obs: f32[4], action: i64[], reward: f32[], terminated: bool[]"


def rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.standard_normal((n, 4)).astype(np.float32),
        "action": rng.integers(0, 2, n).astype(np.int64),
        "reward": rng.standard_normal(n).astype(np.float32),
        "terminated": rng.integers(0, 2, n).astype(bool),
    }


def test_push_batch_then_reopen_gives_exact_rows(path):
    db = ckptdb.open(path)
    table = db.replay_table("buffer", SCHEMA, capacity=5000, page_size=256)
    batch = rows(3000)
    table.push_batch(batch)
    table.push(obs=[1, 2, 3, 4], action=1, reward=0.5, terminated=True)
    assert len(table) == 3001
    with db.begin_step(1) as tx:
        tx.put_replay(table)
    del table
    db.close()

    db = ckptdb.open(path, read_only=True)
    view = db.latest().replay("buffer")
    assert len(view) == 3001 and view.total_inserted == 3001
    for i in [0, 1, 255, 256, 2999]:
        r = view.row(i)
        for name in batch:
            np.testing.assert_array_equal(r[name], batch[name][i])
    last = view.row(3000)
    np.testing.assert_array_equal(last["obs"], np.array([1, 2, 3, 4], np.float32))
    assert last["action"] == 1 and last["reward"] == np.float32(0.5) and bool(last["terminated"])
    # Reopened for writing, the table continues where the step left it.
    db.close()
    db = ckptdb.open(path)
    again = db.replay_table("buffer", SCHEMA, capacity=5000, page_size=256)
    assert len(again) == 3001


def test_sample_shapes_and_seed(db):
    table = db.replay_table("b", SCHEMA, capacity=1000, page_size=128)
    table.push_batch(rows(500))
    a = table.sample(256, seed=3)
    b = table.sample(256, seed=3)
    assert a["obs"].shape == (256, 4) and a["obs"].dtype == np.float32
    assert a["action"].shape == (256,) and a["terminated"].dtype == np.bool_
    assert a["indices"].shape == (256, 2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # Each sampled row is the row stored at its serial.
    src = rows(500)
    serial = a["indices"][:, 1].astype(np.int64)
    np.testing.assert_array_equal(a["obs"], src["obs"][serial])


def chi2_critical_1e4(df):
    """Upper critical value of chi-square with ``df`` degrees of freedom at
    p = 1e-4, by Wilson-Hilferty (as the Rust tests compute it): no scipy
    needed. It errs high, by 1.1% at df = 10 and under 0.2% from df = 50."""
    z = 3.719016  # standard normal quantile of 1 - 1e-4
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * h**0.5) ** 3


def test_chi2_critical_value_matches_the_exact_quantile():
    stats = pytest.importorskip("scipy.stats")
    for df, tolerance in ((10, 0.012), (63, 0.002), (999, 0.0001)):
        exact = stats.chi2.isf(1e-4, df)
        assert 0 <= (chi2_critical_1e4(df) - exact) / exact < tolerance, df


@pytest.mark.parametrize("n, page_size, seed", [(64, 16, 11), (1000, 128, 3), (1000, 128, 4)])
def test_uniform_sampling_passes_chi_square(db, n, page_size, seed):
    # The table holds more rows than fit one page, and (for n = 1000) a last
    # page only partly full, so a bias toward full pages would show.
    table = db.replay_table("u", "x: i64[]", capacity=n, page_size=page_size)
    table.push_batch({"x": np.arange(n, dtype=np.int64)})
    draws = 100 * n
    got = table.sample(draws, seed=seed)["x"]
    assert got.min() >= 0 and got.max() < n
    counts = np.bincount(got, minlength=n)
    expected = draws / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < chi2_critical_1e4(n - 1), chi2


def test_a_biased_sample_fails_the_same_chi_square():
    # The check can fail: rows drawn uniformly from all but the last page.
    n, draws = 1000, 100_000
    got = np.random.default_rng(0).integers(0, n - 104, draws)
    counts = np.bincount(got, minlength=n)
    expected = draws / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 > chi2_critical_1e4(n - 1), chi2


def test_prioritized_sampling_follows_priorities(db):
    table = db.replay_table("p", "x: i64[]", capacity=4, page_size=4, alpha=1.0)
    table.push_batch({"x": np.arange(4, dtype=np.int64)})
    first = table.sample(4, seed=0, beta=0.5)
    assert "weights" in first
    # Give each row a priority proportional to 1, 2, 3, 4 (by its serial).
    idx = np.array([[s, s] for s in range(4)], np.uint64)
    assert table.update_priorities(idx, [1.0, 2.0, 3.0, 4.0]) == 4
    draws = 40_000
    got = table.sample(draws, seed=5, beta=0.5)
    freq = np.bincount(got["x"], minlength=4) / draws
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    # Importance weights are (N p)^-beta, normalized by their maximum.
    p = np.array([0.1, 0.2, 0.3, 0.4])
    w = (4 * p) ** -0.5
    np.testing.assert_allclose(got["weights"], (w / w.max())[got["x"]], rtol=1e-6)


def test_bad_replay_input(db):
    table = db.replay_table("b", SCHEMA, capacity=100, page_size=16)
    good = rows(10)
    wrong = dict(good, obs=good["obs"].astype(np.float64))
    with pytest.raises(ckptdb.Error) as e:
        table.push_batch(wrong)
    assert "obs" in str(e.value)
    with pytest.raises(ckptdb.Error):
        table.push_batch(dict(good, obs=good["obs"][:5]))
    with pytest.raises(ckptdb.Error):
        table.push(obs=[1, 2, 3, 4], action=1, reward=0.5)  # a field missing
    assert len(table) == 0
    with pytest.raises(ckptdb.InvalidArgumentError):
        db.replay_table("c", "obs: f99[4]", capacity=10, page_size=4)


def test_save_async_carries_the_replay_table(path):
    with ckptdb.CheckpointManager(path, keep_last=1) as mgr:
        table = mgr.db.replay_table("buf", SCHEMA, capacity=1000, page_size=64)
        data = rows(900)
        table.push_batch({k: v[:500] for k, v in data.items()})
        mgr.save_async(1, {"w": np.zeros(2, np.float32)}, replay=[table])
        table.push_batch({k: v[500:] for k, v in data.items()})  # not in step 1
        mgr.flush()
        view = mgr.restore_latest().replay("buf")
        assert len(view) == 500
        np.testing.assert_array_equal(view.row(499)["obs"], data["obs"][499])
        mgr.save_async(2, {"w": np.ones(2, np.float32)}, replay=[table])
    view = ckptdb.open(path, read_only=True).latest().replay("buf")
    assert len(view) == 900
    np.testing.assert_array_equal(view.row(899)["obs"], data["obs"][899])


def test_sampled_columns_keep_every_dtype_and_shape(path):
    """Every field comes back with its own dtype and shape: the NumPy ones
    as typed arrays made by the binding, bfloat16 through ml_dtypes."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    schema = ("a: bool[], b: u8[3], c: i16[], d: u32[2,2], e: i64[], f: f16[2], "
              "g: f64[], h: bf16[3]")
    db = ckptdb.open(path)
    table = db.replay_table("mixed", schema, capacity=64, page_size=16)
    n = 40
    rng = np.random.default_rng(3)
    cols = {
        "a": rng.integers(0, 2, n).astype(bool),
        "b": rng.integers(0, 255, (n, 3)).astype(np.uint8),
        "c": rng.integers(-3000, 3000, n).astype(np.int16),
        "d": rng.integers(0, 2**32 - 1, (n, 2, 2)).astype(np.uint32),
        "e": np.arange(n, dtype=np.int64) * 1_000_003,
        "f": rng.standard_normal((n, 2)).astype(np.float16),
        "g": rng.standard_normal(n),
        "h": rng.standard_normal((n, 3)).astype(ml_dtypes.bfloat16),
    }
    table.push_batch(cols)
    batch = table.sample(17, seed=5)
    slots = batch["indices"][:, 0]
    assert batch["indices"].shape == (17, 2) and batch["indices"].dtype == np.uint64
    for name, col in cols.items():
        got = batch[name]
        assert got.dtype == col.dtype, name
        assert got.shape == (17,) + col.shape[1:], name
        # The ring has not wrapped, so slot i holds row i.
        np.testing.assert_array_equal(got, col[slots])
