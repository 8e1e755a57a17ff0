"""The database on S3-compatible object storage, against moto's real S3
server on a loopback port: push, open_remote through a cache, pull and
continue, and a typed RemoteError for every way of not reaching it.

The server is ``$CKPTDB_MOTO_SERVER``, else the one ``scripts/moto.sh``
installs under ``target/motoenv``, else ``moto_server`` on ``PATH``. Under
CI (``CI`` set) a missing server fails the tests; elsewhere they are
skipped saying how to install it.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import ckptdb

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _server():
    explicit = os.environ.get("CKPTDB_MOTO_SERVER")
    if explicit:
        return explicit
    venv = ROOT / "target" / "motoenv" / "bin" / "moto_server"
    if venv.is_file():
        return str(venv)
    return shutil.which("moto_server")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(method, url):
    req = urllib.request.Request(url, method=method, data=b"" if method == "PUT" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


@pytest.fixture(scope="module")
def moto():
    server = _server()
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("moto_server not found under CI: run scripts/moto.sh or set CKPTDB_MOTO_SERVER")
        pytest.skip("moto_server not found (run scripts/moto.sh or set CKPTDB_MOTO_SERVER)")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "moto_server exited early"
        try:
            _request("GET", endpoint + "/moto-api/")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            assert time.monotonic() < deadline, "moto_server did not answer within 60 s"
            time.sleep(0.1)
    yield endpoint
    proc.kill()
    proc.wait()


_bucket_count = 0


@pytest.fixture
def bucket(moto):
    """A fresh bucket per test: (url prefix, connection keywords)."""
    global _bucket_count
    _bucket_count += 1
    name = f"py-{os.getpid()}-{_bucket_count}"
    assert _request("PUT", f"{moto}/{name}") == 200
    reach = dict(
        endpoint=moto,
        allow_http=True,
        access_key_id="testing",
        secret_access_key="testing",
        timeout=10.0,
    )
    return f"s3://{name}/runs/a", reach


def _fill(db, steps):
    rng = np.random.default_rng(7)
    written = {}
    for step in steps:
        w = rng.standard_normal((64, 33)).astype(np.float32)
        counts = rng.integers(-(2**40), 2**40, size=17, dtype=np.int64)
        mask = rng.integers(0, 2, size=(3, 5)).astype(bool)
        with db.begin_step(step) as tx:
            tx["policy/w"] = w
            tx["counts"] = counts
            tx["mask"] = mask
            tx.put_value("config", {"lr": 0.5, "step": step})
            tx.put_metric("eval_return", float(step) / 4)
        written[step] = {"policy/w": w, "counts": counts, "mask": mask}
    return written


def test_push_then_open_remote_reads_every_step_exactly(tmp_path, bucket):
    url, reach = bucket
    local = ckptdb.open(tmp_path / "run.ckpt")
    written = _fill(local, [10, 20, 30])
    local.tag(20, "best")
    local.close()

    stats = ckptdb.push(tmp_path / "run.ckpt", url, **reach)
    assert stats["generation"] > 0
    assert stats["bytes_uploaded"] > 64 * 33 * 4 * 3
    assert stats["pieces_uploaded"] >= 1

    remote = ckptdb.open_remote(url, tmp_path / "cache", **reach)
    assert remote.steps == [10, 20, 30]
    assert remote.snapshot(20).tags == ["best"]
    for step, arrays in written.items():
        snap = remote.snapshot(step)
        assert snap.metrics == {"eval_return": step / 4}
        assert snap.value("config") == {"lr": 0.5, "step": step}
        for key, want in arrays.items():
            got = snap[key]
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), (step, key)
            assert not got.flags.writeable
    assert remote.verify().ok
    remote.close()

    # Nothing new: the second push uploads no piece.
    again = ckptdb.push(tmp_path / "run.ckpt", url, **reach)
    assert again["bytes_uploaded"] == 0
    assert again["pieces_uploaded"] == 0


def test_pull_gives_a_local_database_a_writer_continues(tmp_path, bucket):
    url, reach = bucket
    local = ckptdb.open(tmp_path / "run.ckpt")
    written = _fill(local, [1, 2])
    local.close()
    generation = ckptdb.push(tmp_path / "run.ckpt", url, **reach)["generation"]

    assert ckptdb.pull(url, tmp_path / "copy", **reach) == generation
    copy = ckptdb.open(tmp_path / "copy")
    assert copy.steps == [1, 2]
    assert copy.latest()["policy/w"].tobytes() == written[2]["policy/w"].tobytes()
    with pytest.raises(ckptdb.InvalidArgumentError):
        with copy.begin_step(2):
            pass
    with copy.begin_step(3, parent="latest") as tx:
        tx["extra"] = np.arange(5, dtype=np.uint16)
    assert copy.latest()["counts"].tobytes() == written[2]["counts"].tobytes()
    copy.close()

    # The continued run goes back up; a fresh cache sees step 3.
    ckptdb.push(tmp_path / "copy", url, **reach)
    seen = ckptdb.open_remote(url, tmp_path / "cache2", **reach)
    assert seen.steps == [1, 2, 3]
    assert seen.latest()["extra"].tolist() == [0, 1, 2, 3, 4]
    seen.close()

    # Pulling into a directory that holds anything is refused, and leaves
    # it as it was.
    with pytest.raises(ckptdb.InvalidArgumentError, match="not empty"):
        ckptdb.pull(url, tmp_path / "copy", **reach)
    assert ckptdb.open(tmp_path / "copy", read_only=True).steps == [1, 2, 3]


def test_each_way_of_not_reaching_the_store_is_a_typed_error(tmp_path, bucket, moto):
    url, reach = bucket
    cases = [
        ("s3://", dict(reach), "invalid_url"),
        ("s3://no-such-bucket-here/x", dict(reach), "bucket_not_found"),
        (url, dict(reach), "not_found"),  # an empty location holds no database
        (url, dict(reach, endpoint=f"http://127.0.0.1:{_free_port()}", timeout=2.0), "unreachable"),
    ]
    for location, kw, kind in cases:
        start = time.monotonic()
        with pytest.raises(ckptdb.RemoteError) as e:
            ckptdb.open_remote(location, tmp_path / "cache", **kw)
        assert e.value.kind == kind, (location, str(e.value))
        assert isinstance(e.value, ckptdb.Error) and isinstance(e.value, OSError)
        assert time.monotonic() - start < 30, (location, kind)

    with pytest.raises(ckptdb.InvalidArgumentError, match="together"):
        ckptdb.push(tmp_path / "run.ckpt", url, endpoint=moto, access_key_id="testing")
    with pytest.raises(ckptdb.InvalidArgumentError, match="timeout"):
        ckptdb.pull(url, tmp_path / "x", **dict(reach, timeout=-1.0))
    # A misspelt option is refused before anything is reached, by each call.
    with pytest.raises(TypeError, match="'endpiont'"):
        ckptdb.push(tmp_path / "run.ckpt", url, endpiont=moto)
    with pytest.raises(TypeError, match="'endpiont'"):
        ckptdb.pull(url, tmp_path / "x", endpiont=moto)
    with pytest.raises(TypeError, match="timeout"):
        ckptdb.pull(url, tmp_path / "x", **dict(reach, timeout="soon"))
    assert not (tmp_path / "x").exists()
    # Pushing a path that is no database: nothing goes up.
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckptdb.Error):
        ckptdb.push(tmp_path / "empty", url, **reach)
    with pytest.raises(ckptdb.RemoteError) as e:
        ckptdb.open_remote(url, tmp_path / "cache", **reach)
    assert e.value.kind == "not_found"
