"""Conversions between array-like objects and the bytes the engine stores.

Input: anything numpy can view (``__array__``, ``__dlpack__``, a CPU torch
tensor, a jax array, nested lists). Output: numpy arrays of the stored
dtype, bfloat16 through ``ml_dtypes``.
"""

import warnings

import numpy as np

from ._errors import InvalidArgumentError, UnsupportedDtypeError

try:  # bfloat16 for numpy; optional.
    import ml_dtypes as _ml_dtypes

    _BF16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    _ml_dtypes = None
    _BF16 = None

# numpy dtype name -> ckptdb dtype name.
_TO_CKPT = {
    "bool": "bool",
    "uint8": "u8",
    "int8": "i8",
    "uint16": "u16",
    "int16": "i16",
    "uint32": "u32",
    "int32": "i32",
    "uint64": "u64",
    "int64": "i64",
    "float16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "float64": "f64",
}
_TO_NUMPY = {v: k for k, v in _TO_CKPT.items()}


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a ckptdb dtype name (``"f32"``, ``"bf16"``, ...)."""
    # Looked up on every array read and every sampled column: cached.
    dt = _NUMPY_DTYPES.get(name)
    if dt is not None:
        return dt
    dt = _numpy_dtype(name)
    if name != "bf16" or _BF16 is not None:  # keep warning without ml_dtypes
        _NUMPY_DTYPES[name] = dt
    return dt


_NUMPY_DTYPES: dict = {}


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bf16":
        if _BF16 is None:
            warnings.warn(
                "ml_dtypes is not installed: bf16 arrays are returned as their uint16 bits",
                stacklevel=3,
            )
            return np.dtype("<u2")
        return _BF16
    try:
        return np.dtype(_TO_NUMPY[name]).newbyteorder("<")
    except KeyError:
        raise UnsupportedDtypeError(f"unknown ckptdb dtype {name!r}") from None


def ckpt_dtype(dtype: np.dtype, key: str) -> str:
    """The ckptdb dtype name of a numpy dtype, or ``UnsupportedDtypeError``."""
    name = _TO_CKPT.get(dtype.name) if dtype.fields is None else None
    if name is None:
        raise UnsupportedDtypeError(
            f"{key!r}: numpy dtype {dtype} cannot be stored; ckptdb stores "
            + ", ".join(sorted(_TO_CKPT))
        )
    return name


def _is_torch(obj) -> bool:
    # Checked by module name so that torch is never imported here.
    return type(obj).__module__.split(".", 1)[0] == "torch"


def _from_torch(t) -> np.ndarray:
    import torch  # only reached with a torch tensor in hand

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        if _BF16 is None:
            raise UnsupportedDtypeError("storing a bfloat16 tensor needs ml_dtypes")
        return t.view(torch.int16).numpy().view(_BF16)
    return t.numpy()


def as_array(obj, key: str = "array") -> np.ndarray:
    """``obj`` as a numpy array, without a copy where numpy allows one."""
    if isinstance(obj, np.ndarray):
        a = obj
    elif _is_torch(obj):
        a = _from_torch(obj)
    elif hasattr(obj, "__dlpack__") and not isinstance(obj, (np.generic, bytes)):
        try:
            a = np.from_dlpack(obj)
        except (BufferError, TypeError, RuntimeError):
            a = np.asarray(obj)
    else:
        if isinstance(obj, (str, bytes, dict)):
            raise UnsupportedDtypeError(
                f"{key!r}: a {type(obj).__name__} is not an array; use put_value or put_blob"
            )
        try:
            a = np.asarray(obj)
        except ValueError as e:
            raise InvalidArgumentError(f"{key!r}: not a rectangular array: {e}") from None
    if a.dtype.hasobject:
        raise UnsupportedDtypeError(
            f"{key!r}: an object array (ragged or mixed input) cannot be stored"
        )
    return a


def to_bytes(a: np.ndarray, key: str):
    """(ckptdb dtype, shape, 1-d uint8 array of little-endian row-major bytes)."""
    dt = ckpt_dtype(a.dtype, key)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    shape = [int(d) for d in a.shape]
    flat = np.ascontiguousarray(a).reshape(-1)
    return dt, shape, flat.view(np.uint8)


def from_bytes(raw: np.ndarray, dtype: str, shape) -> np.ndarray:
    """The array of ``dtype`` and ``shape`` over ``raw`` (no copy)."""
    return raw.view(numpy_dtype(dtype)).reshape(shape)
