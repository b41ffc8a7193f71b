"""Integrity of image files before ITK reads them.

ITK's NIfTI reader fills the voxels missing from a truncated file with zeros and reads NaN/inf
as 0, without an error. :func:`verify_file` checks, before ITK reads a file, that

- a gzip stream (``.nii.gz``, gzip-encoded NRRD) is complete and its CRC-32 and length match,
  and a zlib stream (MetaImage ``CompressedData``) is complete and its checksum matches;
- the file holds exactly the voxel data its header implies (NIfTI-1/-2 in either byte order,
  NRRD and MetaImage with raw or compressed data, attached or in a detached data file);
- a NIfTI file holds no NaN or inf voxel values.

Every problem raises :class:`~monai_qc.errors.QCInputError` naming the file. Files are
streamed in chunks, never held whole in memory.
"""

from __future__ import annotations

import logging
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from monai_qc.errors import QCInputError

__all__ = ["verify_file"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 22  # bytes per read; a multiple of every voxel size
_HEADER_LIMIT = 1 << 20  # text headers longer than this are left to ITK
_GZIP_MAGIC = b"\x1f\x8b"

#: NIfTI datatype code -> (bytes per voxel, numpy float type of its components or None).
_NIFTI_TYPES: dict[int, tuple[int, str | None]] = {
    2: (1, None), 4: (2, None), 8: (4, None), 16: (4, "f4"), 32: (8, "f4"), 64: (8, "f8"),
    128: (3, None), 256: (1, None), 512: (2, None), 768: (4, None), 1024: (8, None),
    1280: (8, None), 1536: (16, None), 1792: (16, "f8"), 2048: (32, None), 2304: (4, None),
}  # fmt: skip

_META_TYPES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
    "MET_UINT": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip
_META_BOOLEANS = ("CompressedData", "BinaryData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB")


def verify_file(path: Path) -> None:
    """Check the integrity of an image file by its name's ending (others are not checked).

    Raises:
        QCInputError: naming ``path`` and the problem (truncated, extra bytes, corrupt
            compressed data, NaN/inf in NIfTI voxels, an inconsistent header).
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _verify_nifti(path)
    elif name.endswith((".nrrd", ".nhdr")):
        _verify_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _verify_metaimage(path)


# --- streams ------------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def _inflate(raw: BinaryIO, wbits: int, members: bool) -> Iterator[bytes]:
    """Decompressed chunks of the compressed stream ``raw`` (several gzip members if
    ``members``); its checksums are verified as it ends.

    Raises:
        EOFError: the stream ends before its end (and checksum).
        zlib.error: the stream is corrupt, or bytes follow it that are no gzip member.
    """
    inflater = zlib.decompressobj(wbits)
    data = b""
    while True:
        data = data or inflater.unconsumed_tail or raw.read(_CHUNK)
        if not data:
            raise EOFError("compressed stream ends early")
        out = inflater.decompress(data, _CHUNK)
        data = b""
        if out:
            yield out
        if not inflater.eof:
            continue
        rest = inflater.unused_data
        if len(rest) < 2:
            rest += raw.read(2)
        if not rest:
            return
        if not (members and rest[:2] == _GZIP_MAGIC):
            raise zlib.error("bytes follow the end of the compressed stream")
        inflater, data = zlib.decompressobj(wbits), rest


def _stream_error(path: Path, what: str, error: Exception, implied: int, got: int) -> QCInputError:
    """The error for a compressed stream that ended early or is corrupt."""
    if isinstance(error, EOFError):
        if got < implied:
            return QCInputError(
                path,
                f"is truncated: header implies {implied} bytes of voxel data, "
                f"file holds {got} before its {what} stream ends",
            )
        return QCInputError(path, f"is truncated: its {what} stream ends before its checksum")
    return QCInputError(path, f"has corrupt {what} data: {error}")


def _check_size(path: Path, implied: int, held: int, what: str = "voxel data") -> None:
    if held < implied:
        raise QCInputError(
            path,
            f"is truncated: header implies {implied} bytes of {what}, file holds {max(held, 0)}",
        )
    if held > implied:
        raise QCInputError(
            path,
            f"holds {held} bytes of {what} where its header implies {implied}; "
            "the header does not describe the data",
        )


def _consume(path: Path, raw: BinaryIO, implied: int, what: str, wbits: int) -> None:
    """Decompress ``raw`` to its end: complete, checksum-valid and ``implied`` bytes long."""
    got = 0
    try:
        for chunk in _inflate(raw, wbits, members=what == "gzip"):
            got += len(chunk)
    except (EOFError, zlib.error) as error:
        raise _stream_error(path, what, error, implied, got) from error
    _check_size(path, implied, got)


# --- NIfTI ---------------------------------------------------------------------------------


def _nifti_header(path: Path, head: bytes) -> tuple[int, int, int, str, str | None]:
    """``(header size, vox_offset, data bytes, byte order, float type)`` of a NIfTI header."""
    for order in "<>":
        if len(head) >= 4 and struct.unpack(order + "i", head[:4])[0] in (348, 540):
            break
    else:
        raise QCInputError(path, "cannot be read: it has no NIfTI-1 or NIfTI-2 header")
    hdr_size = struct.unpack(order + "i", head[:4])[0]
    if len(head) < hdr_size:
        raise QCInputError(
            path, f"is truncated: it holds {len(head)} bytes of its {hdr_size}-byte header"
        )
    if hdr_size == 348:
        dims = struct.unpack(order + "8h", head[40:56])
        datatype = struct.unpack(order + "h", head[70:72])[0]
        vox = struct.unpack(order + "f", head[108:112])[0]
        if not math.isfinite(vox):
            raise QCInputError(path, f"has a header with vox_offset {vox}")
        offset = int(vox)
    else:
        datatype = struct.unpack(order + "h", head[12:14])[0]
        dims = struct.unpack(order + "8q", head[16:80])
        offset = struct.unpack(order + "q", head[168:176])[0]
    if not 1 <= dims[0] <= 7:
        raise QCInputError(path, f"has a header with dim[0] = {dims[0]} (1 to 7 expected)")
    if any(d < 1 for d in dims[1 : dims[0] + 1]):
        raise QCInputError(path, f"has a header with an empty dimension: dim = {list(dims)}")
    if datatype not in _NIFTI_TYPES:
        raise QCInputError(path, f"has a header with unknown datatype {datatype}")
    if offset < hdr_size:
        raise QCInputError(path, f"has a header whose vox_offset {offset} lies inside the header")
    voxel_bytes, float_type = _NIFTI_TYPES[datatype]
    implied = math.prod(dims[1 : dims[0] + 1]) * voxel_bytes
    return hdr_size, offset, implied, order, float_type


def _verify_nifti(path: Path) -> None:
    compressed = _is_gzip(path)
    with open(path, "rb") as raw:
        if not compressed:
            _, offset, implied, _, float_type = _nifti_header(path, raw.read(540))
            if float_type is None:  # nothing to decompress or to scan
                _check_size(path, implied, path.stat().st_size - offset)
                return
            raw.seek(0)
        chunks = _inflate(raw, 31, members=True) if compressed else _chunks(raw)
        seen = implied = offset = bad = 0  # seen: bytes of the (decompressed) file so far
        dtype: np.dtype | None = None
        carry = b""  # bytes of an incomplete value at the end of the last chunk
        try:
            for chunk in chunks:
                start, seen = seen, seen + len(chunk)
                if start < 540 and not implied:  # the header may span several chunks
                    carry += chunk
                    if seen < 540:
                        continue
                    _, offset, implied, order, float_type = _nifti_header(path, carry)
                    dtype = np.dtype(order + float_type) if float_type else None
                    chunk, start, carry = carry, 0, b""
                if dtype is None or start >= offset + implied or seen <= offset:
                    continue
                piece = carry + chunk[max(offset - start, 0) : offset + implied - start]
                usable = len(piece) - len(piece) % dtype.itemsize
                values = np.frombuffer(piece[:usable], dtype=dtype)
                bad += values.size - int(np.count_nonzero(np.isfinite(values)))
                carry = piece[usable:]
            if not implied:  # a file shorter than 540 bytes
                _, offset, implied, order, float_type = _nifti_header(path, carry)
                _check_size(path, implied, seen - offset)
                if float_type:
                    values = np.frombuffer(carry[offset : offset + implied], order + float_type)
                    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        except (EOFError, zlib.error) as error:
            raise _stream_error(path, "gzip", error, implied, max(seen - offset, 0)) from error
    _check_size(path, implied, seen - offset)
    if bad:
        raise QCInputError(
            path,
            f"contains {bad} non-finite voxel values (NaN or inf), which ITK's NIfTI reader "
            "would silently read as 0",
        )


# --- NRRD ----------------------------------------------------------------------------------


def _text_header(path: Path, end: Callable[[str], bool]) -> tuple[list[str], int] | None:
    """Lines of a text header up to the line where ``end`` is true, and the offset after it."""
    lines: list[str] = []
    offset = 0
    with open(path, "rb") as f:
        while offset < _HEADER_LIMIT:
            raw = f.readline(_HEADER_LIMIT)
            if not raw:
                return lines, offset
            offset += len(raw)
            line = raw.rstrip(b"\r\n").decode("latin-1")
            lines.append(line)
            if end(line):
                return lines, offset
    return None


def _nrrd_type_size(name: str) -> int | None:
    name = " ".join(name.lower().split()).removesuffix("_t")
    if "char" in name or name in ("int8", "uint8"):
        return 1
    if "short" in name or name in ("int16", "uint16"):
        return 2
    if "long" in name or name in ("int64", "uint64"):
        return 8
    if name in ("float", "double"):
        return 4 if name == "float" else 8
    if name in ("int", "uint", "signed int", "unsigned int", "int32", "uint32"):
        return 4
    return None


def _verify_nrrd(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(4) != b"NRRD":
            return  # left to ITK
    parsed = _text_header(path, lambda line: line == "")
    if parsed is None:
        return
    lines, data_start = parsed
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ": " not in line:
            continue
        key, value = line.split(": ", 1)
        fields[key.strip().lower().replace(" ", "")] = value.strip()
    size = _nrrd_type_size(fields.get("type", ""))
    encoding = fields.get("encoding", "").lower()
    skips = (fields.get("lineskip", "0"), fields.get("byteskip", "0"))
    try:
        sizes = [int(s) for s in fields.get("sizes", "").split()]
    except ValueError:
        return  # ITK reports it
    if size is None or not sizes or encoding not in ("raw", "gzip", "gz") or skips != ("0", "0"):
        logger.debug("%s: NRRD header not verified (type, encoding or skips)", path)
        return
    data_file = fields.get("datafile")
    if data_file is not None:
        if " " in data_file or "%" in data_file or data_file.upper().startswith("LIST"):
            return  # several data files: left to ITK
        target, offset = path.parent / data_file, 0
        if not target.is_file():
            raise QCInputError(path, f"names a data file {target} that does not exist")
    else:
        if lines[-1] != "":
            _check_size(path, math.prod(sizes) * size, 0)
        target, offset = path, data_start
    _verify_data(path, target, offset, math.prod(sizes) * size, encoding != "raw")


def _verify_data(path: Path, target: Path, offset: int, implied: int, compressed: bool) -> None:
    """Raw data must hold ``implied`` bytes; gzip data must decompress to them."""
    if not compressed:
        _check_size(path, implied, target.stat().st_size - offset)
        return
    with open(target, "rb") as raw:
        raw.seek(offset)
        _consume(path, raw, implied, "gzip", 31)


# --- MetaImage -----------------------------------------------------------------------------


def _meta_bool(path: Path, key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise QCInputError(path, f"has a header with {key} = {value!r} (True or False expected)")
    return lowered in ("true", "1")


def _verify_metaimage(path: Path) -> None:
    parsed = _text_header(path, lambda line: line.split("=", 1)[0].strip() == "ElementDataFile")
    if parsed is None:
        return  # left to ITK
    lines, data_start = parsed
    fields = {}
    for line in lines:
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    if "ElementDataFile" not in fields:
        return  # not a MetaImage header, or cut short: ITK reports it
    flags = {k: _meta_bool(path, k, fields[k]) for k in _META_BOOLEANS if k in fields}
    size = _META_TYPES.get(fields.get("ElementType", ""))
    try:
        ndims = int(fields.get("NDims", "0"))
        dims = [int(s) for s in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        header_size = int(fields.get("HeaderSize", "0"))
        compressed_size = (
            int(fields["CompressedDataSize"]) if "CompressedDataSize" in fields else None
        )
    except ValueError:
        return  # ITK reports it
    if len(dims) != ndims:
        raise QCInputError(path, f"has a header with NDims = {ndims} but DimSize {dims}")
    if size is None or not flags.get("BinaryData", True) or header_size != 0:
        logger.debug("%s: MetaImage header not verified (type, ASCII data or HeaderSize)", path)
        return
    data_file = fields["ElementDataFile"]
    if data_file == "LOCAL":
        target, offset = path, data_start
    elif " " in data_file or "%" in data_file or data_file.upper() == "LIST":
        return  # several data files: left to ITK
    else:
        target, offset = path.parent / data_file, 0
        if not target.is_file():
            raise QCInputError(path, f"names a data file {target} that does not exist")
    implied = math.prod(dims) * channels * size
    if not flags.get("CompressedData", False):
        _check_size(path, implied, target.stat().st_size - offset)
        return
    held = target.stat().st_size - offset
    if compressed_size is not None:
        _check_size(path, compressed_size, held, "compressed voxel data")
    with open(target, "rb") as raw:
        raw.seek(offset)
        _consume(path, raw, implied, "zlib", 47)  # zlib or gzip header, as MetaIO accepts
