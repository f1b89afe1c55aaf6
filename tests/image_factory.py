"""Image files written byte by byte, in layouts Pillow does not write (16-bit colour PNG or PPM, WhiteIsZero or float16 TIFF),
for reader edge cases (never as model evidence)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def write_png(path: Path, pixels: np.ndarray, colour_type: int, *, size: tuple[int, int] | None = None) -> Path:
    """A 16-bit PNG of ``pixels`` (rows, columns[, samples]) of the given IHDR colour type (0 gray, 2 RGB, 4 gray+alpha,
    6 RGBA); ``size`` (width, height) writes that header over ``pixels`` instead (a file whose pixels are never decoded)."""
    width, height = size or (pixels.shape[1], pixels.shape[0])
    rows = pixels.reshape(pixels.shape[0], -1).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def write_ppm(path: Path, pixels: np.ndarray, maxval: int = 65535, *, plain: bool = False) -> Path:
    """A PPM of RGB ``pixels`` (rows, columns, 3) with the given maxval: binary (P6, two bytes a sample above 255) or plain
    text (P3)."""
    header = f"{'P3' if plain else 'P6'}\n{pixels.shape[1]} {pixels.shape[0]}\n{maxval}\n".encode()
    if plain:
        data = " ".join(map(str, pixels.ravel().tolist())).encode() + b"\n"
    else:
        data = pixels.astype(">u2" if maxval > 255 else "u1").tobytes()
    path.write_bytes(header + data)
    return path


def write_tiff(path: Path, pixels: np.ndarray, photometric: int = 1, byteorder: str = "<", *, big: bool = False) -> Path:
    """An uncompressed one-strip TIFF of ``pixels`` (rows, columns[, samples]) as they are: their dtype (unsigned, signed
    or float, any size) in either byte order, with the PhotometricInterpretation given (0 WhiteIsZero, 1 BlackIsZero,
    2 RGB); a second sample of a gray image is alpha. ``big``: a BigTIFF (8-byte offsets)."""
    rows, columns = pixels.shape[:2]
    samples = pixels.shape[2] if pixels.ndim == 3 else 1
    data = pixels.astype(pixels.dtype.newbyteorder(byteorder)).tobytes()
    sample_format = {"u": 1, "i": 2, "f": 3}[pixels.dtype.kind]
    start, offset, count, slot = (16, "Q", "Q", 8) if big else (8, "I", "H", 4)  # header bytes; an offset, a tag count, a value
    ifd_offset = start + len(data) + len(data) % 2
    tags = [(256, 4, [columns]), (257, 4, [rows]), (258, 3, [8 * pixels.dtype.itemsize] * samples), (259, 3, [1]),
            (262, 3, [photometric]), (273, 4, [start]), (277, 3, [samples]), (278, 4, [rows]), (279, 4, [len(data)]),
            (339, 3, [sample_format] * samples)] + ([(338, 3, [2])] if samples == 2 else [])
    values_offset = ifd_offset + struct.calcsize(count) + (4 + 2 * slot) * len(tags) + struct.calcsize(offset)
    entries, values = b"", b""
    for tag, kind, value in sorted(tags):
        packed = struct.pack(f"{byteorder}{len(value)}{'H' if kind == 3 else 'I'}", *value)
        if len(packed) > slot:
            packed, values = struct.pack(f"{byteorder}{offset}", values_offset + len(values)), values + packed
        entries += struct.pack(f"{byteorder}HH{offset}", tag, kind, len(value)) + packed.ljust(slot, b"\0")
    magic = (b"II" if byteorder == "<" else b"MM") + struct.pack(f"{byteorder}H", 43 if big else 42)
    header = magic + (struct.pack(f"{byteorder}HHQ", 8, 0, ifd_offset) if big else struct.pack(f"{byteorder}I", ifd_offset))
    ifd = struct.pack(f"{byteorder}{count}", len(tags)) + entries + struct.pack(f"{byteorder}{offset}", 0)
    path.write_bytes(header + data + b"\0" * (len(data) % 2) + ifd + values)
    return path
