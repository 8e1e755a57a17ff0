"""ckptdb: an embedded checkpoint database for training loops.

One directory holds one training run. A step commits weights, optimizer
state, counters, RNG state and metrics atomically; restoring reads arrays
in place from a memory map (zero-copy, read-only) after checking their
crc32; a crash never loses a committed step and never shows half of one.

>>> import numpy as np, ckptdb
>>> db = ckptdb.open("run.ckpt")                          # doctest: +SKIP
>>> with db.begin_step(100) as tx:                        # doctest: +SKIP
...     tx["policy/w"] = np.zeros((4, 4), np.float32)
...     tx.put_metric("loss", 0.25)
>>> db.latest()["policy/w"].shape                         # doctest: +SKIP
(4, 4)
"""

import json as _json
import os as _os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _native
from ._arrays import as_array, from_bytes, numpy_dtype, to_bytes
from ._errors import (
    CatalogError,
    ChecksumMismatchError,
    ClosedError,
    CorruptionError,
    DtypeMismatchError,
    Error,
    IncompatibleVersionError,
    InvalidArgumentError,
    IoError,
    KeyNotFoundError,
    LockedError,
    MisalignedError,
    NotADatabaseError,
    InternalError,
    InvalidFileError,
    LostCommitsError,
    NotFoundError,
    PoisonedError,
    ReadOnlyError,
    RemoteError,
    ShapeMismatchError,
    StateDictMismatchError,
    StepNotFoundError,
    UnsupportedDtypeError,
    ValueDecodeError,
)

__all__ = [
    "open",
    "destroy",
    "open_remote",
    "push",
    "pull",
    "Db",
    "Snapshot",
    "Transaction",
    "ReplayTable",
    "ReplayView",
    "VerifyReport",
    "CheckpointManager",
    "save_state_dict",
    "load_state_dict",
    "Error",
    "CorruptionError",
    "ChecksumMismatchError",
    "MisalignedError",
    "NotFoundError",
    "StepNotFoundError",
    "KeyNotFoundError",
    "DtypeMismatchError",
    "ShapeMismatchError",
    "LockedError",
    "IncompatibleVersionError",
    "NotADatabaseError",
    "InvalidFileError",
    "LostCommitsError",
    "InvalidArgumentError",
    "ValueDecodeError",
    "ReadOnlyError",
    "PoisonedError",
    "CatalogError",
    "IoError",
    "RemoteError",
    "ClosedError",
    "UnsupportedDtypeError",
    "StateDictMismatchError",
    "InternalError",
]

PathLike = Union[str, "_os.PathLike[str]"]


