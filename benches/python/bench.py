"""Benchmarks of the Python package against the usual ways of saving arrays.

Every comparison is measured in one run, in interleaved rounds (each
round runs every contender once, in the same order), and reported as the
ratio of minimum and of median times, so that a noisy shared machine moves
both sides alike. ``CKPTDB_BENCH_SCALE`` shrinks every size (``0.0625``
for a quick run).

    python benches/python/bench.py [--rounds 5] [--only save,load,replay]
"""

import argparse
import mmap
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

import ckptdb

SCALE = float(os.environ.get("CKPTDB_BENCH_SCALE", "1.0"))
MIB = 1 << 20


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    fsync_path(path)


def drop_file(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def rounds_of(contenders, rounds):
    """{name: [seconds, ...]} over interleaved rounds."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (setup, run) in contenders.items():
            arg = setup()
            start = time.perf_counter()
            run(arg)
            times[name].append(time.perf_counter() - start)
    return times


def report(title, times, baseline_names):
    """Prints every contender, then each ckptdb contender's speed against each baseline."""
    print(f"\n## {title}")
    for name, ts in times.items():
        print(f"  {name:<28} min {min(ts) * 1e3:9.2f} ms   median {statistics.median(ts) * 1e3:9.2f} ms")
    for ours in (name for name in times if name.startswith("ckptdb")):
        for base in baseline_names:
            a, b = times[ours], times[base]
            print(
                f"  speed of {ours} / {base}: min {min(b) / min(a):.2f}x, median "
                f"{statistics.median(b) / statistics.median(a):.2f}x"
            )


def bench_save(work, rounds):
    n, size = 16, int(64 * MIB * SCALE)
    tensors = {f"layer{i}.weight": np.random.default_rng(i).standard_normal(size // 4).astype(np.float32)
               for i in range(n)}
    total = n * size
    from safetensors.numpy import save_file

    step = [0]

    def ck_setup():
        path = os.path.join(work, "save.ckpt")
        drop_file(path)
        return ckptdb.open(path)

    def ck_run(db):
        step[0] += 1
        with db.begin_step(1) as tx:
            for k, v in tensors.items():
                tx[k] = v
        db.close()

    def st_setup():
        path = os.path.join(work, "save.safetensors")
        drop_file(path)
        return path

    def st_run(path):
        save_file(tensors, path)
        fsync_path(path)
        fsync_dir(work)

    def npy_setup():
        path = os.path.join(work, "save.npy.d")
        drop_file(path)
        os.makedirs(path)
        return path

    def npy_run(path):
        for k, v in tensors.items():
            f = os.path.join(path, k + ".npy")
            with open(f, "wb") as fh:
                np.save(fh, v)
                fh.flush()
                os.fsync(fh.fileno())
        fsync_dir(path)

    times = rounds_of(
        {"ckptdb": (ck_setup, ck_run), "safetensors+fsync": (st_setup, st_run),
         "np.save+fsync": (npy_setup, npy_run)},
        rounds,
    )
    report(f"save {total / MIB:.0f} MiB as {n} f32 tensors, durable", times,
           ["safetensors+fsync", "np.save+fsync"])


def bench_load(work, rounds):
    n, size = 16, int(64 * MIB * SCALE)
    tensors = {f"layer{i}.weight": np.full(size // 4, i, np.float32) for i in range(n)}
    ck = os.path.join(work, "load.ckpt")
    drop_file(ck)
    db = ckptdb.open(ck)
    with db.begin_step(1) as tx:
        for k, v in tensors.items():
            tx[k] = v
    db.close()
    from safetensors import safe_open
    from safetensors.numpy import save_file

    st = os.path.join(work, "load.safetensors")
    save_file(tensors, st)
    npd = os.path.join(work, "load.npy.d")
    drop_file(npd)
    os.makedirs(npd)
    for k, v in tensors.items():
        np.save(os.path.join(npd, k + ".npy"), v)
    raw = os.path.join(work, "load.raw")
    with open(raw, "wb") as f:
        for v in tensors.values():
            f.write(v.tobytes())

    def none():
        return None

    def ck_first(_):
        d = ckptdb.open(ck, read_only=True)
        d.latest()["layer0.weight"]

    def ck_first_unverified(_):
        d = ckptdb.open(ck, read_only=True)
        d.latest().array("layer0.weight", verify=False)

    def st_first(_):
        with safe_open(st, framework="numpy") as f:
            f.get_tensor("layer0.weight")

    def npy_first(_):
        np.load(os.path.join(npd, "layer0.weight.npy"), mmap_mode="r")

    times = rounds_of({"ckptdb": (none, ck_first), "ckptdb verify=False": (none, ck_first_unverified),
                       "safetensors.safe_open": (none, st_first),
                       "np.load(mmap_mode=r)": (none, npy_first)}, rounds * 4)
    report(f"open + first array ({size / MIB:.0f} MiB of {n})", times,
           ["safetensors.safe_open", "np.load(mmap_mode=r)"])

    def ck_all(_):
        d = ckptdb.open(ck, read_only=True)
        s = d.latest()
        total = 0.0
        for k in s.keys():
            total += float(s[k].sum(dtype=np.float64))
        return total

    def ck_all_unverified(_):
        d = ckptdb.open(ck, read_only=True)
        s = d.latest()
        total = 0.0
        for k in s.keys():
            total += float(s.array(k, verify=False).sum(dtype=np.float64))
        return total

    def st_all(_):
        total = 0.0
        with safe_open(st, framework="numpy") as f:
            for k in f.keys():
                total += float(f.get_tensor(k).sum(dtype=np.float64))
        return total

    def npy_all(_):
        total = 0.0
        for k in tensors:
            total += float(np.load(os.path.join(npd, k + ".npy"), mmap_mode="r").sum(dtype=np.float64))
        return total

    def raw_all(_):
        with open(raw, "rb") as f:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            total = float(np.frombuffer(m, np.float32).sum(dtype=np.float64))
            del m
        return total

    times = rounds_of({"ckptdb": (none, ck_all), "ckptdb verify=False": (none, ck_all_unverified),
                       "safetensors.safe_open": (none, st_all),
                       "np.load(mmap_mode=r)": (none, npy_all), "raw mmap": (none, raw_all)}, rounds)
    report(f"open + sum every element of {n * size / MIB:.0f} MiB (page cache warm)", times,
           ["safetensors.safe_open", "np.load(mmap_mode=r)", "raw mmap"])


def bench_replay(work, rounds):
    schema = "obs: f32[4], action: i64[], reward: f32[], next_obs: f32[4], terminated: bool[]"
    capacity = int(1_000_000 * SCALE)
    batch = 65_536
    rng = np.random.default_rng(0)
    cols = {
        "obs": rng.standard_normal((batch, 4)).astype(np.float32),
        "action": rng.integers(0, 2, batch).astype(np.int64),
        "reward": np.ones(batch, np.float32),
        "next_obs": rng.standard_normal((batch, 4)).astype(np.float32),
        "terminated": np.zeros(batch, bool),
    }
    path = os.path.join(work, "replay.ckpt")
    drop_file(path)
    db = ckptdb.open(path)
    table = db.replay_table("buf", schema, capacity=capacity, page_size=1024)
    per_round = max(1, (2 * capacity) // batch)
    push = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            table.push_batch(cols)
        push.append((time.perf_counter() - start) / (per_round * batch))
    print(f"\n## replay push_batch of {batch} CartPole rows into a {capacity}-row table")
    print(f"  min {1 / min(push) / 1e6:.1f} M rows/s   median {1 / statistics.median(push) / 1e6:.1f} M rows/s")

    # Each sample draws fresh random rows on both sides (a fixed seed would
    # sample the same, cache-hot, rows every round).
    py_t, rust_t = [], []
    for r in range(rounds * 200):
        start = time.perf_counter()
        table.sample(256, seed=2 * r)
        py_t.append(time.perf_counter() - start)
        rust_t.extend(table._n.time_sample_in_rust(256, 1, 2 * r + 1))
    print(f"\n## sample 256 from the full table into numpy arrays")
    print(f"  python  min {min(py_t) * 1e6:.1f} us   median {statistics.median(py_t) * 1e6:.1f} us")
    print(f"  rust    min {min(rust_t) * 1e6:.1f} us   median {statistics.median(rust_t) * 1e6:.1f} us")
    print(f"  python / rust: min {min(py_t) / min(rust_t):.2f}x, median "
          f"{statistics.median(py_t) / statistics.median(rust_t):.2f}x")
    db.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="save,load,replay")
    ap.add_argument("--dir", default=None, help="where the files go (default: a temporary directory)")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="ckptdb-bench-")
    os.makedirs(work, exist_ok=True)
    print(f"scale {SCALE}, {args.rounds} rounds, files in {work}")
    try:
        for name in args.only.split(","):
            {"save": bench_save, "load": bench_load, "replay": bench_replay}[name](work, args.rounds)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
