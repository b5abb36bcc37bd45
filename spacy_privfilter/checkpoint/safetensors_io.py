"""Minimal safetensors reading and streaming writing in numpy (bfloat16 as raw bits), with clear file errors.

The header is checked before any tensor is read, so a truncated or corrupt file fails with an error naming the
file rather than deep inside a framework. Writing streams one tensor at a time, so a full-size checkpoint never
has to sit in memory at once.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import CheckpointError
from .affine import from_bfloat16_bits

NUMPY_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
    "BOOL": np.bool_,
}
ITEM_SIZE = {name: np.dtype(dt).itemsize for name, dt in NUMPY_DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class FileRegion:
    """Where a tensor's bytes lie in a file, plus the file's size and mtime when it was loaded."""

    path: Path
    offset: int
    nbytes: int
    file_size: int
    mtime_ns: int

    def read_rows(self, rows: Sequence[int], row_bytes: int) -> np.ndarray:
        """uint8 [len(rows), row_bytes]: rows of a row-major tensor, read with one positioned read each.

        Reading instead of mapping keeps only what is asked for in memory (a mapped page drags its
        neighbours in). A file changed since loading is an error, never silently different weights.
        """
        out = np.empty((len(rows), row_bytes), dtype=np.uint8)
        try:
            with self._open() as handle:
                for i, row in enumerate(rows):
                    start = row * row_bytes
                    if not 0 <= start < self.nbytes:
                        raise IndexError(f"row {row} is outside a tensor of {self.nbytes // row_bytes} rows")
                    data = _pread(handle, row_bytes, self.offset + start)
                    if len(data) != row_bytes:
                        raise _corrupt(self.path, "a tensor is cut short")
                    out[i] = np.frombuffer(data, dtype=np.uint8)
        except OSError as exc:
            raise CheckpointError(f"cannot read weight file '{self.path.name}': {exc.strerror or exc}") from exc
        return out

    def read_range(self, start: int, nbytes: int, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 [nbytes]: bytes [start, start + nbytes) of the tensor, read (positioned) into ``out`` if given."""
        if not (0 <= start and start + nbytes <= self.nbytes):
            raise IndexError(f"bytes [{start}, {start + nbytes}) are outside a tensor of {self.nbytes} bytes")
        buffer = np.empty(nbytes, dtype=np.uint8) if out is None else out.reshape(-1)[:nbytes]
        view, done = memoryview(buffer), 0
        try:
            with self._open() as handle:
                while done < nbytes:
                    if hasattr(os, "preadv"):
                        got = os.preadv(handle.fileno(), [view[done:]], self.offset + start + done)
                    else:
                        data = _pread(handle, nbytes - done, self.offset + start + done)
                        view[done:done + len(data)] = data
                        got = len(data)
                    if got <= 0:
                        raise _corrupt(self.path, "a tensor is cut short")
                    done += got
        except OSError as exc:
            raise CheckpointError(f"cannot read weight file '{self.path.name}': {exc.strerror or exc}") from exc
        return buffer

    def _open(self) -> Any:
        """The file, opened unbuffered; CheckpointError when it changed since loading (never other weights)."""
        handle = open(self.path, "rb", buffering=0)
        stat = os.fstat(handle.fileno())
        if (stat.st_size, stat.st_mtime_ns) != (self.file_size, self.mtime_ns):
            handle.close()
            raise CheckpointError(f"weight file '{self.path.name}' changed on disk after the model was "
                                  "loaded; load the model again")
        return handle


