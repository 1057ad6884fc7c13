"""Intel ISA-L's Reed-Solomon kernels (`ec_encode_data`) through ctypes, for any GF(2^8) matrix,
and its CRC32 (`crc32_gzip_refl`) for the S3 CRC32 checksum.

ISA-L computes output blocks as GF(2^8) dot products (polynomial 0x11d, zfec's field) of
the input blocks with a coefficient matrix, at several GB/s with SIMD, and ctypes releases
the GIL for the call. Giving it zfec's own generator matrix makes its blocks byte-identical
to zfec's, so it is a faster implementation of the same code, not a new format.

The library is found in pyeclib's manylinux wheel (which bundles it as
`pyeclib.libs/libisal*.so*`) or as the system's `libisal` (Debian: libisal2); `load()`
answers None when neither is there and callers fall back to zfec.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import importlib.util
import logging
import os
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer: how any bytes-like object's address is read without a copy."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None
_PYBUF_SIMPLE, _PYBUF_WRITABLE = 0, 1


class _Pinned:
    """Buffers held (exported) for the duration of one library call, and their addresses."""

    def __init__(self) -> None:
        self._held: list[_PyBuffer] = []

    def address(self, obj: Buffer, writable: bool = False) -> int:
        view = _PyBuffer()
        _get_buffer(obj, ctypes.byref(view), _PYBUF_WRITABLE if writable else _PYBUF_SIMPLE)
        self._held.append(view)
        return view.buf or 0

    def __enter__(self) -> _Pinned:
        return self

    def __exit__(self, *_exc: object) -> None:
        for view in self._held:
            _release_buffer(ctypes.byref(view))
        self._held.clear()


def _candidates() -> list[str]:
    """Where libisal may be: pyeclib's bundled copy first, then the system's."""
    found: list[str] = []
    spec = importlib.util.find_spec("pyeclib")  # locates without importing pyeclib
    if spec is not None and spec.submodule_search_locations:
        for where in spec.submodule_search_locations:
            found += sorted(glob.glob(os.path.join(os.path.dirname(where), "pyeclib.libs",
                                                   "libisal*.so*")))
    system = ctypes.util.find_library("isal")
    if system:
        found.append(system)
    return found


def _over_buffer(crc: Any, data: Buffer, value: int) -> int:
    """ISA-L's checksum `crc(value, pointer, length)` over `data`'s bytes, without a copy:
    the buffer is held only for the call."""
    view = _PyBuffer()
    _get_buffer(data, ctypes.byref(view), _PYBUF_SIMPLE)
    try:
        return int(crc(value, view.buf, view.len))
    finally:
        _release_buffer(ctypes.byref(view))


class IsaL:
    """The few ISA-L entry points the codec uses, with their C signatures."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.path = path
        self._init_tables = lib.ec_init_tables
        self._init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                      ctypes.c_void_p]
        self._init_tables.restype = None
        self._encode = lib.ec_encode_data
        self._encode.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_void_p]
        self._encode.restype = None
        self._invert = lib.gf_invert_matrix
        self._invert.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        self._invert.restype = ctypes.c_int
        self._crc32 = getattr(lib, "crc32_gzip_refl", None)  # absent from EC-only builds
        if self._crc32 is not None:
            self._crc32.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint64]
            self._crc32.restype = ctypes.c_uint32
        # CRC-64/NVME is ISA-L's "rocksoft" CRC64 (same polynomial, reflection and xors)
        self._crc64 = getattr(lib, "crc64_rocksoft_refl", None)
        if self._crc64 is not None:
            self._crc64.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64]
            self._crc64.restype = ctypes.c_uint64

    @property
    def has_crc32(self) -> bool:
        return self._crc32 is not None

    @property
    def has_crc64nvme(self) -> bool:
        return self._crc64 is not None

    def crc32(self, data: Buffer, value: int = 0) -> int:
        """`zlib.crc32(data, value)` (the gzip polynomial, same results, chainable) with
        ISA-L's carry-less-multiply kernel: ~8x zlib's speed on this machine."""
        return _over_buffer(self._crc32, data, value)

    def crc64nvme(self, data: Buffer, value: int = 0) -> int:
        """S3's CRC64NVME of `data` continuing from `value` (awscrt's crc64nvme, same
        results), without loading awscrt's ~5 MiB library into the worker."""
        return _over_buffer(self._crc64, data, value)

    def tables(self, k: int, rows: int, coefficients: bytes) -> ctypes.Array[ctypes.c_char]:
        """Expanded multiplication tables for a `rows` x `k` coefficient matrix."""
        assert len(coefficients) == rows * k
        out = ctypes.create_string_buffer(32 * k * rows)
        self._init_tables(k, rows, coefficients, out)
        return out

    def invert(self, matrix: bytes, n: int) -> bytes:
        """The inverse of an n x n GF(2^8) matrix; ValueError when it is singular."""
        work = ctypes.create_string_buffer(matrix, n * n)  # ISA-L overwrites its input
        out = ctypes.create_string_buffer(n * n)
        if self._invert(work, out, n) != 0:
            raise ValueError("singular matrix")
        return out.raw

    def apply(self, tables: ctypes.Array[ctypes.c_char], k: int, length: int,
              inputs: Sequence[tuple[Buffer, int]], outputs: Sequence[Buffer]) -> None:
        """outputs[r] = sum_j matrix[r][j] * inputs[j] over `length` bytes.

        Each input is (buffer, byte offset into it), so views of one sealed segment need
        no copy; outputs are writable buffers of at least `length` bytes.
        """
        assert len(inputs) == k and length > 0
        with _Pinned() as pin:
            src = (ctypes.c_void_p * k)(*[pin.address(buf) + off for buf, off in inputs])
            dst = (ctypes.c_void_p * len(outputs))(
                *[pin.address(buf, writable=True) for buf in outputs])
            self._encode(length, k, len(outputs), tables, src, dst)


@functools.cache
def load() -> IsaL | None:
    """ISA-L if a usable copy is installed (cached for the process), else None."""
    for path in _candidates():
        try:
            return IsaL(ctypes.CDLL(path), path)
        except (OSError, AttributeError) as exc:  # unloadable, or a library without EC
            log.warning("cannot use ISA-L at %s: %s", path, exc)
    return None
