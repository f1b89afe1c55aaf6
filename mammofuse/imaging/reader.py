"""Read a mammogram into float32 pixels in [0, 1], breast on the left, with its metadata.

DICOM goes through pydicom (uncompressed and RLE natively, JPEG-family syntaxes with the
``codecs`` extra; a deflated one inflated to at most :data:`MAX_INFLATED_BYTES`); PNG, JPEG, TIFF
and PGM/PPM through Pillow (no other Pillow plugin is tried), 8- or 16-bit (a floating-point TIFF
within [0, 1] as unit intensities, one beyond on the integer scale of its values), their pixels as stored (an EXIF
Orientation is not applied, with a remark) and a TIFF stored WhiteIsZero inverted. Sizes are checked
from the header before any pixel is decoded: at most :data:`MAX_PIXELS` pixels per image.
Warnings raised while reading (pydicom's included) are kept in ``info.warnings`` and re-issued
once each as a :class:`ReaderWarning` ``"<file>: <remark>"``, for a file that then fails too. A DICOM
of another imaging modality (CT, MR, US...) is refused, and a header that describes another kind of image
than the digitised film mammograms the models were trained on gets a remark
(:mod:`mammofuse.imaging.presentation`). A truncated file,
an empty one or one that is no regular file is an error that says so.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mammofuse.errors import InputFileError, MammofuseWarning
from mammofuse.imaging.presentation import header_remarks, not_mammography, single_value

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ""})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"}) | DICOM_SUFFIXES
MAX_PIXELS = 80_000_000
"""The largest image read (rows x columns): 80 MP, above any mammogram (full-field digital ones
are at most about 30 MP) and far below the memory a decompression bomb asks for."""
MAX_INFLATED_BYTES = 4 * MAX_PIXELS + 64 * 2**20
"""The most a deflated DICOM's dataset may inflate to: the largest image at 32 bits per pixel, plus 64 MiB of header."""
PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "PPM")
"""The Pillow plugins an image file is opened with (PPM reads PGM): PostScript, for one, would run Ghostscript."""
COLOUR_MODES = frozenset({"RGB", "RGBA", "P", "LA", "CMYK", "YCbCr", "LAB", "HSV"})
"""Pillow modes read as grayscale when every pixel is gray (alpha dropped), refused as colour otherwise."""
ORIENTATIONS = {2: ("FLIP_LEFT_RIGHT", "mirrored"), 3: ("ROTATE_180", "turned 180 degrees"), 4: ("FLIP_TOP_BOTTOM", "upside down"),
                5: ("TRANSPOSE", "transposed"), 6: ("ROTATE_90", "turned 90 degrees clockwise"), 7: ("TRANSVERSE", "transversed"),
                8: ("ROTATE_270", "turned 90 degrees anticlockwise")}
"""EXIF Orientation values other than 1: the Pillow transpose that undoes what a viewer (and Pillow's TIFF loader) does
with the stored pixels, and what that is. The reader keeps the pixels as stored."""
BITS_ALLOCATED = (8, 16, 32)
"""The DICOM BitsAllocated values read: the byte-aligned sizes of grayscale pixel data."""
UNDEFINED_LENGTH = 0xFFFFFFFF
BLOCK_PIXELS = 2**20
"""Pixels a full-image step works on at a time (pydicom's LUTs, mirroring): 1 MP of float64 is 8 MB, whatever the image."""
_PPM_SCALED = ("ppm", "ppm_plain")  # Pillow's PGM/PPM decoders that scale samples by the header's maxval (others: 8 bits)
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, little- and big-endian
_BIG_ENDIAN_BIGTIFF = b"MM\0+"
_ORIENTATION, _WIDTH, _LENGTH, _BITS_PER_SAMPLE, _PHOTOMETRIC, _SAMPLES_PER_PIXEL, _SAMPLE_FORMAT = 274, 256, 257, 258, 262, 277, 339  # TIFF tags
_PYDICOM_EOF = "End of file reached before delimiter"  # pydicom's warning on a file cut inside its data
_CBIS_PATIENT = re.compile(r"(?P<patient>P_\d+)_(?P<side>LEFT|RIGHT)_(?P<view>CC|MLO|ML|LM|XCCL|AT)", re.I)
_CBIS_SHORT = re.compile(r"^(?P<number>\d{5})_(?P<side>LEFT|RIGHT)_(?P<view>CC|MLO)$", re.I)  # 00001_LEFT_CC.jpg


@dataclass
class MammogramInfo:
    """What the reader saw in a file (the ``mammofuse inspect`` record)."""

    path: str
    format: str
    rows: int
    columns: int
    bits_stored: int
    photometric: str
    modality: str | None = None
    laterality: str | None = None
    view: str | None = None
    patient_id: str | None = None
    sop_uid: str | None = None
    flipped: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class Mammogram:
    """Pixels (H, W) float32 in [0, 1], 1 = dense tissue, breast on the left."""

    pixels: np.ndarray
    info: MammogramInfo