def _pread(handle: Any, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(handle.fileno(), size, offset)
    handle.seek(offset)  # Windows: no pread; the handle is private to one call
    return handle.read(size)


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]
    data_start: int

    def region(self, name: str) -> FileRegion:
        """The bytes of tensor ``name`` in this file (for reading parts of it without mapping the file)."""
        entry, stat = self.tensors[name], self.path.stat()
        return FileRegion(self.path, self.data_start + entry.start, entry.end - entry.start, stat.st_size,
                          stat.st_mtime_ns)


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"weight file '{path.name}' is truncated or corrupt ({why}); download it again or re-export the checkpoint")


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and validate the header of a ``.safetensors`` file (no tensor data is read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _corrupt(path, f"file is only {size} bytes")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(MAX_HEADER_BYTES, size - 8):
                raise _corrupt(path, f"header claims {header_len} bytes but the file has {size}")
            raw = handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"cannot read weight file '{path.name}': {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also JSON numbers of 4,300+ digits
        raise _corrupt(path, "header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(path, "header field '__metadata__' must map names to strings")
    data_start = 8 + header_len
    tensors = {name: _entry(path, name, spec, size - data_start) for name, spec in header.items()}
    _check_disjoint(path, tensors)
    data_len = max((t.end for t in tensors.values()), default=0)
    if data_start + data_len > size:
        raise _corrupt(path, f"expected {data_start + data_len} bytes, found {size}")
    return SafetensorsHeader(path, tensors, dict(metadata), data_start)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(path: Path, name: str, spec: Any, data_size: int) -> TensorEntry:
    """One header entry, every field type- and range-checked (a crafted header must not crash the reader)."""
    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= set(spec):
        raise _corrupt(path, f"bad header entry for tensor '{name}' (needs dtype, shape and data_offsets)")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str):
        raise _corrupt(path, f"tensor '{name}': field 'dtype' must be a string")
    if dtype not in ITEM_SIZE:
        raise CheckpointError(f"weight file '{path.name}': tensor '{name}' has unsupported dtype {dtype[:20]!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _corrupt(path, f"tensor '{name}': field 'shape' must be a list of integers >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise _corrupt(path, f"tensor '{name}': field 'data_offsets' must be two integers [start, end]")
    start, end = offsets
    nbytes = math.prod(shape) * ITEM_SIZE[dtype]  # Python ints: huge dimensions cannot overflow
    if not 0 <= start <= end <= data_size or end - start != nbytes:
        raise _corrupt(path, f"tensor '{name}' has inconsistent offsets (shape {len(shape)}-d, "
                             f"{nbytes} bytes expected)")
    return TensorEntry(dtype, tuple(shape), start, end)


def _check_disjoint(path: Path, tensors: Mapping[str, TensorEntry]) -> None:
    """Two tensors sharing bytes would alias each other's data."""
    spans = sorted((t.start, t.end, name) for name, t in tensors.items() if t.end > t.start)
    for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise _corrupt(path, f"tensors '{name_a}' and '{name_b}' overlap in the data section")


def read_numpy(header: SafetensorsHeader, name: str) -> np.ndarray:
    """Read one tensor as numpy; bfloat16 is upcast to float32 (numpy has no bfloat16)."""
    entry = header.tensors[name]
    count = int(np.prod(entry.shape, dtype=np.int64))
    with open(header.path, "rb") as handle:
        handle.seek(header.data_start + entry.start)
        data = np.fromfile(handle, dtype=np.dtype(NUMPY_DTYPES[entry.dtype]).newbyteorder("<"), count=count)
    if data.size != count:
        raise _corrupt(header.path, f"tensor '{name}' is cut short")
    data = data.reshape(entry.shape)
    return from_bfloat16_bits(data) if entry.dtype == "BF16" else data.astype(data.dtype.newbyteorder("="))


@dataclass(frozen=True)
class PendingTensor:
    """A tensor to write: its safetensors dtype, shape and a function producing the numpy data.

    For ``dtype="BF16"`` the producer returns uint16 bit patterns.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray]


def write_safetensors(path: str | os.PathLike, tensors: Iterable[PendingTensor],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Stream tensors into ``path`` (written under a temporary name, renamed when complete)."""
    path = Path(path)
    pending = list(tensors)
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for t in pending:
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * ITEM_SIZE[t.dtype]
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the reference writer pads the header to 8 bytes
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for t in pending:
            data = np.ascontiguousarray(t.produce(), dtype=NUMPY_DTYPES[t.dtype])
            if tuple(data.shape) != tuple(t.shape):
                raise CheckpointError(f"tensor '{t.name}' has shape {list(data.shape)}, expected {list(t.shape)}")
            data.astype(data.dtype.newbyteorder("<"), copy=False).tofile(handle)
    os.replace(tmp, path)
    return path