def _dumps(key: str, obj: Any) -> str:
    try:
        return _json.dumps(obj, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{key!r} is not JSON-serializable: {e}") from None


def open(  # noqa: A001 - the natural name
    path: PathLike, read_only: bool = False, segment_size: Optional[int] = None
) -> "Db":
    """Opens (creating it if needed) the database at ``path``.

    A writer takes the database's lock (``LockedError`` while another
    process holds it); ``read_only=True`` never writes and may run beside a
    writer, seeing new steps after :meth:`Db.refresh`. ``segment_size``
    (bytes, default 1 GiB) is where the writer starts a new log file.
    """
    return Db(_native.open(_os.fspath(path), read_only, segment_size))


def destroy(path: PathLike) -> None:
    """Deletes the database at ``path`` and everything in it; nothing
    happens if ``path`` does not exist.

    ``LockedError`` while a writer (in this process or another) holds the
    database; ``NotADatabaseError`` for a path that is not a ckptdb
    directory or holds files a database does not consist of, in which case
    nothing is removed.
    """
    _native.destroy(_os.fspath(path))


def _remote(name: str):
    fn = getattr(_native, name, None)
    if fn is None:
        raise RemoteError("this ckptdb was built without S3 support (the `s3` feature)")
    return fn


def open_remote(
    url: str,
    cache_dir: PathLike,
    *,
    endpoint: Optional[str] = None,
    region: Optional[str] = None,
    access_key_id: Optional[str] = None,
    secret_access_key: Optional[str] = None,
    allow_http: Optional[bool] = None,
    timeout: Optional[float] = None,
) -> "Db":
    """Opens the newest generation at ``url`` (``s3://bucket[/prefix]``)
    read-only, through the local cache directory ``cache_dir``.

    Only the pieces the cache lacks are downloaded, each checked against its
    crc32; arrays are then read zero-copy from the cache like a local
    database's. Settings not given come from the ``AWS_*`` environment
    variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ALLOW_HTTP``);
    ``endpoint`` names an S3-compatible server (``http://`` needs
    ``allow_http=True``); ``timeout`` (seconds) bounds each request, the
    connection and the retries. Failures raise :class:`RemoteError` with a
    ``kind``.
    """
    native = _remote("open_remote")(
        url,
        _os.fspath(cache_dir),
        endpoint=endpoint,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        allow_http=allow_http,
        timeout=timeout,
    )
    return Db(native)


def push(path: PathLike, url: str, **options: Any) -> Dict[str, int]:
    """Uploads the database at ``path`` to ``url``: only the pieces the
    remote lacks, then the new root, written create-only so that two
    writers never both own a generation (``RemoteError`` of kind
    ``"conflict"`` for the loser). Returns ``generation``,
    ``bytes_uploaded``, ``pieces_uploaded`` and ``objects_deleted``. The
    keyword options are those of :func:`open_remote` (an unknown one is a
    ``TypeError``).
    """
    return _remote("push")(_os.fspath(path), url, **options)


def pull(url: str, path: PathLike, **options: Any) -> int:
    """Copies the newest generation at ``url`` into ``path`` (which must not
    exist or be empty) and returns that generation: an ordinary local
    database that :func:`open` can continue. A failed pull leaves nothing
    behind. The keyword options are those of :func:`open_remote` (an
    unknown one is a ``TypeError``).
    """
    return _remote("pull")(url, _os.fspath(path), **options)


class VerifyReport:
    """What :meth:`Db.verify` found: counts and a list of problems."""

    def __init__(self, steps: int, entries: int, bytes: int, problems: List[Tuple[str, List[int], str]]):
        self.steps = steps
        self.entries = entries
        self.bytes = bytes
        #: (key, live steps referencing it, message) per damaged entry.
        self.problems = problems

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.problems

    def __repr__(self) -> str:
        return (
            f"VerifyReport(steps={self.steps}, entries={self.entries}, "
            f"bytes={self.bytes}, problems={len(self.problems)})"
        )


class Db:
    """An open database. Use :func:`open` to make one."""

    def __init__(self, native):
        self._n = native

    def __repr__(self) -> str:
        if self._n.closed:
            return "<ckptdb.Db closed>"
        mode = "read-only" if self._n.read_only else "writer"
        return f"<ckptdb.Db {self._n.path!r} {mode}>"

    def __enter__(self) -> "Db":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Drops this handle. Arrays already read stay valid; further calls
        raise ``ClosedError``."""
        self._n.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._n.closed

    @property
    def path(self) -> str:
        """The database directory."""
        return self._n.path

    @property
    def read_only(self) -> bool:
        """Whether this handle was opened read-only."""
        return self._n.read_only

    @property
    def steps(self) -> List[int]:
        """The live steps, ascending."""
        return self._n.steps()

    def latest(self) -> Optional["Snapshot"]:
        """The newest live step, or None in an empty database."""
        s = self._n.latest()
        return None if s is None else Snapshot(s)

    def snapshot(self, step: int) -> "Snapshot":
        """Live step ``step`` (``StepNotFoundError`` if there is none)."""
        return Snapshot(self._n.snapshot(step))

    def best(self, metric: str, mode: str = "max") -> Optional["Snapshot"]:
        """The live step with the largest (``mode="max"``) or smallest
        (``"min"``) value of ``metric``; None when no step has it."""
        step = self._n.best(metric, mode)
        return None if step is None else self.snapshot(step)

    def tag(self, step: int, name: str) -> None:
        """Names ``step``; a tagged step survives retention."""
        self._n.tag(step, name)

    def untag(self, name: str) -> int:
        """Removes tag ``name``; returns the step it named."""
        return self._n.untag(name)

    @property
    def tags(self) -> Dict[str, int]:
        """Tag name -> step."""
        return self._n.tags()

    def snapshot_by_tag(self, name: str) -> "Snapshot":
        """The step tag ``name`` points to."""
        return self.snapshot(self._n.tagged_step(name))

    def refresh(self) -> bool:
        """For a read-only handle: picks up steps committed since it opened.
        Returns whether anything changed."""
        return self._n.refresh()

    def history(self, key: str) -> List[int]:
        """The live steps that hold ``key``."""
        return self._n.history(key)

    def verify(self) -> VerifyReport:
        """Reads every live entry and checks its crc32."""
        return VerifyReport(*self._n.verify())

    def compact(self) -> Tuple[int, int, int]:
        """Reclaims space; returns (bytes before, bytes after, segments deleted)."""
        return self._n.compact()

    def disk_usage(self) -> int:
        """Bytes the database's files take on disk."""
        return self._n.disk_usage()

    def begin_step(self, step: int, parent: Union[str, int, None] = "latest") -> "Transaction":
        """Starts step ``step``, which must be greater than every committed
        step (``InvalidArgumentError``, a ``ValueError``, otherwise).

        ``parent="latest"`` starts from the newest step's entries (put what
        changed, ``del`` what goes away), an int from that step's, None from
        nothing. Use it as a context manager: it commits when the block
        ends and aborts if the block raises.
        """
        return Transaction(self._n.begin_step(step, parent))

    def replay_table(
        self,
        name: str,
        schema: str,
        capacity: int,
        page_size: int = 1024,
        alpha: Optional[float] = None,
        at: Optional[int] = None,
    ) -> "ReplayTable":
        """Opens replay table ``name`` as the newest step (or step ``at``)
        recorded it, or empty. ``schema`` is e.g.
        ``"obs: f32[4], action: i64[], reward: f32[], terminated: bool[]"``;
        ``alpha`` makes it prioritized. The stored schema and options must
        match."""
        return ReplayTable(self._n.replay_table(name, schema, capacity, page_size, alpha, at))


class Transaction:
    """One step being written; see :meth:`Db.begin_step`.

    An array is written into the log during the put, straight from its
    buffer (no copy), so the step holds the bytes it had then and the
    caller may change it right after. The step holds the database's writer
    until it commits or aborts: in the same thread, beginning another step,
    tagging, compacting or a manager's save meanwhile is an
    ``InvalidArgumentError`` (it would wait forever); other threads wait.
    Nothing is visible to readers until :meth:`commit` returns, and then
    all of it is, durably.
    """

    def __init__(self, native):
        self._n = native

    @property
    def step(self) -> int:
        """The step this transaction commits."""
        return self._n.step

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._n.finished:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __setitem__(self, key: str, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: str) -> None:
        """Removes ``key`` (inherited from the parent or put earlier)."""
        self._n.remove(key)

    def put(self, key: str, value: Any) -> None:
        """Puts an array: anything with ``__array__`` or ``__dlpack__``
        (numpy, a torch tensor, a jax array) or a nested list."""
        dt, shape, data = to_bytes(as_array(value, key), key)
        self._n.put_tensor(key, dt, shape, data)

    def put_value(self, key: str, obj: Any) -> None:
        """Puts a JSON-serializable value (ints of any size stay exact)."""
        self._n.put_json(key, _dumps(key, obj))

    def put_metric(self, name: str, value: float) -> None:
        """Records a metric of this step (for ``best`` and retention)."""
        self._n.put_metric(name, float(value))

    def put_blob(self, key: str, data: bytes) -> None:
        """Puts raw bytes."""
        self._n.put_blob(key, bytes(data))

    def put_replay(self, table: "ReplayTable") -> None:
        """Records ``table`` in this step as it is when the step commits."""
        self._n.put_replay(table._n)

    def commit(self) -> int:
        """Writes and syncs the step; durable when this returns."""
        return self._n.commit()

    def abort(self) -> None:
        """Drops the step; nothing of it is written."""
        self._n.abort()


class Snapshot:
    """One committed step. ``snap[key]`` is a read-only numpy array over the
    memory map (no copy), valid for as long as the array lives."""

    def __init__(self, native):
        self._n = native

    def __repr__(self) -> str:
        return f"<ckptdb.Snapshot step={self.step} entries={len(self)}>"

    @property
    def step(self) -> int:
        """The step number."""
        return self._n.step

    @property
    def time(self) -> float:
        """Commit time, seconds since the epoch."""
        return self._n.time

    @property
    def metrics(self) -> Dict[str, float]:
        """The step's metrics."""
        return self._n.metrics

    @property
    def tags(self) -> List[str]:
        """Tags naming the step."""
        return self._n.tags

    def keys(self, prefix: str = "") -> List[str]:
        """Keys of the step's entries (optionally under ``prefix``), sorted."""
        return self._n.keys(prefix)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return self._n.len()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._n.contains(key)

    def info(self, key: str) -> Tuple[str, Optional[str], Tuple[int, ...]]:
        """(kind, ckptdb dtype or None, shape) of an entry."""
        kind, dtype, shape = self._n.entry(key)
        return kind, dtype, tuple(shape)

    def __getitem__(self, key: str) -> Any:
        """A tensor as a read-only array over the map; a value decoded; a
        blob as bytes."""
        kind, _, _ = self._n.entry(key)
        if kind == "value":
            return self.value(key)
        if kind == "blob":
            return self.blob(key)
        raw, dtype, shape = self._n.tensor(key)
        return from_bytes(raw, dtype, shape)

    def array(self, key: str, verify: bool = True) -> np.ndarray:
        """The tensor under ``key`` (an error for other kinds). The first
        access in the process checks the payload's crc32; ``verify=False``
        skips that check (bounds and the entry header are still checked),
        for callers who verify the database separately and want the array
        at the same cost for any size."""
        raw, dtype, shape = self._n.tensor(key, verify)
        return from_bytes(raw, dtype, shape)

    def value(self, key: str) -> Any:
        """The JSON value under ``key``."""
        return _json.loads(self._n.json(key))

    def blob(self, key: str) -> bytes:
        """The bytes under ``key``."""
        return self._n.blob(key)

    def to_dict(self, prefix: str = "") -> Dict[str, Any]:
        """Every entry under ``prefix``, keys unchanged (a subset restore)."""
        return {k: self[k] for k in self.keys(prefix)}

    @property
    def replay_tables(self) -> List[str]:
        """Names of the replay tables this step recorded."""
        return self._n.replay_tables()

    def replay(self, name: str) -> "ReplayView":
        """Replay table ``name`` as this step recorded it, read-only."""
        return ReplayView(self._n.replay(name))

    def verify(self) -> List[Tuple[str, str]]:
        """Checks every entry of the step; (key, message) per failure."""
        return self._n.verify()


def _parse_schema(text: str) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
    fields = {}
    for part in text.split(","):
        name, _, ty = part.partition(":")
        ty = ty.strip()
        dtype, _, dims = ty.partition("[")
        dims = dims.rstrip("]").strip()
        shape = tuple(int(d) for d in dims.split(",") if d.strip()) if dims else ()
        fields[name.strip()] = (dtype.strip(), shape)
    return fields


def _batch_dict(out) -> Dict[str, np.ndarray]:
    batch, rest, indices, weights = out
    for name, raw, dt, shape in rest:
        batch[name] = from_bytes(raw, dt, shape)
    batch["indices"] = indices
    if weights is not None:
        batch["weights"] = weights
    return batch


class _Sampling:
    """Sampling shared by tables and views."""

    _n: Any

    def sample(
        self,
        n: int,
        seed: Optional[int] = None,
        beta: Optional[float] = None,
        distinct: bool = False,
    ) -> Dict[str, np.ndarray]:
        """``n`` rows as a dict of arrays (one per field, leading dimension
        ``n``) plus ``indices`` (an (n, 2) array of slot and serial, for
        :meth:`ReplayTable.update_priorities`). Uniform with replacement by
        default, without with ``distinct=True``; with ``beta``, prioritized
        (the table needs ``alpha``) and ``weights`` holds the importance
        weights. ``seed`` makes the draw reproducible."""
        return _batch_dict(self._n.sample(n, seed, distinct, beta))

    def __len__(self) -> int:
        return len(self._n)

    @property
    def name(self) -> str:
        """The table's name."""
        return self._n.name

    @property
    def schema(self) -> str:
        """The table's schema, as text."""
        return self._n.schema

    @property
    def capacity(self) -> int:
        """Rows the ring holds at most."""
        return self._n.capacity

    @property
    def total_inserted(self) -> int:
        """Rows ever pushed (the newest row's serial + 1)."""
        return self._n.total_inserted

    def row(self, i: int) -> Dict[str, np.ndarray]:
        """Row ``i`` (0 = oldest held) as a dict of arrays."""
        raw = np.frombuffer(self._n.row(i), np.uint8)
        out, at = {}, 0
        for name, (dt, shape) in _parse_schema(self.schema).items():
            npdt = numpy_dtype(dt)
            size = int(np.prod(shape, dtype=np.int64)) * npdt.itemsize
            out[name] = raw[at : at + size].view(npdt).reshape(shape).copy()
            at += size
        return out


class ReplayView(_Sampling):
    """A replay table as a step recorded it (read-only)."""

    def __init__(self, native):
        self._n = native


class ReplayTable(_Sampling):
    """A replay table open for pushing; see :meth:`Db.replay_table`.

    Rows go into pages that are written to the log as they fill; a step
    records the table with :meth:`Transaction.put_replay` (or the
    ``replay=`` argument of :class:`CheckpointManager` saves).
    """

    def __init__(self, native):
        self._n = native
        self._fields = _parse_schema(native.schema)

    def _columns(self, values: Mapping[str, Any], batched: bool):
        cols = []
        for name, v in values.items():
            spec = self._fields.get(name)
            if not isinstance(v, np.ndarray) and spec is not None and not hasattr(v, "__array__"):
                # Python scalars and lists take the field's dtype; arrays
                # keep theirs, so a wrong dtype is an error, not a cast.
                try:
                    v = np.asarray(v, dtype=numpy_dtype(spec[0]))
                except (ValueError, TypeError) as e:
                    raise InvalidArgumentError(f"field {name!r}: {e}") from None
            a = as_array(v, name)
            dt, shape, data = to_bytes(a, name)
            cols.append((name, dt, shape, data))
        return cols

    def push(self, **fields: Any) -> None:
        """Appends one row, every field given once by name."""
        self._n.push(self._columns(fields, False), False)

    def push_batch(self, columns: Mapping[str, Any]) -> None:
        """Appends many rows in one call: each field an array whose first
        dimension is the number of rows. Checked in full first."""
        self._n.push(self._columns(columns, True), True)

    def update_priorities(self, indices: Any, priorities: Any) -> int:
        """Sets the priorities of sampled rows (``indices`` as ``sample``
        returned them); rows overwritten since are skipped. Returns how
        many were set."""
        idx = np.asarray(indices, dtype=np.uint64).reshape(-1)
        pri = np.asarray(priorities, dtype=np.float64).reshape(-1)
        return self._n.update_priorities(idx.tolist(), pri.tolist())


def _tensor_args(tensors: Optional[Mapping[str, Any]], prefix: str = ""):
    out = []
    for key, value in (tensors or {}).items():
        full = prefix + key
        dt, shape, data = to_bytes(as_array(value, full), full)
        out.append((full, dt, shape, data))
    return out


def _value_args(values: Optional[Mapping[str, Any]]):
    return [(k, _dumps(k, v)) for k, v in (values or {}).items()]


def _metric_args(metrics: Optional[Mapping[str, float]]):
    return [(k, float(v)) for k, v in (metrics or {}).items()]


class CheckpointManager:
    """When to save, what to keep, what to restore; saves in the background.

    ``keep_best=("eval_return", 2, "max")`` keeps the 2 best steps by that
    metric; ``keep_last`` and ``keep_every`` add up with it (a step
    survives if some rule keeps it). Use it as a context manager: leaving
    the block flushes the last asynchronous save.
    """

    def __init__(
        self,
        path: Union[PathLike, Db],
        save_every_steps: Optional[int] = None,
        keep_last: Optional[int] = None,
        keep_best: Optional[Tuple[str, int, str]] = None,
        keep_every: Optional[int] = None,
        reclaim: bool = True,
    ):
        self.db = path if isinstance(path, Db) else open(path)
        self._n = _native.NativeManager(
            self.db._n, save_every_steps, keep_last, keep_best, keep_every, reclaim
        )

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            try:
                self.flush()
            except Error:
                pass  # the block's own exception is the one to see

    def should_save(self, step: int) -> bool:
        """Whether the schedule saves at ``step``."""
        return self._n.should_save(step)

    def save(
        self,
        step: int,
        tensors: Optional[Mapping[str, Any]] = None,
        metrics: Optional[Mapping[str, float]] = None,
        values: Optional[Mapping[str, Any]] = None,
        replay: Iterable[ReplayTable] = (),
    ) -> int:
        """Commits ``step`` now (durable on return) and applies retention.
        The step holds exactly what is given (nothing is inherited)."""
        return self._n.save(
            step,
            _tensor_args(tensors),
            _value_args(values),
            _metric_args(metrics),
            [t._n for t in replay],
        )

    def save_async(
        self,
        step: int,
        tensors: Optional[Mapping[str, Any]] = None,
        metrics: Optional[Mapping[str, float]] = None,
        values: Optional[Mapping[str, Any]] = None,
        replay: Iterable[ReplayTable] = (),
    ) -> None:
        """Copies the arrays now and commits in the background. An error of
        that commit is raised by the next save or by :meth:`flush`."""
        self._n.save_async(
            step,
            _tensor_args(tensors),
            _value_args(values),
            _metric_args(metrics),
            [t._n for t in replay],
        )

    def flush(self) -> None:
        """Waits for the asynchronous save in flight; raises its error."""
        self._n.flush()

    def tag(self, step: int, name: str) -> None:
        """Names ``step`` (after flushing); tagged steps are always kept."""
        self._n.tag(step, name)

    def restore_latest(self) -> Optional[Snapshot]:
        """The newest step (after flushing), or None."""
        s = self._n.restore_latest()
        return None if s is None else Snapshot(s)

    def restore(self, step: int) -> Snapshot:
        """Step ``step``."""
        return Snapshot(self._n.restore(step))

    def restore_tag(self, name: str) -> Snapshot:
        """The step tag ``name`` points to."""
        return Snapshot(self._n.restore_tag(name))

    def restore_best(self, metric: str, mode: Optional[str] = None) -> Optional[Snapshot]:
        """The best live step by ``metric`` (mode from ``keep_best`` when it
        names this metric, else ``"max"``), or None."""
        s = self._n.restore_best(metric, mode)
        return None if s is None else Snapshot(s)


def _expected_of(into) -> Tuple[Dict[str, Any], bool]:
    if hasattr(into, "state_dict") and callable(into.state_dict):
        return into.state_dict(), True
    return dict(into), False


def _shape_dtype(v) -> Tuple[Tuple[int, ...], str]:
    if type(v).__module__.split(".", 1)[0] == "torch":
        a = as_array(v)
    else:
        a = np.asarray(v)
    from ._arrays import ckpt_dtype

    return tuple(a.shape), ckpt_dtype(a.dtype, "state dict entry")


def save_state_dict(tx: Transaction, prefix: str, state_dict: Mapping[str, Any]) -> None:
    """Puts every array of ``state_dict`` (numpy arrays, torch tensors, ...)
    under ``prefix + key``."""
    for key, value in state_dict.items():
        tx.put(prefix + key, value)


def load_state_dict(
    snap: Snapshot, prefix: str, into: Any = None, strict: bool = True
) -> Dict[str, np.ndarray]:
    """The arrays under ``prefix``, with ``prefix`` stripped from the keys.

    With ``into`` (a dict of arrays, or anything with ``state_dict()`` and
    ``load_state_dict()`` such as a torch module), ``strict`` compares the
    two first: a missing key, an unexpected key, or a shape or dtype that
    differs raises ``StateDictMismatchError`` naming every mismatch, and
    nothing is restored. Then the arrays are copied into ``into`` (in
    place for a dict of numpy arrays, through ``load_state_dict`` for a
    module) and the stored arrays are returned.
    """
    loaded = {}
    for key in snap.keys(prefix):
        if snap.info(key)[0] == "tensor":
            loaded[key[len(prefix) :]] = snap.array(key)
    if into is None:
        return loaded
    expected, is_module = _expected_of(into)
    missing = sorted(k for k in expected if k not in loaded)
    unexpected = sorted(k for k in loaded if k not in expected)
    mismatched = []
    for k in sorted(set(expected) & set(loaded)):
        want_shape, want_dtype = _shape_dtype(expected[k])
        have_shape, have_dtype = _shape_dtype(loaded[k])
        if want_shape != have_shape:
            mismatched.append(f"{k}: shape {have_shape} stored, {want_shape} expected")
        elif want_dtype != have_dtype:
            mismatched.append(f"{k}: dtype {have_dtype} stored, {want_dtype} expected")
    if strict and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            parts.append("mismatched: " + "; ".join(mismatched))
        raise StateDictMismatchError(
            f"state dict under {prefix!r} of step {snap.step} does not match: " + "; ".join(parts),
            missing,
            unexpected,
            mismatched,
        )
    usable = {k: v for k, v in loaded.items() if k in expected and k not in dict.fromkeys(m.split(":")[0] for m in mismatched)}
    if is_module:
        import torch  # into is a torch module: torch is installed

        tensors = {}
        for k, v in usable.items():
            if v.dtype.name == "bfloat16":
                tensors[k] = torch.from_numpy(v.view(np.int16).copy()).view(torch.bfloat16)
            else:
                tensors[k] = torch.from_numpy(v.copy())
        into.load_state_dict(tensors, strict=strict)
    else:
        for k, v in usable.items():
            target = expected[k]
            if isinstance(target, np.ndarray) and target.flags.writeable:
                np.copyto(target, v)
            else:
                into[k] = v
    return loaded