def read_mammogram(path: str | Path, canonical: bool = True, *, any_modality: bool = False) -> Mammogram:
    """Read a DICOM or image file.

    Args:
        path: the file.
        canonical: flip horizontally so the breast lies on the left.
        any_modality: read a DICOM of another imaging modality than mammography too, with a remark
            (``inspect``'s reading), instead of refusing it.

    Raises:
        InputFileError: unreadable, colour, multi-frame or empty image, or a DICOM of another modality
            (CT, MR, US...); the message names the file.
    """
    path = Path(path)
    check_file(path)
    with _remarks_on(path) as remarks:
        pixels, info = _read_dicom(path, any_modality) if is_dicom(path) else _read_image(path)
    info.warnings.extend(remarks)
    low, high = float(pixels.min()), float(pixels.max())  # NaN if any pixel is
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputFileError(path, "pixel values include NaN or infinity")
    if high <= low:
        raise InputFileError(path, "image is blank (all pixels equal)")
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if canonical and _breast_on_right(pixels):
        _mirror(pixels)
        info.flipped = True
    return Mammogram(pixels, info)


def _mirror(pixels: np.ndarray) -> None:
    """Mirror ``pixels`` left to right in place, a block of rows at a time (no full-size copy)."""
    step = max(1, BLOCK_PIXELS // max(pixels.shape[1], 1))
    for top in range(0, pixels.shape[0], step):
        block = pixels[top : top + step]
        block[...] = block[:, ::-1]  # numpy buffers an overlapping source


def check_header(path: str | Path) -> None:
    """Raise InputFileError unless the file's header describes one 2D grayscale image of an accepted size, and a
    DICOM's modality may be mammography; the remarks on it are issued as :class:`ReaderWarning`.

    No pixel is decoded: the check of a file whose image is not used (a lesion-crop model given no
    region), so that a file that is no mammogram is still reported rather than scored.
    """
    path = Path(path)
    check_file(path)
    with _remarks_on(path):
        if is_dicom(path):
            _dicom_header(path, defer_pixels=True)
        else:
            with _opened_image(path):
                pass


def check_file(path: Path) -> None:
    """Raise InputFileError unless ``path`` is a regular file with something in it."""
    try:
        status = path.stat()
    except OSError:
        raise InputFileError(path, "no such file") from None
    if not stat.S_ISREG(status.st_mode):
        raise InputFileError(path, "is a folder, not a file" if stat.S_ISDIR(status.st_mode) else "not a regular file (a pipe or device?)")
    if status.st_size == 0:
        raise InputFileError(path, "empty file (0 bytes)")


class ReaderWarning(MammofuseWarning):
    """Something odd but readable in a file (a modality that may not be MG, a pydicom remark): ``"<file>: <remark>"``."""

    def __init__(self, path: str | Path, remark: str) -> None:
        super().__init__(f"{path}: {remark}")
        self.path = str(path)
        self.remark = remark


@contextmanager
def _remarks_on(path: Path) -> Iterator[list[str]]:
    """The warnings raised in the block, as remarks on ``path``: kept in the list yielded (once each) and re-issued
    as :class:`ReaderWarning`, for a file that then fails too."""
    remarks: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield remarks
            finally:
                remarks.extend(dict.fromkeys(str(w.message) for w in caught))
    finally:
        for remark in remarks:
            warnings.warn(ReaderWarning(path, remark), stacklevel=4)


@contextmanager
def remarks_kept() -> Iterator[list[str]]:
    """The remarks (:class:`ReaderWarning`) on the files read in the block, in the list yielded and passed on, once
    each (a file read twice, as explaining does, is remarked on once); every other warning is passed on as it was."""
    remarks: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ReaderWarning)  # other warnings meet the filters they would have met
            yield remarks
    finally:
        seen: set[str] = set()
        for w in caught:
            if isinstance(w.message, ReaderWarning):
                if str(w.message) in seen:
                    continue
                seen.add(str(w.message))
                remarks.append(w.message.remark)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _check_size(path: Path, rows: int, columns: int) -> None:
    if rows < 1 or columns < 1:
        raise InputFileError(path, f"image has no pixels ({rows}x{columns})")
    if rows * columns > MAX_PIXELS:
        raise InputFileError(path, f"image is {rows}x{columns} = {rows * columns / 1e6:.0f} MP, over the {MAX_PIXELS / 1e6:.0f} MP limit (a decompression bomb?)")


