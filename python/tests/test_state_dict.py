"""State-dict helpers and the checkpoint manager."""

import numpy as np
import pytest

import ckptdb


def model(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "fc1.bias": rng.standard_normal(4).astype(np.float32),
        "steps": np.array(7, np.int64),
    }


def test_round_trip_strips_prefix_and_fills_into(db):
    sd = model()
    with db.begin_step(1) as tx:
        ckptdb.save_state_dict(tx, "policy/", sd)
        ckptdb.save_state_dict(tx, "optim/", {"m": np.zeros(3, np.float32)})
    snap = db.latest()
    loaded = ckptdb.load_state_dict(snap, "policy/")
    assert sorted(loaded) == sorted(sd)
    into = {k: np.zeros_like(v) for k, v in sd.items()}
    ckptdb.load_state_dict(snap, "policy/", into=into)
    for k in sd:
        np.testing.assert_array_equal(into[k], sd[k])


def test_strict_names_every_mismatch(db):
    with db.begin_step(1) as tx:
        ckptdb.save_state_dict(tx, "policy/", model())
    into = {
        "fc1.weight": np.zeros((4, 4), np.float32),  # shape differs
        "fc1.bias": np.zeros(4, np.float64),  # dtype differs
        "fc2.weight": np.zeros(1, np.float32),  # missing from the step
    }  # "steps" is unexpected
    before = {k: v.copy() for k, v in into.items()}
    with pytest.raises(ckptdb.StateDictMismatchError) as e:
        ckptdb.load_state_dict(db.latest(), "policy/", into=into)
    msg = str(e.value)
    assert "missing keys: fc2.weight" in msg
    assert "unexpected keys: steps" in msg
    assert "fc1.weight: shape (4, 3) stored, (4, 4) expected" in msg
    assert "fc1.bias: dtype f32 stored, f64 expected" in msg
    assert e.value.missing == ["fc2.weight"] and e.value.unexpected == ["steps"]
    assert isinstance(e.value, ValueError)
    for k in into:  # nothing restored
        np.testing.assert_array_equal(into[k], before[k])


def test_non_strict_restores_what_matches(db):
    with db.begin_step(1) as tx:
        ckptdb.save_state_dict(tx, "p/", model())
    into = {"fc1.bias": np.zeros(4, np.float32), "other": np.ones(2)}
    ckptdb.load_state_dict(db.latest(), "p/", into=into, strict=False)
    np.testing.assert_array_equal(into["fc1.bias"], model()["fc1.bias"])
    np.testing.assert_array_equal(into["other"], np.ones(2))


def test_manager_retention_restores_and_async(path):
    with ckptdb.CheckpointManager(
        path, save_every_steps=10, keep_last=2, keep_best=("eval_return", 1, "max")
    ) as mgr:
        assert mgr.should_save(10) and not mgr.should_save(11)
        for step, ret in [(10, 9.0), (20, 1.0), (30, 2.0), (40, 3.0)]:
            mgr.save_async(step, {"w": np.full(3, step, np.float32)},
                           metrics={"eval_return": ret}, values={"counter": step})
        mgr.flush()
        assert mgr.db.steps == [10, 30, 40]
        assert mgr.restore_best("eval_return").step == 10
        latest = mgr.restore_latest()
        assert latest.step == 40 and latest.value("counter") == 40
        np.testing.assert_array_equal(latest["w"], np.full(3, 40, np.float32))
        mgr.tag(30, "keep")
        assert mgr.restore_tag("keep").step == 30
        mgr.save(50, {"w": np.zeros(1)})
        assert mgr.db.steps == [10, 30, 40, 50]


def test_save_async_refuses_a_stale_step_at_once(path):
    mgr = ckptdb.CheckpointManager(path)
    mgr.save(5, {"w": np.zeros(1)})
    with pytest.raises(ckptdb.InvalidArgumentError, match="not greater than the last committed step 5"):
        mgr.save_async(5, {"w": np.zeros(1)})
    mgr.flush()
    assert mgr.db.steps == [5]
