"""Long engine calls release the GIL: another Python thread runs meanwhile."""

import sys
import threading
import time

import numpy as np


def runs_beside(call):
    """Whether a Python thread made progress in the middle of ``call()``.

    With the GIL held for the whole call, the other thread could run only
    before the call enters Rust or after it returns; its timestamps
    strictly inside the call (a margin of a switch interval on each side)
    show the GIL was released.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    stamps = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0)  # gives the GIL back at once

    t = threading.Thread(target=tick)
    t.start()
    try:
        time.sleep(0.01)
        start = time.perf_counter()
        call()
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    margin = 0.002
    assert end - start > 4 * margin, f"the call took only {end - start:.4f} s: no evidence"
    return any(start + margin < s < end - margin for s in stamps)


BIG = np.random.default_rng(0).standard_normal(16 << 20).astype(np.float32)  # 64 MiB


def test_commit_and_fsync_release_the_gil(db):
    tx = db.begin_step(1)
    tx["a"] = BIG
    assert runs_beside(tx.commit)
    assert db.steps == [1]


def test_a_large_put_releases_the_gil(db):
    with db.begin_step(1) as tx:
        assert runs_beside(lambda: tx.put("a", BIG))


def test_verify_releases_the_gil(db):
    # 512 MiB to check: crc32 runs at over 10 GB/s a core, and the call
    # must take several switch intervals to show anything.
    for step in range(1, 9):
        with db.begin_step(step, parent=None) as tx:
            tx["a"] = BIG + step
    assert runs_beside(lambda: db.verify())


def test_push_batch_and_sample_release_the_gil(db):
    table = db.replay_table("buf", "obs: f32[4], reward: f32[]", capacity=1 << 21, page_size=1024)
    n = 1 << 21
    cols = {"obs": np.ones((n, 4), np.float32), "reward": np.ones(n, np.float32)}
    assert runs_beside(lambda: table.push_batch(cols))
    assert len(table) == n
    assert runs_beside(lambda: table.sample(1 << 20, seed=1))
