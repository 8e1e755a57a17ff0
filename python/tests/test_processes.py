"""A reader beside a writer, and kill -9 of a Python writer."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

import ckptdb

WRITER = textwrap.dedent("""
    import sys, numpy as np, ckptdb
    db = ckptdb.open(sys.argv[1])
    start = (db.steps or [0])[-1] + 1
    for step in range(start, 100000):
        with db.begin_step(step) as tx:
            tx["a"] = np.full(4096, step, np.int64)
            tx["b"] = np.full(16, -step, np.int64)
            tx.put_metric("step", step)
        print(step, flush=True)  # acknowledged: the commit returned
""")


def start_writer(path):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )


def test_reader_sees_only_whole_steps(path):
    ckptdb.open(path).close()
    writer = start_writer(path)
    try:
        assert int(writer.stdout.readline()) == 1
        reader = ckptdb.open(path, read_only=True)
        seen = set()
        while len(seen) < 20:
            reader.refresh()
            snap = reader.latest()
            if snap is None:
                continue
            s = snap.step
            assert snap.keys() == ["a", "b"]
            assert (snap["a"] == s).all() and (snap["b"] == -s).all()
            assert snap.metrics == {"step": float(s)}
            seen.add(s)
    finally:
        writer.kill()
        writer.wait()


def test_kill_9_loses_no_acknowledged_step(path):
    ckptdb.open(path).close()
    writer = start_writer(path)
    acknowledged = 0
    for _ in range(30):
        acknowledged = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    # Whatever the pipe still holds was acknowledged too.
    for line in writer.stdout:
        acknowledged = int(line)
    db = ckptdb.open(path)
    assert db.steps[-1] >= acknowledged
    for s in db.steps:
        snap = db.snapshot(s)
        assert (snap["a"] == s).all() and (snap["b"] == -s).all()
    assert db.verify().ok
