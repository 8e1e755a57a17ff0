"""The exceptions of ckptdb: one class per variant of the Rust ``Error``.

Every exception is a :class:`Error`; some are also the built-in exception a
Python caller would catch for that kind of mistake (a missing key is a
``KeyError``, a dtype mismatch a ``TypeError``, a bad argument a
``ValueError``, an I/O error an ``OSError`` with ``errno``). The message is
the Rust message, unchanged.
"""


class Error(Exception):
    """Base class of every ckptdb error."""

    def __str__(self) -> str:
        # KeyError would print the repr of its argument; every ckptdb error
        # prints its message as it is.
        return str(self.args[0]) if self.args else ""


class CorruptionError(Error):
    """Bytes on disk do not have the structure the format requires."""


class ChecksumMismatchError(CorruptionError):
    """A payload or header does not match its stored crc32."""


class MisalignedError(CorruptionError):
    """A payload is not aligned for its element type."""


class NotFoundError(Error, KeyError):
    """A step, key, tag, replay table or metric does not exist."""


class StepNotFoundError(NotFoundError):
    """No live step with this number."""


class KeyNotFoundError(NotFoundError):
    """The step holds no entry under this key."""


class DtypeMismatchError(Error, TypeError):
    """A typed access or a load asked for another dtype than the stored one."""


class ShapeMismatchError(Error, ValueError):
    """A shape does not match what it must match."""


class LockedError(Error):
    """Another writer holds the database's lock."""


class IncompatibleVersionError(Error):
    """A file was written by a newer version of the format."""


class NotADatabaseError(Error):
    """The path is not a ckptdb database."""


class InvalidFileError(Error, ValueError):
    """A foreign file (safetensors, npy) is not valid; the message says why."""


class LostCommitsError(CorruptionError):
    """Durable commits are missing from the log; the message names the lost
    steps and the ways forward."""


class InvalidArgumentError(Error, ValueError):
    """An argument is out of its domain (a non-increasing step, a bad key, ...)."""


class ValueDecodeError(Error, ValueError):
    """A stored value does not decode."""


class ReadOnlyError(Error):
    """The operation needs a writer, but the database is open read-only."""


class PoisonedError(Error):
    """An earlier I/O error left the writer in an unknown state; reopen."""


class CatalogError(Error):
    """The derived catalog failed; reopening rebuilds it."""


class RemoteError(Error, OSError):
    """An operation on S3-compatible object storage failed. ``kind`` says
    how: ``"invalid_url"``, ``"bucket_not_found"``, ``"credentials"``,
    ``"unreachable"``, ``"conflict"`` (another writer owns that generation),
    ``"not_found"`` (no database there, or an object it names is missing),
    ``"corrupt"``, ``"diverged"`` (the local and remote copies differ) or
    ``"other"``."""

    kind = "other"


class IoError(Error, OSError):
    """An operating-system I/O error; ``errno`` is set when the OS gave one."""


class ClosedError(Error, ValueError):
    """The database handle was closed."""


class StateDictMismatchError(Error, ValueError):
    """A strict state-dict load found missing, unexpected or different keys."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


class UnsupportedDtypeError(Error, TypeError):
    """The value has a dtype (or is an object) that ckptdb cannot store."""


class InternalError(Error):
    """A bug inside ckptdb (a Rust panic), caught before it could take the
    interpreter down. The database handle stays usable for reads; reopen a
    writer before writing again."""