def _header_int(ds: Any, path: Path, keyword: str, default: int | None = None) -> int:
    """An integer DICOM attribute, or an InputFileError naming it when absent or malformed."""
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise InputFileError(path, f"DICOM header has no {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputFileError(path, f"DICOM {keyword} is {str(value)[:40]!r}, not an integer") from None


def has_dicom_marker(path: Path) -> bool:
    """Whether the file carries the DICOM Part 10 marker (``DICM`` after a 128-byte preamble); False if unreadable."""
    return _head(path, 132)[128:132] == b"DICM"


def _head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the file (b"" if unreadable)."""
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


# The file meta element (0002,0002) Media Storage SOP Class UID of a Media Storage Directory (a DICOMDIR), as the
# file meta group is always written: explicit VR little endian; the UID has 20 characters, so no padding.
_MEDIA_DIRECTORY = b"\x02\x00\x02\x00UI\x14\x001.2.840.10008.1.3.10"


def is_dicom_image_file(path: Path) -> bool:
    """Whether a file found in a folder is a DICOM to read: the Part 10 marker, and no Media Storage Directory
    (a DICOMDIR indexes the files of a DICOM media folder and holds no image), by its name or its SOP class.
    Reads the first 512 bytes at most (the file meta group); False if unreadable."""
    if path.name.upper() == "DICOMDIR":
        return False
    head = _head(path, 512)
    return head[128:132] == b"DICM" and _MEDIA_DIRECTORY not in head


def is_dicom(path: Path) -> bool:
    """Read as DICOM: the marker, or a DICOM suffix (files without the preamble exist)."""
    return path.suffix.lower() in {".dcm", ".dicom"} or has_dicom_marker(path)


def _breast_on_right(pixels: np.ndarray) -> bool:
    half = pixels.shape[1] // 2
    return float(pixels[:, half:].sum()) > float(pixels[:, :half].sum())


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` (float32, changed in place: no full-size temporary) scaled from [low, high] to [0, 1], clipped."""
    assert values.dtype == np.float32, values.dtype
    values -= low
    values /= max(high - low, 1e-6)
    return np.clip(values, 0.0, 1.0, out=values)


def _dicom_header(path: Path, defer_pixels: bool = False, any_modality: bool = False) -> tuple[Any, MammogramInfo]:
    """The dataset of a DICOM file whose header describes one 2D grayscale image of an accepted size, of a modality
    that may be mammography (any, with a remark, when ``any_modality``); the header's remarks are issued as warnings.

    ``defer_pixels`` leaves the pixel data on disk (pydicom reads it if asked for).
    """
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = read_dicom(path, defer_size="64 KB" if defer_pixels else None)
        for remark in caught:
            if str(remark.message).startswith(_PYDICOM_EOF):
                raise InputFileError(path, _truncated("it ends before its data does"))
            warnings.warn(remark.message, stacklevel=2)
        if "PixelData" not in ds:
            raise InputFileError(path, _truncated("it ends within its header, before any pixel data") if _cut_short(ds, path) else "DICOM file has no pixel data")
        _check_pixel_data_length(ds, path)
        samples = _header_int(ds, path, "SamplesPerPixel", 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        frames = _header_int(ds, path, "NumberOfFrames", 1)
        rows, columns = _header_int(ds, path, "Rows"), _header_int(ds, path, "Columns")
        bits_allocated = _header_int(ds, path, "BitsAllocated", 16)
        bits_stored = _header_int(ds, path, "BitsStored", bits_allocated)
    except InvalidDicomError:
        raise InputFileError(path, "not a DICOM file (no DICM header)") from None
    except struct.error:  # pydicom unpacking a tag's length the file ends before
        raise InputFileError(path, _truncated("it ends within its header, before any pixel data")) from None
    except PermissionError as exc:
        raise _cannot_read(path, exc) from None
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise InputFileError(path, f"not a readable DICOM file ({exc})") from None
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise InputFileError(path, f"colour DICOM ({photometric}, {samples} samples per pixel): mammograms are grayscale")
    if frames > 1:
        raise InputFileError(path, f"multi-frame DICOM ({frames} frames, e.g. tomosynthesis): expected one 2D mammogram")
    _check_size(path, rows, columns)
    if bits_allocated not in BITS_ALLOCATED:
        raise InputFileError(path, f"DICOM BitsAllocated {bits_allocated} is not supported (8, 16 or 32)")
    if not 1 <= bits_stored <= 32:
        raise InputFileError(path, f"DICOM BitsStored is {bits_stored}, not 1 to 32")
    _check_native_length(ds, path, rows, columns, bits_allocated)
    info = _dicom_info(ds, path, rows, columns, bits_stored, photometric)
    if problem := not_mammography(info.modality):
        if not any_modality:
            raise InputFileError(path, problem)
        warnings.warn(problem, stacklevel=2)
    for remark in header_remarks(ds, info.modality):
        warnings.warn(remark, stacklevel=2)
    return ds, info


def _read_dicom(path: Path, any_modality: bool = False) -> tuple[np.ndarray, MammogramInfo]:
    ds, info = _dicom_header(path, any_modality=any_modality)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing codecs and broken data
        raise InputFileError(path, _decode_problem(ds, exc)) from None
    if raw.ndim != 2:
        raise InputFileError(path, f"expected one 2D grayscale image, pixel data has shape {raw.shape}")
    del ds.PixelData  # the encoded bytes and pydicom's copy of the array: not needed from here on
    try:
        pixels = _dicom_to_unit(ds, raw)
    except (ValueError, TypeError, ZeroDivisionError, IndexError, KeyError) as exc:
        raise InputFileError(path, f"cannot apply the DICOM LUTs or window ({type(exc).__name__}: {exc})") from None
    return pixels, info


def _decode_problem(ds: Any, exc: Exception) -> str:
    """Why pixel data did not decode: a codec to install (a syntax no installed plugin decodes), or broken data."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", str(syntax))
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    if _needs_codec(syntax, ds.get("BitsStored")):
        return f"cannot decode pixel data ({name}): install or upgrade the codecs extra, pip install -U 'mammofuse[codecs]' ({detail})"
    return f"cannot decode pixel data ({name}: {detail})"


JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"  # 12-bit JPEG, which Pillow (registered for it) cannot decode


def _needs_codec(syntax: Any, bits_stored: Any) -> bool:
    """Whether the codecs extra would decode ``syntax``: a compression no installed plugin decodes (RLE and JPEG
    Baseline need none; a too old pylibjpeg plugin is as good as none), or JPEG Extended above 8 bits without libjpeg."""
    from importlib.util import find_spec

    from pydicom.pixels import get_decoder

    try:
        if not syntax.is_compressed:
            return False
        if syntax == JPEG_EXTENDED and isinstance(bits_stored, int) and bits_stored > 8 and find_spec("libjpeg") is None:
            return True
        return not get_decoder(syntax).is_available
    except (AttributeError, ValueError, NotImplementedError):  # no syntax, or one pydicom does not know
        return False


def _check_pixel_data_length(ds: Any, path: Path) -> None:
    """Raise InputFileError when the file ends before the pixel data its header announces (undecoded)."""
    element = ds.get_item("PixelData")
    length, start = getattr(element, "length", None), getattr(element, "value_tell", None)
    if length is None or start is None or length == UNDEFINED_LENGTH:  # encapsulated: pydicom warns at the end of the file
        return
    there = _data_size(ds, path) - start
    if there < length:
        raise InputFileError(path, _truncated(f"{max(there, 0)} of the {length} bytes of its pixel data are there"))


def _cut_short(ds: Any, path: Path) -> bool:
    """Whether a dataset without Pixel Data was read from a file cut short, rather than from a complete DICOM that holds no
    image (a structured report, a presentation state, a DICOMDIR).

    The rule: the file ends inside an element (:func:`_ends_inside_an_element`), or its SOP class is an image storage
    class, the dataset's or else the file meta's (there when the dataset is cut before its own): every image IOD
    requires Pixel Data, and a file cut exactly between two elements ends as a complete one does.
    """
    return _ends_inside_an_element(ds, path) or _is_image_class(ds)


def _is_image_class(ds: Any) -> bool:
    """Whether the dataset's SOP class is an image storage class ('... Image Storage' in pydicom's registry)."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None) or {}
    sop_class = single_value(ds.get("SOPClassUID")) or single_value(meta.get("MediaStorageSOPClassUID"))
    return "Image Storage" in UID(sop_class.strip()).name


def _ends_inside_an_element(ds: Any, path: Path) -> bool:
    """Whether the file ends inside an element, as one cut short does: pydicom silently keeps a last element whose value
    the file holds only part of, and drops the start of an element's header after it. A complete file ends where its
    last element does; a dataset with no element after the file meta is cut short too. (A last element of undefined
    length is taken as complete: pydicom warns when the file ends before its delimiter.)
    """
    tags = list(ds.keys())
    if not tags:
        return True
    element = ds.get_item(max(tags))
    length, start = getattr(element, "length", None), getattr(element, "value_tell", None)
    if length is None or start is None or length == UNDEFINED_LENGTH:
        return False
    return start + length != _data_size(ds, path)


def _data_size(ds: Any, path: Path) -> int:
    """The size of the data the dataset was read from: the file, or the buffer of a deflated one inflated."""
    return len(ds.buffer.getbuffer()) if ds.buffer is not None else path.stat().st_size


def _check_native_length(ds: Any, path: Path, rows: int, columns: int, bits_allocated: int) -> None:
    """Raise InputFileError when native (uncompressed) pixel data holds other than the one grayscale frame its header
    describes: Rows x Columns x BitsAllocated/8 bytes, plus a pad byte when that is odd (PS3.5 8.1.1). pydicom only
    warns of a longer value and reads a sheared image; encapsulated (compressed) data is not checked."""
    length = getattr(ds.get_item("PixelData"), "length", None)
    if length is None or length == UNDEFINED_LENGTH or not _is_native(ds):
        return
    expected = rows * columns * bits_allocated // 8
    if length not in (expected, expected + expected % 2):
        raise InputFileError(path, f"DICOM pixel data holds {length} bytes where Rows x Columns ({rows} x {columns}, {bits_allocated}-bit) "
                                   f"make {expected}: the header does not describe its pixels")


def _is_native(ds: Any) -> bool:
    """Whether the dataset's transfer syntax stores pixel data uncompressed (a deflated one is read inflated); False for
    an unknown one."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return syntax is not None and not syntax.is_compressed
    except (AttributeError, ValueError):  # not a UID, or not a transfer syntax
        return False


def read_dicom(path: Path, **options: Any) -> Any:
    """``pydicom.dcmread(path, **options)``, a deflated file's dataset inflated here, to at most
    :data:`MAX_INFLATED_BYTES` (pydicom inflates all of it, however large: a decompression bomb).

    Raises:
        InputFileError: a deflated dataset too large, cut short or corrupt.
        pydicom.errors.InvalidDicomError: no DICM marker (and pydicom's other errors).
    """
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset, read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    meta = read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return pydicom.dcmread(path, **options)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the inflated dataset is
    head = DicomBytesIO()
    write_file_meta_info(head, meta, enforce_standard=False)
    source = io.BytesIO()
    source.write(bytes(128) + b"DICM" + head.getvalue())
    with path.open("rb") as fh:
        read_preamble(fh, False)
        read_dataset(fh, False, True, stop_when=lambda tag, *_: tag >> 16 != 2)  # to the deflated dataset
        inflater, size = zlib.decompressobj(-zlib.MAX_WBITS), 0
        try:
            while not inflater.eof and size <= MAX_INFLATED_BYTES and (block := inflater.unconsumed_tail or fh.read(2**20)):
                size += source.write(inflater.decompress(block, MAX_INFLATED_BYTES + 1 - size))
        except zlib.error as exc:
            raise InputFileError(path, f"not a readable DICOM file (its deflated data is corrupt: {exc})") from None
    if size > MAX_INFLATED_BYTES:
        raise InputFileError(path, f"deflated DICOM inflates to over {MAX_INFLATED_BYTES / 1e6:.0f} MB, more than an {MAX_PIXELS / 1e6:.0f} MP image needs (a decompression bomb?)")
    if not inflater.eof:
        raise InputFileError(path, _truncated("its deflated data ends early"))
    source.seek(0)
    ds = pydicom.dcmread(source, **options)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def _truncated(detail: str) -> str:
    return f"DICOM file is truncated: {detail} (an incomplete download or copy?)"


def _dicom_to_unit(ds: Any, raw: np.ndarray) -> np.ndarray:
    """Stored values -> [0, 1] with 1 = dense, honouring padding (a value or a range), LUTs and MONOCHROME1.

    The scale runs from the darkest to the brightest pixel that is not padding, after the modality
    LUT (rescale slope and intercept) and the file's window, when it has one.
    """
    padding = ds.get("PixelPaddingValue")
    pad_mask = None
    if padding is not None:
        low, high = sorted((padding, ds.get("PixelPaddingRangeLimit", padding)))
        pad_mask = (raw >= low) & (raw <= high)
    values = _lut_values(ds, raw)
    if pad_mask is not None and not pad_mask.all():
        valid = np.logical_not(pad_mask, out=pad_mask)  # in the mask's own memory, turned back below
        low, high = float(values.min(where=valid, initial=np.inf)), float(values.max(where=valid, initial=-np.inf))
        pad_mask = np.logical_not(valid, out=valid)
    else:
        low, high = float(values.min()), float(values.max())
    pixels = _rescale(values, low, high)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        np.subtract(1.0, pixels, out=pixels)
    if pad_mask is not None:
        pixels[pad_mask] = 0.0
    return pixels


def _lut_values(ds: Any, raw: np.ndarray) -> np.ndarray:
    """float32 values of the stored ones after the modality LUT and the file's window, a block of rows at a time
    (both LUTs map each pixel on its own, so the blocks give what the whole image would)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    windowed = any(k in ds for k in ("VOILUTSequence", "WindowCenter"))
    lut_range = _voi_lut_range(ds)
    values = np.empty(raw.shape, dtype=np.float32)
    step = max(1, BLOCK_PIXELS // max(raw.shape[1], 1))
    for top in range(0, raw.shape[0], step):
        block = apply_modality_lut(raw[top : top + step], ds)
        block = np.clip(np.rint(block), *lut_range).astype(np.int32) if lut_range else block.astype(np.float32)
        values[top : top + step] = apply_voi_lut(block, ds, prefer_lut=True) if windowed else block
    return values


def _voi_lut_range(ds: Any) -> tuple[int, int] | None:
    """The first and last input value of the VOI LUT that ``apply_voi_lut`` applies (the VOI LUT Sequence's first item,
    when it has a descriptor and data); None when the file has none.

    Its input is given as integers within that range, which the LUT maps as it maps values beyond (to its first or last
    entry, PS3.3 C.11.2.1.1), so that pydicom neither warns of float input nor wraps a value in its index array. 8-bit
    entries are read as 16-bit on this dataset: pydicom indexes them with uint8, wrapping inputs modulo 256; the entries
    are the same numbers, one to a 16-bit word as pydicom unpacks them, and the output is scaled to [0, 1] anyway.
    """
    items = ds.get("VOILUTSequence")
    if not items or items[0].get("LUTDescriptor") is None or items[0].get("LUTData") is None:
        return None
    entries, first, bits = items[0].LUTDescriptor
    if bits == 8:
        items[0].LUTDescriptor = [entries, first, 16]
    return first, first + (entries or 2**16) - 1


def _dicom_info(ds: Any, path: Path, rows: int, columns: int, bits_stored: int, photometric: str) -> MammogramInfo:
    """The identifying attributes of a DICOM dataset (its header is all this reads)."""
    info = MammogramInfo(
        path=str(path),
        format="dicom",
        rows=rows,
        columns=columns,
        bits_stored=bits_stored,
        photometric=photometric,
        modality=single_value(ds.get("Modality")) or None,
        patient_id=str(ds.get("PatientID", "")) or None,
        sop_uid=str(ds.get("SOPInstanceUID", "")) or None,
    )
    info.laterality, info.view = _laterality_and_view(ds, info.patient_id)
    return info


def _laterality_and_view(ds: Any, patient_id: str | None) -> tuple[str | None, str | None]:
    side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "")).upper()[:1] or None
    view = str(ds.get("ViewPosition", "")).upper() or None
    if (side is None or view is None) and patient_id:
        match = _CBIS_PATIENT.search(patient_id)
        if match:
            side = side or match["side"][0].upper()
            view = view or match["view"].upper()
    return (side if side in {"L", "R"} else None), view


def _cannot_read(path: Path, exc: OSError) -> InputFileError:
    """The error of a file that cannot be opened at all (no permission), whatever its format."""
    return InputFileError(path, f"cannot read ({exc.strerror or exc})")


@contextmanager
def _opened_image(path: Path) -> Iterator[Any]:
    """A Pillow image whose header describes one frame of an accepted size and depth; any failure, inside the
    ``with`` block too, is an InputFileError naming the file.

    Opened from a file handle, not the path: Pillow memory-maps a path's uncompressed TIFF, and reads a non-square one
    with Orientation 5 to 8 sheared.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        fh = path.open("rb")
    except OSError as exc:  # no permission, say: not a question of the format
        raise _cannot_read(path, exc) from None
    try:
        with fh, _pillow_image(fh) as image:
            _check_size(path, *_stored_size(image))  # from the header, before decoding
            if getattr(image, "n_frames", 1) > 1:
                raise InputFileError(path, f"multi-frame image ({image.n_frames} frames): expected one 2D mammogram")
            _check_sample_bits(path, image)
            yield image
    except InputFileError:
        raise
    except UnidentifiedImageError:
        raise InputFileError(path, _unidentified(path)) from None
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InputFileError(path, f"not a readable image ({exc})") from None


def _pillow_image(fh: Any) -> Any:
    """``Image.open(fh, formats=PILLOW_FORMATS)`` without Pillow's decompression bomb check, which warns from 89 MP
    and fails from 179 MP before :data:`MAX_PIXELS`, stricter, is checked from the same header; no global is changed."""
    from PIL import Image, JpegImagePlugin, PngImagePlugin, PpmImagePlugin, TiffImagePlugin  # noqa: F401 (registers each)

    prefix = fh.read(16)
    for name in PILLOW_FORMATS:
        if name == "TIFF" and prefix.startswith(_BIG_ENDIAN_BIGTIFF):
            continue  # Pillow reads none: it fails on one, noting "corrupt EXIF data" as it goes
        factory, accept = Image.OPEN[name]
        accepted = accept(prefix) if accept else True
        if accepted and not isinstance(accepted, str):  # a string is Pillow's note on a file it does not accept
            fh.seek(0)
            try:
                return factory(fh, "")
            except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open takes as "not this format"
                continue
    raise Image.UnidentifiedImageError("cannot identify image file")


def _stored_size(image: Any) -> tuple[int, int]:
    """(rows, columns) of the pixels as stored: a TIFF's from its tags (Pillow gives it turned by its Orientation)."""
    if image.format == "TIFF":
        return int(image.tag_v2[_LENGTH]), int(image.tag_v2[_WIDTH])
    return image.height, image.width


def _check_sample_bits(path: Path, image: Any) -> None:
    """Raise InputFileError for a colour or gray+alpha image of more than 8 bits a sample: Pillow decodes it to 8."""
    bits = _header_bits(path, image)
    if image.mode in COLOUR_MODES and bits > 8:
        kind = "gray+alpha" if _is_gray_with_alpha(path, image) else "colour"
        raise InputFileError(path, f"{bits}-bit {kind} image: Pillow reads only its high 8 bits; save it as 16-bit grayscale")


def _header_bits(path: Path, image: Any) -> int:
    """Bits a sample from the header: a PNG's IHDR bit depth, a TIFF's largest BitsPerSample, the bits of a PGM/PPM's
    maxval; 8 for JPEG."""
    if image.format == "PNG":
        return _head(path, 25)[24]  # the bit depth byte: 8-byte signature, chunk length and type, width, height
    if image.format == "TIFF":
        return max(image.tag_v2.get(_BITS_PER_SAMPLE, (1,)))
    if image.format == "PPM" and image.tile[0][0] in _PPM_SCALED:
        return int(image.tile[0][3][1]).bit_length()  # the decoder's arguments: (raw mode, maxval)
    return 8


def _is_gray_with_alpha(path: Path, image: Any) -> bool:
    """Whether the header describes gray samples with alpha: a PNG's colour type 4, a TIFF's gray photometry, mode LA."""
    if image.format == "PNG":
        return _head(path, 26)[25] == 4  # the colour type byte follows the bit depth
    if image.format == "TIFF":
        return image.tag_v2.get(_PHOTOMETRIC) in (0, 1)
    return image.mode == "LA"


def _unidentified(path: Path) -> str:
    """Why Pillow found no image to read in a file: a TIFF's samples it does not decode (named, where its tags are
    readable), or a format that is not read."""
    head = _head(path, 16)
    if not head.startswith(_TIFF_MAGIC):
        return "not a PNG, JPEG, TIFF or PGM/PPM image (the image formats read)"
    if head.startswith(_BIG_ENDIAN_BIGTIFF):
        return "big-endian BigTIFF, which Pillow does not read: save it as a little-endian or classic TIFF"
    samples = _tiff_samples(path, head) or "its tags are unreadable"
    return f"TIFF whose samples Pillow does not decode ({samples}): save it as 8- or 16-bit grayscale"


def _tiff_samples(path: Path, head: bytes) -> str | None:
    """What the samples of a TIFF's first image are (``16-bit unsigned-integer, big-endian, WhiteIsZero``), from its
    tags; None when they cannot be read."""
    from PIL import TiffImagePlugin

    try:
        with path.open("rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's note on a short tag: the values it read are named all the same
            tags = TiffImagePlugin.ImageFileDirectory_v2(head[:16] if head[2] == 43 else head[:8])  # BigTIFF's is 16 bytes
            fh.seek(tags.next)
            tags.load(fh)
    except (OSError, SyntaxError, ValueError, struct.error):
        return None
    if _WIDTH not in tags:  # no image's tags where the header points
        return None
    bits = "/".join(map(str, dict.fromkeys(tags.get(_BITS_PER_SAMPLE, (1,)))))
    kind = {1: "unsigned-integer", 2: "signed-integer", 3: "floating-point"}.get(tags.get(_SAMPLE_FORMAT, (1,))[0], "undefined")
    photometric = {0: "WhiteIsZero", 1: "BlackIsZero", 2: "RGB", 3: "palette", 5: "CMYK", 6: "YCbCr"}.get(tags.get(_PHOTOMETRIC))
    samples = tags.get(_SAMPLES_PER_PIXEL, 1)
    details = [f"{bits}-bit {kind}", *([f"{samples} a pixel"] if samples != 1 else []),
               "big-endian" if head.startswith(b"MM") else "little-endian", *([photometric] if photometric else [])]
    return ", ".join(details)


def _read_image(path: Path) -> tuple[np.ndarray, MammogramInfo]:
    with _opened_image(path) as image:
        fmt = (image.format or path.suffix.lstrip(".")).lower()  # before convert(), whose image has no format
        rows, columns = _stored_size(image)
        white_is_zero = image.format == "TIFF" and image.tag_v2.get(_PHOTOMETRIC) == 0
        inverted_here = white_is_zero and _header_bits(path, image) > 8  # Pillow inverts 8 bits and fewer itself
        image = _stored_pixels(image)
        mode = image.mode
        if mode in COLOUR_MODES:  # gray in every pixel: read as grayscale, alpha dropped
            if not _is_gray(np.asarray(image.convert("RGB"))):
                raise InputFileError(path, f"colour image (mode {mode}): mammograms are grayscale")
            image = image.convert("L")
        array = np.asarray(image)
    if array.shape[:2] != (rows, columns):
        raise InputFileError(path, f"decoded pixels are {array.shape[0]}x{array.shape[1]} where the header gives {rows}x{columns}")
    if array.ndim != 2:
        raise InputFileError(path, f"expected a grayscale image, got shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputFileError(path, "pixel values include NaN or infinity")
    _check_16_bit_range(path, array)
    if _is_unit_float(array):
        bits, full_scale = 8 * array.dtype.itemsize, 1.0
    else:
        bits = _integer_bits(array)
        full_scale = float(2**bits - 1)
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:  # a lookup table is ~5x faster than float arithmetic
        pixels = _rescale(np.arange(2 ** (8 * array.dtype.itemsize), dtype=np.float32), 0.0, full_scale)[array]
    else:
        pixels = _rescale(array.astype(np.float32), 0.0, full_scale)
    if inverted_here:  # as MONOCHROME1 is
        np.subtract(1.0, pixels, out=pixels)
    info = MammogramInfo(
        path=str(path), format=fmt, rows=array.shape[0], columns=array.shape[1],
        bits_stored=bits, photometric="MONOCHROME1" if white_is_zero else "MONOCHROME2",
    )
    named = _cbis_name(path)
    if named:
        info.laterality, info.view = named[1:]
    return pixels, info


def _stored_pixels(image: Any) -> Any:
    """The image decoded, its pixels as stored, with a remark on an EXIF Orientation other than 1: that is not applied
    (a lesion circle is given in stored pixels, as a DICOM's are). Pillow's TIFF loader turns the pixels by the
    Orientation it finds (in the tag, or from Pillow 12 in the XMP packet) and then drops it from the EXIF: a TIFF's is
    read before decoding, and the turn undone where it was dropped. A PNG's EXIF may follow its pixels: read after."""
    from PIL import Image

    tiff = image.format == "TIFF"
    orientation = _exif_orientation(image) if tiff else None
    image.load()
    if orientation is None:
        orientation = _exif_orientation(image)
    if orientation not in ORIENTATIONS:
        return image
    undo, shown = ORIENTATIONS[orientation]
    warnings.warn(f"EXIF Orientation {orientation} (a viewer shows the image {shown}) is not applied: the pixels are read "
                  "as stored, and a lesion circle is given in them", stacklevel=2)
    turned = tiff and _exif_orientation(image) != orientation
    return image.transpose(getattr(Image.Transpose, undo)) if turned else image


def _exif_orientation(image: Any) -> Any:
    """The EXIF Orientation of an image (Pillow's EXIF, with what it reads of the XMP packet); 1 when it has none or its
    EXIF is unreadable."""
    try:
        return image.getexif().get(_ORIENTATION, 1)
    except (SyntaxError, ValueError, struct.error):
        return 1


def _cbis_name(path: Path) -> tuple[str, str, str] | None:
    """(patient, ``L``/``R``, view) of a CBIS-DDSM image key in a path (``..._P_00001_LEFT_CC...``), or of a
    file named by the short key (``00001_LEFT_CC.jpg``); None for other names."""
    match = _CBIS_PATIENT.search(path.as_posix()) or _CBIS_SHORT.match(path.stem)
    if not match:
        return None
    patient = match["patient"] if "patient" in match.groupdict() else f"P_{match['number']}"
    return patient, match["side"][0].upper(), match["view"].upper()


def _is_unit_float(array: np.ndarray) -> bool:
    """A floating-point image whose values lie within [0, 1]: unit intensities, read as they are."""
    return array.dtype.kind == "f" and float(array.min()) >= 0.0 and float(array.max()) <= 1.0


def _integer_bits(array: np.ndarray) -> int:
    """The bits the values of an image on an integer scale fill: 1 (bilevel), 8, 12 or 16."""
    if array.dtype == bool:
        return 1
    if array.dtype == np.uint8 or array.max() <= 255:
        return 8
    bits = int(np.ceil(np.log2(int(array.max()) + 1)))
    return 16 if bits > 12 else 12


def _check_16_bit_range(path: Path, array: np.ndarray) -> None:
    """Raise InputFileError for pixel values outside 0..65535 (a 32-bit or signed image): scaled as 16-bit, they clip to a blank image."""
    if array.dtype in (np.uint8, np.uint16, bool):
        return
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 65535:
        raise InputFileError(path, f"pixel values span {low:.10g} to {high:.10g}, outside 0 to 65535: expected an 8- or 16-bit grayscale image")


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def image_shape(path: str | Path) -> tuple[int, int] | None:
    """(rows, columns) of an image or DICOM file from its header alone; None when unreadable."""
    path = Path(path)
    try:
        if is_dicom(path):
            ds = read_dicom(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            return int(ds.Rows), int(ds.Columns)
        with path.open("rb") as fh, _pillow_image(fh) as image:
            return _stored_size(image)
    except Exception:  # any unreadable file: its error surfaces when its pixels are read
        return None


def read_header(path: str | Path) -> MammogramInfo | None:
    """A DICOM file's header (patient, laterality, view, UIDs, size) read without its pixel data.

    The one header read of a file before it is scored: a listing groups and matches files with it
    and decodes no pixels. None for non-DICOM files and unreadable ones (their errors surface when
    their pixels are read); pydicom's remarks are silenced here for the same reason.
    """
    path = Path(path)
    try:
        if not is_dicom(path):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dicom(path, stop_before_pixels=True)
            size = [_header_int(ds, path, keyword, 0) for keyword in ("Rows", "Columns", "BitsStored")]
            return _dicom_info(ds, path, *size, str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper())
    except Exception:  # any unreadable file: no header
        return None


def patient_and_side(path: str | Path, header: MammogramInfo | None) -> tuple[str | None, str | None]:
    """(patient id, ``L``/``R``) from a DICOM header (see :func:`read_header`), else from a CBIS-DDSM style file name
    (a full image key, or the short ``00001_LEFT_CC``)."""
    if header is not None:
        match = _CBIS_PATIENT.search(header.patient_id or "")  # CBIS-DDSM ids name the view: the patient is P_NNNNN
        return (match["patient"] if match else header.patient_id), header.laterality
    named = _cbis_name(Path(path))
    return named[:2] if named else (None, None)
